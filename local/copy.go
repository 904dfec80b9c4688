package local

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/rpstream/rpstream/pmem"
)

// Reading a replica's copy.
//
// A copy is a stream file written byte for byte by a remote leader (see
// package replicate): the persistent part of the superblock, each region's
// line 0 and its entries, and the copy's own commit and seal words in line
// 1. The live area is not written, so OpenReader cannot follow a copy;
// a Copy reads it through the commit words instead. An entry of a region
// is committed as far as the copy knows when it lies before the region's
// commit word, when the region is sealed (its seal counts it), or when a
// later region holds a committed entry (the commit point is a prefix of
// the stream, so every region before one it has entered is committed
// whole, up to its successor's first index). Bytes after that may be
// being written and are never read.

// CopyPollInterval is how often CopyIterator.Wait looks at the commit
// words: a copy is written by rdma with no notification to its node, so a
// tail of a copy polls (one look reads each slot's line 0 and line 1, and
// the entries the commit point passed since the last look).
const CopyPollInterval = 5 * time.Millisecond

// Copy is a read-only view of a replica's copy of a stream, mapped while a
// leader writes it through another mapping of the same file. It is safe
// for concurrent use; each CopyIterator is used by one goroutine at a time.
type Copy struct {
	mem    *pmem.File
	closed atomic.Bool

	mu   sync.Mutex // serialises refresh
	sb   superblock
	view atomic.Pointer[copyView]
	// The walk of the last region holding committed entries, kept from
	// one refresh to the next so that Committed reads each entry once.
	walkSeq  uint64
	walkSlot int
	walkKey  uint32
	walkOff  int
	walkN    uint64
}

// copyView is what one look at the copy found. It is never changed once
// published.
type copyView struct {
	regions   []copyRegion // contiguous by seq, oldest first
	head      uint64
	committed uint64
	// stuck: an entry at committed is covered by a commit word or seal
	// but is not intact (Next reports the damage).
	stuck bool
	err   error // damage that stops every iterator
}

// copyRegion is one region of a copy and how much of it is committed.
type copyRegion struct {
	slot  int
	base  int
	seq   uint64
	first uint64
	key   uint32 // entryKey of its entries
	// counted: the region's committed entries are [first, first+count)
	// (it is sealed, or a later region holds committed entries).
	// Otherwise they are those before offset cover.
	counted bool
	count   uint64
	cover   int
}

// OpenCopy maps the copy at path read-only. maxSize is the most the file
// may grow to while mapped (zero: pmem.DefaultReserve). A copy whose
// superblock the leader has not written yet (all zero) opens empty: it
// holds nothing committed until the leader writes it.
func OpenCopy(path string, maxSize int) (*Copy, error) {
	mem, err := pmem.Open(path, pmem.Options{Reserve: maxSize, ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("local: open copy: %w", err)
	}
	c := &Copy{mem: mem}
	if _, err := c.refresh(); err != nil && !errors.Is(err, ErrCorrupt) {
		mem.Close()
		return nil, err
	}
	return c, nil
}

// Close unmaps the copy. Iterators then fail with ErrClosed.
func (c *Copy) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Swap(true) {
		return ErrClosed
	}
	return c.mem.Close()
}

// Committed looks at the copy again and returns the index after the last
// entry its commit words (or seals) cover and that is intact; entries
// before the copy's head are trimmed. With no word written yet it is the
// head: nothing is readable.
func (c *Copy) Committed() uint64 {
	v, _ := c.refresh()
	return v.committed
}

// Stuck says whether, as of the last look, the entry at Committed is
// covered by the leader's commit words but fails its check: damage in the
// tail region, which Committed stops short of (Next at it reports
// ErrCorrupt).
func (c *Copy) Stuck() bool {
	if v := c.view.Load(); v != nil {
		return v.stuck
	}
	return false
}

// Head is the index of the oldest entry the copy holds, as of the last
// look.
func (c *Copy) Head() uint64 {
	if v := c.view.Load(); v != nil {
		return v.head
	}
	return 0
}

// refresh looks at the copy and publishes what it found. The error is
// also in the view (v.err); a closed copy returns the last view and
// ErrClosed.
func (c *Copy) refresh() (*copyView, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Load() {
		v := c.view.Load()
		if v == nil {
			v = &copyView{}
		}
		return v, ErrClosed
	}
	v := c.look()
	if old := c.view.Load(); v.err != nil && old != nil {
		// Keep what was found before; the damage stops iterators.
		v = &copyView{regions: old.regions, head: old.head, committed: old.committed, stuck: old.stuck, err: v.err}
	}
	c.view.Store(v)
	return v, v.err
}

// look reads the copy's superblock, headers and words. c.mu is held.
func (c *Copy) look() *copyView {
	if err := c.mem.Refresh(); err != nil {
		return &copyView{err: fmt.Errorf("local: copy: %w", err)}
	}
	b := c.mem.Bytes()
	if c.sb.streamID == 0 {
		if allZero(b[:min(len(b), SuperblockSize)]) {
			return &copyView{} // the leader has not written it yet
		}
		sb, err := decodeSuperblock(b)
		if err != nil {
			return &copyView{err: err}
		}
		c.sb = sb
	}
	found, _, _ := findRegions(b, c.sb)
	// Keep the newest contiguous run: a slot being reused or cut back
	// by the leader may leave an older region behind for a while.
	k := len(found) - 1
	for k > 0 && found[k-1].seq+1 == found[k].seq && found[k-1].first <= found[k].first {
		k--
	}
	if k < 0 {
		k = 0
	}
	found = found[k:]
	v := &copyView{}
	if len(found) == 0 {
		return v
	}
	v.head = max(found[0].first, decodeTrimRecords(b).head)
	v.regions = make([]copyRegion, len(found))
	last := -1 // the last region holding committed entries
	for i, r := range found {
		rb := b[r.base : r.base+c.sb.regionSize]
		cr := copyRegion{slot: r.slot, base: r.base, seq: r.seq, first: r.first, key: r.key, cover: RegionHeaderSize}
		if w := loadWord(rb, regionSealAt); w != 0 {
			count, end := unseal(w)
			if end < RegionHeaderSize || end > len(rb) || (i+1 < len(found) && r.first+uint64(count) != found[i+1].first) {
				v.err = fmt.Errorf("%w: copy's region %d (slot %d) sealed with %d entries ending at %d", ErrCorrupt, r.seq, r.slot, count, end)
				return v
			}
			cr.counted, cr.count, cr.cover = true, uint64(count), end
			last = i
		} else if w := loadWord(rb, regionCommitAt); w != 0 {
			if w < RegionHeaderSize || w > uint64(len(rb)) || w%EntryAlign != 0 {
				v.err = fmt.Errorf("%w: copy's region %d (slot %d) has commit word %d", ErrCorrupt, r.seq, r.slot, w)
				return v
			}
			cr.cover = int(w)
			if w > RegionHeaderSize {
				last = i
			}
		}
		v.regions[i] = cr
	}
	for i := 0; i < last; i++ {
		if cr := &v.regions[i]; !cr.counted {
			cr.counted, cr.count = true, v.regions[i+1].first-cr.first
		}
	}
	v.committed = v.head
	if last >= 0 {
		cr := v.regions[last]
		n := c.walk(b[cr.base:cr.base+c.sb.regionSize], cr)
		v.committed = max(v.head, cr.first+n)
		v.stuck = committedAt(cr, cr.first+n, c.walkOff)
	}
	return v
}

// walk counts the intact committed entries of region cr, continuing the
// previous walk when it was of the same region.
func (c *Copy) walk(rb []byte, cr copyRegion) uint64 {
	if c.walkSeq != cr.seq || c.walkSlot != cr.slot || c.walkKey != cr.key || (cr.counted && c.walkN > cr.count) || (!cr.counted && c.walkOff > cr.cover) {
		// Another region (perhaps the same sequence number in the same
		// slot under another epoch), or words that went back (a
		// leader's new generation): walk again from the start.
		c.walkSeq, c.walkSlot, c.walkKey, c.walkOff, c.walkN = cr.seq, cr.slot, cr.key, RegionHeaderSize, 0
	}
	for (cr.counted && c.walkN < cr.count) || (!cr.counted && c.walkOff < cr.cover) {
		_, next, ok := readEntry(rb, cr.key, c.walkOff)
		if !ok || (!cr.counted && next > cr.cover) {
			break
		}
		c.walkOff = next
		c.walkN++
	}
	return c.walkN
}

func loadWord(rb []byte, off int) uint64 {
	return atomic.LoadUint64((*uint64)(unsafe.Pointer(&rb[off])))
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// region returns the view's region seq, if it has it.
func (v *copyView) region(seq uint64) (copyRegion, bool) {
	if len(v.regions) == 0 || seq < v.regions[0].seq || seq-v.regions[0].seq >= uint64(len(v.regions)) {
		return copyRegion{}, false
	}
	return v.regions[seq-v.regions[0].seq], true
}

// CopyIterator reads the committed entries of a Copy in index order, with
// the shape of Iterator.
type CopyIterator struct {
	c    *Copy
	next uint64 // index of the next entry to return
	// The walk: entry at of region r (seq, slot) starts at offset off.
	have bool
	r    copyRegion
	off  int
	at   uint64
	buf  []byte
	cur  Entry
	err  error
}

// Iterator returns an iterator whose first entry is index from. A position
// beyond what the copy knows to be committed is allowed: Next returns
// false until it is (use Wait). A position below the copy's head gives
// ErrTrimmed from Err after Next.
func (c *Copy) Iterator(from uint64) *CopyIterator {
	return &CopyIterator{c: c, next: from}
}

// Entry is the entry read by the last successful Next.
func (it *CopyIterator) Entry() Entry { return it.cur }

// Pos is the index of the entry Next will read.
func (it *CopyIterator) Pos() uint64 { return it.next }

// Err is the error that stopped the iterator (nil at the end of what the
// copy knows to be committed). An iterator stopped by an error stays
// stopped.
func (it *CopyIterator) Err() error { return it.err }

// Next reads the next committed entry. It returns false at the end of
// what the copy knows to be committed (Err is nil: Wait, then call Next
// again) or on an error: an entry before the commit point that fails its
// checksum is ErrCorrupt, a region the leader freed meanwhile ErrTrimmed.
func (it *CopyIterator) Next() bool {
	if it.err != nil {
		return false
	}
	if it.c.closed.Load() {
		it.err = ErrClosed
		return false
	}
	ok, err := false, error(nil)
	if v := it.c.view.Load(); v != nil {
		ok, err = it.step(v)
	}
	if err == nil && !ok {
		// At the end of the last look: look again.
		v, rerr := it.c.refresh()
		if errors.Is(rerr, ErrClosed) {
			err = rerr
		} else {
			ok, err = it.step(v)
		}
	}
	if err != nil {
		it.err = err
		return false
	}
	return ok
}

// Wait blocks until the copy knows an entry at the iterator's position to
// be committed, the context ends (its error is returned) or the copy is
// closed (ErrClosed). It polls every CopyPollInterval.
func (it *CopyIterator) Wait(ctx context.Context) error {
	t := time.NewTimer(CopyPollInterval)
	defer t.Stop()
	for {
		v, err := it.c.refresh()
		if err != nil {
			return err
		}
		if v.committed > it.next || (v.stuck && v.committed == it.next) {
			return nil // Next reads the entry, or reports its damage
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			t.Reset(CopyPollInterval)
		}
	}
}

// committedAt says whether entry at (at index, offset off) of region r is
// committed.
func committedAt(r copyRegion, at uint64, off int) bool {
	if r.counted {
		return at < r.first+r.count
	}
	return off < r.cover
}

// step reads entry it.next if view v covers it: ok is false if it does
// not yet.
func (it *CopyIterator) step(v *copyView) (ok bool, err error) {
	if v.err != nil {
		return false, v.err
	}
	if it.next < v.head {
		return false, fmt.Errorf("%w: index %d, copy's head %d", ErrTrimmed, it.next, v.head)
	}
	// Find the region: the one walked, its successor, or a search.
	if it.have {
		r, ok := v.region(it.r.seq)
		switch {
		case !ok || r.slot != it.r.slot || r.key != it.r.key:
			it.have = false // freed, cut back or reallocated meanwhile: search again
		case r.counted && it.next >= r.first+r.count:
			// On to the region holding it.next, past regions that
			// StartEpoch left empty.
			for r.counted && it.next >= r.first+r.count {
				nr, ok := v.region(r.seq + 1)
				if !ok || nr.first > it.next {
					return false, nil
				}
				r = nr
			}
			it.r, it.off, it.at = r, RegionHeaderSize, r.first
		default:
			it.r = r
		}
	}
	if !it.have {
		k := -1
		for i := range v.regions {
			if v.regions[i].first <= it.next {
				k = i
			}
		}
		if k < 0 {
			return false, nil
		}
		it.have, it.r, it.off, it.at = true, v.regions[k], RegionHeaderSize, v.regions[k].first
	}
	// Skip to entry it.next, within what is committed.
	rb := it.c.mem.Bytes()[it.r.base : it.r.base+it.c.sb.regionSize]
	for it.at < it.next {
		if !committedAt(it.r, it.at, it.off) {
			return false, nil
		}
		n, err := it.length(rb)
		if err != nil {
			return false, err
		}
		it.off += entrySize(n)
		it.at++
	}
	if !committedAt(it.r, it.at, it.off) {
		return false, nil
	}
	n, err := it.length(rb)
	if err != nil {
		return false, err
	}
	if !it.r.counted && it.off+entrySize(n) > it.r.cover {
		return false, it.damaged(fmt.Sprintf("length %d runs past the commit word %d", n, it.r.cover))
	}
	crc := le.Uint32(rb[it.off+4:])
	// Copy first and check the copy, as Iterator does.
	it.buf = append(it.buf[:0], rb[it.off+EntryHeaderSize:it.off+EntryHeaderSize+n]...)
	if crc != entryCRC(it.r.key, it.off, it.buf) {
		return false, it.damaged("checksum mismatch")
	}
	it.cur = Entry{Index: it.next, Data: it.buf}
	it.off += entrySize(n)
	it.at++
	it.next++
	return true, nil
}

// length is the payload length of the entry at it.off, checked against
// the region's bounds.
func (it *CopyIterator) length(rb []byte) (int, error) {
	if it.off+EntryHeaderSize > len(rb) {
		return 0, it.damaged("entry walks off the region")
	}
	n := int(le.Uint32(rb[it.off:]))
	if n > len(rb)-it.off-EntryHeaderSize {
		return 0, it.damaged(fmt.Sprintf("length %d runs off the region", n))
	}
	return n, nil
}

// damaged reports bad bytes at the walk's position as trimming if the
// region's slot no longer holds it, else as corruption.
func (it *CopyIterator) damaged(what string) error {
	b := it.c.mem.Bytes()
	if h, ok := decodeRegionHeader(b[it.r.base : it.r.base+64]); !ok || h.seq != it.r.seq {
		return fmt.Errorf("%w: index %d (region %d freed on the copy)", ErrTrimmed, it.next, it.r.seq)
	}
	return fmt.Errorf("%w: copy's entry %d in region %d (slot %d, offset %d): %s", ErrCorrupt, it.at, it.r.seq, it.r.slot, it.off, what)
}
