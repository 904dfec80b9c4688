package mover

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
)

// cpuEngine runs requests on a bounded pool of worker goroutines fed by one
// buffered channel. Requests smaller than inlineBelow bytes run inline in
// Submit, where handing them to a worker would cost more than it saves.
//
// Goroutines: Workers workers, started by newCPU and owned by the engine;
// Close closes the queue once no submitter is inside the gate, and waits for
// the workers to drain it and exit.
type cpuEngine struct {
	gate        gate
	queue       chan cpuTask
	workers     sync.WaitGroup
	nWorkers    int
	inlineBelow int
	inlineWhy   string
	pieces      int // a large request is split into this many pieces
	why         string
}

var _ Mover = (*cpuEngine)(nil)

// cpuTask is one request or one batch. It is sent by value, so that a
// single request costs no allocation.
type cpuTask struct {
	it    batchItem
	batch []batchItem // non-nil for a batch; it is then unset
	piece *splitOp    // non-nil: help with a split request
}

func newCPU(cfg *Config, why string) *cpuEngine {
	e := &cpuEngine{
		queue:    make(chan cpuTask, cfg.QueueDepth),
		nWorkers: cfg.Workers,
		why:      why,
	}
	e.gate.init()
	e.pieces = runtime.GOMAXPROCS(0)
	e.pieces = min(e.pieces, e.nWorkers+1)
	switch {
	case cfg.InlineBelow < 0:
		e.inlineBelow, e.inlineWhy = 0, "never inline (configured)"
	case cfg.InlineBelow > 0:
		e.inlineBelow, e.inlineWhy = cfg.InlineBelow, "configured"
	default:
		e.inlineBelow, e.inlineWhy = measuredCrossover()
	}
	for i := 0; i < e.nWorkers; i++ {
		e.workers.Add(1)
		go e.work()
	}
	return e
}

// work runs tasks until the queue is closed and drained. It parks as soon
// as the queue is empty: spinning for the next task was tried, and on a
// machine shared with other processes it took the core the copying
// goroutine needed (2x slower at 64 KiB).
func (e *cpuEngine) work() {
	defer e.workers.Done()
	for t := range e.queue {
		t.run()
	}
}

func (t *cpuTask) run() {
	if t.piece != nil {
		t.piece.work()
		return
	}
	if t.batch == nil {
		execCPU(&t.it.r)
		t.it.c.Complete(t.it.r.Tag, nil)
		return
	}
	for i := range t.batch {
		it := &t.batch[i]
		execCPU(&it.r)
		it.c.Complete(it.r.Tag, nil)
	}
}

// enqueue hands t to the workers, waiting for room (back-pressure) until
// ctx ends. The caller is inside the gate, so the queue is open.
func (e *cpuEngine) enqueue(ctx context.Context, t cpuTask) error {
	select {
	case e.queue <- t:
		return nil
	default:
	}
	select {
	case e.queue <- t:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (e *cpuEngine) Submit(ctx context.Context, r Request, c Completer) error {
	if err := r.Validate(); err != nil {
		return err
	}
	if !e.gate.enter() {
		return ErrClosed
	}
	defer e.gate.exit()
	return e.dispatch(ctx, &r, c)
}

// dispatch runs r inline, shares it out, or queues it, by size. Only
// queueing can fail (ctx ended while the queue was full).
func (e *cpuEngine) dispatch(ctx context.Context, r *Request, c Completer) error {
	n := r.Len()
	if n < e.inlineBelow {
		execCPU(r)
		c.Complete(r.Tag, nil)
		return nil
	}
	if e.inlineBelow > 0 && e.pieces > 1 && n >= 2*chunkSize && (r.Kind != KindMove || !overlap(r.Dst[:n], r.Src)) {
		e.split(r, c)
		return nil
	}
	return e.enqueue(ctx, cpuTask{it: batchItem{*r, c}})
}

// chunkSize is the unit in which a split request is shared out.
const chunkSize = 32 << 10

// split shares a large request out in chunks between the caller and up to
// pieces-1 workers, each taking the next chunk from a counter until none
// is left (dynamic scheduling). With a core free, a worker copies beside
// the caller; with none (other processes hold it, or the worker is
// descheduled mid-way), the caller goes on taking chunks itself and waits
// for at most the one chunk a worker holds. Each chunk flushes and fences
// its own range; the request completes when the last chunk does, on
// whichever goroutine ran it.
func (e *cpuEngine) split(r *Request, c Completer) {
	n := r.Len()
	s := &splitOp{r: *r, c: c, chunks: int32((n + chunkSize - 1) / chunkSize)}
	s.r.Dst = s.r.Dst[:n]
	s.left.Store(s.chunks)
	helpers := min(e.pieces-1, int(s.chunks)-1)
	for i := 0; i < helpers; i++ {
		select {
		case e.queue <- cpuTask{piece: s}:
		default: // queue full: the caller does more itself
		}
	}
	s.work()
}

// splitOp is a request shared out in chunks.
type splitOp struct {
	r      Request
	c      Completer
	chunks int32
	next   atomic.Int32 // next chunk to take
	left   atomic.Int32 // chunks not yet done
}

// work takes and runs chunks until none is left.
func (s *splitOp) work() {
	for {
		i := s.next.Add(1) - 1
		if i >= s.chunks {
			return
		}
		lo := int(i) * chunkSize
		hi := min(lo+chunkSize, len(s.r.Dst))
		p := Request{Kind: s.r.Kind, Dst: s.r.Dst[lo:hi], Value: s.r.Value, Flags: s.r.Flags}
		if s.r.Src != nil {
			p.Src = s.r.Src[lo:hi]
		}
		execCPU(&p)
		if s.left.Add(-1) == 0 {
			s.c.Complete(s.r.Tag, nil)
			return
		}
	}
}

// SubmitBatch runs a batch whose total is below the inline size inline;
// otherwise each request goes its own way, as with Submit. ctx is checked
// once, before anything starts: after that the batch is accepted, and
// waits for queue room without giving up.
func (e *cpuEngine) SubmitBatch(ctx context.Context, b *Batch) error {
	if err := b.validate(); err != nil {
		return b.reject(err)
	}
	if err := ctx.Err(); err != nil {
		return b.reject(err)
	}
	if !e.gate.enter() {
		return b.reject(ErrClosed)
	}
	defer e.gate.exit()
	total := 0
	for i := range b.items {
		total += b.items[i].r.Len()
	}
	if total < e.inlineBelow {
		t := cpuTask{batch: b.items}
		t.run()
		return nil
	}
	for i := range b.items {
		it := b.items[i]
		e.dispatch(context.Background(), &it.r, it.c) // cannot fail without a deadline
	}
	return nil
}

func (e *cpuEngine) Name() string { return "cpu" }

func (e *cpuEngine) Describe() string {
	inl := fmt.Sprintf("inline below %d B (%s)", e.inlineBelow, e.inlineWhy)
	if e.inlineBelow == math.MaxInt {
		inl = "always inline (" + e.inlineWhy + ")"
	}
	if e.inlineBelow > 0 && e.pieces > 1 {
		inl += fmt.Sprintf(", larger ones shared out in %d KiB chunks between the caller and up to %d workers", chunkSize>>10, e.pieces-1)
	}
	return fmt.Sprintf("cpu: %d workers, queue of %d, %s; %s", e.nWorkers, cap(e.queue), inl, e.why)
}

func (e *cpuEngine) Close() error {
	if e.gate.close() {
		close(e.queue)
	}
	e.workers.Wait()
	return nil
}
