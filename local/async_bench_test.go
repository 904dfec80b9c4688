package local_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/rpstream/rpstream/local"
	"github.com/rpstream/rpstream/mover"
)

// BenchmarkAppendAsync: durable appends on tmpfs, per engine, size and
// appends in flight (one writer). "append" is the synchronous
// Stream.Append, the baseline; the others go through an Appender on the
// mover, acknowledging the oldest append as durable when the window is
// full (with 1 in flight: each one before the next starts). Regions are
// prepared before the timer, up to 2 GiB; longer runs trim as they go and
// then include the allocation of new regions. "dsa-model" is the dsa
// engine on the software device model (write() path): it measures the
// engine's and the model's overhead, not what a real device would do.
//
//	go test -run '^$' -bench AppendAsync -benchtime 2000x -count 5 ./local/
func BenchmarkAppendAsync(b *testing.B) {
	const regionSize = 16 << 20
	for _, size := range []int{64, 1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20} {
		for _, inflight := range []int{1, 64} {
			for _, eng := range []string{"append", "sync", "cpu", "dsa-model"} {
				if eng == "append" && inflight > 1 {
					continue
				}
				b.Run(fmt.Sprintf("%s/inflight=%d/%s", sizeName(size), inflight, eng), func(b *testing.B) {
					s, err := local.Create(filepath.Join(benchDir(b, "tmpfs"), "s"), local.Options{RegionSize: regionSize})
					if err != nil {
						b.Fatal(err)
					}
					defer s.Close()
					per := regionSize / (size + 8)
					need := min(b.N/per+2, (2<<30)/regionSize)
					if err := s.Prepare(need); err != nil {
						b.Fatal(err)
					}
					p := make([]byte, size)
					for k := range p {
						p[k] = byte(k)
					}
					b.SetBytes(int64(size))
					trim := func(k int) {
						if k%per == per-1 && b.N/per+2 > need {
							s.Trim(s.Persisted())
						}
					}
					if eng == "append" {
						b.ResetTimer()
						for k := 0; k < b.N; k++ {
							if _, err := s.Append(p); err != nil {
								b.Fatal(err)
							}
							trim(k)
						}
						b.StopTimer() // not the deferred Close and unmapping
						return
					}
					var m mover.Mover
					if eng == "dsa-model" {
						e, ok := dsaModelEngine(b)
						if !ok {
							b.Skip("no DSA model on this OS")
						}
						m = e.m
					} else {
						if m, err = mover.New(mover.Config{Engine: mover.Engine(eng)}); err != nil {
							b.Fatal(err)
						}
						defer m.Close()
					}
					a, err := local.NewAppender(s, m, local.AppenderOptions{MaxInFlight: inflight})
					if err != nil {
						b.Fatal(err)
					}
					ctx := context.Background()
					idx := make([]uint64, inflight)
					b.ResetTimer()
					for k := 0; k < b.N; k++ {
						if k >= inflight {
							if err := s.SyncContext(ctx, idx[k%inflight]); err != nil {
								b.Fatal(err)
							}
						}
						if idx[k%inflight], err = a.Start(ctx, p); err != nil {
							b.Fatal(err)
						}
						trim(k)
					}
					if err := a.Flush(ctx); err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					if a.Fallbacks() != 0 {
						b.Fatalf("%d fallbacks", a.Fallbacks())
					}
				})
			}
		}
	}
}

func sizeName(n int) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}
