package pmem_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/rpstream/rpstream/internal/testutil"
	"github.com/rpstream/rpstream/pmem"
)

func TestCreateAllocatePersistReopen(t *testing.T) {
	for _, dir := range []string{t.TempDir(), shmDir(t)} {
		path := filepath.Join(dir, "f")
		m, err := pmem.Create(path, 4096, pmem.Options{Reserve: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		if m.Size() != 4096 {
			t.Fatalf("size %d, want 4096", m.Size())
		}
		if err := m.Allocate(4096, 8192); err != nil {
			t.Fatal(err)
		}
		b := m.Bytes()
		if len(b) != 12288 {
			t.Fatalf("len(Bytes) = %d after Allocate, want 12288", len(b))
		}
		copy(b[5000:], "hello, pmem")
		if err := m.Persist(5000, 11); err != nil {
			t.Fatal(err)
		}
		if err := m.Allocate(0, 2<<20); !errors.Is(err, pmem.ErrOutOfRange) {
			t.Fatalf("allocate past the reservation: %v, want ErrOutOfRange", err)
		}
		if err := m.Persist(12000, 1000); !errors.Is(err, pmem.ErrOutOfRange) {
			t.Fatalf("persist past the size: %v, want ErrOutOfRange", err)
		}
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
		r, err := pmem.Open(path, pmem.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		if got := string(r.Bytes()[5000:5011]); got != "hello, pmem" {
			t.Fatalf("reopened: %q", got)
		}
		if err := r.Persist(0, 1); !errors.Is(err, pmem.ErrReadOnly) {
			t.Fatalf("persist on read-only: %v", err)
		}
		r.Close()
	}
}

func shmDir(t *testing.T) string {
	d, err := os.MkdirTemp("/dev/shm", "pmemtest")
	if err != nil {
		t.Skip("no /dev/shm:", err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func TestModeDetection(t *testing.T) {
	open := func(dir string) pmem.Mode {
		m, err := pmem.Create(filepath.Join(dir, "f"+t.Name()), 4096, pmem.Options{Reserve: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		t.Log(m.Describe())
		return m.Mode()
	}
	disk := t.TempDir()
	if dax, _ := daxMount(t, disk); dax { // make test-pmem: TMPDIR on DAX
		if got := open(disk); got != pmem.PersistFlush && got != pmem.PersistFence {
			t.Errorf("file on DAX: mode %v, want flush (or fence with eADR)", got)
		}
	} else if got := open(disk); got != pmem.PersistMsync {
		t.Errorf("ordinary file: mode %v, want msync", got)
	}
	if got := open(shmDir(t)); got != pmem.PersistFence {
		t.Errorf("tmpfs: mode %v, want fence", got)
	}
	t.Setenv("RPSTREAM_PMEM_FORCE", "1")
	if got := open(t.TempDir()); got != pmem.PersistFlush {
		t.Errorf("forced: mode %v, want flush", got)
	}
	t.Setenv("RPSTREAM_PMEM_FORCE", "0")
	if got := open(shmDir(t)); got != pmem.PersistMsync {
		t.Errorf("forced off: mode %v, want msync", got)
	}
}

func TestFlushModePersist(t *testing.T) {
	t.Setenv("RPSTREAM_PMEM_FORCE", "1")
	m, err := pmem.Create(filepath.Join(t.TempDir(), "f"), 1<<16, pmem.Options{Reserve: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	t.Logf("flush instruction: %s", pmem.FlushInstruction())
	copy(m.Bytes()[100:], "x")
	for _, r := range [][2]int{{0, 1}, {63, 2}, {100, 1 << 15}, {0, 1 << 16}} {
		if err := m.Persist(r[0], r[1]); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCopyFill(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	src := make([]byte, 1<<16+200)
	for i := range src {
		src[i] = byte(rng.Uint32())
	}
	dst := make([]byte, len(src)+64)
	for _, n := range []int{0, 1, 63, 64, 255, 256, 257, 1000, 4096, 4097, 1 << 16} {
		for _, dOff := range []int{0, 1, 7, 8, 15, 16, 33} {
			for _, sOff := range []int{0, 3} {
				clear(dst)
				got := pmem.Copy(dst[dOff:dOff+n], src[sOff:sOff+n])
				pmem.Fence()
				if got != n || !bytes.Equal(dst[dOff:dOff+n], src[sOff:sOff+n]) {
					t.Fatalf("Copy n=%d dOff=%d sOff=%d: wrong bytes", n, dOff, sOff)
				}
				if bytes.ContainsFunc(dst[:dOff], func(r rune) bool { return r != 0 }) || bytes.ContainsFunc(dst[dOff+n:], func(r rune) bool { return r != 0 }) {
					t.Fatalf("Copy n=%d dOff=%d wrote outside its range", n, dOff)
				}
				pmem.Fill(dst[dOff:dOff+n], 0xA5)
				pmem.Fence()
				if !bytes.Equal(dst[dOff:dOff+n], bytes.Repeat([]byte{0xA5}, n)) {
					t.Fatalf("Fill n=%d dOff=%d: wrong bytes", n, dOff)
				}
				if dOff > 0 && dst[dOff-1] != 0 || dst[dOff+n] != 0 {
					t.Fatalf("Fill n=%d dOff=%d wrote outside its range", n, dOff)
				}
			}
		}
	}
}

func TestAllocateFullDisk(t *testing.T) {
	dir := testutil.SmallFS(t, "256k")
	m, err := pmem.Create(filepath.Join(dir, "f"), 4096, pmem.Options{Reserve: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	copy(m.Bytes(), "kept")
	err = m.Allocate(4096, 16<<20)
	if !errors.Is(err, pmem.ErrNoSpace) {
		t.Fatalf("Allocate on a full file system: %v, want ErrNoSpace", err)
	}
	if string(m.Bytes()[:4]) != "kept" {
		t.Fatal("existing bytes changed by a failed Allocate")
	}
}

func TestCreateExisting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	os.WriteFile(path, []byte("x"), 0o644)
	if _, err := pmem.Create(path, 4096, pmem.Options{}); !errors.Is(err, os.ErrExist) {
		t.Fatalf("Create over an existing file: %v, want ErrExist", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "x" {
		t.Fatal("Create damaged an existing file")
	}
}

func BenchmarkPersist(b *testing.B) {
	for _, tc := range []struct {
		name, dir string
	}{{"disk", b.TempDir()}, {"tmpfs", "/dev/shm"}} {
		b.Run(tc.name, func(b *testing.B) {
			d, err := os.MkdirTemp(tc.dir, "pb")
			if err != nil {
				b.Skip(err)
			}
			defer os.RemoveAll(d)
			m, err := pmem.Create(filepath.Join(d, "f"), 1<<20, pmem.Options{Reserve: 1 << 20})
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			buf := m.Bytes()
			for i := 0; b.Loop(); i++ {
				off := (i * 64) % (1 << 20)
				buf[off] = byte(i)
				if err := m.Persist(off, 64); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkCopy(b *testing.B) {
	for _, n := range []int{64, 4096, 1 << 20} {
		src := make([]byte, n)
		dst := make([]byte, n)
		b.Run(fmt.Sprintf("nt/%d", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				pmem.Copy(dst, src)
			}
			pmem.Fence()
		})
		b.Run(fmt.Sprintf("builtin/%d", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				copy(dst, src)
			}
		})
	}
}

// BenchmarkFirstWrite copies 64 KiB blocks into a region of a file on
// tmpfs just allocated (and so prefaulted) by Allocate, against copying
// them into a region written before: what a new stream region costs each
// byte on this machine beyond the copy itself. The region is discarded
// (its pages freed) after each fresh pass.
func BenchmarkFirstWrite(b *testing.B) {
	const region, block = 4 << 20, 64 << 10
	d, err := os.MkdirTemp("/dev/shm", "fw")
	if err != nil {
		b.Skip(err)
	}
	defer os.RemoveAll(d)
	m, err := pmem.Create(filepath.Join(d, "f"), region, pmem.Options{Reserve: 2 * region})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	src := make([]byte, block)
	for i := range src {
		src[i] = byte(i)
	}
	fill := func(off int) {
		buf := m.Bytes()[off : off+region]
		for o := 0; o < region; o += block {
			copy(buf[o:], src)
		}
	}
	b.Run("fresh", func(b *testing.B) {
		b.SetBytes(region)
		for b.Loop() {
			b.StopTimer()
			if err := m.Allocate(region, region); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			fill(region)
			b.StopTimer()
			if err := m.Discard(region, region); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	})
	b.Run("rewrite", func(b *testing.B) {
		fill(0)
		b.SetBytes(region)
		for b.Loop() {
			fill(0)
		}
	})
}
