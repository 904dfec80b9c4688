package local

import (
	"context"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rpstream/rpstream/pmem"
)

// Entry is one entry read by an Iterator.
type Entry struct {
	Index uint64
	// Data is the payload. It belongs to the iterator and is valid until
	// its next call to Next; copy it to keep it.
	Data []byte
}

// Iterator reads committed entries in index order from any position. An
// iterator is used by one goroutine at a time; any number of iterators
// may run beside the writer.
type Iterator struct {
	s     *Stream
	next  uint64 // index of the next entry to return
	r     *region
	off   int    // offset of entry next in r, when r != nil
	limit uint64 // committed position last seen
	buf   []byte
	cur   Entry
	err   error
}

// Iterator returns an iterator whose first entry is index from. A position
// beyond the committed one is allowed: Next returns false until it exists
// (use Wait). A trimmed position gives ErrTrimmed from Err after Next.
func (s *Stream) Iterator(from uint64) *Iterator {
	return &Iterator{s: s, next: from}
}

// Entry is the entry read by the last successful Next.
func (it *Iterator) Entry() Entry { return it.cur }

// Pos is the index of the entry Next will read.
func (it *Iterator) Pos() uint64 { return it.next }

// Err is the error that stopped the iterator (nil at the end of what is
// committed). An iterator stopped by an error stays stopped.
func (it *Iterator) Err() error { return it.err }

// Next reads the next committed entry. It returns false at the end of the
// committed entries (Err is nil: Wait, then call Next again) or on an error.
func (it *Iterator) Next() bool {
	if it.err != nil {
		return false
	}
	s := it.s
	if s.closed.Load() {
		it.err = ErrClosed
		return false
	}
	if it.next >= it.limit {
		it.limit = s.Committed()
		if it.next >= it.limit {
			return false
		}
	}
	if it.r == nil || (it.r.next.Load() != nil && it.next >= it.r.next.Load().first) {
		if err := it.seek(); err != nil {
			it.err = err
			return false
		}
	}
	if err := it.read(); err != nil {
		it.err = err
		return false
	}
	return true
}

// seek finds the region and offset of entry it.next.
func (it *Iterator) seek() error {
	s := it.s
	if r := it.r; r != nil && r.next.Load() != nil && it.next == r.next.Load().first {
		// Past regions StartEpoch left empty, whose successor starts at
		// the same index.
		r = r.next.Load()
		for n := r.next.Load(); n != nil && n.first <= it.next; n = r.next.Load() {
			r = n
		}
		it.r, it.off = r, RegionHeaderSize
		return nil
	}
	r, err := s.regionOf(it.next)
	if err == nil && r != nil && s.readOnly && r.next.Load() == nil && it.next > r.first {
		// The entry may lie in a region allocated after our last look.
		s.roRefresh()
		r, err = s.regionOf(it.next)
	}
	if err != nil {
		return err
	}
	rb := s.regionBytes(r)
	off := RegionHeaderSize
	for i := r.first; i < it.next; i++ {
		if off+EntryHeaderSize > len(rb) {
			return it.damaged(r, off, "entry walks off the region")
		}
		n := int(le.Uint32(rb[off:]))
		if n > len(rb)-off-EntryHeaderSize {
			return it.damaged(r, off, fmt.Sprintf("length %d runs off the region", n))
		}
		off += entrySize(n)
	}
	it.r, it.off = r, off
	return nil
}

// read copies entry it.next out of the mapping, checks it, and advances.
func (it *Iterator) read() error {
	s, r := it.s, it.r
	rb := s.regionBytes(r)
	off := it.off
	if off+EntryHeaderSize > len(rb) {
		return it.damaged(r, off, "entry walks off the region")
	}
	n := int(le.Uint32(rb[off:]))
	if n > len(rb)-off-EntryHeaderSize {
		return it.damaged(r, off, fmt.Sprintf("length %d runs off the region", n))
	}
	crc := le.Uint32(rb[off+4:])
	// Copy first and check the copy: a region freed and reused meanwhile
	// cannot then hand back bytes that were not checked.
	it.buf = append(it.buf[:0], rb[off+EntryHeaderSize:off+EntryHeaderSize+n]...)
	if crc != entryCRC(r.key, off, it.buf) {
		return it.damaged(r, off, "checksum mismatch")
	}
	it.cur = Entry{Index: it.next, Data: it.buf}
	it.off = off + entrySize(n)
	it.next++
	return nil
}

// damaged reports bad bytes at (r, off) as trimming if the region has been
// freed meanwhile, else as corruption.
func (it *Iterator) damaged(r *region, off int, what string) error {
	s := it.s
	if s.readOnly {
		s.roRefresh()
	}
	h, ok := decodeRegionHeader(s.regionBytes(r)[:64])
	if it.next < s.Head() || !ok || h.seq != r.seq {
		return fmt.Errorf("%w: index %d", ErrTrimmed, it.next)
	}
	return fmt.Errorf("%w: entry %d in region %d (slot %d, offset %d): %s", ErrCorrupt, it.next, r.seq, r.slot, off, what)
}

// Wait blocks until an entry at the iterator's position is committed, the
// context ends (its error is returned), or the stream closes (ErrClosed).
// It does not spin: in the writing process it sleeps on a channel, in a
// reader process on a futex in the shared file (or, without write
// permission on the file, by polling every 10 ms).
func (it *Iterator) Wait(ctx context.Context) error {
	s := it.s
	if !s.readOnly {
		return s.waitCommitted(ctx, it.next)
	}
	for {
		if s.closed.Load() {
			return ErrClosed
		}
		c := s.Committed()
		if c > it.next {
			it.limit = c
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		s.live.waitChange(c, 100*time.Millisecond)
	}
}

// Reader processes: a read-only Stream follows a writer in another process
// through the live area of the superblock.

// OpenReader is Open with ReadOnly set, attaching to the live area so that
// Wait sleeps on a futex instead of polling where the file is writable.
func OpenReader(path string, opts Options) (*Stream, error) {
	opts.ReadOnly = true
	s, err := Open(path, opts)
	if err != nil {
		return nil, err
	}
	s.live.attachReader(path)
	s.probe, _ = os.Open(path)
	s.roLastLive.Store(s.live.load()) // Open scanned the file just now
	return s, nil
}

// writerAlive reports whether some process holds the writer lock.
func (s *Stream) writerAlive() bool {
	if s.probe == nil {
		return false
	}
	err := unix.Flock(int(s.probe.Fd()), unix.LOCK_SH|unix.LOCK_NB)
	if err != nil {
		return true
	}
	unix.Flock(int(s.probe.Fd()), unix.LOCK_UN)
	return false
}

// roCommitted is the committed position seen by a reader: the live
// writer's, or what a scan finds when there is no writer.
func (s *Stream) roCommitted() uint64 {
	if s.writerAlive() {
		c := s.live.load()
		if c > s.committed.Load() {
			s.roRefresh()
		}
		return c
	}
	// No writer: only one that came and went since the last look can
	// have changed the file, and it left its committed count in the live
	// area; rescan only then (an idle tail -f costs nothing).
	if l := s.live.load(); l != s.roLastLive.Load() {
		s.roLastLive.Store(l)
		s.roRefresh()
	}
	return s.committed.Load()
}

// roRefresh rescans the file for a reader: regions allocated or freed by
// the writer since the last look and, with no live writer, the tail.
// Region objects already known are kept, so iterators holding them see
// their successors.
func (s *Stream) roRefresh() {
	if rf, ok := s.mem.(pmem.Refresher); ok {
		if rf.Refresh() != nil {
			return
		}
	}
	alive := s.writerAlive()
	var st *scanState
	var err error
	if alive {
		st = &scanState{}
		st.regions, st.free, st.nslots, err = s.scanHeaders()
	} else {
		st, err = s.scan(scanFile)
	}
	if err != nil {
		return // a half-written header of a live writer; look again later
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	known := make(map[uint64]*region, len(s.regions))
	for _, r := range s.regions {
		known[r.seq] = r
	}
	for i, r := range st.regions {
		if k := known[r.seq]; k != nil && k.slot == r.slot {
			st.regions[i] = k
		}
	}
	for i, r := range st.regions {
		if i+1 < len(st.regions) {
			r.next.Store(st.regions[i+1])
		}
	}
	s.regions = st.regions
	if len(st.regions) == 0 {
		return
	}
	s.head.Store(st.regions[0].first)
	if !alive {
		s.tailOff = st.tailEnd
		if st.next > s.committed.Load() {
			s.committed.Store(st.next)
		}
	}
}
