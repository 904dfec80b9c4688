package local

import (
	"fmt"
	"sort"
	"sync/atomic"
	"unsafe"

	"github.com/rpstream/rpstream/pmem"
)

// OpenOn opens the stream held in mem. Opened for writing, it recovers the
// valid prefix of every region and makes that state durable (see the
// package comment). Read-only, it builds the same view without writing.
// Damage that recovery cannot explain by a crash returns an ErrCorrupt
// error and changes nothing.
func OpenOn(mem pmem.Memory, opts Options) (*Stream, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	sb, err := decodeSuperblock(mem.Bytes())
	if err != nil {
		return nil, err
	}
	s := newStream(mem, sb, opts)
	st, err := s.scan(scanFile)
	if err != nil {
		return nil, err
	}
	if !opts.ReadOnly {
		if err := s.repair(st); err != nil {
			return nil, err
		}
	}
	s.install(st)
	return s, nil
}

// scanState is what a scan of the file found.
type scanState struct {
	regions   []*region // the recovered sequence, head first
	truncated []*region // regions after the tail, to free
	free      []int
	nslots    int
	tailEnd   int    // offset after the last valid entry of the tail
	next      uint64 // index after the last valid entry
	dirtyTo   int    // tail region bytes up to here may be non-zero after tailEnd
	trim      trimRecord
}

// scanHeaders finds every valid region of this stream and the free slots.
func (s *Stream) scanHeaders() (found []*region, free []int, nslots int, err error) {
	found, free, nslots = findRegions(s.mem.Bytes(), s.sb)
	for i := 1; i < len(found); i++ {
		p, r := found[i-1], found[i]
		if r.seq != p.seq+1 {
			return nil, nil, 0, fmt.Errorf("%w: region sequence jumps from %d (slot %d) to %d (slot %d)", ErrCorrupt, p.seq, p.slot, r.seq, r.slot)
		}
		if r.first < p.first {
			return nil, nil, 0, fmt.Errorf("%w: region %d starts at index %d, before region %d at %d", ErrCorrupt, r.seq, r.first, p.seq, p.first)
		}
	}
	for i, r := range found[:max(len(found)-1, 0)] {
		r.next.Store(found[i+1])
	}
	return found, free, nslots, nil
}

// findRegions returns the slots of image b holding a valid header of
// stream sb, by sequence number (unchecked: scanHeaders checks it), and
// the others.
func findRegions(b []byte, sb superblock) (found []*region, free []int, nslots int) {
	nslots = (len(b) - SuperblockSize) / sb.regionSize
	for k := 0; k < nslots; k++ {
		base := SuperblockSize + k*sb.regionSize
		h, ok := decodeRegionHeader(b[base : base+64])
		if !ok || h.streamID != sb.streamID {
			free = append(free, k)
			continue
		}
		r := &region{slot: k, base: base, seq: h.seq, first: h.first, epoch: h.epoch, key: entryKey(sb.version, h.seq, h.epoch)}
		r.end.Store(-1)
		found = append(found, r)
	}
	sort.Slice(found, func(i, j int) bool { return found[i].seq < found[j].seq })
	return found, free, nslots
}

// scanMode says how scan reads a sealed last region.
type scanMode int

const (
	// scanFile: a stream file, whose last region is never sealed (its
	// successor existed): a sealed one is corruption.
	scanFile scanMode = iota
	// scanCopy: a replica's copy, whose last region may be sealed (a
	// leader's copy of its successor was lost): it is the tail, as its
	// seal says.
	scanCopy
)

func (s *Stream) scan(mode scanMode) (*scanState, error) {
	found, free, nslots, err := s.scanHeaders()
	if err != nil {
		return nil, err
	}
	st := &scanState{free: free, nslots: nslots}
	st.trim = decodeTrimRecords(s.mem.Bytes())
	if len(found) == 0 {
		// A stream nothing was appended to has no region (the first
		// append allocates slot 0), nor has one a crash interrupted
		// during that allocation; anything else lost every region.
		if st.trim.gen != 0 || nslots > 1 {
			return nil, fmt.Errorf("%w: no valid region in %d slots", ErrCorrupt, nslots)
		}
		return st, nil
	}
	if found[0].first > st.trim.head {
		return nil, fmt.Errorf("%w: the oldest region (%d, slot %d) starts at index %d, but the stream's head is %d: a region is missing",
			ErrCorrupt, found[0].seq, found[0].slot, found[0].first, st.trim.head)
	}
	for i, r := range found {
		rb := s.regionBytes(r)
		if i == len(found)-1 {
			if w := atomic.LoadUint64((*uint64)(unsafe.Pointer(&rb[regionSealAt]))); w != 0 {
				count, end := unseal(w)
				if mode != scanCopy {
					return nil, fmt.Errorf("%w: the last region (%d, slot %d) is sealed, so the region after it is missing", ErrCorrupt, r.seq, r.slot)
				}
				if end < RegionHeaderSize || end > len(rb) {
					return nil, fmt.Errorf("%w: region %d (slot %d) sealed with %d entries ending at %d", ErrCorrupt, r.seq, r.slot, count, end)
				}
				r.sealed.Store(true)
				st.regions, st.tailEnd, st.next = found, end, r.first+uint64(count)
				st.dirtyTo = lastNonZero(rb, end)
				return st, nil
			}
			n, end := scanEntries(rb, r.key, ^uint64(0))
			st.regions, st.tailEnd, st.next = found, end, r.first+n
			st.dirtyTo = lastNonZero(rb, end)
			return st, nil
		}
		want := found[i+1].first - r.first
		if w := atomic.LoadUint64((*uint64)(unsafe.Pointer(&rb[regionSealAt]))); w != 0 {
			count, end := unseal(w)
			if uint64(count) != want || end < RegionHeaderSize || end > len(rb) {
				return nil, fmt.Errorf("%w: region %d (slot %d) sealed with %d entries ending at %d, its successor says %d", ErrCorrupt, r.seq, r.slot, count, end, want)
			}
			r.end.Store(int64(end))
			r.sealed.Store(true)
			continue
		}
		n, end := scanEntries(rb, r.key, want)
		if n == want {
			r.end.Store(int64(end))
			continue
		}
		// A crash lost entries of r that later regions depend on: r is
		// the tail, and everything after it goes.
		r.next.Store(nil)
		st.regions, st.truncated = found[:i+1], found[i+1:]
		st.tailEnd, st.next = end, r.first+n
		st.dirtyTo = lastNonZero(rb, end)
		return st, nil
	}
	panic("unreachable")
}

// scanEntries counts the valid entries from the start of a region, at most
// limit, and returns the offset after the last.
func scanEntries(rb []byte, key uint32, limit uint64) (n uint64, end int) {
	off := RegionHeaderSize
	for n < limit {
		_, next, ok := readEntry(rb, key, off)
		if !ok {
			break
		}
		off = next
		n++
	}
	return n, off
}

// lastNonZero returns the end of the last non-zero 8-byte word of rb at or
// after from (from if there is none).
func lastNonZero(rb []byte, from int) int {
	for end := len(rb) &^ 7; end-8 >= from; end -= 8 {
		if le.Uint64(rb[end-8:]) != 0 {
			return end
		}
	}
	return from
}

// repair makes the recovered state durable: frees the regions after the
// tail (last first) and zeroes what lies after the tail. A stream with no
// region stays without one until its first append.
func (s *Stream) repair(st *scanState) error {
	s.nslots, s.free = st.nslots, st.free
	for i := len(st.truncated) - 1; i >= 0; i-- {
		if err := s.freeRegion(st.truncated[i]); err != nil {
			return err
		}
	}
	st.free = s.free
	// Finish a trim that a crash interrupted.
	s.trim = st.trim
	s.regions = st.regions
	if err := s.trimToLocked(st.trim.head); err != nil {
		return err
	}
	st.regions, st.free = s.regions, s.free
	if len(st.regions) == 0 {
		st.tailEnd = RegionHeaderSize
		return nil
	}
	tail := st.regions[len(st.regions)-1]
	if st.dirtyTo > st.tailEnd {
		rb := s.regionBytes(tail)
		clear(rb[st.tailEnd:st.dirtyTo])
		if err := s.mem.Persist(tail.base+st.tailEnd, st.dirtyTo-st.tailEnd); err != nil {
			return s.fail(err)
		}
	}
	return nil
}

// install makes the scanned state the stream's state.
func (s *Stream) install(st *scanState) {
	s.nslots, s.free = st.nslots, st.free
	s.regions = st.regions
	if len(s.regions) == 0 {
		// Nothing appended yet (scan checked that nothing was
		// trimmed): the first reservation allocates a region.
		s.tailOff = RegionHeaderSize
		if !s.readOnly {
			s.live.reset(0)
		}
		return
	}
	tail := s.regions[len(s.regions)-1]
	s.tailOff, s.next = st.tailEnd, st.next
	s.trim = st.trim
	s.head.Store(max(s.regions[0].first, st.trim.head))
	s.commitLoc = loc{tail, st.tailEnd}
	s.persistLoc = s.commitLoc
	s.committed.Store(st.next)
	s.persisted.Store(st.next)
	if !s.readOnly {
		s.live.reset(st.next)
	}
}
