package local_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rpstream/rpstream/local"
	"github.com/rpstream/rpstream/mover"
	"github.com/rpstream/rpstream/pmem/simpmem"
)

// heldMover is a fake mover that holds every request until the test
// completes it, in the order the test chooses: out-of-order completions,
// reproducibly, from one goroutine. fail makes a completion report a
// partial copy with garbage after the part done, as a DSA fault would;
// refuse makes Submit itself fail.
type heldMover struct {
	mu     sync.Mutex
	held   []heldReq
	refuse error
}

type heldReq struct {
	r mover.Request
	c mover.Completer
}

var _ mover.Mover = (*heldMover)(nil)

func (m *heldMover) Submit(ctx context.Context, r mover.Request, c mover.Completer) error {
	if err := r.Validate(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.refuse != nil {
		return m.refuse
	}
	m.held = append(m.held, heldReq{r, c})
	return nil
}

func (m *heldMover) SubmitBatch(ctx context.Context, b *mover.Batch) error {
	return errors.New("heldMover: no batches")
}
func (m *heldMover) Name() string     { return "held" }
func (m *heldMover) Describe() string { return "held: the test completes requests" }
func (m *heldMover) Close() error     { return nil }

func (m *heldMover) pending() int { m.mu.Lock(); defer m.mu.Unlock(); return len(m.held) }

// complete finishes held request k. With fail, it copies only a prefix,
// scribbles over the rest and reports a PartialError.
func (m *heldMover) complete(k int, fail bool, rng *rand.Rand) {
	m.mu.Lock()
	h := m.held[k]
	m.held = append(m.held[:k], m.held[k+1:]...)
	m.mu.Unlock()
	if !fail {
		copy(h.r.Dst, h.r.Src)
		h.c.Complete(h.r.Tag, nil)
		return
	}
	done := rng.IntN(len(h.r.Src) + 1)
	copy(h.r.Dst[:done], h.r.Src)
	for j := done; j < len(h.r.Src); j++ {
		h.r.Dst[j] = byte(rng.Uint32())
	}
	h.c.Complete(h.r.Tag, &mover.PartialError{Kind: mover.KindCopy, Done: done, Len: len(h.r.Src), Err: mover.ErrDevice})
}

func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for k := range b {
		b[k] = byte(rng.Uint32())
	}
	return b
}

func checkEntries(t *testing.T, s *local.Stream, want [][]byte) {
	t.Helper()
	it := s.Iterator(0)
	k := 0
	for it.Next() {
		if k >= len(want) || !bytes.Equal(it.Entry().Data, want[k]) {
			t.Fatalf("entry %d: %d bytes, not what was appended", k, len(it.Entry().Data))
		}
		k++
	}
	if it.Err() != nil || k != len(want) {
		t.Fatalf("%d entries of %d: %v", k, len(want), it.Err())
	}
}

// Completions in reverse order commit nothing until the first one lands,
// then everything at once; failed copies are redone on the CPU.
func TestAsyncOutOfOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	mem := simpmem.New(SuperAndSlots(8))
	defer mem.Release()
	s, err := local.CreateOn(mem, crashOpts)
	if err != nil {
		t.Fatal(err)
	}
	var published atomic.Int64
	m := &heldMover{}
	a, err := local.NewAppender(s, m, local.AppenderOptions{MaxInFlight: 8, Published: func(uint64) { published.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var want [][]byte
	var ps []*local.Pending
	for k := 0; k < 8; k++ {
		p := randBytes(rng, 1+rng.IntN(3000))
		pd, err := a.Append(ctx, p)
		if err != nil || pd.Index != uint64(k) {
			t.Fatalf("append %d: %v", k, err)
		}
		want, ps = append(want, p), append(ps, pd)
	}
	// The window is full: a ninth waits for room until ctx ends.
	short, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	if _, err := a.Start(short, []byte("x")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("full window: %v", err)
	}
	cancel()
	for k := 7; k >= 1; k-- {
		m.complete(k, k%3 == 0, rng)
		if !ps[k].Published() || s.Committed() != 0 {
			t.Fatalf("after completing %d: published %v, committed %d", k, ps[k].Published(), s.Committed())
		}
	}
	m.complete(0, false, rng)
	<-ps[0].Done()
	if s.Committed() != 8 || published.Load() != 8 || a.Fallbacks() != 2 {
		t.Fatalf("committed %d published %d fallbacks %d", s.Committed(), published.Load(), a.Fallbacks())
	}
	if err := ps[7].Wait(ctx); err != nil || s.Persisted() != 8 {
		t.Fatal(err, s.Persisted())
	}
	// A refused request is copied on the caller's goroutine.
	m.refuse = mover.ErrClosed
	p := []byte("refused")
	if i, err := a.Start(ctx, p); err != nil || i != 8 || s.Committed() != 9 || a.Fallbacks() != 3 {
		t.Fatalf("refused: %d %v", i, err)
	}
	want = append(want, p)
	if _, err := a.Start(ctx, nil); err != nil { // empty: no copy at all
		t.Fatal(err)
	}
	want = append(want, []byte{})
	if err := a.Flush(ctx); err != nil || s.Persisted() != 10 {
		t.Fatal(err)
	}
	checkEntries(t, s, want)
	s.Close()
}

// Close waits for copies in flight, publishes and persists them.
func TestAsyncCloseWaitsForCopies(t *testing.T) {
	mem := simpmem.New(SuperAndSlots(4))
	defer mem.Release()
	s, err := local.CreateOn(mem, crashOpts)
	if err != nil {
		t.Fatal(err)
	}
	m := &heldMover{}
	a, _ := local.NewAppender(s, m, local.AppenderOptions{})
	for k := 0; k < 3; k++ {
		if _, err := a.Start(context.Background(), []byte{byte(k)}); err != nil {
			t.Fatal(err)
		}
	}
	closed := make(chan error)
	go func() { closed <- s.Close() }()
	for m.pending() > 0 {
		select {
		case err := <-closed:
			t.Fatalf("Close returned with copies in flight: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
		m.complete(m.pending()-1, false, nil)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if _, err := a.Start(context.Background(), []byte("late")); !errors.Is(err, local.ErrClosed) {
		t.Fatalf("after close: %v", err)
	}
	_, s2, st, err := recoverImage(mem.Media())
	if err != nil || len(st.entries) != 3 {
		t.Fatalf("%d entries durable after Close: %v", len(st.entries), err)
	}
	s2.Close()
}

// Every engine, many writers of many appends in flight, on a real file.
func TestAsyncEngines(t *testing.T) {
	for _, eng := range testEngines(t) {
		t.Run(eng.name, func(t *testing.T) {
			s, err := local.Create(filepath.Join(t.TempDir(), "s"), local.Options{RegionSize: 64 << 10})
			if err != nil {
				t.Fatal(err)
			}
			a, err := local.NewAppender(s, eng.m, local.AppenderOptions{MaxInFlight: 32})
			if err != nil {
				t.Fatal(err)
			}
			const writers, each = 3, 200
			got := make([]map[uint64][]byte, writers)
			var wg sync.WaitGroup
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(uint64(w), 9))
					got[w] = map[uint64][]byte{}
					var ps []*local.Pending
					for k := 0; k < each; k++ {
						p := randBytes(rng, rng.IntN(20000))
						pd, err := a.Append(context.Background(), p)
						if err != nil {
							t.Error(err)
							return
						}
						got[w][pd.Index] = p
						ps = append(ps, pd)
						if len(ps) == 16 {
							if err := ps[0].Wait(context.Background()); err != nil {
								t.Error(err)
								return
							}
							ps = ps[1:]
						}
					}
				}()
			}
			wg.Wait()
			if err := a.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			want := make([][]byte, writers*each)
			for _, g := range got {
				for i, p := range g {
					want[i] = p
				}
			}
			checkEntries(t, s, want)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestAsyncNoAllocation(t *testing.T) {
	s, err := local.Create(filepath.Join(t.TempDir(), "s"), local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, e := range []mover.Engine{mover.EngineSync, mover.EngineCPU} {
		m, err := mover.New(mover.Config{Engine: e})
		if err != nil {
			t.Fatal(err)
		}
		a, _ := local.NewAppender(s, m, local.AppenderOptions{})
		p := make([]byte, 200)
		ctx := context.Background()
		allocs := testing.AllocsPerRun(500, func() {
			if _, err := a.Start(ctx, p); err != nil {
				t.Fatal(err)
			}
		})
		a.Flush(ctx)
		m.Close()
		if allocs > 0 {
			t.Errorf("%s: Start allocates %.1f times per append", e, allocs)
		}
	}
}

// engine is a mover under test.
type engine struct {
	name string
	m    mover.Mover
	// inject, if set, makes the device fail some requests: page faults
	// the engine must resubmit, an error it reports.
	inject func()
}

// testEngines starts every engine: sync, cpu (handing every request to a
// worker, so that completions come out of order), and dsa on the device
// model through the write() path. They are closed when t ends.
func testEngines(t *testing.T) []engine {
	t.Helper()
	var out []engine
	for _, c := range []struct {
		name string
		cfg  mover.Config
	}{
		{"sync", mover.Config{Engine: mover.EngineSync}},
		{"cpu", mover.Config{Engine: mover.EngineCPU, Workers: 2, InlineBelow: -1}},
	} {
		m, err := mover.New(c.cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		out = append(out, engine{name: c.name, m: m})
	}
	if e, ok := dsaModelEngine(t); ok {
		out = append(out, e)
	}
	return out
}

func (e engine) String() string { return fmt.Sprintf("%s (%s)", e.name, e.m.Describe()) }

// An Appender makes its window's slots only as appends need them: none
// for a stream nobody writes, as many as were ever in flight at once
// otherwise (a node holds thousands of Appenders with a window of 1,024).
func TestAsyncWindowGrowsOnDemand(t *testing.T) {
	mem := simpmem.New(SuperAndSlots(4))
	defer mem.Release()
	s, err := local.CreateOn(mem, crashOpts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m := &heldMover{}
	a, err := local.NewAppender(s, m, local.AppenderOptions{MaxInFlight: 1024})
	if err != nil {
		t.Fatal(err)
	}
	if n := a.SlotsMade(); n != 0 {
		t.Fatalf("%d slots before any append", n)
	}
	ctx := context.Background()
	for k := range 40 { // 40 in flight at once
		if _, err := a.Start(ctx, []byte{byte(k)}); err != nil {
			t.Fatal(err)
		}
	}
	for m.pending() > 0 {
		m.complete(0, false, nil)
	}
	if n := a.SlotsMade(); n != 40 {
		t.Fatalf("%d slots after 40 appends in flight", n)
	}
	for k := range 100 { // one at a time: the free slots serve
		pd, err := a.Append(ctx, []byte{byte(k)})
		if err != nil {
			t.Fatal(err)
		}
		m.complete(0, false, nil)
		<-pd.Done()
	}
	if n := a.SlotsMade(); n != 40 {
		t.Fatalf("%d slots after 100 appends one at a time, want 40", n)
	}
	if err := a.Flush(ctx); err != nil || s.Committed() != 140 {
		t.Fatalf("flush: %v, committed %d", err, s.Committed())
	}
	if _, err := a.Start(ctx, []byte("after flush")); err != nil {
		t.Fatal(err)
	}
	m.complete(0, false, nil)
	if err := a.Flush(ctx); err != nil || s.Committed() != 141 {
		t.Fatalf("second flush: %v, committed %d", err, s.Committed())
	}
}
