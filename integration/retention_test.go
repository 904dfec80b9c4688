package integration

import (
	"context"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/client"
	"github.com/rpstream/rpstream/internal/proccluster"
	"github.com/rpstream/rpstream/local"
)

// TestRetentionUnderLoad: a replicated stream with a retention policy of
// 1 MiB is appended to under load while a named consumer holding
// retention reads it, acknowledging as it goes (batched commits), and a
// follower is killed and restarted. Retention trims the leader and every
// copy, never past what the consumer acknowledged: the consumer reads
// every acknowledged entry from position 0, no trim ever passes its
// committed position, and at the end every copy holds the leader's
// entries from the same head, no later than the catalog's, with the
// trimmed regions' storage given back.
func TestRetentionUnderLoad(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	cl := startFailureClusterArgs(t, ctx, 3, false, "--retention-every", "100ms", "--ack-every", "100ms")
	const (
		stream   = "retained"
		consumer = "reader"
		maxBytes = 1 << 20 // four 256 KiB regions
	)
	admin := dial(t, cl.ClientAddrs()[0], client.Options{})
	st, err := admin.Create(ctx, stream, client.CreateOptions{Replicas: 3, Acks: api.AckPolicy_ACK_POLICY_QUORUM,
		Retention: &api.Retention{MaxBytes: maxBytes}})
	if err != nil {
		t.Fatal(err)
	}
	leader := indexOf(t, cl, st.Leader)
	follower := (leader + 1) % 3
	addr := mustNode(cl, leader).ClientAddr
	if _, err := admin.AddConsumer(ctx, stream, consumer, 0, true); err != nil {
		t.Fatal(err)
	}

	// The consumer: tails from its acknowledged position, records what
	// it was delivered, acknowledges every 100 entries (asynchronously,
	// as a client processing entries would) and sleeps now and then, so
	// that it lags and its hold matters.
	reader := dial(t, addr, client.Options{MaxAttempts: 200, Backoff: 20 * time.Millisecond})
	var mu sync.Mutex
	delivered := map[uint64]string{}
	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	var readErr error
	wg.Go(func() {
		k, err := reader.Consumer(rctx, stream, consumer)
		if err != nil {
			readErr = err
			return
		}
		n := 0
		for e, err := range reader.Tail(rctx, stream, k.Acked) {
			if err != nil {
				if rctx.Err() == nil {
					readErr = err
				}
				return
			}
			mu.Lock()
			delivered[e.Position] = string(e.Data)
			mu.Unlock()
			if n++; n == 1500 {
				// A stretch without acknowledgements: the policy would
				// trim past the consumer, its hold keeps the entries.
				time.Sleep(2 * time.Second)
			}
			if n%100 == 0 {
				if _, err := reader.Ack(rctx, stream, consumer, e.Position+1, false); err != nil && rctx.Err() == nil {
					readErr = err
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	})

	// The hold is checked throughout: the catalog's trim head and the
	// leader's head never pass the consumer's committed position.
	checks, held := 0, 0
	var holdErr string
	watcher := dial(t, addr, client.Options{})
	wg.Go(func() {
		for rctx.Err() == nil {
			before, err := watcher.Consumer(rctx, stream, consumer)
			var s *api.StreamStatusResponse
			if err == nil {
				s, err = watcher.Status(rctx, stream)
			}
			var after *api.Consumer
			if err == nil {
				after, err = watcher.Consumer(rctx, stream, consumer)
			}
			if err != nil {
				time.Sleep(50 * time.Millisecond) // not in a tight loop against a node that fails
				continue
			}
			if s.TrimHead > after.Acked || s.Head > after.Acked {
				holdErr = "trimmed past the consumer's hold"
				t.Errorf("trim head %d, head %d; the consumer's committed position %d then %d", s.TrimHead, s.Head, before.Acked, after.Acked)
				return
			}
			checks++
			used := uint64(0)
			for _, r := range s.Regions {
				used += r.Used
			}
			if used > maxBytes+2*256<<10 {
				held++ // more than the policy keeps: the hold holds
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	acked := loadPadded(t, ctx, addr, stream, 0, 2, 1200, 8, 1000, nil)
	if err := cl.Kill(follower); err != nil {
		t.Fatal(err)
	}
	for p, d := range loadPadded(t, ctx, addr, stream, 2, 2, 1200, 8, 1000, nil) {
		acked[p] = d
	}
	if err := cl.Start(ctx, follower); err != nil {
		t.Fatal(err)
	}
	for p, d := range loadPadded(t, ctx, addr, stream, 4, 2, 600, 8, 1000, nil) {
		acked[p] = d
	}
	if t.Failed() {
		return
	}

	// The consumer reads to the end and commits; retention then trims
	// to the policy.
	var end uint64
	if !waitFor(ctx, 20*time.Second, func() bool {
		s, err := admin.Status(ctx, stream)
		if err != nil {
			return false
		}
		end = s.Committed
		mu.Lock()
		defer mu.Unlock()
		for p := range acked {
			if _, ok := delivered[p]; !ok {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("the consumer was not delivered every acknowledged entry (read error: %v)", readErr)
	}
	if _, err := admin.Ack(ctx, stream, consumer, end, true); err != nil {
		t.Fatal(err)
	}
	var final *api.StreamStatusResponse
	if !waitFor(ctx, 15*time.Second, func() bool {
		final, err = admin.Status(ctx, stream)
		if err != nil {
			return false
		}
		used := uint64(0)
		for _, r := range final.Regions {
			used += r.Used
		}
		caughtUp := !final.UnderReplicated
		for _, r := range final.ReplicaStatus {
			caughtUp = caughtUp && r.Persisted >= final.Committed
		}
		return caughtUp && final.Head > 0 && used <= maxBytes+256<<10
	}) {
		t.Fatalf("retention did not trim to its policy with every copy caught up: %v", final)
	}
	rcancel()
	wg.Wait()
	if readErr != nil {
		t.Fatalf("consumer: %v", readErr)
	}
	if holdErr != "" || checks == 0 || held == 0 {
		t.Fatalf("hold checks: %d, of which %d found the hold keeping more than the policy; %s", checks, held, holdErr)
	}
	mu.Lock()
	for p, d := range acked {
		if delivered[p] != d {
			t.Fatalf("position %d: the consumer got %q, %q was acknowledged", p, delivered[p], d)
		}
	}
	mu.Unlock()
	// The consumer's last acknowledgements may still let retention trim
	// further: wait until the catalog's trim head holds still for longer
	// than a retention round (1 s), so that the files are compared with
	// the head they were trimmed to.
	if !waitFor(ctx, 15*time.Second, func() bool {
		before, err := admin.Status(ctx, stream)
		if err != nil {
			return false
		}
		time.Sleep(1500 * time.Millisecond)
		after, err := admin.Status(ctx, stream)
		if err != nil || after.TrimHead != before.TrimHead {
			return false
		}
		final = after
		return true
	}) {
		t.Fatalf("the catalog's trim head did not settle: %v", final)
	}
	t.Logf("%d entries acknowledged; head %d (trim head %d) of %d; %d hold checks, %d holding back the policy", len(acked), final.Head, final.TrimHead, final.Committed, checks, held)

	// Every copy from the leader's head, at the catalog's head at the
	// latest, byte for byte; the trimmed regions' storage given back.
	for i := range cl.Len() {
		if err := cl.Stop(i); err != nil {
			t.Error(err)
		}
	}
	lpath := proccluster.LeaderFile(mustNode(cl, leader).Data, stream)
	ls, err := local.OpenReader(lpath, local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	head := ls.Head()
	ls.Close()
	if head == 0 || head > final.TrimHead {
		t.Fatalf("the leader's file starts at %d, the catalog's trim head is %d", head, final.TrimHead)
	}
	var copies []string
	for i := range cl.Len() {
		if i == leader {
			continue
		}
		p := proccluster.ReplicaFile(mustNode(cl, i).Data, stream)
		rs, err := local.OpenReader(p, local.Options{})
		if err != nil {
			t.Fatalf("copy on %s: %v", mustNode(cl, i).Name, err)
		}
		if rs.Head() != head {
			t.Errorf("copy on %s starts at %d, the leader's at %d", mustNode(cl, i).Name, rs.Head(), head)
		}
		rs.Close()
		if a := allocatedBytes(t, p); a > 2*maxBytes {
			t.Errorf("copy on %s holds %d bytes of storage for a policy of %d", mustNode(cl, i).Name, a, maxBytes)
		}
		copies = append(copies, p)
	}
	if a := allocatedBytes(t, lpath); a > 2*maxBytes {
		t.Errorf("the leader's file holds %d bytes of storage for a policy of %d", a, maxBytes)
	}
	if _, err := proccluster.CompareReplicas(lpath, copies); err != nil {
		t.Fatal(err)
	}
}

// allocatedBytes is the storage a file holds.
func allocatedBytes(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Blocks * 512
}
