package local_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/rpstream/rpstream/local"
	"github.com/rpstream/rpstream/pmem/simpmem"
)

// Damaged files: opening must give an error of the corruption class or a
// recovered state; never a panic, never a write outside the file, and never
// the silent loss of an entry that comes before the damage.

const fuzzRegion = local.MinRegionSize

// fuzzImage builds a valid stream image of n entries (sizes from seed),
// trimmed to trim, and returns it with each entry's file range.
type entryLoc struct {
	index    uint64
	from, to int // file range of header and payload
	region   int // file offset of its region
	data     []byte
}

func fuzzImage(n int, seed uint64, trim uint64) ([]byte, []entryLoc) {
	rng := rand.New(rand.NewPCG(seed, 3))
	mem := simpmem.New(local.SuperblockSize + 12*fuzzRegion)
	defer mem.Release()
	s, err := local.CreateOn(mem, local.Options{RegionSize: fuzzRegion})
	if err != nil {
		panic(err)
	}
	var locs []entryLoc
	for i := 0; i < n; i++ {
		p := make([]byte, rng.IntN(1500))
		for k := range p {
			p[k] = byte(rng.Uint32())
		}
		if _, err := s.Append(p); err != nil {
			break
		}
	}
	if trim > 0 {
		s.Trim(trim)
	}
	// Locate entries by walking regions as recovery does.
	img := mem.Media()
	for _, r := range s.Regions() {
		off := local.RegionHeaderSize
		for i := r.First; i < r.First+r.Count; i++ {
			ln := int(uint32(img[r.Offset+off]) | uint32(img[r.Offset+off+1])<<8 | uint32(img[r.Offset+off+2])<<16 | uint32(img[r.Offset+off+3])<<24)
			locs = append(locs, entryLoc{index: i, from: r.Offset + off, to: r.Offset + off + local.EntryHeaderSize + ln, region: r.Offset,
				data: bytes.Clone(img[r.Offset+off+local.EntryHeaderSize : r.Offset+off+local.EntryHeaderSize+ln])})
			off += local.EntryHeaderSize + (ln+7)&^7
		}
	}
	s.Close()
	return mem.Media(), locs
}

// openDamaged opens img and checks the rules; damagedFrom is the lowest
// index whose bytes (or whose region's header) were damaged.
func openDamaged(t *testing.T, img []byte, locs []entryLoc, damagedFrom uint64) {
	t.Helper()
	size := len(img)
	mem := simpmem.FromImage(img, size+4*fuzzRegion)
	defer mem.Release()
	s, err := local.OpenOn(mem, local.Options{})
	if err != nil {
		if !errors.Is(err, local.ErrCorrupt) && !errors.Is(err, local.ErrNotStream) && !errors.Is(err, local.ErrVersion) {
			t.Fatalf("open of a damaged file: error outside the corruption class: %v", err)
		}
		return
	}
	defer s.Close()
	// A file without one whole slot is a stream that crashed before its
	// first region: recovery allocates one. Otherwise the size stays.
	if size >= local.SuperblockSize+fuzzRegion && mem.Size() != size {
		t.Fatalf("recovery changed the file size from %d to %d", size, mem.Size())
	}
	it := s.Iterator(s.Head())
	var n uint64
	for it.Next() {
		e := it.Entry()
		if locs != nil {
			if e.Index >= uint64(len(locs))+locs[0].index || e.Index < locs[0].index {
				t.Fatalf("recovered entry %d that was never appended", e.Index)
			}
			if want := locs[e.Index-locs[0].index].data; e.Index < damagedFrom && !bytes.Equal(e.Data, want) {
				t.Fatalf("entry %d before the damage reads wrong", e.Index)
			}
		}
		n = e.Index + 1
	}
	if err := it.Err(); err != nil {
		if !errors.Is(err, local.ErrCorrupt) && !errors.Is(err, local.ErrTrimmed) {
			t.Fatalf("reading a damaged file: error outside the corruption class: %v", err)
		}
		return // the damage was reported
	}
	if locs != nil && s.Head() > locs[0].index && damagedFrom > locs[0].index {
		t.Fatalf("head moved from %d to %d without a report", locs[0].index, s.Head())
	}
	if locs != nil && n < min(damagedFrom, locs[len(locs)-1].index+1) {
		t.Fatalf("silent loss: recovered up to %d, damage starts at entry %d (%d entries)", n, damagedFrom, len(locs))
	}
}

// damagedIndex is the first index whose header, payload or region header
// overlaps [off, off+n).
func damagedIndex(locs []entryLoc, off, n int) uint64 {
	d := ^uint64(0)
	for _, l := range locs {
		hitsEntry := off < l.to && off+n > l.from
		hitsRegion := off < l.region+64 && off+n > l.region
		if (hitsEntry || hitsRegion) && l.index < d {
			d = l.index
		}
	}
	return d
}

// FuzzOpenImage fuzzes the first bytes of a stream file (superblock, trim
// records, the first region's header and entries) laid over a valid image
// of several regions: small inputs keep the fuzzer fast, the image behind
// them keeps every recovery path reachable. Inputs longer than the image
// replace it whole.
func FuzzOpenImage(f *testing.F) {
	base, _ := fuzzImage(40, 5, 0)
	const prefix = local.SuperblockSize + 512
	f.Add(base[:prefix])
	trimmed, _ := fuzzImage(40, 6, 12)
	f.Add(trimmed[:prefix])
	f.Add([]byte("rpstream"))
	f.Add(bytes.Repeat([]byte{0xff}, 5000))
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 1<<20 {
			return
		}
		img := in
		if len(in) < len(base) {
			img = bytes.Clone(base)
			copy(img, in)
		}
		openDamaged(t, img, nil, 0)
	})
}

func FuzzDamage(f *testing.F) {
	f.Add(uint8(30), uint64(1), uint32(5000), uint16(1), byte(0xff), uint8(0))
	f.Add(uint8(60), uint64(2), uint32(20000), uint16(64), byte(0), uint8(20))
	f.Add(uint8(10), uint64(3), uint32(4100), uint16(8), byte(1), uint8(0))
	f.Fuzz(func(t *testing.T, n uint8, seed uint64, off uint32, ln uint16, val byte, trim uint8) {
		img, locs := fuzzImage(int(n), seed, uint64(trim))
		if len(locs) == 0 {
			return
		}
		o, l := int(off)%len(img), int(ln)%512+1
		l = min(l, len(img)-o)
		for k := o; k < o+l; k++ {
			img[k] ^= val | 1
		}
		openDamaged(t, img, locs, damagedIndex(locs, o, l))
	})
}

// TestDamageSweep flips bytes across a whole image (every 61st byte, and
// a truncation every 4 KiB), so every CI run covers the damage rules
// without a fuzzer.
func TestDamageSweep(t *testing.T) {
	img, locs := fuzzImage(50, 11, 10)
	for o := 0; o < len(img); o += 61 {
		d := bytes.Clone(img)
		d[o] ^= 0x5a
		openDamaged(t, d, locs, damagedIndex(locs, o, 1))
	}
	for cut := 0; cut < len(img); cut += 4096 {
		openDamaged(t, bytes.Clone(img[:cut]), nil, 0)
	}
}
