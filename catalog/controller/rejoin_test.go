package controller

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rpstream/rpstream/catalog"
	pb "github.com/rpstream/rpstream/catalog/catalogpb"
)

// TestRestartCatchesUp: a voter and a follower stopped while the catalog
// changes come back on their directories (same incarnation): the
// durable log restores what they had, the controller sends the rest, and
// they end with everyone's catalog; the stopped voter's catalog at the
// index it stopped at is the one everybody applied there.
func TestRestartCatchesUp(t *testing.T) {
	tc := formCluster(t, 11, 3, 1)
	ctx := testCtx(t, 30*time.Second)
	for i := range 5 {
		if _, err := tc.ctl("v0").CreateStream(ctx, createReq(fmt.Sprintf("before-%d", i), 3)); err != nil {
			t.Fatal(err)
		}
	}
	tc.converged(5 * time.Second)
	down := "v2"
	if tc.leader(5*time.Second).Name() == down {
		down = "v1"
	}
	idx, before := tc.ctl(down).catalogState()
	tc.stop(down)
	tc.stop("n0")
	for i := range 10 {
		s, err := tc.ctl("v0").CreateStream(ctx, createReq(fmt.Sprintf("while-%d", i), 2))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tc.ctl(s.Leader).GrantEpoch(ctx, s.Name, s.Id); err != nil {
			t.Fatal(err)
		}
	}
	c := tc.start(down)
	if got := c.Applied(); got > idx {
		t.Fatalf("%s applied %d on restart, more than the %d it had", down, got, idx)
	}
	// Replaying its log, it passes through the index it stopped at with
	// the same catalog.
	if !eventually(5*time.Second, func() bool {
		i, snap := c.catalogState()
		if i == idx && !bytes.Equal(snap, before) {
			t.Fatalf("%s replays a different catalog at %d", down, idx)
		}
		return i >= idx
	}) {
		t.Fatalf("%s does not replay to %d", down, idx)
	}
	tc.start("n0")
	tc.converged(10 * time.Second)
	for _, c := range tc.running() {
		if n := len(c.Streams()); n != 15 {
			t.Fatalf("%s holds %d streams, want 15", c.Name(), n)
		}
	}
	// The restarted members work: they create, and the restarted voter
	// counts for the quorum.
	if _, err := tc.ctl("n0").CreateStream(ctx, createReq("after", 3)); err != nil {
		t.Fatal(err)
	}
	tc.converged(5 * time.Second)
}

// TestWipedVoter: the controller's node loses its disk and comes back
// under its name with an empty directory and a new incarnation. It must
// not bootstrap a second group (its catalog ends with every stream made
// before), must be refused while its old incarnation's lease lasts, and
// then be added anew and catch up; its copies of the old incarnation
// hold nothing, and it is a voter again.
func TestWipedVoter(t *testing.T) {
	tc := newTestCluster(t, 12, 3, 1)
	tc.tune = func(c *Config) { c.LeaseTTL = 300 * time.Millisecond }
	tc.startAll()
	tc.leader(10 * time.Second)
	ctx := testCtx(t, 30*time.Second)
	tc.registerAll(ctx)
	tc.waitGroup(10*time.Second, tc.voters, []string{"n0"})
	var made []*pb.Stream
	for _, from := range tc.names() {
		s, err := tc.ctl(from).CreateStream(ctx, createReq("s-"+from, 3))
		if err != nil {
			t.Fatal(err)
		}
		made = append(made, s)
	}
	tc.converged(5 * time.Second)

	wiped := tc.leader(5 * time.Second).Name()
	oldInc := tc.ctl(wiped).Incarnation()
	tc.stop(wiped)
	tc.wipe(wiped)
	c := tc.start(wiped)
	if c.Incarnation() == oldInc {
		t.Fatal("wipe kept the incarnation")
	}
	// It joins (after the old lease expires) and is registered anew.
	// (20 s: beside two busy loops under the race detector one run took
	// more than 10.)
	if !eventually(20*time.Second, func() bool {
		for _, o := range tc.running() {
			if n, ok := o.Node(wiped); !ok || n.Incarnation != c.Incarnation() {
				return false
			}
		}
		return true
	}) {
		for _, o := range tc.running() {
			n, ok := o.Node(wiped)
			t.Logf("%s: status %v; holds %s: %v, incarnation %016x", o.Name(), o.Status(), wiped, ok, n.GetIncarnation())
		}
		t.Fatalf("%s's new incarnation %016x is not registered everywhere", wiped, c.Incarnation())
	}
	tc.waitGroup(10*time.Second, tc.voters, []string{"n0"})
	tc.converged(10 * time.Second)
	for _, s := range made {
		got, ok := c.Stream(s.Name)
		if !ok || got.Id != s.Id {
			t.Fatalf("the wiped member holds %v for %s (id %d): a second group?", got, s.Name, s.Id)
		}
		holds, current := catalog.HolderOf(got, wiped, c.Incarnation())
		if holds && current {
			t.Fatalf("%s: the wiped member's copy counts as current", s.Name)
		}
	}
	// The stream it led before the wipe is not its to lead any more.
	if _, err := c.GrantEpoch(ctx, "s-"+wiped, made[slicesIndex(tc.names(), wiped)].Id); !errors.Is(err, catalog.ErrNotLeader) {
		t.Fatalf("grant of the old incarnation's stream: %v", err)
	}
	// It is a voter that counts: stop another voter, and the group still
	// commits with it.
	other := "v0"
	if other == wiped {
		other = "v1"
	}
	tc.stop(other)
	if _, err := tc.ctl("n0").CreateStream(ctx, createReq("after-wipe", 1)); err != nil {
		t.Fatal(err)
	}
	tc.start(other)
	tc.converged(10 * time.Second)
}

func slicesIndex(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// TestWipedFollower: a non-voting follower that lost its directory joins
// again as a follower under a new incarnation.
func TestWipedFollower(t *testing.T) {
	tc := newTestCluster(t, 13, 3, 1)
	tc.tune = func(c *Config) { c.LeaseTTL = 300 * time.Millisecond }
	tc.startAll()
	tc.leader(10 * time.Second)
	ctx := testCtx(t, 30*time.Second)
	tc.registerAll(ctx)
	tc.waitGroup(10*time.Second, tc.voters, []string{"n0"})
	if _, err := tc.ctl("n0").CreateStream(ctx, createReq("x", 2)); err != nil {
		t.Fatal(err)
	}
	tc.stop("n0")
	tc.wipe("n0")
	c := tc.start("n0")
	if !eventually(10*time.Second, func() bool {
		n, ok := c.Node("n0")
		return ok && n.Incarnation == c.Incarnation()
	}) {
		t.Fatalf("n0 does not rejoin: %+v", c.Status())
	}
	tc.waitGroup(10*time.Second, tc.voters, []string{"n0"})
	tc.converged(10 * time.Second)
}

// TestDuplicateName: a second process under a live member's name, with
// another incarnation, is refused with ErrNameTaken (and its Raft node
// never takes the member's place); the first goes on working.
func TestDuplicateName(t *testing.T) {
	tc := formCluster(t, 14, 3, 1)
	ctx := testCtx(t, 30*time.Second)
	// The impostor: n0's name, another directory and incarnation, on the
	// same network (its transport replaces n0's while it runs).
	first := tc.ctl("n0")
	tc.add("n0-impostor", pb.Role_ROLE_NODE)
	tc.mu.Lock()
	m := tc.members["n0-impostor"]
	cfg := tc.configLocked(m)
	tc.mu.Unlock()
	cfg.Name = "n0"
	cfg.Transport = tc.net.transport("n0", pb.Role_ROLE_NODE)
	dup, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stopDup := func() {
		once.Do(func() {
			dup.Stop()
			// Give n0's place on the network back to the first process.
			first.cfg.Transport.Attach(first)
		})
	}
	t.Cleanup(stopDup)
	err = dup.Register(testCtx(t, 5*time.Second))
	if !errors.Is(err, catalog.ErrNameTaken) {
		t.Fatalf("register of a second n0: %v", err)
	}
	stopDup()
	if n, _ := first.Node("n0"); n.Incarnation != first.Incarnation() {
		t.Fatalf("n0 is registered as %016x, not the first process's %016x", n.Incarnation, first.Incarnation())
	}
	if _, err := first.CreateStream(ctx, createReq("still-works", 3)); err != nil {
		t.Fatal(err)
	}
	tc.converged(5 * time.Second)
}

// TestWipedVoterStaleMessages: Raft messages the controller sent to a
// voter before it lost its disk reach its new incarnation late (the
// connection stalled), after it joined again with an empty log. A
// heartbeat among them says entries up to the old incarnation's
// position are committed: the new one must not take it as its own
// (etcd raft panics on a commit index past its log: "was the raft log
// corrupted, truncated, or lost?"); it must catch up as usual.
func TestWipedVoterStaleMessages(t *testing.T) {
	tc := newTestCluster(t, 15, 3, 0)
	tc.tune = func(c *Config) { c.LeaseTTL = 300 * time.Millisecond }
	tc.startAll()
	lead := tc.leader(10 * time.Second).Name()
	ctx := testCtx(t, 30*time.Second)
	tc.registerAll(ctx)
	for i := range 5 {
		if _, err := tc.ctl(lead).CreateStream(ctx, createReq(fmt.Sprintf("s%d", i), 3)); err != nil {
			t.Fatal(err)
		}
	}
	tc.converged(5 * time.Second)
	wiped := "v0"
	if wiped == lead {
		wiped = "v1"
	}
	tc.net.hold(lead, wiped)
	tc.stop(wiped)
	tc.wipe(wiped)
	// The controller's heartbeats to the lost incarnation queue up.
	time.Sleep(50 * time.Millisecond)
	c := tc.start(wiped)
	if !eventually(10*time.Second, func() bool {
		n, ok := tc.ctl(lead).Node(wiped)
		return ok && n.Incarnation == c.Incarnation() && !c.joining.Load()
	}) {
		t.Fatalf("%s does not rejoin: %+v", wiped, c.Status())
	}
	tc.net.release(lead, wiped)
	tc.waitGroup(10*time.Second, tc.voters, nil)
	tc.converged(10 * time.Second)
}

// TestCatchUpBySnapshot: a follower stopped while more entries commit
// than the controller keeps behind its snapshot (1000) comes back and is
// sent the snapshot: it restores the catalog from it, keeps it in its
// own log, and ends with everyone's catalog, also after another restart.
func TestCatchUpBySnapshot(t *testing.T) {
	tc := newTestCluster(t, 16, 3, 1)
	tc.tune = func(c *Config) { c.SnapshotEvery = 100 }
	tc.startAll()
	tc.leader(10 * time.Second)
	ctx := testCtx(t, 60*time.Second)
	tc.registerAll(ctx)
	tc.waitGroup(10*time.Second, tc.voters, []string{"n0"})
	s, err := tc.ctl("v1").CreateStream(ctx, createReq("busy", 3))
	if err != nil {
		t.Fatal(err)
	}
	tc.stop("n0")
	start := tc.ctl("v1").Applied()
	const workers, each = 32, 35
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := range workers {
		wg.Go(func() {
			for range each {
				if _, err := tc.ctl("v1").GrantEpoch(ctx, "busy", s.Id); err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if got := tc.ctl("v1").Applied() - start; got < 1100 {
		t.Fatalf("only %d entries while n0 was down", got)
	}
	c := tc.start("n0")
	tc.converged(20 * time.Second)
	if first, _ := c.rlog.FirstIndex(); first <= start {
		t.Fatalf("n0's log starts at %d: it was not sent a snapshot (it stopped at %d)", first, start)
	}
	// (A grant whose answer came late is asked again: epochs may be
	// skipped, never repeated.)
	if got, _ := c.Stream("busy"); got.Epoch < workers*each {
		t.Fatalf("n0 shows epoch %d, want at least %d", got.Epoch, workers*each)
	}
	// Restarted, it comes back from the snapshot it received.
	tc.stop("n0")
	tc.start("n0")
	tc.converged(10 * time.Second)
}

// TestRequestRetriedWhileLoopSwamped: a request whose proposal cannot
// even be queued on the Raft loop (its queue full for the attempt's
// time: a starved or swamped loop) is asked again, like one not applied
// in time, and succeeds once the loop moves. It failed at once with an
// internal "context deadline exceeded" (TestCatchUpBySnapshot's grants,
// beside two busy loops).
func TestRequestRetriedWhileLoopSwamped(t *testing.T) {
	tc := formCluster(t, 17, 1, 0)
	ctx := testCtx(t, 30*time.Second)
	c := tc.ctl("v0")
	s, err := c.CreateStream(ctx, createReq("s", 1))
	if err != nil {
		t.Fatal(err)
	}
	// Hold the loop, then fill its queue.
	held, release := make(chan struct{}), make(chan struct{})
	if err := c.do(ctx, func() { close(held); <-release }); err != nil {
		t.Fatal(err)
	}
	<-held
	for len(c.ops) < cap(c.ops) {
		if err := c.do(ctx, func() {}); err != nil {
			t.Fatal(err)
		}
	}
	attempt := c.cfg.Tick * time.Duration(2*c.cfg.ElectionTicks)
	go func() {
		time.Sleep(3 * attempt) // past the first attempts
		close(release)
	}()
	epoch, err := c.GrantEpoch(ctx, "s", s.Id)
	if err != nil {
		t.Fatalf("a grant while the loop's queue was full: %v", err)
	}
	if epoch <= s.Epoch {
		t.Fatalf("granted epoch %d after %d", epoch, s.Epoch)
	}
}
