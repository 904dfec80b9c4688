package bench

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rpstream/rpstream/local"
	"github.com/rpstream/rpstream/mover"
)

func TestLocalRun(t *testing.T) {
	dir := t.TempDir()
	for _, sync := range []bool{true, false} {
		r, err := Local{Count: 1000, Size: 100, Writers: 3, Dir: dir, Sync: sync}.Run(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if r.Count != 1000 || r.EntriesPerSec <= 0 || r.P50us <= 0 || r.P99us < r.P50us || r.Mode == "" {
			t.Errorf("result %+v", r)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("%d files left behind", len(ents))
	}
	if _, err := (Local{Count: 10, Size: 1 << 20, Writers: 1, RegionSize: 64 << 10}).Run(context.Background()); err == nil {
		t.Error("entries larger than a region accepted")
	}
}

// Asynchronous appends through every engine that runs here, with the
// window acknowledged as durable (Sync) or published.
func TestLocalRunAsync(t *testing.T) {
	dir := t.TempDir()
	for _, eng := range []mover.Engine{mover.EngineSync, mover.EngineCPU, mover.EngineAuto} {
		for _, sync := range []bool{true, false} {
			c := Local{Count: 3000, Size: 300, Writers: 2, Dir: dir, Sync: sync, Mover: eng, InFlight: 16}
			r, err := c.Run(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if r.Count != 3000 || r.InFlight != 16 || r.Mover == "" || r.MoverDetail == "" || r.P50us <= 0 || r.EntriesPerSec <= 0 {
				t.Errorf("%s: result %+v", eng, r)
			}
		}
	}
	t.Setenv(mover.EnvVar, "")
	r, err := Local{Count: 10, Size: 8, Writers: 1, Dir: dir, Sync: true, InFlight: 1}.Run(context.Background())
	if err != nil || r.Mover != "none" || !strings.HasPrefix(r.MoverDetail, "none") {
		t.Fatalf("one at a time, no mover named: %+v %v", r, err)
	}
	// Naming a mover runs the Appender, even one at a time.
	r, err = Local{Count: 10, Size: 8, Writers: 1, Dir: dir, Sync: true, Mover: mover.EngineSync, InFlight: 1}.Run(context.Background())
	if err != nil || r.Mover != "sync" || strings.HasPrefix(r.MoverDetail, "none") {
		t.Fatalf("one at a time on sync: %+v %v", r, err)
	}
	if err := (Local{Count: 10, Writers: 1, InFlight: -1}).Validate(); err == nil {
		t.Error("negative inflight accepted")
	}
}

// The benchmarks below measure local.Stream.Append without the command
// around it, to tell the cost of the stream from that of the measurement.

func benchAppend(b *testing.B, dir string, size int, regionSize int) {
	if dir == "" {
		dir, _ = DefaultDir()
	}
	d, err := os.MkdirTemp(dir, "rpstream-gobench-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(d)
	s, err := local.Create(filepath.Join(d, "s"), local.Options{RegionSize: regionSize})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	p := make([]byte, size)
	b.SetBytes(int64(size))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.Append(p); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendTmpfs64(b *testing.B)      { benchAppend(b, "", 64, 0) }
func BenchmarkAppendTmpfs4K(b *testing.B)      { benchAppend(b, "", 4096, 0) }
func BenchmarkAppendTmpfs4K64MiB(b *testing.B) { benchAppend(b, "", 4096, 64<<20) }
func BenchmarkAppendDisk64(b *testing.B)       { benchAppend(b, os.TempDir(), 64, 0) }

// BenchmarkClock is the cost of the one clock reading per append that
// bench local makes.
func BenchmarkClock(b *testing.B) {
	var sink time.Duration
	prev := time.Now()
	for i := 0; i < b.N; i++ {
		now := time.Now()
		sink += now.Sub(prev)
		prev = now
	}
	_ = sink
}

// BenchmarkAppendDisk64Writers is 64 goroutines appending durably to a
// file on the disk of os.TempDir (group commit).
func BenchmarkAppendDisk64Writers(b *testing.B) {
	d, err := os.MkdirTemp(os.TempDir(), "rpstream-gobench-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(d)
	s, err := local.Create(filepath.Join(d, "s"), local.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	p := make([]byte, 64)
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Append(p); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
