package controller

import (
	"errors"
	"testing"
	"time"

	"github.com/rpstream/rpstream/catalog"
	pb "github.com/rpstream/rpstream/catalog/catalogpb"
)

// TestRestoreDecision: a restore of a stream whose leader holds a lease
// is refused without force, and onto its own leader always; forced, the
// stream gets a new leader under the next epoch, copies on live nodes
// (the backup copy on the backup source), and the source recorded. While
// the restore is under way failover leaves the stream alone, even when
// its new leader's lease expires; a decision on the old epoch changes
// nothing; the epoch's start ends the restore.
func TestRestoreDecision(t *testing.T) {
	tc := newTestCluster(t, 23, 3, 2)
	tc.add("b0", pb.Role_ROLE_BACKUP)
	tc.tune = func(c *Config) { c.LeaseTTL = 300 * time.Millisecond }
	tc.startAll()
	tc.leader(10 * time.Second)
	ctx := testCtx(t, 30*time.Second)
	tc.registerAll(ctx)
	tc.waitGroup(10*time.Second, tc.voters, append(nonVoterNames(2), "b0"))
	q := createReq("r", 3)
	q.Requester = "n1"
	s, err := tc.ctl("n1").CreateStream(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	if err := tc.ctl("n1").ActivateStream(ctx, s.Name, s.Id); err != nil {
		t.Fatal(err)
	}
	if s.Copies[len(s.Copies)-1].Node != "b0" {
		t.Fatalf("copies %v: want the backup's last", s.Copies)
	}
	b0, _ := tc.ctl("v0").Node("b0")
	req := func(force bool, leader string) *pb.RestoreStreamRequest {
		return &pb.RestoreStreamRequest{Name: "r", StreamId: s.Id, FromEpoch: s.Epoch, Source: "b0", SourceIncarnation: b0.Incarnation, Leader: leader, Force: force}
	}
	if _, err := tc.ctl("n0").RestoreStream(ctx, req(false, "")); !errors.Is(err, ErrLeaderLive) {
		t.Fatalf("restore with a live leader: %v, want ErrLeaderLive", err)
	}
	if _, err := tc.ctl("n0").RestoreStream(ctx, req(true, "n1")); !errors.Is(err, catalog.ErrInvalid) {
		t.Fatalf("restore onto the live leader itself: %v, want ErrInvalid", err)
	}
	got, err := tc.ctl("n0").RestoreStream(ctx, req(true, "n0"))
	if err != nil {
		t.Fatal(err)
	}
	last := got.Copies[len(got.Copies)-1]
	if got.Leader != "n0" || got.Copies[0].Node != "n0" || got.Epoch != s.Epoch+1 || len(got.Copies) != 4 ||
		last.Node != "b0" || !last.Backup || got.Restoring.GetNode() != "b0" || got.Restoring.Epoch != got.Epoch || got.Restores != 1 {
		t.Fatalf("after the restore: %v", got)
	}
	// Decided on the old epoch: stale.
	if _, err := tc.ctl("n0").RestoreStream(ctx, req(true, "")); !errors.Is(err, catalog.ErrStale) {
		t.Fatalf("a restore decided on the old epoch: %v, want ErrStale", err)
	}
	// The new leader is cut off before it serves: no election, its new
	// copies hold nothing yet.
	tc.net.partition([]string{"n0"})
	time.Sleep(time.Second)
	if r, _ := tc.ctl("v0").Stream("r"); r.Leader != "n0" || r.Epoch != got.Epoch {
		t.Fatalf("a stream being restored was elected away: %v", r)
	}
	tc.net.heal()
	if err := tc.ctl("n0").EpochStarted(ctx, "r", s.Id, got.Epoch, 10); err != nil {
		t.Fatal(err)
	}
	if r, _ := tc.ctl("n0").Stream("r"); r.Restoring != nil || r.CommitFloor != 10 {
		t.Fatalf("after the epoch started: %v", r)
	}
}
