package proccluster

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/rpstream/rpstream/local"
)

// writeStream creates a stream file at path holding the entries of data.
func writeStream(t *testing.T, path string, data [][]byte) {
	t.Helper()
	s, err := local.Create(path, local.Options{RegionSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range data {
		if _, err := s.Append(d); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

func entries(n int) [][]byte {
	var out [][]byte
	for i := range n {
		out = append(out, fmt.Appendf(nil, "entry-%06d-%s", i, bytes.Repeat([]byte{'x'}, i%300)))
	}
	return out
}

func TestCompareReplicas(t *testing.T) {
	dir := t.TempDir()
	data := entries(1000) // several 64 KiB regions
	leader := filepath.Join(dir, "leader.stream")
	writeStream(t, leader, data)

	same := filepath.Join(dir, "same.stream")
	copyFile(t, leader, same)
	committed, err := CompareReplicas(leader, []string{same, same})
	if err != nil {
		t.Fatalf("identical copy: %v", err)
	}
	if committed != uint64(len(data)) {
		t.Fatalf("committed %d, want %d", committed, len(data))
	}

	// A replica holding more than the leader committed is fine.
	longer := filepath.Join(dir, "longer.stream")
	writeStream(t, longer, append(entries(1000), []byte("more")))
	if _, err := CompareReplicas(leader, []string{longer}); err != nil {
		t.Fatalf("longer replica: %v", err)
	}

	// A damaged copy: one payload byte flipped in the middle.
	damaged := filepath.Join(dir, "damaged.stream")
	copyFile(t, leader, damaged)
	b, err := os.ReadFile(damaged)
	if err != nil {
		t.Fatal(err)
	}
	k := bytes.Index(b, []byte("entry-000500-"))
	if k < 0 {
		t.Fatal("entry 500 not found in the file")
	}
	b[k+7] ^= 0xff
	if err := os.WriteFile(damaged, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := CompareReplicas(leader, []string{same, damaged}); err == nil {
		t.Fatal("damaged replica passed")
	} else {
		t.Logf("damaged: %v", err)
	}

	// Same length, one entry different; and a short replica.
	other := entries(1000)
	other[700] = []byte("entry-000700-changed")
	differs := filepath.Join(dir, "differs.stream")
	writeStream(t, differs, other)
	if _, err := CompareReplicas(leader, []string{differs}); !errors.Is(err, ErrReplicaDiffers) {
		t.Fatalf("different entry: %v, want ErrReplicaDiffers", err)
	}
	short := filepath.Join(dir, "short.stream")
	writeStream(t, short, entries(999))
	if _, err := CompareReplicas(leader, []string{short}); !errors.Is(err, ErrReplicaDiffers) {
		t.Fatalf("short replica: %v, want ErrReplicaDiffers", err)
	}

	// Missing files are errors, not panics.
	if _, err := CompareReplicas(leader, []string{filepath.Join(dir, "nope")}); err == nil {
		t.Fatal("missing replica passed")
	}
	if _, err := CompareReplicas(filepath.Join(dir, "nope"), nil); err == nil {
		t.Fatal("missing leader passed")
	}
}
