package mover_test

import (
	"context"
	"fmt"
	"sync"

	"github.com/rpstream/rpstream/mover"
)

// watermark folds out-of-order completions into "every request up to here
// is done", as an asynchronous append does: Complete may run on any
// goroutine, so it takes a lock, does constant work and never blocks.
type watermark struct {
	mu      sync.Mutex
	next    uint64          // lowest tag not yet known done
	done    map[uint64]bool // done tags above next
	failed  error
	advance *sync.Cond
}

func newWatermark() *watermark {
	w := &watermark{done: map[uint64]bool{}}
	w.advance = sync.NewCond(&w.mu)
	return w
}

func (w *watermark) Complete(tag uint64, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil && w.failed == nil {
		w.failed = err
	}
	w.done[tag] = true
	for w.done[w.next] {
		delete(w.done, w.next)
		w.next++
	}
	w.advance.Broadcast()
}

// waitFor blocks until every tag below n is done.
func (w *watermark) waitFor(n uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.next < n {
		w.advance.Wait()
	}
	return w.failed
}

// Keep 64 copies in flight from one goroutine and fold their completions
// into a watermark.
func Example_inFlight() {
	m, err := mover.New(mover.Config{Engine: mover.EngineCPU})
	if err != nil {
		panic(err)
	}
	defer m.Close()
	const inflight, n, size = 64, 1000, 4096
	dst := make([]byte, inflight*size)
	src := make([]byte, size)
	w := newWatermark()
	ctx := context.Background()
	for seq := uint64(0); seq < n; seq++ {
		if seq >= inflight {
			// Slot seq%inflight is free once request seq-inflight is done.
			if err := w.waitFor(seq - inflight + 1); err != nil {
				panic(err)
			}
		}
		k := seq % inflight
		r := mover.Request{Kind: mover.KindCopy, Dst: dst[k*size : (k+1)*size], Src: src, Flags: mover.Durable, Tag: seq}
		if err := m.Submit(ctx, r, w); err != nil {
			panic(err)
		}
	}
	fmt.Println(w.waitFor(n), w.next)
	// Output: <nil> 1000
}

// One operation with a handle.
func ExampleCopy() {
	m, _ := mover.New(mover.Config{Engine: mover.EngineSync})
	defer m.Close()
	dst := make([]byte, 5)
	op := mover.Copy(context.Background(), m, dst, []byte("hello"), mover.Durable)
	fmt.Println(op.Wait(context.Background()), string(dst))
	// Output: <nil> hello
}
