package controller

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rpstream/rpstream/catalog"
	pb "github.com/rpstream/rpstream/catalog/catalogpb"
)

// formCluster starts voters v0.. and non-voters n0.. at once with empty
// directories, waits for a controller, registers everyone and waits
// until the non-voters follow the catalog.
func formCluster(t *testing.T, seed uint64, voters, nonVoters int) *testCluster {
	t.Helper()
	tc := newTestCluster(t, seed, voters, nonVoters)
	tc.startAll()
	tc.leader(10 * time.Second)
	tc.registerAll(testCtx(t, 10*time.Second))
	tc.waitGroup(10*time.Second, tc.voters, nonVoterNames(nonVoters))
	return tc
}

func nonVoterNames(n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("n%d", i))
	}
	return out
}

// waitGroup waits until every running member sees exactly these voters
// and followers.
func (tc *testCluster) waitGroup(d time.Duration, voters, followers []string) {
	tc.t.Helper()
	voters, followers = slices.Sorted(slices.Values(voters)), slices.Sorted(slices.Values(followers))
	var last Status
	ok := eventually(d, func() bool {
		for _, c := range tc.running() {
			last = c.Status()
			if !slices.Equal(last.Voters, voters) || !slices.Equal(last.Followers, followers) || last.Voter != slices.Contains(voters, last.Name) {
				return false
			}
		}
		return true
	})
	if !ok {
		tc.t.Fatalf("group not voters %v, followers %v within %v: %s sees voters %v, followers %v (voter %v)",
			voters, followers, d, last.Name, last.Voters, last.Followers, last.Voter)
	}
}

// TestFormation: three voters and two non-voters start at once with
// empty logs. Nobody answers the voters' registrations, so they bootstrap
// one group (with the same voters) and elect a controller; the
// non-voters keep asking until they join it, and the controller adds
// them as followers. Everyone registers and ends with the same catalog.
func TestFormation(t *testing.T) {
	tc := formCluster(t, 1, 3, 2)
	snap := tc.converged(5 * time.Second)
	if len(snap) == 0 {
		t.Fatal("empty catalog")
	}
	for _, c := range tc.running() {
		nodes := c.Nodes()
		if len(nodes) != 5 {
			t.Fatalf("%s knows %d nodes, want 5", c.Name(), len(nodes))
		}
		for _, n := range nodes {
			want := tc.ctl(n.Name).Incarnation()
			if n.Incarnation != want || n.Role != pb.Role_ROLE_NODE {
				t.Fatalf("%s: node %s is %016x %v, want %016x node", c.Name(), n.Name, n.Incarnation, n.Role, want)
			}
		}
		st := c.Status()
		// (Commit is copied after the entries are applied: it may lag
		// Applied for a moment.)
		if st.Controller == "" || st.Applied == 0 || st.Commit == 0 || st.Term == 0 {
			t.Fatalf("%s: status %+v", c.Name(), st)
		}
	}
	// Registering again (a restart of the same incarnation) changes
	// nothing and is not refused.
	ctx := testCtx(t, 5*time.Second)
	for _, c := range tc.running() {
		if err := c.Register(ctx); err != nil {
			t.Fatalf("register %s again: %v", c.Name(), err)
		}
	}
}

// TestCreateFromEveryNode: a create from any member (forwarded unless it
// is the controller) is placed with the requester as leader, answered
// once the requester's own catalog shows it, and reaches every member.
func TestCreateFromEveryNode(t *testing.T) {
	tc := formCluster(t, 2, 3, 2)
	ctx := testCtx(t, 20*time.Second)
	ids := map[uint64]string{}
	for _, c := range tc.running() {
		name := "s-" + c.Name()
		s, err := c.CreateStream(ctx, createReq(name, 3))
		if err != nil {
			t.Fatalf("create %s from %s: %v", name, c.Name(), err)
		}
		if s.Name != name || s.Leader != c.Name() || s.State != pb.StreamState_STREAM_STATE_CREATING || s.Id == 0 || len(s.Copies) != 3 {
			t.Fatalf("create %s from %s: %v", name, c.Name(), s)
		}
		if o, dup := ids[s.Id]; dup {
			t.Fatalf("id %d given to %s and %s", s.Id, o, name)
		}
		ids[s.Id] = name
		seen := map[string]bool{}
		for _, cp := range s.Copies {
			if seen[cp.Node] || cp.Backup || cp.Incarnation != tc.ctl(cp.Node).Incarnation() {
				t.Fatalf("create %s: copies %v", name, s.Copies)
			}
			seen[cp.Node] = true
		}
		// The requester's own catalog has it on return.
		if got, ok := c.Stream(name); !ok || got.Id != s.Id {
			t.Fatalf("%s does not show %s after its create returned: %v", c.Name(), name, got)
		}
		if err := c.ActivateStream(ctx, name, s.Id); err != nil {
			t.Fatalf("activate %s: %v", name, err)
		}
		if got, _ := c.Stream(name); got.State != pb.StreamState_STREAM_STATE_ACTIVE {
			t.Fatalf("%s after activate: %v", name, got)
		}
	}
	tc.converged(5 * time.Second)

	// What the controller refuses, with the class of the refusal.
	c := tc.ctl("n1")
	for _, tt := range []struct {
		req  *pb.CreateStreamRequest
		want error
	}{
		{createReq("s-v0", 1), catalog.ErrExists},
		{createReq("zero", 0), catalog.ErrInvalid},
		{createReq("sixteen", 16), catalog.ErrInvalid},
		{createReq("six", 6), ErrPlacement},
		{createReq("-bad", 1), catalog.ErrInvalid},
		{&pb.CreateStreamRequest{Name: "noregion", Replicas: 1, Acks: pb.Acks_ACKS_ALL}, catalog.ErrInvalid},
	} {
		if _, err := c.CreateStream(ctx, tt.req); !errors.Is(err, tt.want) {
			t.Errorf("create %s (%d replicas): %v, want %v", tt.req.Name, tt.req.Replicas, err, tt.want)
		}
	}
	if err := c.ActivateStream(ctx, "s-v0", 1); !errors.Is(err, catalog.ErrNoStream) {
		t.Errorf("activate with a wrong id: %v", err)
	}
	if err := c.ForgetNode(ctx, "v0"); !errors.Is(err, catalog.ErrInvalid) {
		t.Errorf("forget a node with copies: %v", err)
	}
}

// TestCreateRace: every member creates the same name at once, for many
// names: exactly one create wins, its requester leads the stream, and
// the others are told the stream exists.
func TestCreateRace(t *testing.T) {
	tc := formCluster(t, 3, 3, 2)
	ctx := testCtx(t, 30*time.Second)
	cs := tc.running()
	for round := range 20 {
		name := fmt.Sprintf("race-%d", round)
		streams := make([]*pb.Stream, len(cs))
		errs := make([]error, len(cs))
		var wg sync.WaitGroup
		for i, c := range cs {
			wg.Go(func() { streams[i], errs[i] = c.CreateStream(ctx, createReq(name, 2)) })
		}
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Fatalf("%s: both %s and %s created it", name, cs[winner].Name(), cs[i].Name())
			case err == nil:
				winner = i
			case !errors.Is(err, catalog.ErrExists):
				t.Fatalf("%s from %s: %v", name, cs[i].Name(), err)
			}
		}
		if winner < 0 {
			t.Fatalf("%s: nobody won: %v", name, errs)
		}
		s := streams[winner]
		if s.Leader != cs[winner].Name() {
			t.Fatalf("%s won by %s but led by %s", name, cs[winner].Name(), s.Leader)
		}
		for i, c := range cs {
			if got, ok := c.Stream(name); !ok || got.Id != s.Id {
				t.Fatalf("%s: %s (told %v) shows %v, the winner's id is %d", name, c.Name(), errs[i], got, s.Id)
			}
		}
	}
	tc.converged(5 * time.Second)
}

// TestGrantEpoch: only the stream's leader, under its registered
// incarnation, gets epochs; each grant is above every earlier one and
// no epoch is granted twice, also when asked concurrently.
func TestGrantEpoch(t *testing.T) {
	tc := formCluster(t, 4, 3, 1)
	ctx := testCtx(t, 20*time.Second)
	lead := tc.ctl("v1")
	s, err := lead.CreateStream(ctx, createReq("g", 3))
	if err != nil {
		t.Fatal(err)
	}
	// Each grant is above the last. (A grant whose answer came late is
	// asked again: an epoch may be skipped under load, never repeated.)
	var last uint64
	for i := range 5 {
		got, err := lead.GrantEpoch(ctx, "g", s.Id)
		if err != nil || got <= last {
			t.Fatalf("grant %d: %d after %d, %v", i, got, last, err)
		}
		last = got
	}
	for _, other := range []string{"v0", "v2", "n0"} {
		if _, err := tc.ctl(other).GrantEpoch(ctx, "g", s.Id); !errors.Is(err, catalog.ErrNotLeader) {
			t.Fatalf("grant from %s, not the leader: %v", other, err)
		}
	}
	if _, err := lead.GrantEpoch(ctx, "g", s.Id+1); !errors.Is(err, catalog.ErrNoStream) {
		t.Fatalf("grant with a wrong id: %v", err)
	}
	if _, err := lead.GrantEpoch(ctx, "nope", 0); !errors.Is(err, catalog.ErrNoStream) {
		t.Fatalf("grant of a missing stream: %v", err)
	}
	const n = 8
	got := make([]uint64, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { got[i], errs[i] = lead.GrantEpoch(ctx, "g", s.Id) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	for i, e := range got {
		if e <= last || i > 0 && e == got[i-1] {
			t.Fatalf("concurrent grants after %d gave %v: want each once, above %d", last, got, last)
		}
	}
	tc.converged(5 * time.Second)
	for _, c := range tc.running() {
		if st, _ := c.Stream("g"); st.Epoch < got[n-1] {
			t.Fatalf("%s: epoch %d, below the %d granted", c.Name(), st.Epoch, got[n-1])
		}
	}
}

// TestDeleteAndDrop: a delete makes a tombstone that waits for every
// copy to be dropped; then the name can be created again, with a new
// id.
func TestDeleteAndDrop(t *testing.T) {
	tc := formCluster(t, 5, 3, 2)
	ctx := testCtx(t, 20*time.Second)
	s, err := tc.ctl("n0").CreateStream(ctx, createReq("d", 3))
	if err != nil {
		t.Fatal(err)
	}
	del, err := tc.ctl("v2").DeleteStream(ctx, "d", 0)
	if err != nil {
		t.Fatal(err)
	}
	var holders []string
	for _, cp := range s.Copies {
		holders = append(holders, cp.Node)
	}
	if del.Id != s.Id || del.State != pb.StreamState_STREAM_STATE_DELETING || !slices.Equal(del.PendingDrop, holders) || del.DeletedIndex <= s.Id {
		t.Fatalf("delete: %v (created %v)", del, s)
	}
	if _, err := tc.ctl("v0").DeleteStream(ctx, "d", 0); !errors.Is(err, catalog.ErrNoStream) {
		t.Fatalf("second delete: %v", err)
	}
	if _, err := tc.ctl("v0").DeleteStream(ctx, "never", 0); !errors.Is(err, catalog.ErrNoStream) {
		t.Fatalf("delete of a missing stream: %v", err)
	}
	if _, err := tc.ctl("n1").CreateStream(ctx, createReq("d", 1)); !errors.Is(err, catalog.ErrExists) {
		t.Fatalf("create over a tombstone being dropped: %v", err)
	}
	if err := tc.ctl(holders[0]).CopyDropped(ctx, "d", s.Id+1); !errors.Is(err, catalog.ErrNoStream) {
		t.Fatalf("drop with a wrong id: %v", err)
	}
	for i, h := range holders {
		c := tc.ctl(h)
		if err := c.CopyDropped(ctx, "d", s.Id); err != nil {
			t.Fatalf("%s drops: %v", h, err)
		}
		got, _ := c.Stream("d")
		want := pb.StreamState_STREAM_STATE_DELETING
		if i == len(holders)-1 {
			want = pb.StreamState_STREAM_STATE_DELETED
		}
		if got.State != want || !slices.Equal(got.PendingDrop, holders[i+1:]) {
			t.Fatalf("after %s drops: %v", h, got)
		}
	}
	tc.converged(5 * time.Second)
	again, err := tc.ctl("v1").CreateStream(ctx, createReq("d", 2))
	if err != nil {
		t.Fatal(err)
	}
	if again.Id <= del.DeletedIndex || again.State != pb.StreamState_STREAM_STATE_CREATING || again.Leader != "v1" {
		t.Fatalf("create again: %v", again)
	}
}

// TestVoterChanges: a follower is promoted to voter and demoted again;
// the controller itself can be demoted (it hands the group over to
// another voter first); what cannot change is refused.
func TestVoterChanges(t *testing.T) {
	tc := formCluster(t, 6, 3, 2)
	ctx := testCtx(t, 30*time.Second)
	c := tc.ctl("n1")
	if err := c.AddVoter(ctx, "n0"); err != nil {
		t.Fatal(err)
	}
	tc.waitGroup(5*time.Second, []string{"v0", "v1", "v2", "n0"}, []string{"n1"})
	if err := c.RemoveVoter(ctx, "n0"); err != nil {
		t.Fatal(err)
	}
	tc.waitGroup(5*time.Second, tc.voters, []string{"n0", "n1"})

	for _, tt := range []struct {
		add  bool
		name string
		want error
	}{
		{true, "v0", ErrGroupState},              // a voter already
		{true, "nobody", catalog.ErrUnknownNode}, // not a follower
		{true, "-bad", catalog.ErrInvalid},       // not a name
		{false, "n1", ErrGroupState},             // not a voter
		{false, "nobody", ErrGroupState},         // not a voter
	} {
		var err error
		if tt.add {
			err = c.AddVoter(ctx, tt.name)
		} else {
			err = c.RemoveVoter(ctx, tt.name)
		}
		if !errors.Is(err, tt.want) {
			t.Errorf("add %v of %s: %v, want %v", tt.add, tt.name, err, tt.want)
		}
	}

	// Demote the controller: it steps down and another voter leads.
	old := tc.leader(5 * time.Second).Name()
	if err := c.RemoveVoter(ctx, old); err != nil {
		t.Fatal(err)
	}
	var rest []string
	for _, v := range tc.voters {
		if v != old {
			rest = append(rest, v)
		}
	}
	tc.waitGroup(5*time.Second, rest, []string{old, "n0", "n1"})
	if now := tc.leader(5 * time.Second).Name(); now == old {
		t.Fatalf("%s still leads after its demotion", old)
	}
	if _, err := tc.ctl(old).CreateStream(ctx, createReq("after-demotion", 3)); err != nil {
		t.Fatal(err)
	}
	if err := tc.ctl(old).AddVoter(ctx, old); err != nil {
		t.Fatal(err)
	}
	tc.waitGroup(5*time.Second, tc.voters, []string{"n0", "n1"})
	tc.converged(5 * time.Second)
}

// TestDemoteControllerWithVoterDown: the controller demoted while a
// voter is down hands the group over to a voter that is up: the
// demotion succeeds and the remaining voters go on committing.
func TestDemoteControllerWithVoterDown(t *testing.T) {
	tc := formCluster(t, 7, 5, 0)
	ctx := testCtx(t, 30*time.Second)
	lead := tc.leader(5 * time.Second).Name()
	// Stop the voter the controller would hand over to if it went by
	// the group's order alone: the lowest Raft id but its own.
	ids := map[uint64]string{}
	for _, v := range tc.voters {
		ids[RaftID(v)] = v
	}
	var down string
	for _, id := range slices.Sorted(maps.Keys(ids)) {
		if ids[id] != lead {
			down = ids[id]
			break
		}
	}
	tc.stop(down)
	var from *Controller
	for _, c := range tc.running() {
		if c.Name() != lead {
			from = c
			break
		}
	}
	if err := from.RemoveVoter(ctx, lead); err != nil {
		t.Fatalf("demote the controller %s while %s is down: %v", lead, down, err)
	}
	if now := tc.leader(5 * time.Second).Name(); now == lead || now == down {
		t.Fatalf("controller %s after the demotion of %s (%s down)", now, lead, down)
	}
	if _, err := tc.ctl(lead).CreateStream(ctx, createReq("after", 3)); err != nil {
		t.Fatal(err)
	}
	tc.start(down)
	var rest []string
	for _, v := range tc.voters {
		if v != lead {
			rest = append(rest, v)
		}
	}
	tc.waitGroup(10*time.Second, rest, []string{lead})
	tc.converged(10 * time.Second)
}

// TestLeases: the controller places copies only on members that hold a
// lease. A member cut off from the group (memberlist still lists it
// alive) stops renewing; once its lease expires it is left out, and a
// create that needs it fails with ErrPlacement. After healing it is
// placed again. Elsewhere than on the controller, LeaseLive does not
// know.
func TestLeases(t *testing.T) {
	tc := newTestCluster(t, 8, 3, 2)
	tc.tune = func(c *Config) { c.LeaseTTL = 300 * time.Millisecond }
	tc.startAll()
	tc.leader(10 * time.Second)
	ctx := testCtx(t, 30*time.Second)
	tc.registerAll(ctx)
	tc.waitGroup(10*time.Second, tc.voters, nonVoterNames(2))
	lead := tc.leader(5 * time.Second)
	for _, n := range tc.names() {
		if live, ok := lead.LeaseLive(n); !live || !ok {
			t.Fatalf("controller: lease of %s live %v (knows %v)", n, live, ok)
		}
	}
	if _, ok := tc.ctl("n0").LeaseLive("v0"); ok && tc.ctl("n0") != lead {
		t.Fatal("a follower claims to know leases")
	}
	tc.net.partition([]string{"n1"})
	if !eventually(5*time.Second, func() bool {
		live, ok := tc.leader(5 * time.Second).LeaseLive("n1")
		return ok && !live
	}) {
		t.Fatal("the lease of a member cut off does not expire")
	}
	for i := range 10 {
		s, err := tc.ctl("n0").CreateStream(ctx, createReq(fmt.Sprintf("cut-%d", i), 4))
		if err != nil {
			t.Fatal(err)
		}
		for _, cp := range s.Copies {
			if cp.Node == "n1" {
				t.Fatalf("%s placed on n1, whose lease expired", s.Name)
			}
		}
	}
	if _, err := tc.ctl("n0").CreateStream(ctx, createReq("five", 5)); !errors.Is(err, ErrPlacement) {
		t.Fatalf("create of 5 replicas with 4 leases: %v", err)
	}
	tc.net.heal()
	if !eventually(5*time.Second, func() bool {
		live, ok := tc.leader(5 * time.Second).LeaseLive("n1")
		return ok && live
	}) {
		t.Fatal("n1's lease is not renewed after healing")
	}
	if _, err := tc.ctl("n0").CreateStream(ctx, createReq("five", 5)); err != nil {
		t.Fatal(err)
	}
}

// TestBarrier: after Barrier, a member's catalog holds everything
// committed before it; a member cut off from the controller fails it
// with ErrNoController within its RequestTimeout.
func TestBarrier(t *testing.T) {
	tc := newTestCluster(t, 9, 3, 1)
	tc.tune = func(c *Config) { c.RequestTimeout = time.Second }
	tc.startAll()
	tc.leader(10 * time.Second)
	ctx := testCtx(t, 30*time.Second)
	tc.registerAll(ctx)
	tc.waitGroup(10*time.Second, tc.voters, []string{"n0"})
	lead := tc.leader(5 * time.Second)
	for i := range 5 {
		s, err := lead.CreateStream(ctx, createReq(fmt.Sprintf("b%d", i), 1))
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range tc.running() {
			if err := c.Barrier(ctx); err != nil {
				t.Fatalf("barrier on %s: %v", c.Name(), err)
			}
			if got, ok := c.Stream(s.Name); !ok || got.Id != s.Id {
				t.Fatalf("%s after a barrier: %v, want id %d", c.Name(), got, s.Id)
			}
		}
	}
	tc.net.partition([]string{"n0"})
	start := time.Now()
	if err := tc.ctl("n0").Barrier(ctx); !errors.Is(err, ErrNoController) {
		t.Fatalf("barrier on a member cut off: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("barrier took %v with a RequestTimeout of 1 s", d)
	}
}

// TestBarrierAfterElection: a new controller's first entry (empty) and
// configuration changes are applied entries like commands. A barrier
// taken when the last committed entry is not a command (here the empty
// entry of a controller elected after the old one stopped, with no
// command after it) is answered at once on every member, and every
// member's applied index reaches its commit index.
func TestBarrierAfterElection(t *testing.T) {
	tc := formCluster(t, 23, 3, 1)
	tc.converged(5 * time.Second)
	old := tc.leader(5 * time.Second).Name()
	tc.stop(old)
	lead := tc.leader(10 * time.Second)
	for _, c := range tc.running() {
		ctx := testCtx(t, 2*time.Second)
		start := time.Now()
		if err := c.Barrier(ctx); err != nil {
			t.Fatalf("barrier on %s after %s took over: %v (%+v)", c.Name(), lead.Name(), err, c.Status())
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("barrier on %s took %v", c.Name(), d)
		}
	}
	if !eventually(5*time.Second, func() bool {
		for _, c := range tc.running() {
			if st := c.Status(); st.Applied != st.Commit {
				return false
			}
		}
		return true
	}) {
		for _, c := range tc.running() {
			t.Logf("%+v", c.Status())
		}
		t.Fatal("applied index short of the commit index")
	}
}
