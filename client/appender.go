package client

import (
	"context"
	"errors"
	"io"
	"runtime"
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

// Coalescing bounds: the most payload bytes an Appender puts in one batch
// request (a single larger append goes alone); the count is bounded by
// MaxInFlight.
const maxBatchBytes = 1 << 20

// ErrAppenderClosed is returned by Append after Close.
var ErrAppenderClosed = errors.New("client: appender closed")

// Appender keeps many appends to one stream in flight on one AppendStream
// call, so that they share the node's persists. Append and Close may be
// called from several goroutines; positions come back in the order the
// appends were made. An append on an idle call is sent at once; one made
// while the call has requests in flight is queued for the Appender's
// sender goroutine, which sends all that queued meanwhile as one batch
// request (AppendRequest.batch, up to MaxInFlight entries and about
// 1 MiB), which the node stores and answers at once. When the call
// breaks with Unavailable (the node restarting, the leader gone, its
// policy not met in the node's QuorumWait), the Appender opens a new one,
// to the stream's leader as the node asked names it (see the package
// comment), and sends every unanswered append again with its original
// sequence number, so none is stored twice. An append not answered
// within Options.Timeout of its Append (or, if set, after
// Options.MaxAttempts calls broken in a row without an answer) fails the
// Appender: with ErrTimeout (Unavailable, carrying the last reason a node
// gave), or the call's error when it is not Unavailable. That error then
// fails every unanswered append and every later Append; make a new
// Appender to go on.
type Appender struct {
	c      *Client
	stream string
	ctx    context.Context
	cancel context.CancelFunc
	slots  chan struct{} // MaxInFlight tokens

	// sendMu is held by whoever sends on the call (a gRPC stream takes
	// one sender at a time) from taking requests off the queue to the
	// end of their Send, so that they go out in order; taken before mu.
	sendMu sync.Mutex
	// mu guards the call and the queues.
	mu         sync.Mutex
	call       api.Streams_AppendStreamClient
	callCancel context.CancelFunc // ends call
	gen        int                // bumped per call, so a stale receiver gives up
	unanswered []*Pending         // in the order of their numbers: sent, then queued
	queued     int                // the last queued of unanswered are not sent on call yet
	wake       chan struct{}      // a token when the sender has appends to send
	senderDone chan struct{}      // closed when the sender goroutine ends
	err        error
	closing    bool
	failures   int    // calls broken in a row without an answer
	hops       int    // leader hints followed in a row
	addr       string // where call goes
	last       error  // the last failure of a call, for ErrTimeout's message
	receivers  sync.WaitGroup
	// expiry fails the Appender once the oldest unanswered append has
	// waited Options.Timeout; armed (under mu) while appends are
	// unanswered.
	expiry *time.Timer
	armed  bool
}

// Pending is an append in flight.
type Pending struct {
	req      *api.AppendRequest
	deadline time.Time // Options.Timeout after Append
	done     chan struct{}
	pos      uint64
	err      error
	free     func()
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
	a := &Appender{c: c, stream: stream, ctx: ctx, cancel: cancel, slots: make(chan struct{}, MaxInFlight),
		wake: make(chan struct{}, 1), senderDone: make(chan struct{})}
	a.expiry = time.AfterFunc(time.Hour, a.expire)
	a.expiry.Stop()
	go a.sender()
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
		req:      &api.AppendRequest{Stream: a.stream, Data: data, ProducerId: a.c.producer},
		deadline: time.Now().Add(a.c.timeout),
		done:     make(chan struct{}),
		free:     func() { <-a.slots },
	}
	a.mu.Lock()
	if err := a.stoppedLocked(); err != nil {
		a.mu.Unlock()
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
	// On an idle call p goes out at once, from this goroutine (the
	// latency path); behind requests in flight it is queued for the
	// sender goroutine, which sends what queued meanwhile as one batch.
	direct := len(a.unanswered) == a.queued
	a.unanswered = append(a.unanswered, p)
	a.queued++
	if !a.armed {
		a.expiry.Reset(time.Until(a.unanswered[0].deadline))
		a.armed = true
	}
	a.mu.Unlock()
	if direct {
		a.sendMu.Lock()
		a.flushSendLocked(false)
		a.sendMu.Unlock()
	} else {
		select {
		case a.wake <- struct{}{}:
		default:
		}
	}
	return p, nil
}

// sender sends the queued appends when woken, until the Appender's
// context ends.
func (a *Appender) sender() {
	defer close(a.senderDone)
	for {
		select {
		case <-a.ctx.Done():
			return
		case <-a.wake:
		}
		// Let the goroutines that are ready to run (those just answered,
		// about to append again) queue their appends first, so that
		// they go out together.
		runtime.Gosched()
		a.sendMu.Lock()
		a.flushSendLocked(false)
		a.sendMu.Unlock()
	}
}

// flushSendLocked sends the queued appends on the call, in batches, and
// then, with closing, ends the call's sending side. Called with sendMu
// held. A failed Send means the call broke: its receiver sees why and
// sends every unanswered append again on a new call.
func (a *Appender) flushSendLocked(closing bool) {
	for {
		a.mu.Lock()
		if a.err != nil || a.call == nil {
			a.mu.Unlock()
			return
		}
		call := a.call
		if a.queued == 0 {
			a.mu.Unlock()
			if closing {
				call.CloseSend()
			}
			return
		}
		first := len(a.unanswered) - a.queued
		n := batchLen(a.unanswered[first:])
		a.queued -= n
		req := batchRequest(a.unanswered[first : first+n])
		a.mu.Unlock()
		call.Send(req)
	}
}

// batchLen is how many of ps, from the first, go out in one request:
// consecutive sequence numbers, within maxBatchBytes (at least one).
func batchLen(ps []*Pending) int {
	size := len(ps[0].req.Data)
	n := 1
	for n < len(ps) && ps[n].req.Sequence == ps[n-1].req.Sequence+1 {
		size += len(ps[n].req.Data)
		if size > maxBatchBytes {
			break
		}
		n++
	}
	return n
}

// batchRequest is the request for ps: the single append's own, or a batch
// from the first's sequence number.
func batchRequest(ps []*Pending) *api.AppendRequest {
	if len(ps) == 1 {
		return ps[0].req
	}
	r := ps[0].req
	// Coalesced: appends made one by one need not be stored as a unit.
	b := &api.AppendRequest{Stream: r.Stream, ProducerId: r.ProducerId, Sequence: r.Sequence, Batch: make([][]byte, len(ps)), Coalesced: true}
	for i, p := range ps {
		b.Batch[i] = p.req.Data
	}
	return b
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

// expire fails the Appender if its oldest unanswered append has waited
// Options.Timeout, and otherwise arms the timer for it.
func (a *Appender) expire() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.armed = false
	if a.err != nil || len(a.unanswered) == 0 {
		return
	}
	if d := time.Until(a.unanswered[0].deadline); d > 0 {
		a.expiry.Reset(d)
		a.armed = true
		return
	}
	a.failLocked(a.c.timedOut("append to "+a.stream, a.last))
	// The call's receiver, or a retry under way, gives up.
	a.gen++
	if a.callCancel != nil {
		a.callCancel()
	}
}

// newCallLocked opens a new call, ending the previous one.
func (a *Appender) newCallLocked() (api.Streams_AppendStreamClient, error) {
	if a.callCancel != nil {
		a.callCancel()
	}
	a.gen++
	ctx, cancel := context.WithCancel(a.ctx)
	a.callCancel = cancel
	var rpc api.StreamsClient
	rpc, a.addr = a.c.stub(a.stream)
	return rpc.AppendStream(ctx)
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
		// One answer per request: a batch's carries every position.
		n := max(len(r.Positions), 1)
		a.mu.Lock()
		a.failures, a.hops = 0, 0
		if gen != a.gen {
			a.mu.Unlock()
			continue
		}
		n = min(n, len(a.unanswered)-a.queued)
		done := a.unanswered[:n]
		a.unanswered = a.unanswered[n:]
		a.mu.Unlock()
		for i, p := range done {
			if len(r.Positions) > 0 {
				p.finish(r.Positions[i], nil)
			} else {
				p.finish(r.Position, nil)
			}
		}
	}
}

// broken handles the end of call generation gen: done after Close, a new
// call and the unanswered appends sent again after Unavailable, or the
// failure of every unanswered append.
func (a *Appender) broken(gen int, err error) {
	b := a.c.newBackoff()
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
		hint := a.c.follow(a.stream, a.addr, err) && a.hops < maxHops
		if hint {
			// A leader hint: the node refused the first append and
			// stored nothing; send them all to the leader at once.
			a.hops++
			err = status.Error(codes.Unavailable, "following the leader hint")
		} else {
			a.failures++
			a.hops = 0
			a.last = reason(a.last, err)
		}
		if status.Code(err) != codes.Unavailable || (a.c.attempts > 0 && a.failures >= a.c.attempts) || a.ctx.Err() != nil {
			a.failLocked(err)
			a.mu.Unlock()
			return
		}
		a.mu.Unlock()
		if !hint {
			a.c.learnMembers(a.ctx)
			b.sleep(a.ctx)
		}
		a.sendMu.Lock()
		a.mu.Lock()
		if gen != a.gen {
			a.mu.Unlock()
			a.sendMu.Unlock()
			return
		}
		if a.ctx.Err() != nil {
			a.failLocked(a.ctx.Err())
			a.mu.Unlock()
			a.sendMu.Unlock()
			return
		}
		// A new call, and every unanswered append again, in order (in
		// batches), the queued ones with them.
		call, cerr := a.newCallLocked()
		gen = a.gen
		a.queued = 0
		if cerr == nil {
			for rest := a.unanswered; len(rest) > 0 && cerr == nil; {
				n := batchLen(rest)
				cerr = call.Send(batchRequest(rest[:n]))
				rest = rest[n:]
			}
		}
		if cerr == nil && a.closing {
			cerr = call.CloseSend()
		}
		a.call = call
		a.mu.Unlock()
		a.sendMu.Unlock()
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
	a.queued = 0
}

// Close waits for every append in flight to be answered or failed, ends
// the call and returns the Appender's error, if any. Append fails after
// Close.
func (a *Appender) Close() error {
	a.sendMu.Lock()
	a.mu.Lock()
	a.closing = true
	a.mu.Unlock()
	a.flushSendLocked(true)
	a.sendMu.Unlock()
	a.receivers.Wait()
	a.cancel()
	<-a.senderDone
	a.expiry.Stop()
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}
