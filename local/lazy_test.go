package local_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/rpstream/rpstream/local"
	"github.com/rpstream/rpstream/pmem/simpmem"
)

// fileUse is the size and the allocated bytes (blocks) of the file at path.
func fileUse(t *testing.T, path string) (size, blocks int64) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size(), fi.Sys().(*syscall.Stat_t).Blocks * 512
}

// A stream nobody appends to holds its superblock and no region, created
// or reopened: a node keeps thousands of them, and on tmpfs every
// allocated block is memory. The first append allocates the first region.
func TestEmptyStreamHoldsNoRegion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	s, err := local.Create(path, local.Options{Epoch: 3})
	if err != nil {
		t.Fatal(err)
	}
	if size, blocks := fileUse(t, path); size != local.SuperblockSize || blocks > 2*local.SuperblockSize {
		t.Fatalf("new stream: file of %d bytes, %d allocated; want only the superblock", size, blocks)
	}
	if rs := s.Regions(); len(rs) != 0 || s.Committed() != 0 || s.Epoch() != 3 {
		t.Fatalf("new stream: regions %+v, committed %d, epoch %d", rs, s.Committed(), s.Epoch())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = local.Open(path, local.Options{Epoch: 4})
	if err != nil {
		t.Fatalf("reopen of a stream never appended to: %v", err)
	}
	if size, blocks := fileUse(t, path); size != local.SuperblockSize || blocks > 2*local.SuperblockSize {
		t.Fatalf("reopened empty stream: file of %d bytes, %d allocated", size, blocks)
	}
	if rs := s.Regions(); len(rs) != 0 || s.Committed() != 0 || s.Head() != 0 {
		t.Fatalf("reopened empty stream: regions %+v, committed %d, head %d", rs, s.Committed(), s.Head())
	}
	if i, err := s.Append([]byte("first")); err != nil || i != 0 {
		t.Fatalf("first append: %d, %v", i, err)
	}
	if _, blocks := fileUse(t, path); blocks < local.DefaultRegionSize {
		t.Fatalf("after the first append: %d bytes allocated, want the first region's %d", blocks, local.DefaultRegionSize)
	}
	if tr := s.TailRegion(); tr.Seq != 1 || tr.Epoch != 4 || tr.First != 0 || tr.Count != 1 {
		t.Fatalf("first region %+v", tr)
	}
	s.Close()
	s, err = local.Open(path, local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := readAll(t, s, 0); len(got) != 1 || string(got[0]) != "first" {
		t.Fatalf("after reopen: %q", got)
	}
}

// A crash before the first append, or at any persist of it (the first
// region's allocation included), recovers an empty stream or the entry,
// and the recovered stream takes appends and reopens with them.
func TestCrashAroundFirstAppend(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 13))
	mem := simpmem.New(SuperAndSlots(4))
	defer mem.Release()
	s, err := local.CreateOn(mem, crashOpts)
	if err != nil {
		t.Fatal(err)
	}
	type img struct {
		b     []byte
		label string
		acked bool
	}
	images := []img{{mem.Crash(rng, simpmem.Lines, 0), "after create", false}}
	mem.BeforePersist = func(m *simpmem.Memory) {
		for k := 0; k < 3; k++ {
			images = append(images, img{m.Crash(rng, simpmem.Granularity(k%2), []float64{0, 1, rng.Float64()}[k]),
				fmt.Sprintf("at persist %d of the first append", m.Persists()), false})
		}
	}
	if _, err := s.Append([]byte("entry 0")); err != nil {
		t.Fatal(err)
	}
	mem.BeforePersist = nil
	images = append(images, img{mem.Crash(rng, simpmem.Lines, 0), "after the first append", true})
	s.Close()
	for _, im := range images {
		m := simpmem.FromImage(im.b, len(im.b)+8*crashRegion)
		r, err := local.OpenOn(m, crashOpts)
		if err != nil {
			t.Fatalf("%s: recovery: %v", im.label, err)
		}
		got := readAll(t, r, 0)
		if len(got) > 1 || len(got) == 1 && string(got[0]) != "entry 0" || im.acked && len(got) != 1 {
			t.Fatalf("%s: recovered %q (acknowledged: %v)", im.label, got, im.acked)
		}
		n := uint64(len(got))
		if i, err := r.Append([]byte("next")); err != nil || i != n {
			t.Fatalf("%s: append after recovery: %d, %v", im.label, i, err)
		}
		r.Close()
		r, err = local.OpenOn(m, crashOpts)
		if err != nil {
			t.Fatalf("%s: reopen after recovery and an append: %v", im.label, err)
		}
		if got := readAll(t, r, 0); uint64(len(got)) != n+1 || !bytes.Equal(got[n], []byte("next")) {
			t.Fatalf("%s: after recovery and an append: %q", im.label, got)
		}
		r.Close()
		m.Release()
	}
}

// A stream holding a few small entries has no spare region; once its
// tail region is a quarter used, the preparer makes one. A node keeps
// thousands of lightly written streams open, and each spare is a region
// of memory on tmpfs that Close must give back.
func TestSpareOnlyOnceTheTailFills(t *testing.T) {
	const rs = 64 << 10
	path := filepath.Join(t.TempDir(), "s")
	s, err := local.Create(path, local.Options{RegionSize: rs})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for range 10 {
		if _, err := s.Append(make([]byte, 100)); err != nil {
			t.Fatal(err)
		}
	}
	if size, _ := fileUse(t, path); size != local.SuperblockSize+rs {
		t.Fatalf("after 10 small entries: file of %d bytes, want the superblock and one region (%d)", size, local.SuperblockSize+rs)
	}
	// Past a quarter of the region: a spare follows, boundedly.
	for range rs / 4 / 1024 {
		if _, err := s.Append(make([]byte, 1000)); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		size, _ := fileUse(t, path)
		if size == local.SuperblockSize+2*rs {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tail region a quarter used: file of %d bytes after 10 s, want a spare (%d)", size, local.SuperblockSize+2*rs)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if rs := s.Regions(); len(rs) != 1 {
		t.Fatalf("regions %+v, want the first only (the spare has no header)", rs)
	}
}
