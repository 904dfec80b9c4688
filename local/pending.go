package local

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Pending is the handle of one append started with Appender.Append. Its
// methods may be called from any goroutine, any number of times.
type Pending struct {
	// Index is the entry's position in the stream.
	Index uint64

	s    *Stream
	done atomic.Bool
	mu   sync.Mutex // guards ch; done is set under it
	ch   chan struct{}
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Done returns a channel closed once the copy has completed and the entry
// is published (committed once every earlier entry is; visible to readers
// then). From then the caller may reuse its buffer. It does not mean
// durable: see Wait.
func (p *Pending) Done() <-chan struct{} {
	if p.done.Load() {
		return closedChan
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done.Load() {
		return closedChan
	}
	if p.ch == nil {
		p.ch = make(chan struct{})
	}
	return p.ch
}

// Published reports whether Done is closed.
func (p *Pending) Published() bool { return p.done.Load() }

// Wait returns once the entry and every entry before it are durable, as
// Stream.Sync; or ctx.Err() if ctx ends while it waits for earlier copies
// to complete (a persist under way is not interrupted). After a persist
// error it returns ErrFailed, as Sync.
func (p *Pending) Wait(ctx context.Context) error { return p.s.SyncContext(ctx, p.Index) }

func (p *Pending) complete() {
	p.mu.Lock()
	p.done.Store(true)
	if p.ch != nil {
		close(p.ch)
	}
	p.mu.Unlock()
}

// SyncContext is Sync with a context: it returns ctx.Err() if ctx ends
// while entry i or an entry before it is not yet committed (an
// asynchronous copy or a reservation not yet published). The persist
// itself, once it starts, is not interrupted.
func (s *Stream) SyncContext(ctx context.Context, i uint64) error {
	if s.persisted.Load() > i {
		return nil
	}
	if s.committed.Load() <= i {
		if err := s.waitCommitted(ctx, i); err != nil {
			return err
		}
	}
	return s.Sync(i)
}

// copyTracker counts the asynchronous copies into the mapping in flight,
// so that Close can wait for them before it unmaps. Its zero value is
// ready. enter and exit are two atomic adds: either an enter sees closing
// set, or closeAndWait sees its count (sequentially consistent atomics).
type copyTracker struct {
	n       atomic.Int64
	closing atomic.Bool
}

// enter counts one more copy, unless the stream is closing.
func (t *copyTracker) enter() bool {
	t.n.Add(1)
	if t.closing.Load() {
		t.n.Add(-1)
		return false
	}
	return true
}

func (t *copyTracker) exit() { t.n.Add(-1) }

// closeAndWait refuses new copies and waits for those in flight. It polls:
// Close is rare, and a copy takes microseconds (a hung device blocks it,
// as unmapping under the device would be worse).
func (t *copyTracker) closeAndWait() {
	t.closing.Store(true)
	for d := time.Microsecond; t.n.Load() != 0; d = min(2*d, time.Millisecond) {
		time.Sleep(d)
	}
}

// WaitCommitted returns once entry i is committed (it and every entry
// before it published, and visible to readers), or ctx.Err() when ctx
// ends first, or ErrClosed when the stream is closed.
func (s *Stream) WaitCommitted(ctx context.Context, i uint64) error {
	if s.committed.Load() > i {
		return nil
	}
	return s.waitCommitted(ctx, i)
}
