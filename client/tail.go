package client

import (
	"context"
	"iter"
	"math"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/api"
)

// End, as the starting position of Tail, starts at the stream's committed
// position: only entries appended after the tail begins.
const End = math.MaxUint64

// Tail returns an iterator over the entries of stream from position from
// (or End), following the stream as it grows: it yields each entry once,
// in order, and ends only when the loop breaks or with an error, yielded
// once with a zero Entry (ctx's error once ctx ends). When the node is
// Unavailable (restarting, connection lost) it reconnects and resumes
// after the last entry yielded, giving up after Options.MaxAttempts
// failed attempts in a row. A tail from End that reconnects before its
// first entry starts again at the end, and may miss entries appended in
// between.
func (c *Client) Tail(ctx context.Context, stream string, from uint64) iter.Seq2[Entry, error] {
	return func(yield func(Entry, error) bool) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		next := from
		failures, hops := 0, 0
		wait := c.backoff
		for {
			req := &api.TailRequest{Stream: stream, From: next}
			if next == End {
				req.From, req.FromEnd = 0, true
			}
			call, err := c.stub(stream).Tail(ctx, req)
			for err == nil {
				var r *api.TailResponse
				if r, err = call.Recv(); err != nil {
					break
				}
				failures, hops, wait = 0, 0, c.backoff
				for _, e := range r.Entries {
					next = e.Position + 1
					if !yield(Entry{Position: e.Position, Data: e.Data}, nil) {
						return
					}
				}
			}
			if ctx.Err() != nil {
				yield(Entry{}, ctx.Err())
				return
			}
			if c.follow(stream, err) && hops < maxHops {
				hops++
				continue
			}
			failures++
			if status.Code(err) != codes.Unavailable || failures >= c.attempts {
				yield(Entry{}, err)
				return
			}
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				yield(Entry{}, ctx.Err())
				return
			case <-t.C:
			}
			wait = min(2*wait, time.Second)
		}
	}
}
