package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/api"
)

// ErrConditionFailed matches (errors.Is) the error of a conditional
// append whose expected position was not the stream's next; errors.As
// with *ConditionError gives the stream's actual next position.
var ErrConditionFailed = errors.New("client: expected next position is not the stream's next")

// ConditionError is a conditional append refused by the leader
// (FailedPrecondition with api.AppendConditionFailed): nothing of it was
// stored. status.Code of it is FailedPrecondition.
type ConditionError struct {
	Stream   string
	Expected uint64 // the position the append expected
	Actual   uint64 // the stream's next position when the leader decided
	st       *status.Status
}

func (e *ConditionError) Error() string {
	return fmt.Sprintf("stream %s: expected next position %d, but the stream's next position is %d", e.Stream, e.Expected, e.Actual)
}

func (e *ConditionError) Is(target error) bool       { return target == ErrConditionFailed }
func (e *ConditionError) GRPCStatus() *status.Status { return e.st }

// conditionError returns err as a *ConditionError if it is a conditional
// append's refusal, else err.
func conditionError(stream string, err error) error {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.FailedPrecondition {
		return err
	}
	for _, d := range st.Details() {
		if cf, ok := d.(*api.AppendConditionFailed); ok {
			return &ConditionError{Stream: stream, Expected: cf.ExpectedNext, Actual: cf.ActualNext, st: st}
		}
	}
	return err
}

// AppendOptions are the options of AppendWith.
type AppendOptions struct {
	// ExpectNext, with Expect set, makes the append conditional
	// (JetStream's expected last sequence, here the next position): it is
	// stored only if its first entry goes at position ExpectNext, decided
	// by the leader in the order appends are stored; else it fails with
	// a *ConditionError (ErrConditionFailed) carrying the stream's next
	// position. Every position counts, also those readers skip (a new
	// leader's epoch marker, a failed batch's slots): after reading to
	// the end, the next position is Read's next; after one's own append,
	// its last position + 1. A retry after a lost answer (same producer
	// sequence numbers) is answered with the positions stored, not
	// refused.
	ExpectNext uint64
	Expect     bool
}

// AppendWith appends entries (at least one) to stream as one request:
// stored atomically (a batch is stored whole, at consecutive positions,
// or not at all) and answered with their positions once the last is
// durable, retried while the node is Unavailable as Append is, with the
// options o.
func (c *Client) AppendWith(ctx context.Context, stream string, entries [][]byte, o AppendOptions) ([]uint64, error) {
	if len(entries) == 0 {
		return nil, errors.New("client: no entries to append")
	}
	last := c.seq.Add(uint64(len(entries)))
	req := &api.AppendRequest{Stream: stream, ProducerId: c.producer, Sequence: last - uint64(len(entries)) + 1}
	if len(entries) == 1 {
		req.Data = entries[0]
	} else {
		req.Batch = entries
	}
	if o.Expect {
		req.ExpectedNext = &o.ExpectNext
	}
	var r *api.AppendResponse
	err := c.retryStream(ctx, stream, "append to "+stream, func(ctx context.Context, rpc api.StreamsClient) (err error) {
		r, err = rpc.Append(ctx, req)
		return err
	})
	if err != nil {
		return nil, conditionError(stream, err)
	}
	if len(entries) == 1 {
		return []uint64{r.Position}, nil
	}
	if len(r.Positions) != len(entries) {
		return nil, fmt.Errorf("client: %d positions answered for a batch of %d", len(r.Positions), len(entries))
	}
	return r.Positions, nil
}

// FindPosition returns the position of the first entry of stream that
// its leader appended at or after since (binary search at the node), or
// the committed position if none was: where a tail "since" starts.
func (c *Client) FindPosition(ctx context.Context, stream string, since time.Time) (uint64, error) {
	var r *api.FindPositionResponse
	err := c.retryStream(ctx, stream, "lookup in "+stream, func(ctx context.Context, rpc api.StreamsClient) (err error) {
		r, err = rpc.FindPosition(ctx, &api.FindPositionRequest{Stream: stream, SinceUnixNano: since.UnixNano()})
		return err
	})
	if err != nil {
		return 0, err
	}
	return r.Position, nil
}

// entryOf is the Entry of e.
func entryOf(e *api.Entry) Entry {
	out := Entry{Position: e.Position, Data: e.Data}
	if e.TimeUnixNano != 0 {
		out.Time = time.Unix(0, e.TimeUnixNano)
	}
	return out
}
