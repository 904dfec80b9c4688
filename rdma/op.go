package rdma

import (
	"context"
	"fmt"
	"sync"
)

// OpKind names an operation.
type OpKind uint8

// Operation kinds.
const (
	OpWrite OpKind = iota + 1
	OpRead
	OpAtomicWrite
	OpFlush
	OpSend
	OpRecv
)

func (k OpKind) String() string {
	switch k {
	case OpWrite:
		return "write"
	case OpRead:
		return "read"
	case OpAtomicWrite:
		return "atomic-write"
	case OpFlush:
		return "flush"
	case OpSend:
		return "send"
	case OpRecv:
		return "recv"
	}
	return fmt.Sprintf("OpKind(%d)", uint8(k))
}

// Op is the handle of one posted operation. It completes exactly once.
type Op struct {
	kind OpKind
	done chan struct{}

	mu      sync.Mutex // guards the fields below
	err     error
	n       int
	cq      *CQ
	context any
	fired   bool
}

// Completer completes the Op it was returned with: n is the length
// transferred (used by Recv), err nil on success. Only the first call
// counts. Providers call it; users never see it.
type Completer func(n int, err error)

// NewOp returns a pending Op and the function that completes it. It is for
// providers.
func NewOp(kind OpKind) (*Op, Completer) {
	o := &Op{kind: kind, done: make(chan struct{})}
	return o, o.complete
}

// FailedOp returns an Op already completed with err.
func FailedOp(kind OpKind, err error) *Op {
	o, c := NewOp(kind)
	c(0, err)
	return o
}

func (o *Op) complete(n int, err error) {
	o.mu.Lock()
	if o.fired {
		o.mu.Unlock()
		return
	}
	o.fired = true
	o.n, o.err = n, err
	cq, ctx := o.cq, o.context
	close(o.done)
	o.mu.Unlock()
	if cq != nil {
		cq.push(Completion{Op: o, Context: ctx})
	}
}

// Kind says what the Op does.
func (o *Op) Kind() OpKind { return o.kind }

// Done is closed when the Op completes.
func (o *Op) Done() <-chan struct{} { return o.done }

// Wait waits for the Op or ctx and returns the Op's error, or ctx's. A
// cancelled Wait does not cancel the Op.
func (o *Op) Wait(ctx context.Context) error {
	select {
	case <-o.done:
		return o.Err()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Err is the Op's error once it is done; nil while it is pending.
func (o *Op) Err() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err
}

// Len is the number of bytes a completed Recv received.
func (o *Op) Len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n
}

// Notify has the Op's completion delivered to cq with context, at once if
// it is already done. Only the last Notify before completion counts.
func (o *Op) Notify(cq *CQ, context any) {
	o.mu.Lock()
	if !o.fired {
		o.cq, o.context = cq, context
		o.mu.Unlock()
		return
	}
	o.mu.Unlock()
	cq.push(Completion{Op: o, Context: context})
}

// Completion is an entry of a CQ.
type Completion struct {
	Op      *Op
	Context any
}

// CQ is a completion queue: it collects the completions of the Ops that
// were Notified to it, in completion order. It is unbounded (the Ops in
// flight bound it). Safe for concurrent use.
type CQ struct {
	mu    sync.Mutex
	items []Completion
	ready chan struct{} // one token while items is non-empty
}

// NewCQ returns an empty queue.
func NewCQ() *CQ { return &CQ{ready: make(chan struct{}, 1)} }

func (q *CQ) push(c Completion) {
	q.mu.Lock()
	q.items = append(q.items, c)
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// Ready has a token while completions may be queued: a loop that selects
// on it among other channels takes the token, then Polls until Poll finds
// nothing (a completion pushed meanwhile leaves a token again). Waiting
// on it directly saves a goroutine that only forwards completions.
func (q *CQ) Ready() <-chan struct{} { return q.ready }

// Poll returns the oldest completion, if any, without waiting.
func (q *CQ) Poll() (Completion, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		return Completion{}, false
	}
	c := q.items[0]
	q.items[0] = Completion{}
	q.items = q.items[1:]
	if len(q.items) > 0 {
		select {
		case q.ready <- struct{}{}:
		default:
		}
	}
	return c, true
}

// Wait returns the oldest completion, waiting for one or for ctx.
func (q *CQ) Wait(ctx context.Context) (Completion, error) {
	for {
		if c, ok := q.Poll(); ok {
			return c, nil
		}
		select {
		case <-q.ready:
		case <-ctx.Done():
			return Completion{}, ctx.Err()
		}
	}
}
