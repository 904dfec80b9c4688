package controller

import (
	"context"
	"fmt"
	"time"

	pb "github.com/rpstream/rpstream/catalog/catalogpb"
)

// Failover: the controller watches the leases of the streams' leaders.
// When a leader's lease has expired (it sent no heartbeat for LeaseTTL,
// counted from this member's election at the earliest), the controller
// elects another leader among the stream's current copies on stream nodes
// whose leases are live, under the next epoch, in one command
// (ElectLeader). memberlist's view plays no part: a node memberlist calls
// dead but that heartbeats keeps its streams.
//
// The elected node's takeover (package node) fences the copies with the
// new epoch, surveys their durable tails and, if another copy holds more
// of the log than its own, hands the stream on to that copy's holder
// (HandOff): the choice of leader here is only a first guess, made
// without knowing how far each copy got.
//
// Streams with acks=leader are not moved: their acknowledged entries may
// exist on the dead leader alone, so another leader would lose them
// silently; they wait for their leader as before.

// watchLeaders runs on every member and acts while it is the controller.
func (c *Controller) watchLeaders() {
	defer c.wg.Done()
	every := c.cfg.LeaseTTL / 8
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		if !c.IsController() {
			continue
		}
		for _, e := range c.elections(time.Now()) {
			ctx, cancel := context.WithTimeout(context.Background(), c.cfg.RequestTimeout)
			resp, err := c.decideCommand(ctx, &pb.Command{Op: &pb.Command_ElectLeader{ElectLeader: e}})
			cancel()
			if err == nil {
				err = errOf(resp)
			}
			if err != nil {
				c.log.Warn("cannot elect a new leader", "stream", e.Name, "leader", e.Leader, "err", err)
				continue
			}
			c.log.Warn("stream leader elected", "stream", e.Name, "leader", e.Leader, "epoch", resp.Epoch, "reason", e.Reason)
		}
	}
}

// elections are the ElectLeader commands the controller should propose
// at now: one per live stream whose leader's lease expired and that has a
// candidate.
func (c *Controller) elections(now time.Time) []*pb.ElectLeader {
	var out []*pb.ElectLeader
	for _, s := range c.Streams() {
		if s.State != pb.StreamState_STREAM_STATE_ACTIVE || s.Acks == pb.Acks_ACKS_LEADER || len(s.Copies) < 2 {
			continue
		}
		if s.Restoring != nil {
			// Being restored (restore.go): the other copies hold nothing
			// until the leader has fetched the source.
			continue
		}
		ln, ok := c.Node(s.Leader)
		if ok {
			if live, _ := c.leases.live(s.Leader, ln.Incarnation, now, c.cfg.LeaseTTL, c.cfg.LeaseTTL/2); live && ln.Incarnation == s.Copies[0].Incarnation {
				continue
			}
		}
		if e := c.candidate(s, now); e != nil {
			out = append(out, e)
		}
	}
	return out
}

// candidate picks the new leader of s: the first copy, in placement
// order, on a stream node of the copy's incarnation whose lease is live.
func (c *Controller) candidate(s *pb.Stream, now time.Time) *pb.ElectLeader {
	for _, cp := range s.Copies[1:] {
		if cp.Backup {
			continue
		}
		n, ok := c.Node(cp.Node)
		if !ok || n.Incarnation != cp.Incarnation || n.Role != pb.Role_ROLE_NODE {
			continue
		}
		if live, _ := c.leases.live(cp.Node, n.Incarnation, now, c.cfg.LeaseTTL, c.cfg.LeaseTTL); !live {
			continue
		}
		return &pb.ElectLeader{Name: s.Name, StreamId: s.Id, Leader: cp.Node, Incarnation: cp.Incarnation, FromEpoch: s.Epoch,
			Reason: fmt.Sprintf("lease of %s expired (epoch %d)", s.Leader, s.Epoch)}
	}
	return nil
}

// handOff decides a leader's request to pass its stream to another copy's
// holder: that node must hold a lease.
func (c *Controller) handOff(ctx context.Context, r *pb.ElectLeader, now time.Time) (*pb.ControlResponse, error) {
	n, ok := c.Node(r.Leader)
	if !ok {
		return &pb.ControlResponse{Code: pb.ErrorCode_ERROR_CODE_UNKNOWN_NODE, Error: fmt.Sprintf("controller: %s is not registered", r.Leader)}, nil
	}
	if live, ago := c.leases.live(r.Leader, n.Incarnation, now, c.cfg.LeaseTTL, c.cfg.LeaseTTL); !live {
		return &pb.ControlResponse{Code: pb.ErrorCode_ERROR_CODE_INVALID, Error: fmt.Sprintf("controller: %s holds no lease (heard from %v ago)", r.Leader, ago.Round(time.Millisecond))}, nil
	}
	e := &pb.ElectLeader{Name: r.Name, StreamId: r.StreamId, Leader: r.Leader, Incarnation: n.Incarnation, FromEpoch: r.FromEpoch, Reason: r.Reason}
	return c.decideCommand(ctx, &pb.Command{Op: &pb.Command_ElectLeader{ElectLeader: e}})
}
