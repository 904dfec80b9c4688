package local_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/rpstream/rpstream/local"
	"github.com/rpstream/rpstream/pmem"
	"github.com/rpstream/rpstream/pmem/simpmem"
)

// The crash harness (crash_test.go) over asynchronous appends: the same
// images (at persists and between operations) and the same checks
// (checkImage: every acknowledged entry present in order and byte-exact,
// nothing that was never appended, crash during recovery recovers the
// same state). An append is acknowledged when its Pending.Wait (or a Sync
// or Flush covering it) has returned.

// asyncWorkload drives an Appender from one goroutine.
type asyncWorkload struct {
	detWorkload
	a    *local.Appender
	held *heldMover // nil with a real engine
	ps   []*local.Pending
	win  int
}

func (w *asyncWorkload) record(pd *local.Pending, p []byte) {
	w.contents[pd.Index] = p
	w.ps = append(w.ps, pd)
}

// ack waits for the durability of the oldest append in flight, or of all.
func (w *asyncWorkload) ack(all bool) error {
	if len(w.ps) == 0 {
		return nil
	}
	k := 0
	if all {
		k = len(w.ps) - 1
	}
	if w.held != nil { // the held copies must land first: one goroutine
		for w.held.pending() > 0 {
			w.held.complete(w.rng.IntN(w.held.pending()), w.rng.IntN(10) == 0, w.rng)
		}
	}
	if err := w.ps[k].Wait(context.Background()); err != nil {
		return err
	}
	w.synced = max(w.synced, w.ps[k].Index+1)
	w.ps = w.ps[k+1:]
	return nil
}

func (w *asyncWorkload) run(ops int) error {
	ctx := context.Background()
	for op := 0; op < ops; op++ {
		if w.rng.IntN(8) == 0 {
			w.crashPoint(fmt.Sprintf("between ops, before op %d", op))
		}
		switch x := w.rng.IntN(100); {
		case x < 45: // an asynchronous append
			if len(w.ps) >= w.win {
				if err := w.ack(false); err != nil {
					return err
				}
			}
			p := w.randPayload()
			pd, err := w.a.Append(ctx, p)
			if errors.Is(err, local.ErrNoSpace) {
				continue
			}
			if err != nil {
				return err
			}
			w.record(pd, p)
		case x < 65 && w.held != nil && w.held.pending() > 0: // one copy lands, maybe failed
			w.held.complete(w.rng.IntN(w.held.pending()), w.rng.IntN(8) == 0, w.rng)
		case x < 72: // the oldest in flight becomes durable
			if err := w.ack(false); err != nil {
				return err
			}
		case x < 76: // everything in flight becomes durable
			if err := w.ack(true); err != nil {
				return err
			}
		case x < 84: // a synchronous append among the asynchronous ones
			p := w.randPayload()
			i, err := w.s.AppendNoSync(p)
			if errors.Is(err, local.ErrNoSpace) {
				continue
			}
			if err != nil {
				return err
			}
			w.contents[i] = p
		case x < 90: // retention
			if c := w.s.Persisted(); c > 0 {
				to := w.rng.Uint64N(c + 1)
				w.trimTo = max(w.trimTo, to)
				if _, err := w.s.Trim(to); err != nil {
					return err
				}
			}
		case x < 93: // the disk fills up for a while
			w.mem.FailAllocate(fmt.Errorf("simulated: %w", pmem.ErrNoSpace))
		case x < 96:
			w.mem.FailAllocate(nil)
		}
	}
	return w.ack(true)
}

// runAsyncCrash runs the workload on a fresh simulated memory and checks
// every crash image it took.
func runAsyncCrash(t *testing.T, seed uint64, eng engine, held *heldMover, ops, maxImgs int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed^0xa5c))
	mem := simpmem.New(SuperAndSlots(64))
	defer mem.Release()
	s, err := local.CreateOn(mem, crashOpts)
	if err != nil {
		t.Fatal(err)
	}
	m := eng.m
	if held != nil {
		m = held
	}
	win := 1 + rng.IntN(12)
	a, err := local.NewAppender(s, m, local.AppenderOptions{MaxInFlight: win})
	if err != nil {
		t.Fatal(err)
	}
	w := &asyncWorkload{detWorkload: detWorkload{rng: rng, mem: mem, s: s, contents: map[uint64][]byte{}, maxImgs: maxImgs},
		a: a, held: held, win: win}
	// Persists run on this goroutine only (Sync, Trim, region allocation),
	// so the rng is never shared.
	mem.BeforePersist = func(*simpmem.Memory) {
		if rng.IntN(4) == 0 {
			w.crashPoint(fmt.Sprintf("at persist %d", mem.Persists()))
		}
	}
	if eng.inject != nil { // faults the engine resubmits, an error the Appender redoes
		eng.inject()
	}
	if err := w.run(ops); err != nil {
		t.Fatalf("seed %d %s: workload: %v", seed, eng.name, err)
	}
	mem.BeforePersist = nil
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	contents := func(i uint64) ([]byte, bool) { p, ok := w.contents[i]; return p, ok }
	for _, im := range w.images {
		if err := checkImage(im, contents, rng); err != nil {
			t.Fatalf("seed %d %s (window %d): %v", seed, eng.name, win, err)
		}
	}
	t.Logf("seed %d %s: window %d, %d entries, %d fallbacks, %d crash images checked", seed, eng.name, win, len(w.contents), a.Fallbacks(), len(w.images))
}

// TestCrashConsistencyAsync completes the copies in an order the seed
// chooses (heldMover), some of them failed part-way: out-of-order
// completions, mover errors and crashes, reproducibly.
func TestCrashConsistencyAsync(t *testing.T) {
	n := 20
	if testing.Short() {
		n = 4
	}
	for _, seed := range seeds(t, n) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Logf("seed %d (rerun with RPSTREAM_CRASH_SEED=%d go test -run TestCrashConsistencyAsync ./local/)", seed, seed)
			runAsyncCrash(t, seed, engine{name: "held"}, &heldMover{}, 900, 40)
		})
	}
}

// TestCrashConsistencyAsyncEngines drives the same workload through every
// real engine: sync (deterministic: a seed reproduces the run), cpu with
// every request handed to a worker (completions out of order, timing up to
// the scheduler) and dsa on the device model through write() (with page
// faults and a device error injected).
func TestCrashConsistencyAsyncEngines(t *testing.T) {
	n := 4
	if testing.Short() {
		n = 1
	}
	for _, eng := range testEngines(t) {
		t.Run(eng.name, func(t *testing.T) {
			t.Log(eng.m.Describe())
			for _, seed := range seeds(t, n) {
				t.Logf("seed %d (rerun with RPSTREAM_CRASH_SEED=%d go test -run TestCrashConsistencyAsyncEngines/%s ./local/)", seed, seed, eng.name)
				runAsyncCrash(t, seed, eng, nil, 800, 40)
			}
		})
	}
}
