package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/rpstream/rpstream/api"
)

// An AppendStream call runs on three goroutines: the call's own, which
// waits for the end of the call, of the stream or of the server; a
// receiver, which reads requests and stores them (AppendNoSync); and an
// answerer, which makes each stored entry durable and answers it, in
// order. Many entries are thus in flight at once and share persists. The
// receiver blocks in Recv, which only the end of the call interrupts, so
// when the stream is deleted, the server stops or the answerer fails the
// call's goroutine marks the call stopped (the receiver then stores
// nothing more), lets the answerer answer what was stored (after a
// failure: only what is durable already), and returns Unavailable,
// NotFound or the answerer's error; the receiver ends when its Recv fails
// with the call.
//
// The answerer fails when an entry is not acknowledged: for a replicated
// stream, after Config.QuorumWait with too few copies reachable for its
// policy (Unavailable, saying so). The call then ends with that status at
// once, so a client waiting for an answer is never left waiting for the
// end of a call that only the client would end.

// appendAnswer is a request stored and not yet answered: resp once entry
// top (its highest position) is durable.
type appendAnswer struct {
	st   *stream
	top  uint64
	resp *api.AppendResponse
	// With metrics: when the request arrived, its entries and bytes.
	started        time.Time
	entries, bytes int
}

// appendCall is the state the goroutines of one AppendStream call share.
type appendCall struct {
	s    *Server
	call api.Streams_AppendStreamServer

	answers  chan appendAnswer // closed under mu by whoever sets stopped
	acquired chan struct{}     // closed when st is set
	failed   chan struct{}     // closed by the answerer when it fails

	// mu is held by the receiver while it stores and queues one entry,
	// and by the call's goroutine when it stops the receiver.
	mu      sync.Mutex
	stopped bool
	st      *stream
}

func (s *Server) AppendStream(call api.Streams_AppendStreamServer) error {
	if err := s.enter(); err != nil {
		return statusOf(err)
	}
	defer s.leave()
	c := &appendCall{s: s, call: call, answers: make(chan appendAnswer, 256), acquired: make(chan struct{}), failed: make(chan struct{})}
	answered := make(chan error, 1)
	go func() { answered <- c.answer() }()
	received := make(chan error, 1)
	go func() { received <- c.receive() }()

	var err error
	var streamDone <-chan struct{}
	acquired := c.acquired
wait:
	for {
		select {
		case err = <-received:
			break wait
		case <-acquired:
			acquired = nil
			streamDone = c.st.ctx.Done()
		case <-s.stopCtx.Done():
			err = ErrClosing
			c.stop()
			break wait
		case <-streamDone:
			err = fmt.Errorf("%w: %s deleted", ErrNoStream, c.st.name)
			c.stop()
			break wait
		case <-c.failed:
			// Its error is the call's (below).
			c.stop()
			break wait
		}
	}
	aerr := <-answered
	if err != nil || aerr != nil {
		c.s.metrics.appended(0, 0, time.Time{}, errors.Join(err, aerr))
	}
	c.mu.Lock()
	st := c.st
	if st != nil {
		st.release()
	}
	c.mu.Unlock()
	if aerr != nil {
		err = aerr
		if errors.Is(aerr, context.Canceled) && st != nil && st.ctx.Err() != nil {
			// The answerer's wait (on the stream's context) was cut
			// by the server stopping or the stream's deletion: say
			// which, not Canceled, so that a client retries the
			// entries not answered (Unavailable) or knows the stream
			// gone (NotFound).
			err = context.Cause(st.ctx)
		}
	}
	return statusOf(err)
}

// stop ends the storing of entries, unless the receiver already has.
func (c *appendCall) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.stopped {
		c.stopped = true
		close(c.answers)
	}
}

// receive reads and stores requests until the client closes its side (nil),
// an error, or stop.
func (c *appendCall) receive() error {
	for {
		req, err := c.call.Recv()
		if err == io.EOF {
			c.stop()
			return nil
		}
		if err != nil {
			c.stop()
			return err
		}
		if err := c.store(req); err != nil {
			c.stop()
			return err
		}
	}
}

var errStopped = errors.New("node: append call stopped")

// store stores one request and queues its answer.
func (c *appendCall) store(req *api.AppendRequest) error {
	var started time.Time
	if c.s.metrics != nil {
		started = time.Now()
	}
	if err := checkAppend(req); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return errStopped
	}
	if c.st == nil {
		st, err := c.s.acquire(req.Stream)
		if err != nil {
			return c.s.route(c.call.Context(), req.Stream, err)
		}
		c.st = st
		close(c.acquired)
	} else if req.Stream != c.st.name {
		return fmt.Errorf("%w: one stream per AppendStream call: %q, then %q", errBadArg, c.st.name, req.Stream)
	}
	resp, top, err := c.st.appendNoSync(req)
	if err != nil {
		return err
	}
	// The answerer drains answers until it is closed, even after a
	// failure, so this send does not block for ever.
	a := appendAnswer{st: c.st, top: top, resp: resp}
	if c.s.metrics != nil {
		a.started = started
		a.entries, a.bytes = reqSize(req)
	}
	c.answers <- a
	return nil
}

// answer makes each queued request durable and answers it, in order,
// until answers is closed; after a failure it closes failed and only
// drains (the receiver may be sending under mu, which stop needs). It takes every
// answer already queued at once, waits for the highest position among
// them and sends them all: one wake-up and one wait for many requests.
func (c *appendCall) answer() error {
	var err error
	queue := make([]appendAnswer, 0, cap(c.answers))
	for a := range c.answers {
		if err != nil {
			continue
		}
		queue = append(queue[:0], a)
		top := a.top
		open := true
	more:
		for len(queue) < cap(queue) {
			select {
			case b, ok := <-c.answers:
				if !ok {
					open = false
					break more
				}
				queue = append(queue, b)
				top = max(top, b.top)
			default:
				break more
			}
		}
		if err = c.answerAll(queue, top); err != nil {
			close(c.failed)
		}
		if !open {
			break
		}
	}
	return err
}

// answerAll sends the answers of queue once top, their highest position,
// is durable. If that wait fails, the answers whose entries are durable
// already are sent, in order, up to the first that is not.
func (c *appendCall) answerAll(queue []appendAnswer, top uint64) error {
	st := queue[0].st
	// Not the call's context: an append stored is answered even if the
	// client stops reading (Shutdown bounds the wait).
	werr := st.waitDurable(st.ctx, top)
	for _, a := range queue {
		if werr != nil && !st.durable(a.top) {
			return werr
		}
		if c.s.metrics != nil {
			// Before Send: a client that saw its answer sees it counted.
			c.s.metrics.appended(a.entries, a.bytes, a.started, nil)
		}
		if err := c.call.Send(a.resp); err != nil {
			return err
		}
	}
	return werr
}
