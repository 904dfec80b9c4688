package integration

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/client"
	"github.com/rpstream/rpstream/internal/proccluster"
	"github.com/rpstream/rpstream/local"
)

// leaderOf asks the members the test can reach for stream's leader and
// epoch, until one names a leader other than not ("" for any) or ctx
// ends.
func leaderOf(t *testing.T, ctx context.Context, cl *proccluster.Cluster, stream, not string) (string, uint64) {
	t.Helper()
	l, e, err := findLeader(ctx, cl, stream, not)
	if err != nil {
		t.Fatal(err)
	}
	return l, e
}

// findLeader is leaderOf for any goroutine.
func findLeader(ctx context.Context, cl *proccluster.Cluster, stream, not string) (string, uint64, error) {
	var last error
	for ctx.Err() == nil {
		for i := range cl.Len() {
			if !cl.Running(i) {
				continue
			}
			c, err := client.Dial(mustNode(cl, i).ClientAddr, client.Options{})
			if err != nil {
				continue
			}
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			st, err := c.Status(sctx, stream)
			cancel()
			c.Close()
			if err == nil && st.Leader != "" && st.Leader != not {
				return st.Leader, st.Epoch, nil
			}
			if err != nil {
				last = err
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return "", 0, fmt.Errorf("no leader of %s other than %q: %v (last answer: %v)", stream, not, ctx.Err(), last)
}

// TestFailoverLeaderKilled: the leader of a stream with three replicas
// (quorum) is SIGKILLed under load, again and again; it is restarted only
// once another node leads the stream (the controller elected it when the
// old leader's lease expired, and it took the stream over). The clients
// know every node (seeds) and follow the leader. At the end every
// acknowledged append is read back exactly once at the position it was
// acknowledged with, each client's in its order, and every copy holds
// the final leader's committed entries byte for byte.
func TestFailoverLeaderKilled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := startFailureCluster(t, ctx, 3, false)
	const stream = "failover"
	admin := dial(t, cl.ClientAddrs()[0], client.Options{})
	st, err := admin.Create(ctx, stream, client.CreateOptions{Replicas: 3, Acks: api.AckPolicy_ACK_POLICY_QUORUM})
	if err != nil {
		t.Fatal(err)
	}
	seeds := strings.Join(cl.ClientAddrs(), ",")
	const clients, each, window, kills = 3, 3000, 16, 3
	var mu sync.Mutex
	n := 0
	marks := make(chan struct{}, kills)
	progress := func() {
		mu.Lock()
		n++
		if n%(clients*each/(kills+1)) == 0 {
			select {
			case marks <- struct{}{}:
			default:
			}
		}
		mu.Unlock()
	}
	faultErr := make(chan error, 1)
	loaded := make(chan struct{})
	leader := st.Leader
	var failovers []time.Duration
	go func() {
		for k := 0; k < kills; k++ {
			select {
			case <-marks:
			default:
				select {
				case <-marks:
				case <-loaded:
					faultErr <- nil
					return
				case <-ctx.Done():
					faultErr <- ctx.Err()
					return
				}
			}
			if ctx.Err() != nil {
				faultErr <- ctx.Err()
				return
			}
			i, err := memberIndex(cl, leader)
			if err != nil {
				faultErr <- err
				return
			}
			if err := cl.Kill(i); err != nil {
				faultErr <- err
				return
			}
			killed := time.Now()
			next, epoch, err := findLeader(ctx, cl, stream, leader)
			if err != nil {
				faultErr <- err
				return
			}
			failovers = append(failovers, time.Since(killed))
			t.Logf("killed the leader %s; %s leads under epoch %d after %v", leader, next, epoch, time.Since(killed).Round(time.Millisecond))
			if err := cl.Start(ctx, i); err != nil {
				faultErr <- err
				return
			}
			leader = next
		}
		faultErr <- nil
	}()
	acked := load(t, ctx, seeds, stream, 0, clients, each, window, progress)
	close(loaded)
	if err := <-faultErr; err != nil {
		t.Fatal(err)
	}
	if t.Failed() {
		return
	}
	if len(acked) != clients*each {
		t.Fatalf("%d appends acknowledged, want %d", len(acked), clients*each)
	}
	if len(failovers) == 0 {
		t.Fatal("no leader was killed")
	}
	final, _ := leaderOf(t, ctx, cl, stream, "")
	li := indexOf(t, cl, final)
	dups := checkTail(t, ctx, mustNode(cl, li).ClientAddr, stream, acked, clients)
	if dups != 0 {
		t.Errorf("%d entries stored twice across the failovers", dups)
	}
	copies := compareCopies(t, cl, li, stream, len(acked))
	if copies != 2 {
		t.Errorf("%d copies compared, want 2", copies)
	}
	t.Logf("%d failovers %v; %d acknowledged, %d stored twice; %d copies identical to %s's", len(failovers), failovers, len(acked), dups, copies, final)
}

// TestFailoverLeaderPaused: the leader is stopped (SIGSTOP) past its
// lease while appends go on through another node: the controller elects
// another leader, which fences the copies. When the old leader is
// continued (SIGCONT) its writes to the copies are refused, it learns of
// its successor from the catalog and turns its files into a copy; no
// second writer ever succeeds: every acknowledged append is read back
// once at its position, and every copy ends identical to the new
// leader's.
func TestFailoverLeaderPaused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := startFailureCluster(t, ctx, 3, false)
	const stream = "paused"
	admin := dial(t, cl.ClientAddrs()[0], client.Options{})
	st, err := admin.Create(ctx, stream, client.CreateOptions{Replicas: 3, Acks: api.AckPolicy_ACK_POLICY_QUORUM})
	if err != nil {
		t.Fatal(err)
	}
	old := indexOf(t, cl, st.Leader)
	const via = 2
	acked := load(t, ctx, mustNode(cl, via).ClientAddr, stream, 0, 2, 300, 8, nil)
	if t.Failed() {
		return
	}
	pid := cl.PID(old)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	continued := false
	cont := func() {
		if !continued {
			syscall.Kill(pid, syscall.SIGCONT)
			continued = true
		}
	}
	defer cont()
	next, epoch := leaderOf(t, ctx, cl, stream, st.Leader)
	t.Logf("%s paused; %s leads under epoch %d", st.Leader, next, epoch)
	more := load(t, ctx, mustNode(cl, via).ClientAddr, stream, 2, 2, 300, 8, nil)
	cont()
	// The old leader, continued, is a follower now: appends sent to it
	// are refused or routed, never stored by it as leader.
	oc := dial(t, mustNode(cl, old).ClientAddr, client.Options{MaxAttempts: 1})
	actx, acancel := context.WithTimeout(ctx, 5*time.Second)
	_, aerr := oc.API().Append(actx, &api.AppendRequest{Stream: stream, Data: []byte("stale")})
	acancel()
	t.Logf("append at the continued old leader: %v", aerr)
	more2 := load(t, ctx, mustNode(cl, via).ClientAddr, stream, 4, 1, 200, 8, nil)
	if t.Failed() {
		return
	}
	for _, m := range []map[uint64]string{more, more2} {
		for p, d := range m {
			acked[p] = d
		}
	}
	final, _ := leaderOf(t, ctx, cl, stream, "")
	li := indexOf(t, cl, final)
	// An append the old leader answered itself would be a second writer.
	if aerr == nil && final == st.Leader {
		t.Logf("the old leader leads again (elected back): its append was legitimate")
	}
	checkHistory(t, ctx, cl, li, stream, acked, 5, 2)
}

// TestFailoverAllKilled: every node is SIGKILLed at once under load and
// restarted: the stream comes back (its leader, or another copy's holder
// if the leader's lease ran out first, takes it over), every acknowledged
// append is there once at its position, and the copies end identical.
func TestFailoverAllKilled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := startFailureCluster(t, ctx, 3, false)
	const stream = "allkilled"
	admin := dial(t, cl.ClientAddrs()[0], client.Options{})
	if _, err := admin.Create(ctx, stream, client.CreateOptions{Replicas: 3, Acks: api.AckPolicy_ACK_POLICY_QUORUM}); err != nil {
		t.Fatal(err)
	}
	acked := load(t, ctx, cl.ClientAddrs()[0], stream, 0, 2, 400, 8, nil)
	if t.Failed() {
		return
	}
	for i := range cl.Len() {
		if err := cl.Kill(i); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, cl.Len())
	for i := range cl.Len() {
		wg.Go(func() { errs <- cl.Start(ctx, i) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	final, epoch := leaderOf(t, ctx, cl, stream, "")
	li := indexOf(t, cl, final)
	t.Logf("after the restart of every node %s leads under epoch %d", final, epoch)
	more := load(t, ctx, mustNode(cl, li).ClientAddr, stream, 2, 1, 200, 8, nil)
	if t.Failed() {
		return
	}
	for p, d := range more {
		acked[p] = d
	}
	final, _ = leaderOf(t, ctx, cl, stream, "")
	li = indexOf(t, cl, final)
	checkHistory(t, ctx, cl, li, stream, acked, 3, 2)
}

// TestFailoverLeaderDamaged is the first symptom: ten entries
// acknowledged on every copy; the leader is stopped, one byte of an entry
// in the middle of its tail region flipped, and it is restarted. Its
// recovery finds a shorter log, but a takeover never chooses by its own
// length: the copies hold the longer log of the same epoch, so the
// stream goes on from there (on another node, or on this one after the
// copies' holder took over and this one became a copy again), every
// acknowledged entry is read back at its position, later appends follow
// them, and every copy ends identical.
func TestFailoverLeaderDamaged(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := startFailureCluster(t, ctx, 3, false)
	const stream = "flipped"
	admin := dial(t, cl.ClientAddrs()[0], client.Options{})
	st, err := admin.Create(ctx, stream, client.CreateOptions{Replicas: 3, Acks: api.AckPolicy_ACK_POLICY_ALL})
	if err != nil {
		t.Fatal(err)
	}
	leader := indexOf(t, cl, st.Leader)
	acked := load(t, ctx, mustNode(cl, leader).ClientAddr, stream, 0, 1, 300, 8, nil)
	if t.Failed() {
		return
	}
	if err := cl.Kill(leader); err != nil {
		t.Fatal(err)
	}
	path := proccluster.LeaderFile(mustNode(cl, leader).Data, stream)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := local.Scan(b)
	if err != nil || len(sc.Regions) == 0 {
		t.Fatalf("scan of the leader's file: %+v, %v", sc, err)
	}
	off := midPayload(t, b, sc.Regions[len(sc.Regions)-1])
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{b[off] ^ 0x01}, off); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := cl.Start(ctx, leader); err != nil {
		t.Fatal(err)
	}
	final, epoch := leaderOf(t, ctx, cl, stream, "")
	t.Logf("after the damaged leader's restart %s leads under epoch %d", final, epoch)
	li := indexOf(t, cl, final)
	for p, d := range load(t, ctx, mustNode(cl, li).ClientAddr, stream, 1, 1, 200, 8, nil) {
		acked[p] = d
	}
	if t.Failed() {
		return
	}
	final, _ = leaderOf(t, ctx, cl, stream, "")
	li = indexOf(t, cl, final)
	checkHistory(t, ctx, cl, li, stream, acked, 2, 2)
}

// checkHistory is the end of a failure test: every acknowledged append
// read back at stream's leader (member li) exactly once at its position,
// each of the clients' in order, and wantCopies copies identical to the
// leader's.
func checkHistory(t *testing.T, ctx context.Context, cl *proccluster.Cluster, li int, stream string, acked map[uint64]string, clients, wantCopies int) {
	t.Helper()
	if dups := checkTail(t, ctx, mustNode(cl, li).ClientAddr, stream, acked, clients); dups != 0 {
		t.Errorf("%d entries stored twice", dups)
	}
	if copies := compareCopies(t, cl, li, stream, len(acked)); copies != wantCopies {
		t.Errorf("%d copies compared, want %d", copies, wantCopies)
	}
}

// waitFor polls cond every 20 ms until it holds (true), d passes or ctx
// ends (false).
func waitFor(ctx context.Context, d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// TestFailoverTwiceInARow: the leader is SIGKILLed under load, and so is
// its successor the moment it leads, while the first is restarted: the
// stream passes to a third leader (or back to the first), whose takeover
// must find every acknowledged entry although the second leader's epoch
// may have started on only some copies. Every acknowledged append is read
// back once at its position, and the copies end identical.
func TestFailoverTwiceInARow(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := startFailureCluster(t, ctx, 3, false)
	const stream = "twice"
	admin := dial(t, cl.ClientAddrs()[0], client.Options{})
	st, err := admin.Create(ctx, stream, client.CreateOptions{Replicas: 3, Acks: api.AckPolicy_ACK_POLICY_QUORUM})
	if err != nil {
		t.Fatal(err)
	}
	seeds := strings.Join(cl.ClientAddrs(), ",")
	const clients, each, window = 3, 2000, 8
	var mu sync.Mutex
	n := 0
	start := make(chan struct{})
	progress := func() {
		mu.Lock()
		n++
		if n == clients*each/4 {
			close(start)
		}
		mu.Unlock()
	}
	faultErr := make(chan error, 1)
	go func() {
		faultErr <- func() error {
			select {
			case <-start:
			case <-ctx.Done():
				return ctx.Err()
			}
			first, err := memberIndex(cl, st.Leader)
			if err != nil {
				return err
			}
			if err := cl.Kill(first); err != nil {
				return err
			}
			killed := time.Now()
			second, e2, err := findLeader(ctx, cl, stream, st.Leader)
			if err != nil {
				return err
			}
			si, err := memberIndex(cl, second)
			if err != nil {
				return err
			}
			if err := cl.Kill(si); err != nil {
				return err
			}
			t.Logf("killed %s; %s led under epoch %d after %v and was killed at once", st.Leader, second, e2, time.Since(killed).Round(time.Millisecond))
			if err := cl.Start(ctx, first); err != nil {
				return err
			}
			third, e3, err := findLeader(ctx, cl, stream, second)
			if err != nil {
				return err
			}
			t.Logf("%s restarted; %s leads under epoch %d, %v after the first kill", st.Leader, third, e3, time.Since(killed).Round(time.Millisecond))
			return cl.Start(ctx, si)
		}()
	}()
	acked := load(t, ctx, seeds, stream, 0, clients, each, window, progress)
	if err := <-faultErr; err != nil {
		t.Fatal(err)
	}
	if t.Failed() {
		return
	}
	final, _ := leaderOf(t, ctx, cl, stream, "")
	li := indexOf(t, cl, final)
	checkHistory(t, ctx, cl, li, stream, acked, clients, 2)
}

// TestRepairDamagedCommitted flips a byte of a committed entry in a
// sealed region (or the tail region) of a running node's file, and checks
// that it is repaired and nothing acknowledged is lost:
//   - leader/read: on the leader, scrubber idle: a Read that meets the
//     entry repairs it from a copy (rdma reads) and answers it whole;
//   - leader/scrub: on the leader: its scrubber finds and repairs it;
//   - leader/tail/read: the leader's tail region, repaired by a Read;
//   - follower/scrub: a follower's copy, a sealed region (recovery and a
//     leader's Tail never read it again): its scrubber cuts the copy back
//     before the damage and the leader rewrites the rest;
//   - follower/tail/scrub: the same in the copy's tail region;
//   - backup/scrub: the same on the backup's copy, a sealed region.
//
// Every acknowledged entry is then read back at its position and every
// copy ends identical to the leader's.
func TestRepairDamagedCommitted(t *testing.T) {
	for _, tc := range []struct {
		name, where, scrub string
		tail               bool // damage the tail region, not a sealed one
	}{
		{"leader/read", "leader", "1h", false},
		{"leader/scrub", "leader", "300ms", false},
		{"leader/tail/read", "leader", "1h", true},
		{"follower/scrub", "follower", "300ms", false},
		{"follower/tail/scrub", "follower", "300ms", true},
		{"backup/scrub", "backup", "300ms", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cl := startFailureClusterArgs(t, ctx, 3, true, "--scrub-every", tc.scrub)
			const stream = "repaired"
			admin := dial(t, cl.ClientAddrs()[0], client.Options{})
			st, err := admin.Create(ctx, stream, client.CreateOptions{Replicas: 3, Acks: api.AckPolicy_ACK_POLICY_ALL})
			if err != nil {
				t.Fatal(err)
			}
			leader := indexOf(t, cl, st.Leader)
			// Entries of about 1 KiB in regions of 256 KiB: three regions.
			acked := loadPadded(t, ctx, mustNode(cl, leader).ClientAddr, stream, 0, 1, 600, 8, 1000, nil)
			if t.Failed() {
				return
			}
			victim, path := leader, proccluster.LeaderFile(mustNode(cl, leader).Data, stream)
			scan := local.Scan
			switch tc.where {
			case "backup":
				victim = cl.Len() - 1
				path, scan = proccluster.ReplicaFile(mustNode(cl, victim).Data, stream), local.ScanCopy
			case "follower":
				victim = (leader + 1) % 3
				path, scan = proccluster.ReplicaFile(mustNode(cl, victim).Data, stream), local.ScanCopy
			}
			// A copy's tail region is committed, as far as the copy
			// knows, up to the commit word its leader publishes lazily
			// (after its next write, or a few ticks once idle): damage
			// is looked for there only. Wait (bounded) until the word
			// covers every entry, then damage the middle.
			var b []byte
			var sc local.ScanResult
			var r local.ScanRegion
			if !waitFor(ctx, 15*time.Second, func() bool {
				if b, err = os.ReadFile(path); err != nil {
					return false
				}
				if sc, err = scan(b); err != nil || len(sc.Regions) < 2 {
					return false
				}
				r = sc.Regions[0] // sealed: later regions exist
				if tc.tail {
					r = sc.Regions[len(sc.Regions)-1]
				}
				return tc.where == "leader" || !tc.tail || r.Commit >= uint64(r.End)
			}) {
				t.Fatalf("scan of %s: %d regions (%v); tail region %+v: the leader's commit word does not cover its entries", path, len(sc.Regions), err, r)
			}
			off := midPayload(t, b, r)
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt([]byte{b[off] ^ 0x10}, off); err != nil {
				t.Fatal(err)
			}
			f.Close()
			vc := dial(t, mustNode(cl, victim).ClientAddr, client.Options{})
			repaired := func() (*api.ClusterStatusResponse, bool) {
				cs, err := vc.ClusterStatus(ctx)
				return cs, err == nil && cs.ScrubRepaired > 0
			}
			if tc.scrub != "1h" {
				if !waitFor(ctx, 20*time.Second, func() bool { _, ok := repaired(); return ok }) {
					cs, _ := repaired()
					t.Fatalf("the damage on %s was not repaired: %v", mustNode(cl, victim).Name, cs)
				}
			}
			for p, d := range loadPadded(t, ctx, mustNode(cl, leader).ClientAddr, stream, 1, 1, 100, 8, 1000, nil) {
				acked[p] = d
			}
			if t.Failed() {
				return
			}
			if dups := checkTail(t, ctx, mustNode(cl, leader).ClientAddr, stream, acked, 2); dups != 0 {
				t.Errorf("%d entries stored twice", dups)
			}
			cs, ok := repaired()
			if !ok {
				t.Errorf("%s reports no repair: %v", mustNode(cl, victim).Name, cs)
			} else {
				t.Logf("%s: %d damaged entries found, %d repaired, %d beyond repair", cs.Node, cs.ScrubDamaged, cs.ScrubRepaired, cs.ScrubUnrepairable)
			}
			if copies := compareCopies(t, cl, leader, stream, len(acked)); copies != 3 {
				t.Errorf("%d copies compared, want 3", copies)
			}
		})
	}
}
