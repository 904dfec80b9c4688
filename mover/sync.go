package mover

import "context"

// syncEngine performs every request on the submitting goroutine, inside
// Submit. It owns no goroutine.
type syncEngine struct {
	gate gate
	why  string
}

var _ Mover = (*syncEngine)(nil)

func newSync(why string) *syncEngine {
	e := &syncEngine{why: why}
	e.gate.init()
	return e
}

func (e *syncEngine) Submit(_ context.Context, r Request, c Completer) error {
	if err := r.Validate(); err != nil {
		return err
	}
	if !e.gate.enter() {
		return ErrClosed
	}
	defer e.gate.exit()
	execCPU(&r)
	c.Complete(r.Tag, nil)
	return nil
}

func (e *syncEngine) SubmitBatch(_ context.Context, b *Batch) error {
	if err := b.validate(); err != nil {
		return b.reject(err)
	}
	if !e.gate.enter() {
		return b.reject(ErrClosed)
	}
	defer e.gate.exit()
	for i := range b.items {
		it := &b.items[i]
		execCPU(&it.r)
		it.c.Complete(it.r.Tag, nil)
	}
	return nil
}

func (e *syncEngine) Name() string { return "sync" }

func (e *syncEngine) Describe() string {
	return "sync: every operation runs inside Submit on the caller's goroutine; " + e.why
}

func (e *syncEngine) Close() error {
	e.gate.close()
	return nil
}
