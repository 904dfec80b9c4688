package client

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/api"
)

// MaxInFlight is the most appends an Appender keeps unanswered. It must not
// exceed the node's idempotence window (node.Config.IdempotenceWindow,
// 64 by default): every unanswered append may have to be sent again after
// a broken call, and the node answers a repeat with the original position
// only while it remembers it.
const MaxInFlight = 64

// ErrAppenderClosed is returned by Append after Close.
var ErrAppenderClosed = errors.New("client: appender closed")

// Appender keeps many appends to one stream in flight on one AppendStream
// call, so that they share the node's persists. Append and Close may be
// called from several goroutines; positions come back in the order the
// appends were made. When the call breaks with Unavailable, the Appender
// opens a new one and sends every unanswered append again with its
// original sequence number, so none is stored twice (see the package
// comment), giving up after Options.MaxAttempts attempts without an
// answer; its error then fails every unanswered append and every later
// Append.
type Appender struct {
	c      *Client
	stream string
	ctx    context.Context
	cancel context.CancelFunc
	slots  chan struct{} // MaxInFlight tokens

	// mu guards the call and the queue; Send runs under it (a gRPC stream
	// takes one sender at a time).
	mu         sync.Mutex
	call       api.Streams_AppendStreamClient
	callCancel context.CancelFunc // ends call
	gen        int                // bumped per call, so a stale receiver gives up
	unanswered []*Pending         // in the order sent
	err        error
	closing    bool
	failures   int // calls broken in a row without an answer
	hops       int // leader hints followed in a row without an answer
	receivers  sync.WaitGroup
}

// Pending is an append in flight.
type Pending struct {
	req  *api.AppendRequest
	done chan struct{}
	pos  uint64
	err  error
	free func()
}

// Done is closed when the append is answered or failed.
func (p *Pending) Done() <-chan struct{} { return p.done }

// Wait returns the entry's position once it is durable, or the append's
// error, or ctx's error if ctx ends first (the append stays in flight).
func (p *Pending) Wait(ctx context.Context) (uint64, error) {
	select {
	case <-p.done:
		return p.pos, p.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (p *Pending) finish(pos uint64, err error) {
	p.pos, p.err = pos, err
	close(p.done)
	p.free()
}

// NewAppender returns an Appender to stream; its call is opened by the
// first Append and ends with Close or ctx.
func (c *Client) NewAppender(ctx context.Context, stream string) *Appender {
	ctx, cancel := context.WithCancel(ctx)
	a := &Appender{c: c, stream: stream, ctx: ctx, cancel: cancel, slots: make(chan struct{}, MaxInFlight)}
	return a
}

// Append sends data as one entry and returns its handle at once, unless
// MaxInFlight appends are unanswered: then it waits for the oldest first.
// data must not change until the append is done.
func (a *Appender) Append(data []byte) (*Pending, error) {
	a.mu.Lock()
	err := a.stoppedLocked()
	a.mu.Unlock()
	if err != nil {
		return nil, err
	}
	select {
	case a.slots <- struct{}{}:
	case <-a.ctx.Done():
		return nil, a.ctx.Err()
	}
	p := &Pending{
		req:  &api.AppendRequest{Stream: a.stream, Data: data, ProducerId: a.c.producer},
		done: make(chan struct{}),
		free: func() { <-a.slots },
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.stoppedLocked(); err != nil {
		p.free()
		return nil, err
	}
	// The number is taken under mu, so that the appends go out in the
	// order of their numbers: a number taken before waiting for mu could
	// be overtaken by more than the node's window of later appends from
	// other goroutines, and then be refused as too old.
	p.req.Sequence = a.c.seq.Add(1)
	if a.call == nil {
		a.openLocked()
	}
	a.unanswered = append(a.unanswered, p)
	// A failed Send means the call broke: its receiver sees why and
	// sends p again on a new call.
	a.call.Send(p.req)
	return p, nil
}

// stoppedLocked is the error Append returns once the Appender failed or
// is closing.
func (a *Appender) stoppedLocked() error {
	if a.err != nil {
		return a.err
	}
	if a.closing {
		return ErrAppenderClosed
	}
	return nil
}

// newCallLocked opens a new call, ending the previous one.
func (a *Appender) newCallLocked() (api.Streams_AppendStreamClient, error) {
	if a.callCancel != nil {
		a.callCancel()
	}
	a.gen++
	ctx, cancel := context.WithCancel(a.ctx)
	a.callCancel = cancel
	return a.c.stub(a.stream).AppendStream(ctx)
}

// openLocked opens a new call and starts its receiver.
func (a *Appender) openLocked() {
	call, err := a.newCallLocked()
	gen := a.gen
	a.call = call
	a.receivers.Add(1)
	go func() {
		defer a.receivers.Done()
		if err != nil {
			a.broken(gen, err)
			return
		}
		a.receive(call, gen)
	}()
}

// receive completes the unanswered appends in order as answers arrive on
// call, until it ends.
func (a *Appender) receive(call api.Streams_AppendStreamClient, gen int) {
	for {
		r, err := call.Recv()
		if err != nil {
			a.broken(gen, err)
			return
		}
		a.mu.Lock()
		a.failures, a.hops = 0, 0
		if gen != a.gen || len(a.unanswered) == 0 {
			a.mu.Unlock()
			continue
		}
		p := a.unanswered[0]
		a.unanswered = a.unanswered[1:]
		a.mu.Unlock()
		p.finish(r.Position, nil)
	}
}

// broken handles the end of call generation gen: done after Close, a new
// call and the unanswered appends sent again after Unavailable, or the
// failure of every unanswered append.
func (a *Appender) broken(gen int, err error) {
	wait := a.c.backoff
	for {
		a.mu.Lock()
		if gen != a.gen {
			a.mu.Unlock()
			return
		}
		if err == io.EOF && a.closing && len(a.unanswered) == 0 {
			a.mu.Unlock()
			return
		}
		if err == io.EOF {
			err = status.Error(codes.Unavailable, "append call ended before every append was answered")
		}
		sleep := wait
		if a.c.follow(a.stream, err) && a.hops < maxHops {
			// A leader hint: the node refused the first append and
			// stored nothing; send them all to the leader at once.
			a.hops++
			err = status.Error(codes.Unavailable, "following the leader hint")
			sleep = 0
		} else {
			a.failures++
			wait = min(2*wait, time.Second)
		}
		if status.Code(err) != codes.Unavailable || a.failures >= a.c.attempts || a.ctx.Err() != nil {
			a.failLocked(err)
			a.mu.Unlock()
			return
		}
		a.mu.Unlock()
		t := time.NewTimer(sleep)
		select {
		case <-a.ctx.Done():
			t.Stop()
		case <-t.C:
		}
		a.mu.Lock()
		if gen != a.gen {
			a.mu.Unlock()
			return
		}
		if a.ctx.Err() != nil {
			a.failLocked(a.ctx.Err())
			a.mu.Unlock()
			return
		}
		// A new call, and every unanswered append again, in order.
		call, cerr := a.newCallLocked()
		gen = a.gen
		if cerr == nil {
			for _, p := range a.unanswered {
				if cerr = call.Send(p.req); cerr != nil {
					break
				}
			}
		}
		if cerr == nil && a.closing {
			cerr = call.CloseSend()
		}
		a.call = call
		a.mu.Unlock()
		if call == nil {
			err = cerr
			continue
		}
		// Recv reports a failed Send's cause.
		a.receive(call, gen)
		return
	}
}

// failLocked fails every unanswered append and every later Append.
func (a *Appender) failLocked(err error) {
	if a.err == nil {
		a.err = err
	}
	for _, p := range a.unanswered {
		p.finish(0, err)
	}
	a.unanswered = nil
}

// Close waits for every append in flight to be answered or failed, ends
// the call and returns the Appender's error, if any. Append fails after
// Close.
func (a *Appender) Close() error {
	a.mu.Lock()
	a.closing = true
	if a.call != nil && a.err == nil {
		a.call.CloseSend()
	}
	a.mu.Unlock()
	a.receivers.Wait()
	a.cancel()
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}
