package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/client"
)

// TestFollowAndBoundProcess runs streamcli against three streamnode
// processes. tail -f given two nodes moves to the other's copy when the
// node it reads from dies; an append given a dead node first goes through
// the next; and, with acks all and a copy's node killed, streamcli append
// and a client.Appender fail with Unavailable, saying why, within their
// timeout (streamcli's default, client.DefaultTimeout), where they once
// waited for minutes, printing nothing; so does an append with quorum
// and two of the three nodes killed.
func TestFollowAndBoundProcess(t *testing.T) {
	c := startCluster(t, 3)
	addrs := c.ClientAddrs()
	ok(t, "", "--node", addrs[0], "create", "q", "--replicas", "3", "--acks", "quorum")
	ok(t, "", "--node", addrs[0], "create", "all", "--replicas", "3", "--acks", "all")
	ok(t, "", "--node", addrs[0], "append", "q", "a")

	// tail -f through n1 (the leader, named by n2's hint), then n2, n3.
	tail := exec.Command(bin, "--node", addrs[1]+","+addrs[2], "tail", "-f", "q")
	stdout, err := tail.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	tail.Stderr = &stderr
	tail.Env = env()
	if err := tail.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	defer func() {
		syscall.Kill(tail.Process.Pid, syscall.SIGKILL)
		<-done
	}()
	got := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			got <- sc.Text()
		}
		done <- tail.Wait()
	}()
	expect := func(want string) {
		t.Helper()
		select {
		case line := <-got:
			if line != want {
				t.Fatalf("tail -f printed %q, want %q", line, want)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("tail -f did not print %q in 20 s; stderr: %s", want, stderr.String())
		}
	}
	expect("a")
	// The tail reads at the leader, n1: kill it, restart it; the tail
	// goes on from a copy meanwhile and sees what is appended next.
	if err := c.Kill(0); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.Start(ctx, 0); err != nil {
		t.Fatal(err)
	}
	ok(t, "", "--node", addrs[0], "append", "q", "b")
	expect("b")

	// A dead node first in --node: the next one answers.
	if err := c.Kill(2); err != nil {
		t.Fatal(err)
	}
	// Positions: a 0, b after the restarted leader's epoch marker (at 1),
	// so c is at 3 at least.
	if got := positions(t, ok(t, "", "--node", addrs[2]+","+addrs[1], "append", "q", "c")); len(got) != 1 || got[0] < 3 {
		t.Fatalf("append through a dead node, then a live one: positions %v, want one at 3 or later", got)
	}
	expect("c")

	// acks all with n3 dead: bounded failures, saying why.
	type outcome struct {
		err  error
		took time.Duration
	}
	appended := make(chan outcome, 1)
	const appenderTimeout = 7 * time.Second
	go func() {
		cl, err := client.Dial(addrs[0], client.Options{Timeout: appenderTimeout})
		if err != nil {
			appended <- outcome{err: err}
			return
		}
		defer cl.Close()
		a := cl.NewAppender(ctx, "all")
		defer a.Close()
		t0 := time.Now()
		p, err := a.Append([]byte("x"))
		if err == nil {
			_, err = p.Wait(ctx)
		}
		appended <- outcome{err, time.Since(t0)}
	}()
	t0 := time.Now()
	r := fails(t, 1, "", []string{"--node", addrs[0], "append", "all", "x"}, "unavailable", "not on enough copies", "within 15s")
	took := time.Since(t0)
	if r.stdout != "" || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("append with acks all and a copy down printed %q, %q", r.stdout, r.stderr)
	}
	if bound := client.DefaultTimeout + 8*time.Second; took < client.DefaultTimeout || took > bound {
		t.Errorf("append with acks all and a copy down failed after %v, want %v to %v", took, client.DefaultTimeout, bound)
	}
	o := <-appended
	if !errors.Is(o.err, client.ErrTimeout) || status.Code(o.err) != codes.Unavailable || !strings.Contains(o.err.Error(), "not on enough copies") {
		t.Errorf("Appender with acks all and a copy down: %v; want ErrTimeout, Unavailable, saying why", o.err)
	}
	if o.took < appenderTimeout || o.took > appenderTimeout+5*time.Second {
		t.Errorf("Appender with acks all and a copy down failed after %v, want %v to %v", o.took, appenderTimeout, appenderTimeout+5*time.Second)
	}
	t.Logf("streamcli append failed after %v: %s", took, strings.TrimSpace(r.stderr))
	t.Logf("Appender failed after %v: %v", o.took, o.err)

	// quorum with two of three nodes down: bounded too (--timeout 6s).
	if err := c.Kill(1); err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	r = fails(t, 1, "", []string{"--node", addrs[0], "append", "q", "d", "--timeout", "6s"}, "unavailable", "not on enough copies", "within 6s")
	if took := time.Since(t0); took < 6*time.Second || took > 14*time.Second {
		t.Errorf("append with quorum and two of three nodes down failed after %v, want 6 s to 14 s", took)
	}
	t.Logf("quorum lost: %s", strings.TrimSpace(r.stderr))
}
