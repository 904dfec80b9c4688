package mover

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// recorder is a Completer that records every completion by tag and fails
// the test on a second completion of the same tag.
type recorder struct {
	t    testing.TB
	mu   sync.Mutex
	errs map[uint64]error
	wg   sync.WaitGroup
}

func newRecorder(t testing.TB) *recorder { return &recorder{t: t, errs: map[uint64]error{}} }

func (r *recorder) expect(n int) { r.wg.Add(n) }

func (r *recorder) Complete(tag uint64, err error) {
	r.mu.Lock()
	if _, dup := r.errs[tag]; dup {
		r.t.Errorf("tag %d completed twice", tag)
	}
	r.errs[tag] = err
	r.mu.Unlock()
	r.wg.Done()
}

func (r *recorder) wait(t testing.TB) {
	t.Helper()
	ch := make(chan struct{})
	go func() { r.wg.Wait(); close(ch) }()
	select {
	case <-ch:
	case <-time.After(20 * time.Second):
		t.Fatal("completions did not arrive")
	}
}

var testSizes = []int{0, 1, 7, 63, 64, 65, 255, 256, 257, 4095, 4096, 4097, 65536 + 13, 1 << 20}

var flagSets = []Flags{0, Durable, NonTemporal, NoFlush, Durable | NonTemporal, NonTemporal | NoFlush}

// testEngineConformance checks the contract of Mover on m. Every engine,
// the dsa engine through the device model included, must pass it.
func testEngineConformance(t *testing.T, m Mover) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	t.Run("CopyFillFlush", func(t *testing.T) {
		for _, n := range testSizes {
			for _, f := range flagSets {
				src := make([]byte, n+64)
				for i := range src {
					src[i] = byte(rng.Uint32())
				}
				off := rng.IntN(64)
				dst := make([]byte, n+128)
				guard := append([]byte(nil), dst...)
				if err := Copy(ctx, m, dst[off:off+n], src[off:off+n], f).Wait(ctx); err != nil {
					t.Fatalf("copy %d %v: %v", n, f, err)
				}
				if !bytes.Equal(dst[off:off+n], src[off:off+n]) {
					t.Fatalf("copy %d flags %v: wrong bytes", n, f)
				}
				if !bytes.Equal(dst[:off], guard[:off]) || !bytes.Equal(dst[off+n:], guard[off+n:]) {
					t.Fatalf("copy %d: wrote outside dst", n)
				}
				if err := Fill(ctx, m, dst[off:off+n], 0xa5, f).Wait(ctx); err != nil {
					t.Fatalf("fill %d: %v", n, err)
				}
				if bytes.Count(dst[off:off+n], []byte{0xa5}) != n || !bytes.Equal(dst[off+n:], guard[off+n:]) {
					t.Fatalf("fill %d flags %v: wrong bytes", n, f)
				}
				if err := Flush(ctx, m, dst[off:off+n]).Wait(ctx); err != nil {
					t.Fatalf("flush %d: %v", n, err)
				}
			}
		}
	})
	t.Run("MoveOverlap", func(t *testing.T) {
		for _, n := range testSizes {
			for _, shift := range []int{-65, -1, 1, 64, 4097} {
				buf := make([]byte, n+2*4200)
				for i := range buf {
					buf[i] = byte(i * 7)
				}
				want := append([]byte(nil), buf...)
				s, d := 4200, 4200+shift
				copy(want[d:d+n], want[s:s+n])
				if err := Move(ctx, m, buf[d:d+n], buf[s:s+n], Durable).Wait(ctx); err != nil {
					t.Fatalf("move %d by %d: %v", n, shift, err)
				}
				if !bytes.Equal(buf, want) {
					t.Fatalf("move %d by %d: wrong bytes", n, shift)
				}
			}
		}
	})
	t.Run("ManyInFlight", func(t *testing.T) {
		rec := newRecorder(t)
		const ops = 300
		srcs, dsts := make([][]byte, ops), make([][]byte, ops)
		rec.expect(ops)
		for i := 0; i < ops; i++ {
			n := 1 + rng.IntN(20000)
			srcs[i], dsts[i] = make([]byte, n), make([]byte, n)
			for j := range srcs[i] {
				srcs[i][j] = byte(i + j)
			}
			err := m.Submit(ctx, Request{Kind: KindCopy, Dst: dsts[i], Src: srcs[i], Flags: Durable, Tag: uint64(i)}, rec)
			if err != nil {
				t.Fatal(err)
			}
		}
		rec.wait(t)
		for i := 0; i < ops; i++ {
			if rec.errs[uint64(i)] != nil || !bytes.Equal(srcs[i], dsts[i]) {
				t.Fatalf("op %d: %v / bytes differ", i, rec.errs[uint64(i)])
			}
		}
	})
	t.Run("Batch", func(t *testing.T) {
		var b Batch
		src := make([]byte, 100000)
		for i := range src {
			src[i] = byte(i)
		}
		dst := make([]byte, 300000)
		o1 := b.Copy(dst[:100000], src, Durable)
		o2 := b.Fill(dst[100000:200000], 7, 0)
		o3 := b.Move(dst[200000:300000], src, NonTemporal)
		o4 := b.Flush(dst)
		rec := newRecorder(t)
		rec.expect(1)
		other := make([]byte, 10) // requests of a batch run in any order: no overlap
		b.Add(Request{Kind: KindFill, Dst: other, Value: 1, Tag: 99}, rec)
		if err := m.SubmitBatch(ctx, &b); err != nil {
			t.Fatal(err)
		}
		b.Reset()
		for _, o := range []*Op{o1, o2, o3, o4} {
			if err := o.Wait(ctx); err != nil {
				t.Fatal(err)
			}
		}
		rec.wait(t)
		if !bytes.Equal(dst[:10], []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}) || dst[150000] != 7 || dst[200005] != 5 || other[3] != 1 {
			t.Fatal("batch: wrong bytes")
		}
	})
	t.Run("Invalid", func(t *testing.T) {
		bad := []Request{
			{Kind: 0, Dst: make([]byte, 1)},
			{Kind: KindCopy, Dst: make([]byte, 1), Src: make([]byte, 2)},
			{Kind: KindFill, Dst: make([]byte, 1), Src: make([]byte, 1)},
			{Kind: KindCopy, Dst: make([]byte, 1), Src: make([]byte, 1), Flags: Durable | NoFlush},
			{Kind: KindCopy, Dst: make([]byte, 1), Src: make([]byte, 1), Flags: 1 << 20},
			{Kind: KindFlush, Dst: make([]byte, 1), Flags: NoFlush},
		}
		for _, r := range bad {
			rec := newRecorder(t)
			if err := m.Submit(ctx, r, rec); !errors.Is(err, ErrInvalid) {
				t.Fatalf("%+v: got %v, want ErrInvalid", r, err)
			}
			if len(rec.errs) != 0 {
				t.Fatal("completer called for a rejected request")
			}
		}
		var b Batch
		o := b.Copy(make([]byte, 1), make([]byte, 1), 0)
		b.Add(bad[1], newRecorder(t))
		if err := m.SubmitBatch(ctx, &b); !errors.Is(err, ErrInvalid) {
			t.Fatalf("batch: got %v", err)
		}
		if !errors.Is(o.Err(), ErrInvalid) {
			t.Fatalf("op of rejected batch: %v", o.Err())
		}
	})
}

func TestSyncEngine(t *testing.T) {
	m, err := New(Config{Engine: EngineSync})
	if err != nil {
		t.Fatal(err)
	}
	testEngineConformance(t, m)
	testClose(t, m)
}

func TestCPUEngine(t *testing.T) {
	for _, inline := range []int{-1, 0, 4096} {
		m, err := New(Config{Engine: EngineCPU, Workers: 2, QueueDepth: 4, InlineBelow: inline})
		if err != nil {
			t.Fatal(err)
		}
		t.Log(m.Describe())
		testEngineConformance(t, m)
		testClose(t, m)
	}
}

func testClose(t *testing.T, m Mover) {
	ctx := context.Background()
	var done atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				o := Copy(ctx, m, make([]byte, 8192), make([]byte, 8192), 0)
				if errors.Is(o.Err(), ErrClosed) {
					return
				}
				if err := o.Wait(ctx); err != nil && !errors.Is(err, ErrClosed) {
					t.Error(err)
				}
				done.Add(1)
			}
		}()
	}
	time.Sleep(time.Millisecond)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal("second close:", err)
	}
	wg.Wait()
	if err := Copy(ctx, m, make([]byte, 8), make([]byte, 8), 0).Err(); !errors.Is(err, ErrClosed) {
		t.Fatalf("after close: %v", err)
	}
}

// blocker is a Completer that holds its goroutine until released; it
// breaks the Completer contract on purpose, to fill the cpu queue.
type blocker struct{ release chan struct{} }

func (b *blocker) Complete(uint64, error) { <-b.release }

func TestCPUBackPressure(t *testing.T) {
	m, err := New(Config{Engine: EngineCPU, Workers: 1, QueueDepth: 1, InlineBelow: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	b := &blocker{release: make(chan struct{})}
	buf := make([]byte, 64)
	r := Request{Kind: KindFill, Dst: buf}
	// One request held by the worker, one in the queue, then Submit waits.
	for i := 0; i < 2; i++ {
		if err := m.Submit(context.Background(), r, b); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	for {
		err := m.Submit(ctx, r, b)
		if errors.Is(err, context.DeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if ctx.Err() != nil {
			t.Fatal("queue never filled")
		}
	}
	close(b.release)
}

func TestOpHandle(t *testing.T) {
	m, _ := New(Config{Engine: EngineCPU, Workers: 1, QueueDepth: 2, InlineBelow: -1})
	defer m.Close()
	var b Batch
	o := b.Fill(make([]byte, 1<<20), 1, 0)
	if o.Err() != ErrPending {
		t.Fatalf("before submit: %v", o.Err())
	}
	select {
	case <-o.Done():
		t.Fatal("done before submit")
	default:
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := o.Wait(ctx); err != context.Canceled {
		t.Fatalf("wait with ended ctx: %v", err)
	}
	if err := m.SubmitBatch(context.Background(), &b); err != nil {
		t.Fatal(err)
	}
	<-o.Done()
	if err := o.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// helpStats shares out while that has been 10% faster than inline, and
// tries the other way now and then, rarely when it is much worse.
func TestHelpStatsChoose(t *testing.T) {
	h := new(helpStats)
	if !h.choose() {
		t.Fatal("with nothing measured, sharing out is tried")
	}
	count := func() (yes int) {
		for i := 0; i < 1024; i++ {
			if h.choose() {
				yes++
			}
		}
		return yes
	}
	h.record(false, 1000*time.Nanosecond, 1024)
	h.record(true, 500*time.Nanosecond, 1024) // faster: share out
	if y := count(); y < 1024-1024/32-1 || y == 1024 {
		t.Fatalf("help faster: chosen %d of 1024", y)
	}
	h = new(helpStats)
	h.record(false, 1000*time.Nanosecond, 1024)
	h.record(true, 4000*time.Nanosecond, 1024) // 4x slower: rarely tried
	if y := count(); y == 0 || y > 1024/128+1 {
		t.Fatalf("help slower: chosen %d of 1024", y)
	}
}
