package mover

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

const waitSpin = 3 * time.Microsecond

// Op is the handle of one operation started with Copy, Move, Fill or Flush
// (or their Batch twins). Its methods may be called from any goroutine, any
// number of times.
//
// An Op costs one allocation; its channel is made only if Done is called
// before completion. Callers with many operations in flight that care about
// that cost use Mover.Submit with their own Completer instead, which
// allocates nothing per operation on the sync and cpu engines.
type Op struct {
	done atomic.Bool
	mu   sync.Mutex // guards ch and err; done is set under it
	ch   chan struct{}
	err  error
}

var closedCh = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Done returns a channel closed when the operation has completed.
func (o *Op) Done() <-chan struct{} {
	if o.done.Load() {
		return closedCh
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.done.Load() {
		return closedCh
	}
	if o.ch == nil {
		o.ch = make(chan struct{})
	}
	return o.ch
}

// Wait waits until the operation completes and returns its error, or until
// ctx ends and returns ctx.Err() (the operation goes on regardless).
//
// It polls for a few microseconds before parking: a split request's last
// chunk usually finishes within that, and waking a parked goroutine from
// another core costs more.
func (o *Op) Wait(ctx context.Context) error {
	for deadline := time.Now().Add(waitSpin); !o.done.Load() && time.Now().Before(deadline); {
		runtime.Gosched()
	}
	if !o.done.Load() {
		select {
		case <-o.Done():
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return o.Err()
}

// Err returns ErrPending before completion, then the operation's result:
// nil, a *PartialError, or the submission error (ErrInvalid, ErrClosed,
// ctx.Err()) if it was never started.
func (o *Op) Err() error {
	if !o.done.Load() {
		return ErrPending
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err
}

// opCompleter is an Op seen as the Completer of its own request; kept
// unexported so that callers cannot complete an Op.
type opCompleter Op

func (c *opCompleter) Complete(_ uint64, err error) {
	o := (*Op)(c)
	o.mu.Lock()
	o.err = err
	o.done.Store(true)
	if o.ch != nil {
		close(o.ch)
	}
	o.mu.Unlock()
}

func start(ctx context.Context, m Mover, r Request) *Op {
	o := new(Op)
	if err := m.Submit(ctx, r, (*opCompleter)(o)); err != nil {
		(*opCompleter)(o).Complete(0, err)
	}
	return o
}

// Copy starts copying src into dst[:len(src)] on m. The ranges must not
// overlap. A request that cannot be started returns an Op already
// completed with the reason.
func Copy(ctx context.Context, m Mover, dst, src []byte, f Flags) *Op {
	return start(ctx, m, Request{Kind: KindCopy, Dst: dst, Src: src, Flags: f})
}

// Move is Copy for ranges that may overlap.
func Move(ctx context.Context, m Mover, dst, src []byte, f Flags) *Op {
	return start(ctx, m, Request{Kind: KindMove, Dst: dst, Src: src, Flags: f})
}

// Fill starts setting every byte of dst to c on m.
func Fill(ctx context.Context, m Mover, dst []byte, c byte, f Flags) *Op {
	return start(ctx, m, Request{Kind: KindFill, Dst: dst, Value: c, Flags: f})
}

// Flush starts writing back the cache lines of dst, so that earlier stores
// to it are durable on persistent memory when the Op completes.
func Flush(ctx context.Context, m Mover, dst []byte) *Op {
	return start(ctx, m, Request{Kind: KindFlush, Dst: dst, Flags: Durable})
}

// Batch gathers requests to submit together with Mover.SubmitBatch. A
// Batch is not safe for concurrent use; the zero value is empty and ready.
type Batch struct {
	items []batchItem
}

type batchItem struct {
	r Request
	c Completer
}

// Add appends r, whose completion goes to c.
func (b *Batch) Add(r Request, c Completer) { b.items = append(b.items, batchItem{r, c}) }

func (b *Batch) addOp(r Request) *Op {
	o := new(Op)
	b.Add(r, (*opCompleter)(o))
	return o
}

// Copy adds a copy and returns its handle, which completes after
// SubmitBatch.
func (b *Batch) Copy(dst, src []byte, f Flags) *Op {
	return b.addOp(Request{Kind: KindCopy, Dst: dst, Src: src, Flags: f})
}

// Move adds a move (overlap allowed) and returns its handle.
func (b *Batch) Move(dst, src []byte, f Flags) *Op {
	return b.addOp(Request{Kind: KindMove, Dst: dst, Src: src, Flags: f})
}

// Fill adds a fill and returns its handle.
func (b *Batch) Fill(dst []byte, c byte, f Flags) *Op {
	return b.addOp(Request{Kind: KindFill, Dst: dst, Value: c, Flags: f})
}

// Flush adds a cache flush of dst and returns its handle.
func (b *Batch) Flush(dst []byte) *Op {
	return b.addOp(Request{Kind: KindFlush, Dst: dst, Flags: Durable})
}

// Len is the number of requests in b.
func (b *Batch) Len() int { return len(b.items) }

// Reset empties b, keeping its storage.
func (b *Batch) Reset() {
	clear(b.items)
	b.items = b.items[:0]
}

// validate checks every request of b.
func (b *Batch) validate() error {
	for i := range b.items {
		if err := b.items[i].r.Validate(); err != nil {
			return err
		}
	}
	return nil
}

// reject completes the Ops of b with err (Completers added with Add are
// left alone, per the SubmitBatch contract) and returns err.
func (b *Batch) reject(err error) error {
	for i := range b.items {
		if c, ok := b.items[i].c.(*opCompleter); ok {
			c.Complete(b.items[i].r.Tag, err)
		}
	}
	return err
}
