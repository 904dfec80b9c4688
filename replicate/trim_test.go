package replicate_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rpstream/rpstream/local"
	"github.com/rpstream/rpstream/rdma"
	"github.com/rpstream/rpstream/rdma/tcp"
	"github.com/rpstream/rpstream/replicate"
	"github.com/rpstream/rpstream/replicate/quorum"
)

// trimLeader is c.leader with Discard on.
func (c *testCluster) trimLeader() *replicate.Leader {
	c.t.Helper()
	cfg := replicate.LeaderConfig{
		Stream: c.stream, Writer: "leader", Epoch: 1,
		Replicator: replicate.Config{Policy: quorum.Majority, MaxRetryTicks: 8},
		Provider:   tcp.Provider{}, RDMA: rdma.LoopbackConfig(testSecret),
		Tick: 5 * time.Millisecond, Logger: quietLogger(), Discard: true,
	}
	for _, r := range c.replicas {
		cfg.Replicas = append(cfg.Replicas, replicate.ReplicaAddr{ID: r.id, Addr: r.addr})
	}
	l, err := replicate.StartLeader(context.Background(), cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { l.Close() })
	return l
}

// allocated is the storage a file holds, in bytes.
func allocated(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Blocks * 512
}

// TestLeaderTrimReachesEveryCopy trims a replicated stream while appends
// go on (so freed slots are reused at once) and one replica is down: every
// copy ends at the leader's head with the leader's bytes, the one that
// was down included, and the copies give the trimmed slots' storage back.
func TestLeaderTrimReachesEveryCopy(t *testing.T) {
	c := newCluster(t, t.TempDir(), 3)
	l := c.trimLeader()
	want := appendAll(t, l, 8, 1500)
	eventually(t, "every replica caught up", func() bool { return caughtUp(l, c.stream) })
	full := allocated(t, c.replicas[0].path)

	c.replicas[2].stop()
	var mu sync.Mutex
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(done)
		for k, p := range appendAll(t, l, 4, 1500) {
			mu.Lock()
			want[k] = p
			mu.Unlock()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	heads := 0
	finished := false
	for try := 0; try < 1000 && !finished; try++ {
		select {
		case <-done:
			finished = true // one more round, after the last append
		default:
		}
		before := l.Committed() - 300
		if l.Committed() < 300 {
			before = 0
		}
		old := c.stream.Head()
		head, err := l.Trim(ctx, before)
		if err != nil {
			t.Fatal(err)
		}
		if head > before || head < old {
			t.Fatalf("trim before %d: head %d (was %d)", before, head, old)
		}
		if head > old {
			heads++
		}
		time.Sleep(20 * time.Millisecond)
	}
	wg.Wait()
	if heads < 2 {
		t.Fatalf("the head moved %d times: the test trimmed too little", heads)
	}
	if got := len(c.stream.Regions()); got > 10 {
		t.Fatalf("%d regions live after the trims", got)
	}

	// The replica that was down comes back behind the head: it is
	// brought to it and caught up.
	startReplica(t, c.replicas[2])
	eventually(t, "every replica caught up after the trims", func() bool { return caughtUp(l, c.stream) })
	// One more trim with every replica connected.
	head, err := l.Trim(ctx, l.Committed())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys(want) {
		if k < head {
			delete(want, k)
		}
	}
	appendAll(t, l, 2, 50)
	eventually(t, "every replica caught up after the last trim", func() bool { return caughtUp(l, c.stream) })
	t.Logf("head moved %d times, now %d of %d; %d regions live; replica storage %d bytes before the trims", heads, c.stream.Head(), c.stream.Committed(), len(c.stream.Regions()), full)
	for _, r := range c.replicas[:2] {
		t.Logf("%s holds %d bytes", r.id, allocated(t, r.path))
		if a := allocated(t, r.path); a >= full {
			t.Errorf("%s holds %d bytes after the trims, %d before: no storage given back", r.id, a, full)
		}
	}
	for _, r := range c.replicas {
		cp, err := local.OpenCopy(r.path, 0)
		if err != nil {
			t.Fatal(err)
		}
		if got := cp.Head(); got != c.stream.Head() {
			t.Errorf("%s: copy's head %d, the leader's %d", r.id, got, c.stream.Head())
		}
		cp.Close()
	}
	l.Close()
	c.checkReplicas(want)
}

func keys(m map[uint64][]byte) []uint64 {
	out := make([]uint64, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestTrimCopyCrashImages: the images a copy can be left in by a crash
// at any point of a trim carried to it (trim.go: the leader's superblock,
// then line 0 of each freed region zeroed, oldest first; one Conn's
// writes apply in order, so a crash leaves a prefix of them, the last
// possibly torn) all recover, at the old head or the new one, never later
// than the leader's (the catalog's head is at or after the leader's),
// with every entry from there to the end.
func TestTrimCopyCrashImages(t *testing.T) {
	dir := t.TempDir()
	s, err := local.Create(dir+"/leader", local.Options{RegionSize: testRegionSize, SpareRegions: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 300 {
		if _, err := s.Append(payload(i)); err != nil {
			t.Fatal(err)
		}
	}
	copyImage := append([]byte(nil), s.Memory().Bytes()...) // the copy before the trim
	old := s.Regions()
	if len(old) < 4 {
		t.Fatalf("%d regions: the test needs 4", len(old))
	}
	head, err := s.Trim(old[3].First)
	if err != nil || head != old[3].First {
		t.Fatalf("trim: %d, %v", head, err)
	}
	sb := s.Memory().Bytes()[:2048]
	type write struct {
		off int
		b   []byte
	}
	writes := []write{{0, sb}}
	for _, r := range old[:3] {
		writes = append(writes, write{r.Offset, make([]byte, 64)})
	}
	committed := s.Committed()
	for n := 0; n <= len(writes); n++ {
		for _, torn := range []bool{false, true} {
			if torn && n == 0 {
				continue
			}
			img := append([]byte(nil), copyImage...)
			for i, w := range writes[:n] {
				b := w.b
				if torn && i == n-1 {
					b = b[:len(b)/2] // the last write half done
				}
				copy(img[w.off:], b)
			}
			path := fmt.Sprintf("%s/copy-%d-%v", dir, n, torn)
			if err := os.WriteFile(path, img, 0o644); err != nil {
				t.Fatal(err)
			}
			rs, err := local.Open(path, local.Options{})
			if err != nil {
				t.Fatalf("%d writes (torn %v): the copy does not recover: %v", n, torn, err)
			}
			h := rs.Head()
			if h != 0 && h != head || h > head {
				t.Errorf("%d writes (torn %v): head %d, want 0 or %d", n, torn, h, head)
			}
			it := rs.Iterator(h)
			k := h
			for it.Next() {
				if !bytes.Equal(it.Entry().Data, payload(int(k))) {
					t.Fatalf("%d writes: entry %d differs", n, k)
				}
				k++
			}
			rs.Close()
			if it.Err() != nil || k != committed {
				t.Fatalf("%d writes (torn %v): read %d..%d (%v), want to %d", n, torn, h, k, it.Err(), committed)
			}
		}
	}
}
