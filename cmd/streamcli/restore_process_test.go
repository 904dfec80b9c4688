package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rpstream/rpstream/internal/proccluster"
)

// TestNodeFilesEmbeddedAndRestoreProcess: embedded mode reads a node's
// files (a backup's copy, a leader's stream) as the node serves them,
// without the node's envelope; streamcli restore refuses a stream whose
// leader is live, and with --force rebuilds it on another leader, where
// appends go on after every entry it held.
func TestNodeFilesEmbeddedAndRestoreProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs streamnode processes")
	}
	bin, err := proccluster.BuildOnce()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, err := proccluster.Start(ctx, proccluster.Config{Binary: bin, Dir: t.TempDir(), Nodes: 2, Backup: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	node := func(i int) proccluster.Node {
		n, err := cl.Node(i)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	n1, n2, backup := node(0), node(1), node(2)
	ok(t, "", "--node", n1.ClientAddr, "create", "s1", "--replicas", "2", "--acks", "all")
	ok(t, "", "--node", n1.ClientAddr, "append", "s1", "a", "b", "c")

	// The backup's copy, by the node's data directory and by its
	// replicas/ directory: the data, not the envelope.
	want := "a\nb\nc\n"
	var got string
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if r := run(t, "", "--data", backup.Data, "tail", "s1"); r.code == 0 {
			if got = r.stdout; got == want {
				break
			}
		}
	}
	if got != want {
		t.Fatalf("embedded tail of the backup's copy printed %q, want %q", got, want)
	}
	if out := ok(t, "", "--data", filepath.Join(backup.Data, "replicas"), "tail", "s1", "--output", "json"); !strings.Contains(out, `"position":2,"size":1,"data":"Yw=="`) {
		t.Fatalf("embedded tail --output json of the copy:\n%s", out)
	}
	if out := ok(t, "", "--data", n1.Data, "tail", "s1"); out != want {
		t.Fatalf("embedded tail of the leader's stream printed %q, want %q", out, want)
	}
	if out := ok(t, "", "--data", backup.Data, "ls"); !strings.Contains(out, "s1") {
		t.Fatalf("embedded ls of the backup's data directory does not list s1:\n%s", out)
	}
	fails(t, 1, "", []string{"--data", backup.Data, "append", "s1", "x"}, "a node's copy", "append through the node")

	// restore: refused while the leader is live; forced onto n2.
	fails(t, 1, "", []string{"--node", n2.ClientAddr, "restore", "s1"}, "cannot restore s1", "use force")
	out := ok(t, "", "--node", n2.ClientAddr, "restore", "s1", "--force", "--leader", n2.Name)
	if !strings.Contains(out, "restored s1 from ") || !strings.Contains(out, "(3 entries") || !strings.Contains(out, "leader "+n2.Name) {
		t.Fatalf("restore printed:\n%s", out)
	}
	t.Logf("streamcli restore s1 --force --leader %s:\n%s", n2.Name, out)
	ok(t, "", "--node", n2.ClientAddr, "append", "s1", "d")
	if out := ok(t, "", "--node", n2.ClientAddr, "tail", "s1"); out != want+"d\n" {
		t.Fatalf("tail after the restore printed %q, want %q", out, want+"d\n")
	}
}
