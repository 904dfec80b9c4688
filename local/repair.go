package local

import (
	"errors"
	"fmt"
)

// ErrRepair says a repair asked for cannot be made: the region is not
// live, or the entries are not committed.
var ErrRepair = errors.New("local: cannot repair")

// RegionSpan locates a live region: for the repair of a damaged entry
// from another copy of the stream (RegionOf, RepairRegion).
type RegionSpan struct {
	Seq   uint64 // sequence number
	Slot  int    // slot in the file
	First uint64 // index of its first entry
	Epoch uint64 // recorded in its header
	// End is the index after its last entry: its successor's first, or
	// the next index to be appended if it is the tail.
	End uint64
}

// RegionOf returns the live region holding entry index (committed or
// not).
func (s *Stream) RegionOf(index uint64) (RegionSpan, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.regions) == 0 || index < s.regions[0].first || index >= s.next {
		return RegionSpan{}, fmt.Errorf("%w: entry %d is in no live region", ErrRepair, index)
	}
	end := s.next
	for i := len(s.regions) - 1; i >= 0; i-- {
		r := s.regions[i]
		if index >= r.first {
			return RegionSpan{Seq: r.seq, Slot: r.slot, First: r.first, Epoch: r.epoch, End: end}, nil
		}
		end = r.first
	}
	return RegionSpan{}, fmt.Errorf("%w: entry %d is in no live region", ErrRepair, index)
}

// RepairRegion rewrites the committed entries of live region seq before
// index upTo with the bytes of img, the region's first len(img) bytes as
// another copy holds them. A copy holds the same bytes at the same
// offsets (replication writes them so), and an entry's checksum covers
// its region's sequence number and epoch, so an entry of img that checks
// is the one this region should hold. img is checked first: it must hold
// every entry from the region's first to upTo, valid; only then are the
// entry bytes copied and made durable. It returns how many bytes
// differed. Readers of those entries meanwhile see the damaged bytes or
// the good ones; either is checked when read.
func (s *Stream) RepairRegion(seq uint64, img []byte, upTo uint64) (int, error) {
	if s.readOnly {
		return 0, ErrReadOnly
	}
	if upTo > s.committed.Load() {
		return 0, fmt.Errorf("%w: repair through entry %d, past the commit point %d", ErrRepair, upTo, s.committed.Load())
	}
	s.mu.Lock()
	var r *region
	for _, x := range s.regions {
		if x.seq == seq {
			r = x
		}
	}
	s.mu.Unlock()
	if r == nil {
		return 0, fmt.Errorf("%w: region %d is not live", ErrRepair, seq)
	}
	if upTo <= r.first {
		return 0, nil
	}
	rs := s.sb.regionSize
	if len(img) > rs {
		img = img[:rs]
	}
	if len(img) < RegionHeaderSize {
		return 0, fmt.Errorf("%w: an image of %d bytes holds no entry of region %d", ErrCorrupt, len(img), seq)
	}
	off := RegionHeaderSize
	for i := r.first; i < upTo; i++ {
		_, next, ok := readEntry(img, r.key, off)
		if !ok {
			return 0, fmt.Errorf("%w: the copy's region %d does not hold entry %d whole", ErrCorrupt, seq, i)
		}
		off = next
	}
	mem := s.mem.Bytes()[r.base : r.base+rs]
	diff := 0
	for i := RegionHeaderSize; i < off; i++ {
		if mem[i] != img[i] {
			mem[i] = img[i]
			diff++
		}
	}
	if diff == 0 {
		return 0, nil
	}
	if err := s.mem.Persist(r.base+RegionHeaderSize, off-RegionHeaderSize); err != nil {
		return diff, err
	}
	return diff, nil
}
