package integration

import (
	"context"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/client"
	"github.com/rpstream/rpstream/internal/proccluster"
)

// TestRestoreFromBackup: the case failover cannot handle. Three stream
// nodes and a backup target; the backup is the catalog's only voter, so
// that the catalog outlives the stream nodes. Three streams (acks quorum,
// three replicas and the backup's copy), two led by n1 and one by n2,
// take appends. A restore while a stream's leader is live is refused
// without force. Once the backup holds every entry, every stream node is
// killed, its data directory wiped, and restarted: new incarnations, whose
// old copies hold nothing, so no election can help and the streams are
// unavailable. Then every stream n1 took with it (all three: each held a
// copy there and lost its leader) is restored as one (--lost n1): each
// from the backup's copy, the only one left, to a new leader under a new
// epoch with new copies. Every acknowledged entry
// is back at its position, appends go on, and the new leader's file and
// every copy (the backup's included) hold the same committed entries.
func TestRestoreFromBackup(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	cl := startClusterConfig(t, ctx, proccluster.Config{Nodes: 3, Backup: true, Args: []string{"--voters", "backup"}})
	backup := cl.Len() - 1
	streams := []struct {
		name string
		via  int // the member whose client creates it: it leads it
	}{{"lost-a", 0}, {"lost-b", 0}, {"lost-c", 1}}
	acked := map[string]map[uint64]string{}
	for _, s := range streams {
		admin := dial(t, mustNode(cl, s.via).ClientAddr, client.Options{})
		if _, err := admin.Create(ctx, s.name, client.CreateOptions{Replicas: 3, Acks: api.AckPolicy_ACK_POLICY_QUORUM}); err != nil {
			t.Fatal(err)
		}
		acked[s.name] = load(t, ctx, mustNode(cl, s.via).ClientAddr, s.name, 0, 2, 200, 8, nil)
		if t.Failed() {
			return
		}
	}
	// The backup is written as the replicas are, but not waited for:
	// wait until it holds every committed entry, as an operator would
	// before wiping (it is the restore's only source).
	for _, s := range streams {
		c := dial(t, mustNode(cl, s.via).ClientAddr, client.Options{})
		if !waitFor(ctx, 20*time.Second, func() bool {
			st, err := c.Status(ctx, s.name)
			if err != nil {
				return false
			}
			for _, r := range st.ReplicaStatus {
				if r.Backup && r.Persisted >= st.Committed && st.Committed >= uint64(len(acked[s.name])) {
					return true
				}
			}
			return false
		}) {
			t.Fatalf("%s: the backup's copy never caught up", s.name)
		}
	}
	// A restore of a stream whose leader is live is refused.
	admin := dial(t, mustNode(cl, backup).ClientAddr, client.Options{})
	if _, err := admin.Restore(ctx, &api.RestoreStreamRequest{Stream: "lost-c"}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("restore of a stream with a live leader: %v, want FailedPrecondition", err)
	}

	for i := range backup {
		if err := cl.Kill(i); err != nil {
			t.Fatal(err)
		}
		if err := os.RemoveAll(mustNode(cl, i).Data); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, backup)
	for i := range backup {
		wg.Go(func() { errs <- cl.Start(ctx, i) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// The wiped nodes are back, but no copy on a stream node holds the
	// streams: reads and appends fail, no election helps.
	rctx, rcancel := context.WithTimeout(ctx, 3*time.Second)
	probe := dial(t, mustNode(cl, 0).ClientAddr, client.Options{MaxAttempts: 1})
	if _, err := probe.Append(rctx, "lost-a", []byte("x")); err == nil {
		t.Fatal("an append to a stream whose every stream node was wiped succeeded before its restore")
	}
	rcancel()

	// Every stream n1 took with it, asked of any node (the backup here):
	// the two it led, and lost-c, whose copy on n1 was lost with its
	// leader's.
	start := time.Now()
	resp, err := admin.Restore(ctx, &api.RestoreStreamRequest{Node: mustNode(cl, 0).Name})
	if err != nil {
		t.Fatalf("restore --lost n1: %v", err)
	}
	if len(resp.Streams) != 3 {
		t.Fatalf("restore --lost n1 restored %d streams, want 3: %v", len(resp.Streams), resp.Streams)
	}
	// Restored, each has a live leader: a restore by name is refused now.
	if _, err := admin.Restore(ctx, &api.RestoreStreamRequest{Stream: "lost-c"}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("restore of a restored stream: %v, want FailedPrecondition", err)
	}
	t.Logf("three streams restored in %v", time.Since(start).Round(time.Millisecond))
	leaders := map[string]int{}
	for _, r := range resp.Streams {
		t.Logf("%s: from %s (%d entries, epoch %d), leader %s epoch %d, copies %v; surveyed %v", r.Stream, r.Source, r.Entries, r.SourceEpoch, r.Leader, r.Epoch, r.Copies, r.Surveyed)
		if r.Source != mustNode(cl, backup).Name {
			t.Errorf("%s restored from %s, want the backup", r.Stream, r.Source)
		}
		if r.Entries < uint64(len(acked[r.Stream])) {
			t.Errorf("%s: the source holds %d entries, %d were acknowledged", r.Stream, r.Entries, len(acked[r.Stream]))
		}
		if len(r.Copies) != 4 || r.Copies[3] != mustNode(cl, backup).Name || slices.Contains(r.Copies[:3], mustNode(cl, backup).Name) {
			t.Errorf("%s: copies %v, want three stream nodes and the backup last", r.Stream, r.Copies)
		}
		leaders[r.Stream] = indexOf(t, cl, r.Leader)
	}
	// Every acknowledged entry is back; appends go on at the new leader.
	for _, s := range streams {
		li := leaders[s.name]
		more := load(t, ctx, mustNode(cl, li).ClientAddr, s.name, 2, 1, 100, 8, nil)
		if t.Failed() {
			return
		}
		for p, d := range more {
			if old, dup := acked[s.name][p]; dup {
				t.Fatalf("%s: position %d acknowledged before the restore (%s) and after (%s)", s.name, p, old, d)
			}
			acked[s.name][p] = d
		}
		if dups := checkTail(t, ctx, mustNode(cl, li).ClientAddr, s.name, acked[s.name], 3); dups != 0 {
			t.Errorf("%s: %d entries stored twice", s.name, dups)
		}
	}
	// The leader's file and every copy hold the same committed entries
	// (this stops the cluster).
	s := streams[2].name
	if copies := compareCopies(t, cl, leaders[s], s, len(acked[s])); copies != 3 {
		t.Errorf("%d copies of %s compared, want 3 (two new replicas and the backup's)", copies, s)
	}
}
