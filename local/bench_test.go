package local_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rpstream/rpstream/local"
)

// benchDir is a fresh directory on tmpfs (the stand-in for pmem speed) or
// on the ordinary disk.
func benchDir(b *testing.B, kind string) string {
	if kind == "disk" {
		return b.TempDir()
	}
	d, err := os.MkdirTemp("/dev/shm", "localbench")
	if err != nil {
		b.Skip("no /dev/shm:", err)
	}
	b.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// BenchmarkAppend: durable appends from one writer.
func BenchmarkAppend(b *testing.B) {
	for _, kind := range []string{"tmpfs", "disk"} {
		for _, size := range []int{64, 4096} {
			b.Run(fmt.Sprintf("%s/%dB", kind, size), func(b *testing.B) {
				s, err := local.Create(filepath.Join(benchDir(b, kind), "s"), local.Options{})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				p := make([]byte, size)
				b.SetBytes(int64(size))
				b.ResetTimer()
				for b.Loop() {
					if _, err := s.Append(p); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkAppendConcurrent: 64 writers of 64-byte durable appends sharing
// persists (group commit).
func BenchmarkAppendConcurrent(b *testing.B) {
	for _, kind := range []string{"tmpfs", "disk"} {
		b.Run(kind, func(b *testing.B) {
			s, err := local.Create(filepath.Join(benchDir(b, kind), "s"), local.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			b.SetParallelism(32) // 64 goroutines on 2 CPUs
			p := make([]byte, 64)
			b.SetBytes(64)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := s.Append(p); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkReserve: zero-copy appends (reserve, fill, publish) without
// waiting for durability, then one sync.
func BenchmarkReservePublish(b *testing.B) {
	s, err := local.Create(filepath.Join(benchDir(b, "tmpfs"), "s"), local.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.SetBytes(64)
	var last uint64
	for b.Loop() {
		r, err := s.Reserve(64)
		if err != nil {
			b.Fatal(err)
		}
		r.Bytes()[0] = 1
		last, _ = r.Publish()
	}
	s.Sync(last)
}

// BenchmarkRecovery: reopening a stream of one million 64-byte entries.
func BenchmarkRecovery(b *testing.B) {
	for _, kind := range []string{"tmpfs", "disk"} {
		b.Run(kind, func(b *testing.B) {
			path := filepath.Join(benchDir(b, kind), "s")
			s, err := local.Create(path, local.Options{})
			if err != nil {
				b.Fatal(err)
			}
			p := make([]byte, 64)
			var last uint64
			for i := 0; i < 1_000_000; i++ {
				if last, err = s.AppendNoSync(p); err != nil {
					b.Fatal(err)
				}
			}
			s.Sync(last)
			s.Close()
			b.ResetTimer()
			var took time.Duration
			for b.Loop() {
				t0 := time.Now()
				s, err := local.Open(path, local.Options{})
				took = time.Since(t0)
				if err != nil {
					b.Fatal(err)
				}
				if s.Committed() != 1_000_000 {
					b.Fatalf("recovered %d entries", s.Committed())
				}
				s.Close()
			}
			_ = took
		})
	}
}

var _ sync.Mutex

// BenchmarkAppendPrepared: as BenchmarkAppend on tmpfs, into regions
// prepared (allocated and prefaulted) before the timer starts.
func BenchmarkAppendPrepared(b *testing.B) {
	for _, size := range []int{64, 4096} {
		b.Run(fmt.Sprintf("tmpfs/%dB", size), func(b *testing.B) {
			s, err := local.Create(filepath.Join(benchDir(b, "tmpfs"), "s"), local.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			need := b.N*(size+8)/(local.DefaultRegionSize-local.RegionHeaderSize) + 2
			if err := s.Prepare(need); err != nil {
				b.Fatal(err)
			}
			p := make([]byte, size)
			b.SetBytes(int64(size))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := s.Append(p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
