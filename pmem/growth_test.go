package pmem_test

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/rpstream/rpstream/pmem"
)

// A file's mapping starts small and grows with it; slices taken before a
// growth stay valid and see what is stored through later ones.
func TestMappingGrowsWithTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	m, err := pmem.Create(path, 4096, pmem.Options{Reserve: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if r := m.Reserved(); r != pmem.MinReserve {
		t.Fatalf("a 4 KiB file reserves %d bytes, want %d", r, pmem.MinReserve)
	}
	early := m.Bytes()
	copy(early, "first page")
	const grown = 3 * pmem.MinReserve // past the first mapping
	if err := m.Allocate(0, grown); err != nil {
		t.Fatal(err)
	}
	if m.Size() != grown {
		t.Fatalf("size %d, want %d", m.Size(), grown)
	}
	if r := m.Reserved(); r < grown || r > 4*grown {
		t.Fatalf("reserved %d bytes for a file of %d", r, grown)
	}
	late := m.Bytes()
	if !bytes.Equal(late[:10], []byte("first page")) {
		t.Fatalf("grown mapping reads %q", late[:10])
	}
	copy(late[grown-5:], "tail!")
	copy(late, "FIRST")
	if !bytes.Equal(early[:5], []byte("FIRST")) {
		t.Fatalf("a slice from before the growth reads %q after a store through the new mapping", early[:5])
	}
	if err := m.Persist(0, grown); err != nil {
		t.Fatal(err)
	}
	// Past the limit: an error, not a mapping beyond it.
	if err := m.Allocate(grown, 1<<30); err == nil {
		t.Fatal("allocating past Reserve succeeded")
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := pmem.Open(path, pmem.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if b := r.Bytes(); !bytes.Equal(b[:5], []byte("FIRST")) || !bytes.Equal(b[grown-5:], []byte("tail!")) {
		t.Fatalf("reopened file reads %q ... %q", b[:5], b[grown-5:])
	}
}

// A reader's mapping follows a writer's growth through Refresh.
func TestRefreshGrowsTheMapping(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	w, err := pmem.Create(path, 4096, pmem.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r, err := pmem.Open(path, pmem.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	const grown = 2 * pmem.MinReserve
	if err := w.Allocate(0, grown); err != nil {
		t.Fatal(err)
	}
	copy(w.Bytes()[grown-4:], "end!")
	if err := r.Refresh(); err != nil {
		t.Fatal(err)
	}
	if b := r.Bytes(); len(b) != grown || string(b[grown-4:]) != "end!" {
		t.Fatalf("reader sees %d bytes", len(b))
	}
}
