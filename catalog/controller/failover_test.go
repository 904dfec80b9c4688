package controller

import (
	"testing"
	"time"

	pb "github.com/rpstream/rpstream/catalog/catalogpb"
)

// TestElection: when a stream leader's lease expires (the node is cut off
// from the group), the controller elects another holder of a copy under
// the next epoch, once; a stream acknowledged by its leader alone is not
// moved. A hand-off to a node without a lease is refused; to one with a
// lease it is granted.
func TestElection(t *testing.T) {
	tc := newTestCluster(t, 21, 3, 2)
	tc.tune = func(c *Config) { c.LeaseTTL = 300 * time.Millisecond }
	tc.startAll()
	tc.leader(10 * time.Second)
	ctx := testCtx(t, 30*time.Second)
	tc.registerAll(ctx)
	tc.waitGroup(10*time.Second, tc.voters, nonVoterNames(2))
	// n1 asks, so n1 leads (it is a live stream node).
	q := createReq("moved", 3)
	q.Requester = "n1"
	s, err := tc.ctl("n1").CreateStream(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	ql := createReq("stays", 3)
	ql.Requester, ql.Acks = "n1", pb.Acks_ACKS_LEADER
	sl, err := tc.ctl("n1").CreateStream(ctx, ql)
	if err != nil {
		t.Fatal(err)
	}
	if s.Leader != "n1" || sl.Leader != "n1" {
		t.Fatalf("leaders %s, %s; want n1", s.Leader, sl.Leader)
	}
	for _, r := range []*pb.Stream{s, sl} {
		if err := tc.ctl("n1").ActivateStream(ctx, r.Name, r.Id); err != nil {
			t.Fatal(err)
		}
	}
	tc.net.partition([]string{"n1"})
	var moved *pb.Stream
	if !eventually(10*time.Second, func() bool {
		r, ok := tc.ctl("v0").Stream("moved")
		moved = r
		return ok && r.Leader != "n1"
	}) {
		t.Fatal("the stream of a leader whose lease expired was not moved")
	}
	if moved.Epoch != s.Epoch+1 || moved.Copies[0].Node != moved.Leader || moved.Elections != 1 {
		t.Fatalf("after the election: %v (epoch before %d)", moved, s.Epoch)
	}
	// Once: the new leader holds a lease, nothing else happens.
	time.Sleep(time.Second)
	if r, _ := tc.ctl("v0").Stream("moved"); r.Epoch != moved.Epoch || r.Leader != moved.Leader {
		t.Fatalf("elected again: %v after %v", r, moved)
	}
	if r, _ := tc.ctl("v0").Stream("stays"); r.Leader != "n1" || r.Epoch != sl.Epoch {
		t.Fatalf("a stream acknowledged by its leader alone was moved: %v", r)
	}
	// A hand-off to n1 (no lease) is refused; back to a live holder it
	// is granted.
	var other string
	for _, cp := range moved.Copies[1:] {
		if cp.Node != "n1" {
			other = cp.Node
		}
	}
	if _, err := tc.ctl(moved.Leader).HandOff(ctx, "moved", moved.Id, moved.Epoch, "n1"); err == nil {
		t.Fatal("hand-off to a node without a lease granted")
	}
	e, err := tc.ctl(moved.Leader).HandOff(ctx, "moved", moved.Id, moved.Epoch, other)
	if err != nil || e != moved.Epoch+1 {
		t.Fatalf("hand-off to %s: epoch %d, %v", other, e, err)
	}
	if _, err := tc.ctl(moved.Leader).HandOff(ctx, "moved", moved.Id, moved.Epoch, other); err == nil {
		t.Fatal("a hand-off decided on a stale epoch was granted")
	}
	tc.net.heal()
}

// TestNewControllerCountsTheOldFromWhenHeard: a new controller counts the
// node of the controller before it as alive from when it last heard from
// it as the Raft leader, not as unheard of (live for a grace from the new
// controller's election on): the old controller's streams are then moved
// a lease after it went silent, not an election and a grace later.
func TestNewControllerCountsTheOldFromWhenHeard(t *testing.T) {
	tc := newTestCluster(t, 23, 3, 0)
	tc.tune = func(c *Config) { c.LeaseTTL = 5 * time.Second }
	tc.startAll()
	old := tc.leader(10 * time.Second).Status().Name
	ctx := testCtx(t, 30*time.Second)
	tc.registerAll(ctx)
	cut := time.Now()
	tc.net.partition([]string{old})
	defer tc.net.heal()
	var nc *Controller
	if !eventually(10*time.Second, func() bool {
		for _, c := range tc.running() {
			if st := c.Status(); st.Name != old && st.Controller == st.Name {
				nc = c
				return true
			}
		}
		return false
	}) {
		t.Fatal("no new controller after the old one was cut off")
	}
	n, ok := nc.Node(old)
	if !ok {
		t.Fatalf("%s is not in the new controller's catalog", old)
	}
	_, ago := nc.leases.live(old, n.Incarnation, time.Now(), nc.cfg.LeaseTTL, nc.cfg.LeaseTTL/2)
	if elapsed := time.Since(cut); ago < elapsed-20*time.Millisecond {
		t.Fatalf("the new controller counts %s as heard of %v ago; it was cut off %v ago", old, ago, elapsed)
	}
}
