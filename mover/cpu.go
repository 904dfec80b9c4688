package mover

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// cpuEngine runs requests on a bounded pool of worker goroutines fed by one
// buffered channel, and on the caller's. Requests smaller than inlineBelow
// bytes run inline in Submit, where handing them to a worker would cost
// more than it saves; larger ones go as dispatch says.
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
	pieces      int          // the caller and up to pieces-1 workers share a large request
	help        helpStats    // whether sharing out pays (see split)
	idle        atomic.Int32 // workers parked on the queue
	why         string
}

var _ Mover = (*cpuEngine)(nil)

// cpuTask is one request or one batch. It is sent by value, so that a
// single request costs no allocation.
type cpuTask struct {
	it    batchItem
	batch []batchItem // non-nil for a batch; it is then unset
	piece *splitOp    // non-nil: help with a split request
	// timed: handed whole to a parked worker; the worker records the
	// time since start in helpStats.
	start time.Time
	help  *helpStats
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
		e.inlineBelow, e.inlineWhy = -1, "" // measured below, once the workers run
	}
	for i := 0; i < e.nWorkers; i++ {
		e.workers.Add(1)
		go e.work()
	}
	if e.inlineBelow < 0 {
		e.inlineBelow, e.inlineWhy = measuredCrossover(e)
	}
	return e
}

// work runs tasks until the queue is closed and drained. It parks as soon
// as the queue is empty (spinning for the next task took, on a machine
// shared with other processes, the core the copying goroutine needed), and
// counts itself in idle while parked: a send to the queue then wakes it,
// which on a virtual machine can cost tens of microseconds.
func (e *cpuEngine) work() {
	defer e.workers.Done()
	for {
		var t cpuTask
		var ok bool
		select {
		case t, ok = <-e.queue:
		default:
			e.idle.Add(1)
			t, ok = <-e.queue
			e.idle.Add(-1)
		}
		if !ok {
			return
		}
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
		if t.help != nil {
			// The caller, if it waits, pays a wake-up like the worker's
			// own: count the wait twice.
			d := time.Since(t.start)
			t.help.record(true, 2*d, t.it.r.Len())
		}
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

// dispatch runs r inline, queues it, or shares it out. Only queueing with
// InlineBelow < 0 can fail (ctx ended while the queue was full).
//
//   - below the inline size: inline;
//   - no worker parked: queue it, which wakes nobody, while the workers
//     have less than one request each waiting; else run it on the caller
//     (caller-runs: the caller's core works too, and Submit slows down as
//     back-pressure);
//   - a worker parked: waking it is the expensive part, so split (and
//     helpStats) decide from measurements whether that has been paying.
func (e *cpuEngine) dispatch(ctx context.Context, r *Request, c Completer) error {
	n := r.Len()
	if n < e.inlineBelow {
		execCPU(r)
		c.Complete(r.Tag, nil)
		return nil
	}
	t := cpuTask{it: batchItem{*r, c}}
	if e.inlineBelow == 0 {
		return e.enqueue(ctx, t) // told never to inline
	}
	if e.idle.Load() == 0 {
		// Workers are awake: queue while they have less than a request
		// each waiting, else work on the caller's core as well.
		if len(e.queue) < e.nWorkers {
			select {
			case e.queue <- t:
				return nil
			default:
			}
		}
		execCPU(r)
		c.Complete(r.Tag, nil)
		return nil
	}
	e.split(r, c)
	return nil
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
	// Waking a worker costs the caller microseconds, and pays only if the
	// worker gets a core of its own soon; on a machine shared with other
	// processes it often does not. So the engine times requests shared
	// out and requests done inline, and shares out while that is faster
	// (helpStats.choose).
	n := r.Len()
	if !e.help.choose() {
		t := time.Now()
		execCPU(r)
		e.help.record(false, time.Since(t), n)
		c.Complete(r.Tag, nil)
		return
	}
	if e.pieces < 2 || n < 2*chunkSize || (r.Kind == KindMove && overlap(r.Dst[:n], r.Src)) {
		select { // cannot be shared out: hand it over whole
		case e.queue <- cpuTask{it: batchItem{*r, c}, start: time.Now(), help: &e.help}:
		default:
			execCPU(r)
			c.Complete(r.Tag, nil)
		}
		return
	}
	s := &splitOp{r: *r, c: c, chunks: int32((n + chunkSize - 1) / chunkSize), e: e, start: time.Now()}
	s.r.Dst = s.r.Dst[:n]
	s.left.Store(s.chunks)
	for i := 0; i < min(e.pieces-1, int(s.chunks)-1); i++ {
		select {
		case e.queue <- cpuTask{piece: s}:
		default: // queue full: the caller does more itself
		}
	}
	s.work()
	// A worker still holds a chunk. Give it a few microseconds; if it has
	// not finished by then (descheduled, or still waking), count the
	// request as taking twice as long as it has so far, since a caller
	// waiting for it pays that and a wake-up on top, which the worker's
	// own timing would not show.
	for deadline := time.Now().Add(5 * time.Microsecond); s.left.Load() != 0 && time.Now().Before(deadline); {
		runtime.Gosched()
	}
	if s.left.Load() != 0 && s.late.CompareAndSwap(false, true) {
		e.help.record(true, 2*time.Since(s.start), n)
	}
}

// helpStats keeps moving averages of the time per KiB of large requests
// shared out with workers and done inline (float64 bits; 0 until
// measured).
type helpStats struct {
	alone, helped atomic.Uint64
	n             atomic.Uint32
}

// choose says whether to share the next large request out: while requests
// shared out have been clearly (10%) faster per KiB than requests done
// inline. The other way is tried now and then to follow the load, less
// often the worse it has been, so that trying costs at most about 3%.
func (h *helpStats) choose() bool {
	base := math.Float64frombits(h.alone.Load())
	if base == 0 {
		base = inlineNsPerKiB()
	}
	b := math.Float64frombits(h.helped.Load())
	if b == 0 {
		return true
	}
	pref := b < 0.9*base
	every := uint32(32)
	if !pref {
		every = uint32(min(32*b/base, 1024))
	}
	if h.n.Add(1)%every == 0 {
		return !pref
	}
	return pref
}

func (h *helpStats) record(helped bool, d time.Duration, n int) {
	v := float64(d.Nanoseconds()) * 1024 / float64(n)
	avg := &h.alone
	if helped {
		avg = &h.helped
	}
	old := math.Float64frombits(avg.Load())
	if old != 0 {
		v = old + (v-old)/8
	}
	avg.Store(math.Float64bits(v)) // a lost update only slows the average
}

// splitOp is a request shared out in chunks.
type splitOp struct {
	r      Request
	c      Completer
	e      *cpuEngine
	start  time.Time
	late   atomic.Bool // the caller recorded its timing (see split)
	chunks int32
	next   atomic.Int32 // next chunk to take
	left   atomic.Int32 // chunks not yet done
}

// work takes and runs chunks until none is left, and returns how many it
// ran.
func (s *splitOp) work() (ran int32) {
	for {
		i := s.next.Add(1) - 1
		if i >= s.chunks {
			return ran
		}
		lo := int(i) * chunkSize
		hi := min(lo+chunkSize, len(s.r.Dst))
		p := Request{Kind: s.r.Kind, Dst: s.r.Dst[lo:hi], Value: s.r.Value, Flags: s.r.Flags}
		if s.r.Src != nil {
			p.Src = s.r.Src[lo:hi]
		}
		execCPU(&p)
		ran++
		if s.left.Add(-1) == 0 {
			if s.late.CompareAndSwap(false, true) {
				s.e.help.record(true, time.Since(s.start), len(s.r.Dst))
			}
			s.c.Complete(s.r.Tag, nil)
			return ran
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
	if e.inlineBelow > 0 && e.inlineBelow < math.MaxInt && e.pieces > 1 {
		inl += fmt.Sprintf("; larger ones queued while a worker is awake and has none waiting (else run by the caller), else shared out in %d KiB chunks with up to %d workers while that measures faster", chunkSize>>10, e.pieces-1)
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
