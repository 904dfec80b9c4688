package local

import "fmt"

// Next is the index the next reservation (Append, Reserve, an
// Appender's Start) will get: the stream's next position. A caller that
// must decide on it before appending (a conditional append) holds its own
// lock around Next and the append; nothing in this package orders them.
func (s *Stream) Next() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.next
}

// Walk calls f with each committed entry from index from, in order, until
// f returns false, the committed position, or index to (exclusive),
// whichever comes first, and returns the index it stopped at (that of the
// entry f returned false for, or where the entries ended).
//
// It is for lookups that touch many entries and need few of their bytes
// (finding an entry by a time carried in its payload): payloads are read
// in place, without copying them and without checking their checksums, so
// a payload is a hint and belongs to the mapping: f must not keep it or
// write to it, and an answer found with it is checked by reading the
// entry with an Iterator. Walking costs one step per entry from the
// entry from is in, or in a full region whose entries are all committed
// from the last of every WalkStride entries before it: the first walk
// into such a region steps over all its entries once to note where they
// are (a few dozen offsets, kept with the region). An
// entry whose header runs off its region is ErrCorrupt (ErrTrimmed if its
// region was freed meanwhile); a position before the head is ErrTrimmed.
func (s *Stream) Walk(from, to uint64, f func(index uint64, payload []byte) bool) (uint64, error) {
	if s.closed.Load() {
		return from, ErrClosed
	}
	to = min(to, s.Committed())
	if from >= to {
		return from, nil
	}
	r, err := s.regionOf(from)
	if err != nil {
		return from, err
	}
	i, off := r.first, RegionHeaderSize
	if k := (from - r.first) / WalkStride; k > 0 {
		if marks, err := s.walkMarks(r); err != nil {
			return from, err
		} else if k < uint64(len(marks)) {
			i, off = r.first+k*WalkStride, int(marks[k])
		}
	}
	for i < to {
		stop := to
		if nx := r.next.Load(); nx != nil {
			if i >= nx.first {
				// Past r's entries (regions StartEpoch left empty
				// share their successor's first index).
				r, off = nx, RegionHeaderSize
				continue
			}
			stop = min(to, nx.first)
		}
		rb := s.regionBytes(r)
		for ; i < stop; i++ {
			if off+EntryHeaderSize > len(rb) {
				return i, s.walkDamage(r, i, "entry walks off the region")
			}
			n := int(le.Uint32(rb[off:]))
			if n > len(rb)-off-EntryHeaderSize {
				return i, s.walkDamage(r, i, fmt.Sprintf("length %d runs off the region", n))
			}
			if i >= from && !f(i, rb[off+EntryHeaderSize:off+EntryHeaderSize+n:off+EntryHeaderSize+n]) {
				return i, nil
			}
			off += entrySize(n)
		}
	}
	return i, nil
}

// WalkStride is how many entries apart the offsets Walk notes in a full
// region are: a walk from entry first+k*WalkStride of such a region
// starts there at once, one from any other entry steps over fewer than
// WalkStride entries before it.
const WalkStride = 1024

// walkMarks returns the offsets of entries 0, WalkStride, ... of r if
// r is full and all its entries committed (noting them on first use),
// else nil.
func (s *Stream) walkMarks(r *region) ([]int32, error) {
	if m := r.marks.Load(); m != nil {
		return *m, nil
	}
	nx := r.next.Load()
	if nx == nil || s.Committed() < nx.first {
		return nil, nil
	}
	count := nx.first - r.first
	rb := s.regionBytes(r)
	marks := make([]int32, 0, count/WalkStride+1)
	off := RegionHeaderSize
	for i := uint64(0); i < count; i++ {
		if i%WalkStride == 0 {
			marks = append(marks, int32(off))
		}
		if off+EntryHeaderSize > len(rb) {
			return nil, s.walkDamage(r, r.first+i, "entry walks off the region")
		}
		n := int(le.Uint32(rb[off:]))
		if n > len(rb)-off-EntryHeaderSize {
			return nil, s.walkDamage(r, r.first+i, fmt.Sprintf("length %d runs off the region", n))
		}
		off += entrySize(n)
	}
	r.marks.Store(&marks)
	return marks, nil
}

// walkDamage reports bad bytes met by Walk at entry i of r.
func (s *Stream) walkDamage(r *region, i uint64, what string) error {
	if i < s.Head() {
		return fmt.Errorf("%w: entry %d", ErrTrimmed, i)
	}
	return fmt.Errorf("%w: region %d, entry %d: %s", ErrCorrupt, r.seq, i, what)
}
