package catalog

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	pb "github.com/rpstream/rpstream/catalog/catalogpb"
)

// Retention and consumers: a stream's policy, the head it was trimmed to
// and its named cursors are catalog state, so that every copy's holder
// and every later leader sees the same ones.
//
// The invariant Apply keeps: a consumer that holds retention has
// acked >= trim_head. TrimStream never passes a hold, AddConsumer starts
// at trim_head or later, acks only rise.

var (
	// ErrHeld: TrimStream past the acknowledged position of a consumer
	// that holds retention.
	ErrHeld = errors.New("catalog: position held by a consumer")
	// ErrNoConsumer: RemoveConsumer of a name the stream has no consumer
	// of.
	ErrNoConsumer = errors.New("catalog: no such consumer")
	// ErrConsumerExists: AddConsumer of a name the stream has a consumer
	// of.
	ErrConsumerExists = errors.New("catalog: consumer exists")
)

// liveStream is stream name (id) if it is creating or active.
func (c *Catalog) liveStream(name string, id uint64) (*pb.Stream, error) {
	s, err := c.find(name, id)
	if err != nil {
		return nil, err
	}
	if !Live(s.State) {
		return nil, fmt.Errorf("%w: %s is being deleted", ErrNoStream, name)
	}
	return s, nil
}

// validRetention checks a policy: no negative age.
func validRetention(name string, r *pb.Retention) error {
	if r.GetMaxAgeNs() < 0 {
		return fmt.Errorf("%w: stream %s: negative max age %d", ErrInvalid, name, r.GetMaxAgeNs())
	}
	return nil
}

// clonedRetention is r as a stream keeps it: nil for no limit at all.
func clonedRetention(r *pb.Retention) *pb.Retention {
	if r == nil || r.MaxBytes == 0 && r.MaxEntries == 0 && r.MaxAgeNs == 0 {
		return nil
	}
	return proto.Clone(r).(*pb.Retention)
}

func (c *Catalog) setRetention(op *pb.SetRetention) (*pb.Stream, error) {
	s, err := c.liveStream(op.Name, op.StreamId)
	if err != nil {
		return nil, err
	}
	if err := validRetention(op.Name, op.Retention); err != nil {
		return nil, err
	}
	s.Retention = clonedRetention(op.Retention)
	return s, nil
}

// HoldOf is the lowest acknowledged position of s's consumers that hold
// retention, and the first such consumer's name; ok is false if none
// holds.
func HoldOf(s *pb.Stream) (pos uint64, consumer string, ok bool) {
	for _, k := range s.Consumers {
		if k.Hold && (!ok || k.Acked < pos) {
			pos, consumer, ok = k.Acked, k.Name, true
		}
	}
	return pos, consumer, ok
}

func (c *Catalog) trim(op *pb.TrimStream) (*pb.Stream, error) {
	s, err := c.liveStream(op.Name, op.StreamId)
	if err != nil {
		return nil, err
	}
	if op.Head <= s.TrimHead {
		return s, nil
	}
	if hold, who, ok := HoldOf(s); ok && op.Head > hold {
		return nil, fmt.Errorf("%w: trim of %s before %d: consumer %s holds it at %d", ErrHeld, op.Name, op.Head, who, hold)
	}
	s.TrimHead = op.Head
	return s, nil
}

func (c *Catalog) addConsumer(now int64, op *pb.AddConsumer) (*pb.Stream, error) {
	s, err := c.liveStream(op.Name, op.StreamId)
	if err != nil {
		return nil, err
	}
	if err := ValidName(op.Consumer); err != nil {
		return nil, fmt.Errorf("%w: consumer name %v", ErrInvalid, err)
	}
	i, found := slices.BinarySearchFunc(s.Consumers, op.Consumer, func(k *pb.Consumer, name string) int { return strings.Compare(k.Name, name) })
	if found {
		return nil, fmt.Errorf("%w: %s of %s", ErrConsumerExists, op.Consumer, op.Name)
	}
	k := &pb.Consumer{Name: op.Consumer, Acked: max(op.Start, s.TrimHead), Hold: op.Hold, Created: now}
	s.Consumers = slices.Insert(s.Consumers, i, k)
	return s, nil
}

func (c *Catalog) removeConsumer(op *pb.RemoveConsumer) (*pb.Stream, error) {
	s, err := c.liveStream(op.Name, op.StreamId)
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(s.Consumers, func(k *pb.Consumer) bool { return k.Name == op.Consumer })
	if i < 0 {
		return nil, fmt.Errorf("%w: %s of %s", ErrNoConsumer, op.Consumer, op.Name)
	}
	s.Consumers = slices.Delete(s.Consumers, i, i+1)
	return s, nil
}

func (c *Catalog) ackConsumers(now int64, op *pb.AckConsumers) (*pb.Stream, error) {
	s, err := c.liveStream(op.Name, op.StreamId)
	if err != nil {
		return nil, err
	}
	for _, a := range op.Acks {
		for _, k := range s.Consumers {
			if k.Name == a.Consumer && a.Acked > k.Acked {
				k.Acked, k.AckedTime = a.Acked, now
			}
		}
	}
	return s, nil
}

// Consumer returns a copy of consumer name of s.
func Consumer(s *pb.Stream, name string) (*pb.Consumer, bool) {
	for _, k := range s.Consumers {
		if k.Name == name {
			return proto.Clone(k).(*pb.Consumer), true
		}
	}
	return nil, false
}
