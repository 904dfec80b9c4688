package main

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rpstream/rpstream/node"
)

// TestNodeCommandsProcess runs the built streamcli against a real node in
// network mode: commands that do not watch their context must still have
// a live one for their calls (main once cancelled it before running them).
func TestNodeCommandsProcess(t *testing.T) {
	srv, err := node.New(node.DefaultConfig(t.TempDir()))
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
			t.Errorf("shutdown: %v", err)
		}
		<-served
	})
	addr := lis.Addr().String()

	ok(t, "", "--node", addr, "create", "s1", "--replicas", "3", "--acks", "quorum")
	if got := positions(t, ok(t, "", "--node", addr, "append", "s1", "a", "b")); len(got) != 2 || got[0] != 0 || got[1] != 1 {
		t.Fatalf("append printed positions %v, want [0 1]", got)
	}
	if out := ok(t, "", "--node", addr, "tail", "s1"); out != "a\nb\n" {
		t.Fatalf("tail printed %q, want \"a\\nb\\n\"", out)
	}
	if out := ok(t, "", "--node", addr, "ls"); !strings.Contains(out, "s1") {
		t.Fatalf("ls does not list s1:\n%s", out)
	}
	ok(t, "", "--node", addr, "status", "s1")
	ok(t, "", "--node", addr, "members")
}
