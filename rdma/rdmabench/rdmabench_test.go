package rdmabench

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/rpstream/rpstream/rdma"
)

// TestRun checks that Run works end to end; it asserts nothing about speed.
func TestRun(t *testing.T) {
	r, err := Run(context.Background(), Config{Size: 4096, Inflight: 4, Duration: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if r.Ops == 0 || r.P50us <= 0 || r.RawP50us <= 0 || r.MBPerSec <= 0 || r.RawMBPerS <= 0 {
		t.Fatalf("empty result %+v", r)
	}
	t.Log(r)
	bad := Config{Size: 0, Inflight: 1, Duration: time.Second}
	if _, err := Run(context.Background(), bad); err == nil {
		t.Fatal("size 0 accepted")
	}
}

var sizes = []int{64, 4 << 10, 64 << 10}

// BenchmarkWriteFlush: write + persistence flush, b.N ops, inflight at once.
func BenchmarkWriteFlush(b *testing.B) {
	for _, size := range sizes {
		for _, inflight := range []int{1, 16, 64} {
			b.Run(fmt.Sprintf("size=%d/inflight=%d", size, inflight), func(b *testing.B) {
				ctx := context.Background()
				p, err := NewPair(ctx, size*inflight, size*inflight, inflight, nil)
				if err != nil {
					b.Fatal(err)
				}
				defer p.Close()
				ring := make([]*rdma.Op, inflight)
				b.SetBytes(int64(size))
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					s := i % inflight
					if ring[s] != nil {
						if err := ring[s].Wait(ctx); err != nil {
							b.Fatal(err)
						}
					}
					ring[s] = p.WriteFlush(s, size, rdma.Persistence)
				}
				for _, op := range ring {
					if op != nil {
						op.Wait(ctx)
					}
				}
			})
		}
	}
}

// BenchmarkRawPingPong: the raw TCP round trip the write+flush p50 is
// compared with.
func BenchmarkRawPingPong(b *testing.B) {
	for _, size := range sizes {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			lat, err := rawPingPong(context.Background(), Config{Size: size, Duration: 300 * time.Millisecond})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(pct(lat, 50), "p50-us")
		})
	}
}

// BenchmarkRun runs Run as streamcli would and reports its figures.
func BenchmarkRun(b *testing.B) {
	for _, size := range sizes {
		for _, inflight := range []int{1, 16, 64} {
			b.Run(fmt.Sprintf("size=%d/inflight=%d", size, inflight), func(b *testing.B) {
				r, err := Run(context.Background(), Config{Size: size, Inflight: inflight, Duration: 300 * time.Millisecond})
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(r.P50us, "p50-us")
				b.ReportMetric(r.P99us, "p99-us")
				b.ReportMetric(r.MBPerSec, "MB/s")
				b.ReportMetric(r.RawP50us, "raw-p50-us")
				b.ReportMetric(r.RawMBPerS, "raw-MB/s")
			})
		}
	}
}

// BenchmarkRunTmpfs is BenchmarkRun with the target in a pmem file on
// /dev/shm, persisted (a fence) on every flush.
func BenchmarkRunTmpfs(b *testing.B) {
	if _, err := os.Stat("/dev/shm"); err != nil {
		b.Skip("no /dev/shm")
	}
	for _, size := range sizes {
		for _, inflight := range []int{1, 64} {
			b.Run(fmt.Sprintf("size=%d/inflight=%d", size, inflight), func(b *testing.B) {
				r, err := Run(context.Background(), Config{Size: size, Inflight: inflight, Duration: 300 * time.Millisecond, Dir: "/dev/shm"})
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(r.P50us, "p50-us")
				b.ReportMetric(r.MBPerSec, "MB/s")
				b.ReportMetric(r.RawP50us, "raw-p50-us")
				b.ReportMetric(r.RawMBPerS, "raw-MB/s")
			})
		}
	}
}

func TestRunOnFile(t *testing.T) {
	r, err := Run(context.Background(), Config{Size: 4096, Inflight: 2, Duration: 20 * time.Millisecond, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if r.Ops == 0 {
		t.Fatal("no ops")
	}
	t.Log(r)
}
