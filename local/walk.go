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
// entry with an Iterator. Walking costs one step per entry from the start
// of from's region (as an Iterator's seek does) and no allocation. An
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

// walkDamage reports bad bytes met by Walk at entry i of r.
func (s *Stream) walkDamage(r *region, i uint64, what string) error {
	if i < s.Head() {
		return fmt.Errorf("%w: entry %d", ErrTrimmed, i)
	}
	return fmt.Errorf("%w: region %d, entry %d: %s", ErrCorrupt, r.seq, i, what)
}
