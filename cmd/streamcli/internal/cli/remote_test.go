package cli

import (
	"bytes"
	"context"
	"fmt"
	"regexp"

	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
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
	// Each entry carries the time its leader appended it.
	timeField := regexp.MustCompile(`,"time":"[0-9T:.Z-]+"`)
	if out := check(0, "", "", "tail", "s", "--from", "-2", "--output", "json"); len(timeField.FindAllString(out, -1)) != 2 ||
		timeField.ReplaceAllString(out, "") != `{"position":2,"size":5,"data":"dGhyZWU="}`+"\n"+`{"position":3,"size":4,"data":"Zm91cg=="}`+"\n" {
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
	// s asked for 3 copies of a node without a catalog: status exits 3.
	check(3, "leader       node (127.0.0.1:", "", "status", "s")
	check(3, `"under_replicated":true`, "", "status", "s", "--output", "json")
	check(0, `{"streams":[{"stream":"s","head":0,"next":1004`, "", "ls", "--output", "json")
	check(0, `{"members":[{"name":"node","self":true,"role":"node","state":"alive","client_addr":"`+addr, "", "members", "--output", "json")
	check(0, `{"stream":"j","node":"`+addr+`","leader":"node","replicas":1,"acks":"quorum","region_size":65536}`, "", "create", "j", "--output", "json")
	check(0, "{\"position\":0}\n{\"position\":1}\n", "", "append", "j", "a", "b", "--output", "json")
	check(0, `{"stream":"j","deleted":true,"node":"`+addr+`"}`, "", "delete", "j", "--output", "json")
	// The same rule for names as embedded: bad usage before the node is asked.
	check(2, `invalid stream name ".hidden"`, "", "create", ".hidden")
	check(2, "--replicas must be from 1 to 15, not 0", "", "create", "t", "--replicas", "0")
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

// TestNotANode: an address where something else listens (a web server, a
// program writing garbage) or nothing does is reported at once, in plain
// words, not after --timeout of retries in gRPC's transport terms
// ("http2: frame too large").
func TestNotANode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("<html>")) }))
	defer web.Close()
	webAddr := strings.TrimPrefix(web.URL, "http://")
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			c.Write(bytes.Repeat([]byte("garbage\xff"), 100))
			c.Close()
		}
	}()
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	refused := closed.Addr().String()
	closed.Close()
	node := startNode(t)

	for _, tc := range []struct {
		node string
		args []string
		want string
	}{
		{webAddr, []string{"ls"}, "streamcli ls: " + webAddr + " does not speak the rpstream protocol: it answered as an HTTP/1 server\n"},
		{lis.Addr().String(), []string{"append", "s", "x"}, "streamcli append: " + lis.Addr().String() + " does not speak the rpstream protocol: "},
		{refused, []string{"members"}, "streamcli members: no rpstream node at " + refused + ": connection refused (nothing listens on that port)\n"},
		{webAddr + "," + refused, []string{"health"}, "streamcli health: " + webAddr + " does not speak the rpstream protocol: it answered as an HTTP/1 server; no rpstream node at " + refused + ": connection refused"},
		// One address that is a node is enough.
		{refused + "," + node, []string{"ls"}, ""},
	} {
		start := time.Now()
		code, _, errs := streamcli(ctx, "", nil, append([]string{"--node", tc.node}, tc.args...)...)
		if took := time.Since(start); took > 4*time.Second {
			t.Errorf("--node %s %v took %v", tc.node, tc.args, took)
		}
		if tc.want == "" {
			if code != 0 {
				t.Errorf("--node %s %v: exit %d: %s", tc.node, tc.args, code, errs)
			}
			continue
		}
		if code != 1 || !strings.HasPrefix(errs, tc.want) {
			t.Errorf("--node %s %v: exit %d, %q; want exit 1, %q", tc.node, tc.args, code, errs, tc.want)
		}
	}

	// A port that accepts and says nothing (a hung node, a peer port) cannot
	// be told at once: streamcli says so, then tries for --timeout.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		var held []net.Conn // open and silent until the listener closes
		for {
			c, err := silent.Accept()
			if err != nil {
				for _, c := range held {
					c.Close()
				}
				return
			}
			held = append(held, c)
		}
	}()
	start := time.Now()
	code, _, errs := streamcli(ctx, "", nil, "--node", silent.Addr().String(), "append", "s", "x", "--timeout", "1s")
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("a silent address took %v", took)
	}
	if code != 1 || !strings.HasPrefix(errs, "streamcli: no answer from "+silent.Addr().String()+" within 3s") || !strings.Contains(errs, "trying for 1s\nstreamcli append: unavailable") {
		t.Errorf("a silent address: exit %d, %q", code, errs)
	}
}
