package integration

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/client"
	"github.com/rpstream/rpstream/internal/proccluster"
)

// shmDir is a fresh directory on tmpfs (/dev/shm) if there is one, where
// the blocks of the streams' files are memory and are measured as such;
// else under the test's temporary directory.
func shmDir(t *testing.T) string {
	t.Helper()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		dir, err := os.MkdirTemp("/dev/shm", "rpstream-test-")
		if err == nil {
			t.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
	}
	return t.TempDir()
}

// TestManyStreamsIdleCloseReopen creates a few hundred replicated streams
// (three copies) on three streamnode processes, appends to each, and
// checks that once idle every stream and copy is closed (the nodes' open
// file descriptors back near where they started), that the memory held
// per idle stream and copy (anonymous memory, page tables and the files'
// blocks on tmpfs) stays under 256 KiB, and that reads, tails and appends
// reopen the streams transparently, under the same epoch (an idle reopen
// takes no new epoch and writes no epoch marker).
func TestManyStreamsIdleCloseReopen(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs streamnode processes")
	}
	const n = 200
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	bin, err := proccluster.BuildOnce()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := proccluster.Start(ctx, proccluster.Config{Binary: bin, Dir: shmDir(t), Nodes: 3,
		Args: []string{"--idle-close", "1s", "--region-size", "64KiB"}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	time.Sleep(time.Second)
	before, err := cl.Memory()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.Dial(strings.Join(cl.ClientAddrs(), ","), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	name := func(i int) string { return fmt.Sprintf("idle-%04d", i) }
	epochs := make([]uint64, n)
	forEach(t, n, 8, func(i int) error {
		if _, err := c.Create(ctx, name(i), client.CreateOptions{Replicas: 3}); err != nil {
			return fmt.Errorf("create %s: %w", name(i), err)
		}
		pos, err := c.Append(ctx, name(i), []byte(fmt.Sprintf("first-%d", i)))
		if err != nil {
			return fmt.Errorf("append to %s: %w", name(i), err)
		}
		st, err := c.Status(ctx, name(i))
		if err != nil {
			return err
		}
		epochs[i] = st.GetEpoch()
		if pos != 0 {
			return fmt.Errorf("%s: first append at %d", name(i), pos)
		}
		return nil
	})

	// Idle: every stream and copy closes within a few reconcile rounds.
	var after proccluster.Memory
	deadline := time.Now().Add(30 * time.Second)
	for {
		if after, err = cl.Memory(); err != nil {
			t.Fatal(err)
		}
		if after.FDs <= before.FDs+30 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d streams idle for 30s: the nodes hold %d file descriptors, %d before the creates", n, after.FDs, before.FDs)
		}
		time.Sleep(500 * time.Millisecond)
	}
	perCopy := float64(after.TotalKiB-before.TotalKiB) / (n * 3)
	t.Logf("memory: before %+v; idle %+v; %.1f KiB per idle stream and copy", before, after, perCopy)
	if perCopy > 256 {
		t.Errorf("%.1f KiB per idle stream and copy, want at most 256", perCopy)
	}

	// Back on demand: a read, a tail and an append each reopen, under the
	// same epoch.
	forEach(t, n, 8, func(i int) error {
		s := name(i)
		switch i % 3 {
		case 0:
			es, _, err := c.Read(ctx, s, 0, 10)
			if err != nil || len(es) != 1 || string(es[0].Data) != fmt.Sprintf("first-%d", i) {
				return fmt.Errorf("read %s after idle: %v, %v", s, es, err)
			}
		case 1:
			tctx, tcancel := context.WithTimeout(ctx, 10*time.Second)
			defer tcancel()
			for e, err := range c.Tail(tctx, s, 0) {
				if err != nil || string(e.Data) != fmt.Sprintf("first-%d", i) {
					return fmt.Errorf("tail %s after idle: %v, %v", s, e, err)
				}
				break
			}
		}
		pos, err := c.Append(ctx, s, []byte("second"))
		if err != nil {
			return fmt.Errorf("append to %s after idle: %w", s, err)
		}
		if pos != 1 {
			return fmt.Errorf("%s: append after idle at %d, want 1 (an epoch marker between?)", s, pos)
		}
		st, err := c.Status(ctx, s)
		if err != nil {
			return err
		}
		if st.GetEpoch() != epochs[i] {
			return fmt.Errorf("%s: epoch %d after an idle reopen, %d before", s, st.GetEpoch(), epochs[i])
		}
		return nil
	})
}

// TestOpenStreamLimit runs one streamnode with --max-open-streams 3: with
// three streams held open by tails, opening a fourth fails with
// ResourceExhausted naming the limit; once a tail ends, its stream is idle
// and the fourth opens in its place.
func TestOpenStreamLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs streamnode processes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	bin, err := proccluster.BuildOnce()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := proccluster.Start(ctx, proccluster.Config{Binary: bin, Dir: t.TempDir(), Nodes: 1,
		Args: []string{"--max-open-streams", "3", "--idle-close", "-1s"}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	c, err := client.Dial(cl.ClientAddrs()[0], client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 4 {
		if _, err := c.Create(ctx, fmt.Sprintf("lim-%d", i), client.CreateOptions{Replicas: 1}); err != nil {
			t.Fatal(err)
		}
	}
	// Each stream opened once (and made active by its node, which opens
	// it: with the limit, reconcile closes another for it), and then left
	// alone: afterwards only this test's calls open streams.
	for i := range 4 {
		if _, err := c.Append(ctx, fmt.Sprintf("lim-%d", i), []byte("x")); err != nil {
			t.Fatalf("append to lim-%d: %v", i, err)
		}
	}
	// Reconcile rounds come at least every 2s.
	time.Sleep(3 * time.Second)
	// Three tails hold three streams open.
	tails := make([]context.CancelFunc, 3)
	var wg sync.WaitGroup
	defer wg.Wait()
	logTail := func() string {
		nd, _ := cl.Node(0)
		return proccluster.LogTail(nd.Log, 30)
	}
	for i := range 3 {
		s := fmt.Sprintf("lim-%d", i)
		tctx, tcancel := context.WithCancel(ctx)
		tails[i] = tcancel
		defer tcancel()
		got := make(chan error, 1)
		wg.Go(func() {
			for _, err := range c.Tail(tctx, s, 0) {
				select {
				case got <- err:
				default:
				}
				if err != nil {
					return
				}
			}
		})
		select {
		case err := <-got:
			if err != nil {
				t.Fatalf("tail of %s: %v\n%s", s, err, logTail())
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("tail of %s got nothing in 15s\n%s", s, logTail())
		}
	}
	_, err = c.Append(ctx, "lim-3", []byte("y"))
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "max-open-streams") {
		t.Fatalf("append to a fourth stream with three held open under --max-open-streams 3: %v, want ResourceExhausted naming the limit", err)
	}
	tails[0]()
	var ok atomic.Bool
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if _, err := c.Append(ctx, "lim-3", []byte("y")); err == nil {
			ok.Store(true)
			break
		} else if status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("append to lim-3 after a tail ended: %v", err)
		}
	}
	if !ok.Load() {
		t.Fatal("lim-3 did not open within 10s of a stream going idle")
	}
}

// forEach runs f(0..n-1) on workers goroutines and fails t with the first
// error.
func forEach(t *testing.T, n, workers int, f func(i int) error) {
	t.Helper()
	var next atomic.Int64
	var first atomic.Pointer[error]
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for first.Load() == nil {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					first.CompareAndSwap(nil, &err)
				}
			}
		})
	}
	wg.Wait()
	if e := first.Load(); e != nil {
		t.Fatal(*e)
	}
}
