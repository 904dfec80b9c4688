package local_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/rpstream/rpstream/local"
	"github.com/rpstream/rpstream/pmem/simpmem"
)

// TestRepairRegion: a committed entry of a sealed region is damaged in
// the writer's mapping; RepairRegion refuses a copy's image that is
// damaged too (changing nothing) and takes a good one, after which every
// entry reads back as appended.
func TestRepairRegion(t *testing.T) {
	mem := simpmem.New(local.SuperblockSize + 8*local.MinRegionSize)
	defer mem.Release()
	s, err := local.CreateOn(mem, local.Options{RegionSize: local.MinRegionSize, Epoch: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var n uint64
	for s.TailRegion().Seq < 3 {
		if _, err := s.Append(epochPayload(n)); err != nil {
			t.Fatal(err)
		}
		n++
	}
	good := bytes.Clone(mem.Bytes())
	sc, err := local.Scan(good)
	if err != nil || len(sc.Regions) < 2 {
		t.Fatalf("scan: %d regions, %v", len(sc.Regions), err)
	}
	r := sc.Regions[0]
	rs := s.RegionSize()
	at := r.Offset + r.End/2
	mem.Bytes()[at] ^= 0x20
	// The damage is found where it is.
	it := s.Iterator(0)
	for it.Next() {
	}
	if !errors.Is(it.Err(), local.ErrCorrupt) {
		t.Fatalf("reading the damaged stream: %v", it.Err())
	}
	bad := it.Pos()
	span, err := s.RegionOf(bad)
	if err != nil || span.Seq != r.Seq || span.First != r.First || span.Slot != r.Slot || span.Epoch != 3 || span.End != r.First+r.Count {
		t.Fatalf("RegionOf(%d) = %+v, %v; want region %+v", bad, span, err, r)
	}
	upTo := r.First + r.Count
	// A copy damaged too is refused, and nothing changes.
	img := bytes.Clone(good[r.Offset : r.Offset+rs])
	img[r.End/2+8] ^= 0x01
	img[r.End/2] ^= 0x01
	if _, err := s.RepairRegion(r.Seq, img, upTo); !errors.Is(err, local.ErrCorrupt) {
		t.Fatalf("repair from a damaged image: %v", err)
	}
	if mem.Bytes()[at] == good[at] {
		t.Fatal("a refused repair changed the damaged byte")
	}
	// Not past the commit point, nor in a region that is not live.
	if _, err := s.RepairRegion(r.Seq, good[r.Offset:r.Offset+rs], s.Committed()+1); !errors.Is(err, local.ErrRepair) {
		t.Fatalf("repair past the commit point: %v", err)
	}
	if _, err := s.RepairRegion(99, good[r.Offset:r.Offset+rs], upTo); !errors.Is(err, local.ErrRepair) {
		t.Fatalf("repair of a region that is not live: %v", err)
	}
	diff, err := s.RepairRegion(r.Seq, good[r.Offset:r.Offset+rs], upTo)
	if err != nil || diff != 1 {
		t.Fatalf("repair: %d bytes changed, %v; want 1", diff, err)
	}
	it = s.Iterator(0)
	var i uint64
	for ; it.Next(); i++ {
		if !bytes.Equal(it.Entry().Data, epochPayload(i)) {
			t.Fatalf("entry %d after the repair differs", i)
		}
	}
	if it.Err() != nil || i != n {
		t.Fatalf("after the repair: %d of %d entries read, %v", i, n, it.Err())
	}
	// The repair is durable: the media holds it.
	if m := mem.Media(); m[at] != good[at] {
		t.Fatal("the repaired byte is not on the media")
	}
}
