package catalog

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	pb "github.com/rpstream/rpstream/catalog/catalogpb"
)

// restore rebuilds a stream from one copy (RestoreStream): the operator's
// answer when failover cannot act (every stream node holding a copy was
// lost, and a backup target never leads) or when a stream is to be
// rebuilt elsewhere. In one entry the stream gets a new placement, its
// new leader (copies[0]) the next epoch, and the source copy is recorded
// (Stream.restoring) until the leader's epoch has started: its holder
// keeps it meanwhile even if it is not placed, and the leader fetches it
// before it serves.
//
// The commit floor is reset: a restore keeps what its source holds and
// nothing more (the controller's requester chose the longest log it could
// reach), and the floor of a lost log would stop the new leader from ever
// taking the source's. A decision on another epoch than the stream's
// changes nothing.
func (c *Catalog) restore(op *pb.RestoreStream) (*pb.Stream, error) {
	s, err := c.find(op.Name, op.StreamId)
	if err != nil {
		return nil, err
	}
	if s.State != pb.StreamState_STREAM_STATE_ACTIVE {
		return nil, fmt.Errorf("%w: %s is %s, not active", ErrInvalid, op.Name, StateName(s.State))
	}
	if op.FromEpoch != s.Epoch {
		return nil, fmt.Errorf("%w: restore of %s decided at epoch %d, the stream is at epoch %d", ErrStale, op.Name, op.FromEpoch, s.Epoch)
	}
	src := op.Source
	if src == nil {
		return nil, fmt.Errorf("%w: restore of %s names no source", ErrInvalid, op.Name)
	}
	if n := c.nodes[src.Node]; n == nil || n.Incarnation != src.Incarnation {
		return nil, fmt.Errorf("%w: source %s (incarnation %016x) of the restore of %s is not registered so", ErrUnknownNode, src.Node, src.Incarnation, op.Name)
	}
	if err := c.checkCopies(op.Name, s.Replicas, op.Copies); err != nil {
		return nil, err
	}
	s.Copies = nil
	for _, cp := range op.Copies {
		s.Copies = append(s.Copies, proto.Clone(cp).(*pb.Copy))
	}
	s.Leader = s.Copies[0].Node
	s.Epoch++
	s.CommitFloor = 0
	s.Restores++
	s.Restoring = &pb.RestoreSource{Node: src.Node, Incarnation: src.Incarnation, Epoch: s.Epoch, Reason: src.Reason}
	return s, nil
}

// Source says which node's copy of s a restore in progress rebuilds it
// from ("" if none): that node keeps its copy until the restore is done,
// placed or not.
func Source(s *pb.Stream) string {
	if s.GetRestoring() == nil {
		return ""
	}
	return s.Restoring.Node
}
