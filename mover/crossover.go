package mover

import (
	"fmt"
	"math"
	"runtime"
	"strings"
	"sync"
	"time"
)

var crossover struct {
	once sync.Once
	size int
	why  string
}

// measuredCrossover returns the size from which sharing a request out
// between the caller and e's workers beats running it inline, measured once
// per process by trying both at 64 KiB, 256 KiB and 1 MiB (best of five,
// timed until the caller sees the request complete). Where sharing never
// wins by 10% — one core, or a machine whose other cores are busy, or a
// virtual machine where waking a parked thread costs more than the copy —
// the engine always runs inline, and is then the sync engine with workers
// idle.
func measuredCrossover(e *cpuEngine) (int, string) {
	crossover.once.Do(func() {
		if runtime.GOMAXPROCS(0) < 2 || e.pieces < 2 {
			crossover.size, crossover.why = math.MaxInt, "GOMAXPROCS=1: no worker can run beside the caller"
			return
		}
		crossover.size = math.MaxInt
		var trials []string
		for _, n := range []int{64 << 10, 256 << 10, 1 << 20} {
			in, sh := abTest(e, n)
			trials = append(trials, fmt.Sprintf("%d KiB %.1f/%.1fµs", n>>10, in.Seconds()*1e6, sh.Seconds()*1e6))
			if float64(sh) < 0.9*float64(in) && crossover.size == math.MaxInt {
				crossover.size = n
			}
		}
		crossover.why = "measured at start-up, inline/shared: " + strings.Join(trials, ", ")
		if crossover.size == math.MaxInt {
			crossover.why += "; sharing out never paid"
		}
	})
	return crossover.size, crossover.why
}

// abTest times a durable copy of n bytes inline and shared out with e's
// workers, best of five each.
func abTest(e *cpuEngine, n int) (inline, shared time.Duration) {
	src, dst := make([]byte, n), make([]byte, n)
	inline, shared = time.Duration(math.MaxInt64), time.Duration(math.MaxInt64)
	for i := 0; i < 5; i++ {
		r := Request{Kind: KindCopy, Dst: dst, Src: src, Flags: Durable}
		t := time.Now()
		execCPU(&r)
		inline = min(inline, time.Since(t))
		e.help.record(false, time.Since(t), n)

		t = time.Now()
		s := &splitOp{r: r, c: nopDone{}, chunks: int32((n + chunkSize - 1) / chunkSize), e: e, start: t}
		s.left.Store(s.chunks)
		for j := 0; j < e.pieces-1; j++ {
			e.queue <- cpuTask{piece: s} // empty at start-up
		}
		s.work()
		for s.left.Load() != 0 {
			runtime.Gosched()
		}
		shared = min(shared, time.Since(t))
	}
	return inline, shared
}

type nopDone struct{}

func (nopDone) Complete(uint64, error) {}

var inlineRate struct {
	once     sync.Once
	nsPerKiB float64
}

// inlineNsPerKiB is the time of a durable copy on the caller's goroutine,
// per KiB, measured once per process.
func inlineNsPerKiB() float64 {
	inlineRate.once.Do(func() { inlineRate.nsPerKiB = 1024 / copyRate() })
	return inlineRate.nsPerKiB
}

// copyRate is the durable-copy rate in bytes per nanosecond (GB/s), best of
// a few 64 KiB copies.
func copyRate() float64 {
	const size = 64 << 10
	src, dst := make([]byte, size), make([]byte, size)
	r := Request{Kind: KindCopy, Dst: dst, Src: src, Flags: Durable}
	best := time.Duration(math.MaxInt64)
	for i := 0; i < 8; i++ {
		t := time.Now()
		execCPU(&r)
		if d := time.Since(t); d < best {
			best = d
		}
	}
	if best <= 0 {
		best = 1
	}
	return float64(size) / float64(best.Nanoseconds())
}
