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
// once with a zero Entry (ctx's error once ctx ends). When its node is
// Unavailable (restarting, dead, connection lost) it reconnects, to the
// next seed when that node was the one asked (any node holding a copy
// answers a tail from it; the others name the leader), and resumes after
// the last entry yielded, giving up with ErrTimeout once Options.Timeout
// has passed since the first of the attempts failing in a row (or after
// Options.MaxAttempts of them, if set). A tail that is connected waits
// for entries for as long as its node holds the call. A tail from End
// that reconnects before its first entry starts again at the end, and
// may miss entries appended in between.
func (c *Client) Tail(ctx context.Context, stream string, from uint64) iter.Seq2[Entry, error] {
	return func(yield func(Entry, error) bool) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		next := from
		failures, hops := 0, 0
		b := c.newBackoff()
		// failing is when the first of the attempts failing in a row
		// failed (zero while none is): the tail gives up Timeout after
		// it. An idle tail, connected and waiting for entries, may wait
		// for ever.
		var failing time.Time
		var last error
		for {
			req := &api.TailRequest{Stream: stream, From: next}
			if next == End {
				req.From, req.FromEnd = 0, true
			}
			rpc, addr := c.stub(stream)
			call, err := rpc.Tail(ctx, req)
			for err == nil {
				var r *api.TailResponse
				if r, err = call.Recv(); err != nil {
					break
				}
				failures, hops, failing = 0, 0, time.Time{}
				b.reset(c)
				for _, e := range r.Entries {
					next = e.Position + 1
					if !yield(entryOf(e), nil) {
						return
					}
				}
			}
			if ctx.Err() != nil {
				yield(Entry{}, ctx.Err())
				return
			}
			if failing.IsZero() {
				failing = time.Now()
			}
			if c.follow(stream, addr, err) && hops < maxHops {
				hops++
				continue
			}
			failures++
			hops = 0
			if status.Code(err) != codes.Unavailable || (c.attempts > 0 && failures >= c.attempts) {
				yield(Entry{}, err)
				return
			}
			last = reason(last, err)
			c.learnMembers(ctx)
			wctx, wcancel := context.WithDeadline(ctx, failing.Add(c.timeout))
			slept := b.sleep(wctx)
			wcancel()
			if !slept {
				if ctx.Err() != nil {
					yield(Entry{}, ctx.Err())
				} else {
					yield(Entry{}, c.timedOut("tail of "+stream, last))
				}
				return
			}
		}
	}
}
