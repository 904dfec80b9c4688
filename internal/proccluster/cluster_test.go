package proccluster

import (
	"context"
	"errors"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/rpstream/rpstream/client"
)

func TestMain(m *testing.M) {
	code := m.Run()
	RemoveBuilt()
	os.Exit(code)
}

// alive reports whether a process with pid exists (signal 0).
func alive(pid int) bool {
	return pid > 0 && syscall.Kill(pid, 0) == nil
}

func TestClusterKillStopStart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs streamnode processes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	bin, err := BuildOnce()
	if err != nil {
		t.Fatal(err)
	}
	c, err := Start(ctx, Config{Binary: bin, Dir: t.TempDir(), Nodes: 2, Backup: true})
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	t.Cleanup(func() {
		c.Close()
		for _, p := range pids {
			if alive(p) {
				t.Errorf("pid %d alive after Close", p)
			}
		}
	})
	if c.Len() != 3 || len(c.ClientAddrs()) != 3 {
		t.Fatalf("Len %d, addrs %v", c.Len(), c.ClientAddrs())
	}
	if n, _ := c.Node(2); n.Role != "backup" || n.Name != "backup" {
		t.Fatalf("last member %+v, want the backup", n)
	}
	if _, err := c.Node(3); !errors.Is(err, ErrIndex) {
		t.Fatalf("Node(3): %v", err)
	}
	for i := range c.Len() {
		pids = append(pids, c.PID(i))
	}
	// Each member serves its own address and holds data under its dir.
	cl, err := client.Dial(c.ClientAddrs()[0], client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := cl.Create(ctx, "s", client.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Append(ctx, "s", []byte("one")); err != nil {
		t.Fatal(err)
	}
	// Start waited for gossip: every member is listed alive.
	ms, err := cl.Members(ctx)
	if err != nil || c.converged(ms) != nil || len(ms) != 3 {
		t.Fatalf("members: %v %v", ms, err)
	}
	n1, _ := c.Node(0)
	if _, err := os.Stat(LeaderFile(n1.Data, "s")); err != nil {
		t.Fatal(err)
	}

	// Kill: the process is gone at once; Start brings it back with its data.
	old := c.PID(0)
	if err := c.Kill(0); err != nil {
		t.Fatal(err)
	}
	if c.Running(0) || alive(old) {
		t.Fatal("n1 still running after Kill")
	}
	if err := c.Start(ctx, 0); err != nil {
		t.Fatal(err)
	}
	pids = append(pids, c.PID(0))
	if err := c.Start(ctx, 0); err == nil {
		t.Fatal("Start of a running member succeeded")
	}
	st, err := cl.Status(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	// One entry, then the restarted leader's epoch marker (a takeover's
	// first entry, which reads skip).
	if st.Committed != 2 {
		t.Fatalf("after restart committed %d, want 2 (the entry and the new epoch's marker)", st.Committed)
	}

	// Stop: SIGTERM, exit 0; a stopped member can be stopped or killed again.
	if err := c.Stop(2); err != nil {
		t.Fatal(err)
	}
	if c.Running(2) || c.Stop(2) != nil || c.Kill(2) != nil {
		t.Fatal("stopped backup misbehaves")
	}
	if err := c.Start(ctx, 2); err != nil {
		t.Fatal(err)
	}
	pids = append(pids, c.PID(2))
	if err := c.Kill(7); !errors.Is(err, ErrIndex) {
		t.Fatalf("Kill(7): %v", err)
	}
}

func TestStartErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Start(context.Background(), Config{Dir: dir}); err == nil {
		t.Fatal("no binary accepted")
	}
	if _, err := Start(context.Background(), Config{Binary: "/bin/true", Dir: dir + "/missing"}); err == nil {
		t.Fatal("missing dir accepted")
	}
	if _, err := Start(context.Background(), Config{Binary: "/bin/true", Dir: dir, Nodes: -1}); err == nil {
		t.Fatal("negative nodes accepted")
	}
	// A binary that exits at once is reported, not waited for.
	_, err := Start(context.Background(), Config{Binary: "/bin/false", Dir: dir, Nodes: 1, StartTimeout: 20 * time.Second})
	if !errors.Is(err, ErrExited) {
		t.Fatalf("exiting binary: %v", err)
	}
	if _, err := FindBinary(dir); err == nil {
		t.Fatal("a directory accepted as the binary")
	}
}
