package cli

import (
	"bytes"
	"context"
	"fmt"

	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rpstream/rpstream/node"
)

// startNode serves a node on a loopback port for the test's duration.
func startNode(t *testing.T) string {
	t.Helper()
	cfg := node.DefaultConfig(t.TempDir())
	cfg.RegionSize = 64 << 10
	cfg.MaxStreamSize = 64 << 20
	cfg.Logger = slog.New(slog.DiscardHandler)
	srv, err := node.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		if err := <-served; err != nil {
			t.Error(err)
		}
	})
	return lis.Addr().String()
}

// streamcli runs Main and returns its exit code, stdout and stderr.
func streamcli(ctx context.Context, stdin string, env map[string]string, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := Main(ctx, Env{Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return env[k] }}, args)
	return code, out.String(), errb.String()
}

func TestNodeMode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	addr := startNode(t)
	env := map[string]string{"RPSTREAM_NODE": addr}
	check := func(wantCode int, wantOut, stdin string, args ...string) string {
		t.Helper()
		code, out, errs := streamcli(ctx, stdin, env, args...)
		if code != wantCode || !strings.Contains(out+errs, wantOut) {
			t.Fatalf("streamcli %v: exit %d\nstdout: %s\nstderr: %s\nwant exit %d and %q", args, code, out, errs, wantCode, wantOut)
		}
		return out
	}
	check(0, `created stream "s" on node `+addr, "", "--node", addr, "create", "s", "--replicas", "3", "--acks", "all")
	check(1, "already exists", "", "create", "s")
	check(2, "--acks must be", "", "create", "t", "--acks", "most")
	if out := check(0, "", "", "append", "s", "one", "two"); out != "0\n1\n" {
		t.Fatalf("append printed %q", out)
	}
	if out := check(0, "", "three\nfour\n", "append", "s"); out != "2\n3\n" {
		t.Fatalf("append from stdin printed %q", out)
	}
	if out := check(0, "", "", "tail", "s"); out != "one\ntwo\nthree\nfour\n" {
		t.Fatalf("tail printed %q", out)
	}
	if out := check(0, "", "", "tail", "s", "--from", "-2", "--output", "json"); out != `{"position":2,"size":5,"data":"dGhyZWU="}`+"\n"+`{"position":3,"size":4,"data":"Zm91cg=="}`+"\n" {
		t.Fatalf("tail --from -2 printed %q", out)
	}
	check(0, "s       1        0     4     4        64KiB        3         all   node    1", "", "ls")

	check(0, "replicas     3, acks all (under-replicated)", "", "ls", "s")
	check(1, `stream "nope" does not exist on node`, "", "tail", "nope")
	var lines, want strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&lines, "line %d\n", i)
		fmt.Fprintf(&want, "%d\n", 4+i)
	}
	if out := check(0, "", lines.String(), "create", "many"); !strings.Contains(out, "created") {
		t.Fatal(out)
	}
	if out := check(0, "", lines.String(), "append", "s"); out != want.String() {
		t.Fatalf("append of 1000 lines printed %.100q...", out)
	}
	check(1, `stream "nope" does not exist`, "a\n", "append", "nope")
	// delete, then ls: the stream is gone.
	if out := check(0, "", "", "delete", "many"); out != `deleted stream "many" on node `+addr+"\n" {
		t.Fatalf("delete printed %q", out)
	}
	if out := check(0, "STREAM", "", "ls"); strings.Contains(out, "many") {
		t.Fatalf("ls after delete lists the stream:\n%s", out)
	}
	check(1, `stream "many" does not exist on node `+addr, "", "delete", "many")
	check(1, `stream "many" does not exist on node `+addr, "", "status", "many")
	check(0, "leader       node (127.0.0.1:", "", "status", "s")
	check(0, "node (this node)  node  alive  "+addr, "", "members")
	check(2, "members needs --node", "", "members", "--node", "")

	// tail -f follows until its context ends, then exits 0.
	fctx, fcancel := context.WithCancel(ctx)
	var out bytes.Buffer
	pr := &lineWatcher{want: "five\n", seen: make(chan struct{})}
	done := make(chan int, 1)
	go func() {
		done <- Main(fctx, Env{Stdin: strings.NewReader(""), Stdout: pr, Stderr: &out, Getenv: func(k string) string { return env[k] }}, []string{"tail", "s", "-f", "--from", "1003"})
	}()
	check(0, "1004\n", "", "append", "s", "five")
	<-pr.seen
	fcancel()
	if code := <-done; code != 0 {
		t.Fatalf("tail -f exited %d: %s", code, out.String())
	}
	if got := pr.String(); got != "line 999\nfive\n" {
		t.Fatalf("tail -f printed %q", got)
	}
}

// lineWatcher is an output that closes seen once it has received want.
type lineWatcher struct {
	bytes.Buffer
	want string
	seen chan struct{}
	done bool
}

func (w *lineWatcher) Write(p []byte) (int, error) {
	n, err := w.Buffer.Write(p)
	if !w.done && strings.Contains(w.Buffer.String(), w.want) {
		w.done = true
		close(w.seen)
	}
	return n, err
}
