//go:build linux

package mover

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/rpstream/rpstream/pmem"
)

// benchSizes run from one cache line to 1 MiB.
var benchSizes = []int{64, 256, 1 << 10, 4 << 10, 8 << 10, 16 << 10, 32 << 10, 64 << 10, 256 << 10, 1 << 20}

// slots is the number of destination slots, and the most operations kept
// in flight, as local/'s asynchronous append does.
const slots = 64

// benchMemory maps a tmpfs file treated as persistent memory
// (RPSTREAM_PMEM_FORCE=1: cache flushes, no msync), the stand-in for real
// pmem speed on machines without it.
func benchMemory(b *testing.B, size int) []byte {
	b.Helper()
	dir := "/dev/shm"
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		dir = b.TempDir()
	}
	path := filepath.Join(dir, fmt.Sprintf("rpstream-mover-bench-%d", os.Getpid()))
	os.Remove(path)
	b.Setenv("RPSTREAM_PMEM_FORCE", "1")
	m, err := pmem.Create(path, size, pmem.Options{Reserve: size})
	if err != nil {
		b.Fatal(err)
	}
	os.Remove(path) // the mapping keeps it
	b.Cleanup(func() { m.Close() })
	buf := m.Bytes()
	for i := 0; i < len(buf); i += 4096 { // prefault
		buf[i] = 0
	}
	return buf
}

// semaphore is a Completer that frees an in-flight slot: the cheap way to
// keep N operations in flight from one goroutine.
type semaphore chan struct{}

func (s semaphore) Complete(uint64, error) { <-s }

// BenchmarkCopyDurable copies size bytes with the Durable flag into a
// tmpfs-backed pmem mapping, per engine, one operation at a time
// (inflight=1, Op handles) and with 64 in flight (Submit + Completer).
// cpu is the default (crossover measured at start-up); cpu-handoff hands
// every request to one of two workers (InlineBelow -1, Workers 2). Where cpu-handoff beats sync with 64 in flight is the
// crossover for callers that always keep many requests in flight.
func BenchmarkCopyDurable(b *testing.B) {
	for _, inflight := range []int{1, slots} {
		for _, size := range benchSizes {
			for _, eng := range []string{"sync", "cpu", "cpu-handoff"} {
				cfg := Config{Engine: EngineCPU}
				switch eng {
				case "sync":
					cfg.Engine = EngineSync
				case "cpu-handoff": // every request handed to one of two workers
					cfg.InlineBelow, cfg.Workers = -1, 2
				}
				b.Run(fmt.Sprintf("inflight=%d/size=%d/%s", inflight, size, eng), func(b *testing.B) {
					benchCopy(b, cfg, size, inflight)
				})
			}
		}
	}
}

func benchCopy(b *testing.B, cfg Config, size, inflight int) {
	m, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	n := inflight
	if n > 1 && size >= 256<<10 {
		n = 16 // keeps the mapping small; still enough to fill both cores
	}
	dst := benchMemory(b, n*size)
	src := make([]byte, size)
	for i := range src {
		src[i] = byte(i)
	}
	ctx := context.Background()
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	if inflight == 1 {
		for i := 0; i < b.N; i++ {
			if err := Copy(ctx, m, dst[:size], src, Durable).Wait(ctx); err != nil {
				b.Fatal(err)
			}
		}
		return
	}
	sem := make(semaphore, n)
	for i := 0; i < b.N; i++ {
		sem <- struct{}{}
		k := i % n
		r := Request{Kind: KindCopy, Dst: dst[k*size : (k+1)*size], Src: src, Flags: Durable, Tag: uint64(i)}
		if err := m.Submit(ctx, r, sem); err != nil {
			b.Fatal(err)
		}
	}
	for i := 0; i < n; i++ { // wait for the last ones
		sem <- struct{}{}
	}
}

// BenchmarkSubmitOverhead is the cost per operation of the API itself, on
// 64-byte copies with 64 in flight: Submit with a Completer (the path for
// local/'s asynchronous appends) against Op handles, per engine. dsa runs
// on the device model (write() into a pipe, or MOVDIR64B into a polled
// page), so its figure is the engine's software cost plus the model's, not
// the device's.
func BenchmarkSubmitOverhead(b *testing.B) {
	engines := []string{"sync", "cpu", "dsa-model-write", "dsa-model-portal"}
	for _, name := range engines {
		for _, api := range []string{"completer", "handle"} {
			b.Run(name+"/"+api, func(b *testing.B) {
				var m Mover
				switch name {
				case "sync", "cpu":
					var err error
					if m, err = New(Config{Engine: Engine(name), InlineBelow: -1}); err != nil {
						b.Fatal(err)
					}
					defer m.Close()
				default:
					m, _ = newModelEngine(b, fullModel, name[len("dsa-model-"):], DSAConfig{})
				}
				benchOverhead(b, m, api == "handle")
			})
		}
	}
}

func benchOverhead(b *testing.B, m Mover, handles bool) {
	const size = 64
	dst, src := make([]byte, slots*size), make([]byte, size)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	if handles {
		ops := make([]*Op, slots)
		for i := 0; i < b.N; i++ {
			k := i % slots
			if ops[k] != nil {
				ops[k].Wait(ctx)
			}
			ops[k] = Copy(ctx, m, dst[k*size:(k+1)*size], src, 0)
		}
		for _, o := range ops {
			if o != nil {
				o.Wait(ctx)
			}
		}
		return
	}
	sem := make(semaphore, slots)
	for i := 0; i < b.N; i++ {
		sem <- struct{}{}
		k := i % slots
		if err := m.Submit(ctx, Request{Kind: KindCopy, Dst: dst[k*size : (k+1)*size], Src: src, Tag: uint64(i)}, sem); err != nil {
			b.Fatal(err)
		}
	}
	for i := 0; i < slots; i++ {
		sem <- struct{}{}
	}
}

// BenchmarkCPUvsSync runs sync and a cpu engine in alternating blocks of
// operations (order swapped every round) on the same buffers, and reports
// the median of the per-round time ratios as ratio (cpu/sync, below 1:
// cpu faster). On a machine shared with other processes, load changes
// within a second; interleaving at the scale of a millisecond compares the
// engines under the same load. engine=cpu is the default engine,
// engine=handoff hands every request to one of two workers: where its ratio
// drops below 1 is the crossover.
func BenchmarkCPUvsSync(b *testing.B) {
	for _, eng := range []string{"cpu", "handoff"} {
		for _, inflight := range []int{1, slots} {
			for _, size := range benchSizes {
				b.Run(fmt.Sprintf("engine=%s/inflight=%d/size=%d", eng, inflight, size), func(b *testing.B) {
					cfg := Config{Engine: EngineCPU}
					if eng == "handoff" {
						cfg.InlineBelow, cfg.Workers = -1, 2
					}
					benchRatio(b, cfg, size, inflight)
				})
			}
		}
	}
}

func benchRatio(b *testing.B, cfg Config, size, inflight int) {
	engines := make([]Mover, 2)
	for i, c := range []Config{{Engine: EngineSync}, cfg} {
		m, err := New(c)
		if err != nil {
			b.Fatal(err)
		}
		defer m.Close()
		engines[i] = m
	}
	n := inflight
	if n > 1 && size >= 256<<10 {
		n = 16
	}
	dst := benchMemory(b, n*size)
	src := make([]byte, size)
	ctx := context.Background()
	block := max(1, (256<<10)/size) // about 256 KiB copied per block
	run := func(m Mover) time.Duration {
		t := time.Now()
		if inflight == 1 {
			for i := 0; i < block; i++ {
				if err := Copy(ctx, m, dst[:size], src, Durable).Wait(ctx); err != nil {
					b.Fatal(err)
				}
			}
			return time.Since(t)
		}
		sem := make(semaphore, n)
		for i := 0; i < block; i++ {
			sem <- struct{}{}
			k := i % n
			if err := m.Submit(ctx, Request{Kind: KindCopy, Dst: dst[k*size : (k+1)*size], Src: src, Flags: Durable}, sem); err != nil {
				b.Fatal(err)
			}
		}
		for i := 0; i < n; i++ {
			sem <- struct{}{}
		}
		return time.Since(t)
	}
	run(engines[0]) // warm up both
	run(engines[1])
	var ratios []float64
	var total [2]time.Duration
	b.ResetTimer()
	for r := 0; r < b.N; r++ {
		var d [2]time.Duration
		for j := 0; j < 2; j++ {
			e := (j + r) % 2
			d[e] = run(engines[e])
		}
		total[0] += d[0]
		total[1] += d[1]
		ratios = append(ratios, float64(d[1])/float64(d[0]))
	}
	sort.Float64s(ratios)
	ops := float64(b.N * block)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(total[0].Nanoseconds())/ops, "sync-ns/op")
	b.ReportMetric(float64(total[1].Nanoseconds())/ops, "other-ns/op")
	b.ReportMetric(ratios[len(ratios)/2], "ratio")
}
