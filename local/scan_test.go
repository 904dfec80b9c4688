package local_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/rpstream/rpstream/local"
	"github.com/rpstream/rpstream/pmem/simpmem"
)

// scanAgrees checks that Scan of img says what a read-only open of it says
// (the same error class, or the same regions and entry count) and leaves
// img unchanged.
func scanAgrees(t *testing.T, img []byte) {
	t.Helper()
	orig := bytes.Clone(img)
	res, err := local.Scan(img)
	if !bytes.Equal(img, orig) {
		t.Fatal("Scan changed the image")
	}
	mem := simpmem.FromImage(bytes.Clone(img), len(img))
	defer mem.Release()
	s, oerr := local.OpenOn(mem, local.Options{ReadOnly: true})
	if (err == nil) != (oerr == nil) {
		t.Fatalf("Scan: %v; read-only open: %v", err, oerr)
	}
	if err != nil {
		for _, class := range []error{local.ErrCorrupt, local.ErrNotStream, local.ErrVersion} {
			if errors.Is(oerr, class) && !errors.Is(err, class) {
				t.Fatalf("Scan: %v; read-only open: %v", err, oerr)
			}
		}
		return
	}
	defer s.Close()
	if res.Next != s.Committed() || res.StreamID != s.StreamID() || res.RegionSize != s.RegionSize() {
		t.Fatalf("Scan: next %d id %x size %d; open: next %d id %x size %d",
			res.Next, res.StreamID, res.RegionSize, s.Committed(), s.StreamID(), s.RegionSize())
	}
	rs := s.Regions()
	if len(rs) != len(res.Regions) {
		t.Fatalf("Scan found %d regions, open %d", len(res.Regions), len(rs))
	}
	for i, r := range rs {
		g := res.Regions[i]
		if g.Seq != r.Seq || g.Epoch != r.Epoch || g.Slot != r.Slot || g.Offset != r.Offset || g.First != r.First || g.Count != r.Count || g.End != r.Used {
			t.Fatalf("region %d: Scan %+v, open %+v", i, g, r)
		}
	}
}

func TestScanMatchesOpen(t *testing.T) {
	for _, c := range []struct {
		n    int
		seed uint64
		trim uint64
	}{{0, 1, 0}, {1, 2, 0}, {40, 3, 0}, {60, 4, 20}} {
		img, _ := fuzzImage(c.n, c.seed, c.trim)
		scanAgrees(t, img)
	}
	if _, err := local.Scan(make([]byte, local.SuperblockSize)); !errors.Is(err, local.ErrNotStream) {
		t.Fatalf("Scan of zeroes: %v", err)
	}
	if _, err := local.Scan(nil); !errors.Is(err, local.ErrNotStream) {
		t.Fatalf("Scan of nothing: %v", err)
	}
	if _, err := local.StreamIDOf([]byte("rpstream")); !errors.Is(err, local.ErrNotStream) {
		t.Fatalf("StreamIDOf a short image: %v", err)
	}
}

// TestScanDamageSweep: on damaged images Scan agrees with a read-only open.
func TestScanDamageSweep(t *testing.T) {
	img, _ := fuzzImage(50, 11, 10)
	for o := 0; o < len(img); o += 211 {
		d := bytes.Clone(img)
		d[o] ^= 0x5a
		scanAgrees(t, d)
	}
}

func FuzzScan(f *testing.F) {
	base, _ := fuzzImage(40, 5, 0)
	const prefix = local.SuperblockSize + 512
	f.Add(base[:prefix])
	f.Add([]byte("rpstream"))
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 1<<20 {
			return
		}
		img := in
		if len(in) < len(base) {
			img = bytes.Clone(base)
			copy(img, in)
		}
		scanAgrees(t, img)
	})
}

func TestSealedTail(t *testing.T) {
	img, _ := fuzzImage(40, 3, 0)
	res, err := local.Scan(img)
	if err != nil {
		t.Fatal(err)
	}
	last := res.Regions[len(res.Regions)-1]
	if off, sealed := local.SealedTail(img); sealed || off != last.Offset {
		t.Fatalf("SealedTail of a valid image: %d %v, tail at %d", off, sealed, last.Offset)
	}
	img[last.Offset+local.RegionSealOffset] = 1
	if _, err := local.Scan(img); !errors.Is(err, local.ErrCorrupt) {
		t.Fatalf("Scan with a sealed tail: %v", err)
	}
	if off, sealed := local.SealedTail(img); !sealed || off != last.Offset {
		t.Fatalf("SealedTail: %d %v, tail at %d", off, sealed, last.Offset)
	}
	img[last.Offset+local.RegionSealOffset] = 0
	if _, sealed := local.SealedTail(make([]byte, 100)); sealed {
		t.Fatal("SealedTail of a non-stream")
	}
}

// A copy whose last region is sealed (its successor's copy was lost) is
// corrupt to Scan and to recovery, and read as it is by ScanCopy, with the
// entries its seal counts, without a write.
func TestScanCopySealedTail(t *testing.T) {
	img, _ := fuzzImage(40, 5, 0)
	sc, err := local.Scan(img)
	if err != nil || len(sc.Regions) < 2 {
		t.Fatalf("scan: %+v, %v", sc, err)
	}
	last := sc.Regions[len(sc.Regions)-1]
	clear(img[last.Offset : last.Offset+64]) // the successor's header, lost
	if _, err := local.Scan(img); !errors.Is(err, local.ErrCorrupt) {
		t.Fatalf("Scan of a sealed tail: %v", err)
	}
	orig := bytes.Clone(img)
	got, err := local.ScanCopy(img)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(img, orig) {
		t.Fatal("ScanCopy changed the image")
	}
	want := sc.Regions[len(sc.Regions)-2]
	tail := got.Regions[len(got.Regions)-1]
	if len(got.Regions) != len(sc.Regions)-1 || got.Next != last.First || !tail.Sealed ||
		tail.Seq != want.Seq || tail.End != want.End || tail.Count != want.Count || got.DirtyTo != want.End {
		t.Fatalf("ScanCopy: %+v, tail %+v; the region was %+v", got, tail, want)
	}
}
