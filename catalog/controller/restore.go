package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	pb "github.com/rpstream/rpstream/catalog/catalogpb"
	"github.com/rpstream/rpstream/cluster"
)

// Restore: the controller places a stream being restored from one copy
// and commits the decision as one RestoreStream command. Its requester
// (a node serving an operator's restore) surveyed the copies and names
// the source; the controller checks what only it knows (leases) and
// places the copies:
//
//   - a stream whose leader holds a lease (under the incarnation its copy
//     was placed on) is refused unless forced: failover, not a restore,
//     handles a leader that merely died, and a live leader would be cut
//     off mid-write; a stream whose restore has not finished may be
//     restored again without force;
//   - the source must hold a lease: it serves the new leader's fetch;
//   - the leader is the requested one (a live stream node), else the
//     source if it is a live stream node (nothing to transfer), else the
//     first placement chooses; the other replicas go where placement
//     puts them, on live stream nodes; the backup copy stays on the
//     source if the source is a backup target, else goes to a live one.
//
// Failover (watchLeaders) leaves a stream alone while its restore is
// under way: the new copies hold nothing until the leader has fetched
// the source, so electing one of them would lose the stream.

// ErrLeaderLive says a restore was refused because the stream's leader
// holds a lease.
var ErrLeaderLive = errors.New("controller: the stream's leader is live")

func (c *Controller) restoreStream(ctx context.Context, r *pb.RestoreStreamRequest, now time.Time) (*pb.ControlResponse, error) {
	invalid := func(format string, a ...any) (*pb.ControlResponse, error) {
		return &pb.ControlResponse{Code: pb.ErrorCode_ERROR_CODE_INVALID, Error: "controller: " + fmt.Sprintf(format, a...)}, nil
	}
	s, ok := c.Stream(r.Name)
	if !ok || s.State == pb.StreamState_STREAM_STATE_DELETED || r.StreamId != 0 && s.Id != r.StreamId {
		return &pb.ControlResponse{Code: pb.ErrorCode_ERROR_CODE_NO_STREAM, Error: fmt.Sprintf("controller: no stream %s (id %d)", r.Name, r.StreamId)}, nil
	}
	if s.State != pb.StreamState_STREAM_STATE_ACTIVE {
		return invalid("%s is not active", r.Name)
	}
	if s.Epoch != r.FromEpoch {
		return &pb.ControlResponse{Code: pb.ErrorCode_ERROR_CODE_STALE, Error: fmt.Sprintf("controller: restore of %s decided at epoch %d, the stream is at epoch %d", r.Name, r.FromEpoch, s.Epoch)}, nil
	}
	if ln, ok := c.Node(s.Leader); ok && !r.Force && s.Restoring == nil && ln.Incarnation == s.Copies[0].Incarnation {
		if live, ago := c.leases.live(s.Leader, ln.Incarnation, now, c.cfg.LeaseTTL, c.cfg.LeaseTTL); live {
			return &pb.ControlResponse{Code: pb.ErrorCode_ERROR_CODE_LEADER_LIVE, Error: fmt.Sprintf(
				"%v: %s leads %s (epoch %d, heard from %v ago); a restore would cut it off: use force to restore anyway",
				ErrLeaderLive, s.Leader, r.Name, s.Epoch, ago.Round(time.Millisecond))}, nil
		}
	}
	src, ok := c.Node(r.Source)
	if !ok || src.Incarnation != r.SourceIncarnation {
		return &pb.ControlResponse{Code: pb.ErrorCode_ERROR_CODE_UNKNOWN_NODE, Error: fmt.Sprintf("controller: source %s (incarnation %016x) is not registered so", r.Source, r.SourceIncarnation)}, nil
	}
	cands, incs := c.liveCandidates(now)
	isLive := func(name string, role cluster.Role) bool {
		return slices.ContainsFunc(cands, func(m cluster.Candidate) bool { return m.Name == name && m.Role == role })
	}
	srcBackup := src.Role == pb.Role_ROLE_BACKUP
	if !isLive(r.Source, cluster.RoleNode) && !isLive(r.Source, cluster.RoleBackup) {
		return invalid("source %s holds no lease: it must serve the new leader's fetch", r.Source)
	}
	leader := r.Leader
	switch {
	case leader != "" && !isLive(leader, cluster.RoleNode):
		return invalid("%s is not a live stream node: it cannot lead %s", leader, r.Name)
	case leader == "" && !srcBackup:
		leader = r.Source
	}
	if ln, ok := c.Node(s.Leader); ok && leader == s.Leader && ln.Incarnation == s.Copies[0].Incarnation {
		return invalid("%s leads %s already, on the incarnation its copy was placed on: restore it onto another leader", leader, r.Name)
	}
	var placed []string
	if leader != "" {
		placed = []string{leader}
		if s.Replicas > 1 {
			others := slices.DeleteFunc(slices.Clone(cands), func(m cluster.Candidate) bool { return m.Name == leader })
			more, err := cluster.Place(r.Name, int(s.Replicas)-1, others)
			if err != nil {
				return restorePlacementError(r.Name, s.Replicas, cands, err), nil
			}
			placed = append(placed, more...)
		}
	} else {
		var err error
		if placed, err = cluster.Place(r.Name, int(s.Replicas), cands); err != nil {
			return restorePlacementError(r.Name, s.Replicas, cands, err), nil
		}
	}
	op := &pb.RestoreStream{Name: r.Name, StreamId: s.Id, FromEpoch: s.Epoch,
		Source: &pb.RestoreSource{Node: r.Source, Incarnation: src.Incarnation, Reason: fmt.Sprintf("restore requested by %s", r.Requester)}}
	for _, n := range placed {
		op.Copies = append(op.Copies, &pb.Copy{Node: n, Incarnation: incs[n]})
	}
	backup := cluster.PlaceBackup(r.Name, cands)
	if srcBackup {
		backup = r.Source
	}
	if backup != "" {
		op.Copies = append(op.Copies, &pb.Copy{Node: backup, Incarnation: incs[backup], Backup: true})
	}
	return c.decideCommand(ctx, &pb.Command{Op: &pb.Command_RestoreStream{RestoreStream: op}})
}

func restorePlacementError(name string, replicas uint32, cands []cluster.Candidate, err error) *pb.ControlResponse {
	var names []string
	for _, m := range cands {
		if m.Role == cluster.RoleNode {
			names = append(names, m.Name)
		}
	}
	return &pb.ControlResponse{Code: pb.ErrorCode_ERROR_CODE_PLACEMENT, Error: fmt.Sprintf(
		"%v: restoring %s with %d replicas needs %d live stream nodes; live: %v (%v)", ErrPlacement, name, replicas, replicas, names, err)}
}

// RestoreStream asks the controller to restore stream req.Name from
// req.Source's copy (see above). It returns the stream as restored: its
// leader fetches the source and serves under the returned record's
// epoch. An error wrapping ErrLeaderLive says the leader holds a lease
// and force was not set.
func (c *Controller) RestoreStream(ctx context.Context, req *pb.RestoreStreamRequest) (*pb.Stream, error) {
	req.Requester = c.cfg.Name
	resp, err := c.request(ctx, &pb.ControlRequest{Req: &pb.ControlRequest_RestoreStream{RestoreStream: req}})
	if err != nil {
		return nil, err
	}
	return resp.Stream, nil
}
