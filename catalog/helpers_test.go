package catalog

import (
	"errors"
	"fmt"

	pb "github.com/rpstream/rpstream/catalog/catalogpb"
)

// The tests build commands with these, as a proposer would.

func registerCmd(name string, inc uint64, role pb.Role, replace bool) *pb.Command {
	return &pb.Command{Op: &pb.Command_RegisterNode{RegisterNode: &pb.RegisterNode{Name: name, Incarnation: inc, Role: role, Replace: replace}}}
}

func createCmd(name string, replicas uint32, acks pb.Acks, region uint64, copies ...*pb.Copy) *pb.Command {
	return &pb.Command{Op: &pb.Command_CreateStream{CreateStream: &pb.CreateStream{Name: name, Replicas: replicas, Acks: acks, RegionSize: region, Copies: copies}}}
}

func activateCmd(name string, id uint64) *pb.Command {
	return &pb.Command{Op: &pb.Command_ActivateStream{ActivateStream: &pb.ActivateStream{Name: name, StreamId: id}}}
}

func deleteCmd(name string, id uint64) *pb.Command {
	return &pb.Command{Op: &pb.Command_DeleteStream{DeleteStream: &pb.DeleteStream{Name: name, StreamId: id}}}
}

func droppedCmd(name string, id uint64, node string) *pb.Command {
	return &pb.Command{Op: &pb.Command_CopyDropped{CopyDropped: &pb.CopyDropped{Name: name, StreamId: id, Node: node}}}
}

func grantCmd(name string, id uint64, leader string, inc uint64) *pb.Command {
	return &pb.Command{Op: &pb.Command_GrantEpoch{GrantEpoch: &pb.GrantEpoch{Name: name, StreamId: id, Leader: leader, Incarnation: inc}}}
}

func forgetCmd(name string) *pb.Command {
	return &pb.Command{Op: &pb.Command_ForgetNode{ForgetNode: &pb.ForgetNode{Name: name}}}
}

// sentinels are the errors Apply and Restore return, each wrapped.
var sentinels = []error{ErrExists, ErrNoStream, ErrNameTaken, ErrNotLeader, ErrUnknownNode, ErrInvalid, ErrCorrupt, ErrStale, ErrHeld, ErrNoConsumer, ErrConsumerExists}

// errClass is the one sentinel err wraps: nil for nil, and an error of
// its own for an error that wraps none or more than one (a broken
// contract, which the callers report).
func errClass(err error) error {
	if err == nil {
		return nil
	}
	var found error
	for _, s := range sentinels {
		if errors.Is(err, s) {
			if found != nil {
				return fmt.Errorf("%v wraps both %v and %v", err, found, s)
			}
			found = s
		}
	}
	if found == nil {
		return fmt.Errorf("%v wraps no sentinel", err)
	}
	return found
}

func isSentinel(err error) bool {
	for _, s := range sentinels {
		if err == s {
			return true
		}
	}
	return false
}

// checkInvariants checks what every catalog made by Apply keeps true,
// whatever the commands: a stream that is not a finished tombstone is led
// by its first copy, a replica; at most one backup copy, the last; no
// node holds two copies; a deleting stream waits for some of its own
// copies, a deleted one for none; and no stream id's epoch ever goes
// down. epochs (stream id to the last epoch seen) is updated.
func checkInvariants(c *Catalog, epochs map[uint64]uint64) error {
	for _, s := range c.Streams() {
		if err := ValidName(s.Name); err != nil {
			return fmt.Errorf("stream %v", err)
		}
		if e, ok := epochs[s.Id]; ok && s.Epoch < e {
			return fmt.Errorf("stream %s id %d: epoch %d after %d", s.Name, s.Id, s.Epoch, e)
		}
		epochs[s.Id] = s.Epoch
		if s.State == pb.StreamState_STREAM_STATE_DELETED {
			if len(s.PendingDrop) != 0 {
				return fmt.Errorf("stream %s: deleted with copies pending: %v", s.Name, s.PendingDrop)
			}
			continue
		}
		if len(s.Copies) == 0 || s.Leader != s.Copies[0].Node || s.Copies[0].Backup {
			return fmt.Errorf("stream %s: leader %s, copies %v", s.Name, s.Leader, s.Copies)
		}
		seen := map[string]bool{}
		for i, cp := range s.Copies {
			if seen[cp.Node] {
				return fmt.Errorf("stream %s: two copies on %s", s.Name, cp.Node)
			}
			seen[cp.Node] = true
			if cp.Backup && i != len(s.Copies)-1 {
				return fmt.Errorf("stream %s: backup copy %d of %d", s.Name, i, len(s.Copies))
			}
		}
		for i, k := range s.Consumers {
			if i > 0 && s.Consumers[i-1].Name >= k.Name {
				return fmt.Errorf("stream %s: consumers out of order: %s then %s", s.Name, s.Consumers[i-1].Name, k.Name)
			}
			if k.Hold && k.Acked < s.TrimHead {
				return fmt.Errorf("stream %s: trimmed to %d past consumer %s's hold at %d", s.Name, s.TrimHead, k.Name, k.Acked)
			}
		}
		switch s.State {
		case pb.StreamState_STREAM_STATE_CREATING, pb.StreamState_STREAM_STATE_ACTIVE:
			if len(s.PendingDrop) != 0 {
				return fmt.Errorf("stream %s: live with copies pending drop: %v", s.Name, s.PendingDrop)
			}
		case pb.StreamState_STREAM_STATE_DELETING:
			if len(s.PendingDrop) == 0 {
				return fmt.Errorf("stream %s: deleting with nothing pending", s.Name)
			}
			for _, n := range s.PendingDrop {
				if !seen[n] {
					return fmt.Errorf("stream %s: drop pending on %s, which holds no copy", s.Name, n)
				}
			}
		default:
			return fmt.Errorf("stream %s: state %v", s.Name, s.State)
		}
	}
	return nil
}
