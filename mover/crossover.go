package mover

import (
	"fmt"
	"math"
	"runtime"
	"sort"
	"sync"
	"time"
)

var crossover struct {
	once sync.Once
	size int
	why  string
}

// measuredCrossover returns the size from which handing a request to a cpu
// worker beats running it inline, measured once per process: the cost of a
// hand-off to another goroutine and back, against the time of a durable
// copy. A hand-off pays only when the copy it moves off the caller costs
// clearly more than the hand-off itself (factor crossoverFactor), because
// the caller's goroutine is then free to submit more.
func measuredCrossover() (int, string) {
	crossover.once.Do(func() {
		if runtime.GOMAXPROCS(0) < 2 {
			crossover.size, crossover.why = math.MaxInt, "GOMAXPROCS=1: no worker can run beside the caller"
			return
		}
		h := handoffCost()
		bpns := copyRate()
		n := int(crossoverFactor * float64(h.Nanoseconds()) * bpns)
		// Below two chunks a request cannot be shared out, and handing it
		// whole to a worker loses whenever the caller waits for it (one
		// operation in flight): start there.
		size := 2 * chunkSize
		for size < n && size < 1<<20 {
			size *= 2
		}
		crossover.size = size
		crossover.why = fmt.Sprintf("measured at start-up: hand-off %v, durable copy %.1f GB/s", h, bpns)
	})
	return crossover.size, crossover.why
}

const crossoverFactor = 4

// handoffCost is the median round trip of a request to a parked worker
// goroutine and back.
func handoffCost() time.Duration {
	req, resp := make(chan struct{}), make(chan struct{})
	go func() { // owned here; exits when req is closed below
		for range req {
			resp <- struct{}{}
		}
	}()
	defer close(req)
	const n = 31
	var d [n]time.Duration
	for i := range d {
		t := time.Now()
		req <- struct{}{}
		<-resp
		d[i] = time.Since(t)
	}
	sort.Slice(d[:], func(i, j int) bool { return d[i] < d[j] })
	return d[n/2]
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
