package mover

import (
	"context"
	"fmt"
	"math"
	"sync"
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
	why         string
}

var _ Mover = (*cpuEngine)(nil)

// cpuTask is one request or one batch. It is sent by value, so that a
// single request costs no allocation.
type cpuTask struct {
	it    batchItem
	batch []batchItem // non-nil for a batch; it is then unset
}

func newCPU(cfg *Config, why string) *cpuEngine {
	e := &cpuEngine{
		queue:    make(chan cpuTask, cfg.QueueDepth),
		nWorkers: cfg.Workers,
		why:      why,
	}
	e.gate.init()
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

func (e *cpuEngine) work() {
	defer e.workers.Done()
	for t := range e.queue {
		t.run()
	}
}

func (t *cpuTask) run() {
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
	if r.Len() < e.inlineBelow {
		execCPU(&r)
		c.Complete(r.Tag, nil)
		return nil
	}
	return e.enqueue(ctx, cpuTask{it: batchItem{r, c}})
}

func (e *cpuEngine) SubmitBatch(ctx context.Context, b *Batch) error {
	if err := b.validate(); err != nil {
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
	items := append([]batchItem(nil), b.items...)
	if err := e.enqueue(ctx, cpuTask{batch: items}); err != nil {
		return b.reject(err)
	}
	return nil
}

func (e *cpuEngine) Name() string { return "cpu" }

func (e *cpuEngine) Describe() string {
	inl := fmt.Sprintf("inline below %d B (%s)", e.inlineBelow, e.inlineWhy)
	if e.inlineBelow == math.MaxInt {
		inl = "always inline (" + e.inlineWhy + ")"
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
