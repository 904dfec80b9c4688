package local

import (
	"fmt"
	"sort"
	"sync/atomic"
	"unsafe"

	"github.com/rpstream/rpstream/pmem"
)

func (s *Stream) slotBase(k int) int { return SuperblockSize + k*s.sb.regionSize }

// regionBytes is the whole slot of r.
func (s *Stream) regionBytes(r *region) []byte {
	return s.mem.Bytes()[r.base : r.base+s.sb.regionSize]
}

// allocRegionLocked allocates the region after the current tail (or the
// first region), whose first entry will have index first. s.mu is held (or
// the stream is not yet shared). The header is durable when it returns.
func (s *Stream) allocRegionLocked(first uint64) (*region, error) {
	seq, epoch := uint64(1), s.epoch
	if n := len(s.regions); n > 0 {
		// Epochs never go back along the stream, whatever the opener's.
		seq, epoch = s.regions[n-1].seq+1, max(epoch, s.regions[n-1].epoch)
	}
	var slot int
	if len(s.spares) > 0 {
		slot = s.spares[0] // allocated ahead by the preparer
		s.spares = s.spares[1:]
		s.wakePreparer()
	} else {
		slot = s.takeSlotLocked()
		// Reserve blocks first: a full disk is an error here, not a
		// fault on a later store. For a freed slot it re-reserves what
		// Discard gave up.
		if err := s.mem.Allocate(s.slotBase(slot), s.sb.regionSize); err != nil {
			s.free = append(s.free, slot)
			sort.Ints(s.free)
			return nil, wrapAlloc(err)
		}
	}
	base := s.slotBase(slot)
	b := s.mem.Bytes()[base : base+s.sb.regionSize]
	// Line 1 (commit and seal words) and the first entry header must be
	// zero and durable before line 0 makes the region valid.
	clear(b[64 : RegionHeaderSize+EntryHeaderSize])
	if err := s.mem.Persist(base+64, RegionHeaderSize+EntryHeaderSize-64); err != nil {
		return nil, s.fail(err)
	}
	regionHeader{seq: seq, first: first, streamID: s.sb.streamID, epoch: epoch}.encode(b)
	if err := s.mem.Persist(base, 64); err != nil {
		return nil, s.fail(err)
	}
	r := &region{slot: slot, base: base, seq: seq, first: first, epoch: epoch, key: entryKey(s.sb.version, seq, epoch)}
	r.end.Store(-1)
	return r, nil
}

// firstRegionLocked allocates the first region of a stream that has none
// (a new stream, or one recovered before anything was appended), and
// moves the commit and persist points to its start: an observer hears of
// it as of any region the commit point enters. s.mu is held; the stream
// has no region, so nothing is committed and no slot but the first
// exists (the preparer starts only once a region does).
func (s *Stream) firstRegionLocked() (*region, error) {
	r, err := s.allocRegionLocked(s.next)
	if err != nil {
		return nil, err
	}
	s.regions = []*region{r}
	s.tailOff = RegionHeaderSize
	at := loc{r, RegionHeaderSize}
	s.persistMu.Lock()
	s.persistLoc = at
	s.persistMu.Unlock()
	s.pub.Lock()
	s.commitLoc = at
	if s.obs != nil {
		s.obs.RegionStarted(observed(r))
	}
	s.pub.Unlock()
	return r, nil
}

// freeRegion invalidates r's header durably and gives its storage back.
// The caller has removed r from s.regions (or never added it).
func (s *Stream) freeRegion(r *region) error {
	// Wipe the whole of line 0, not just the magic: a later torn write of
	// a new header into this slot could otherwise restore the magic and
	// bring the old header back to life.
	b := s.mem.Bytes()[r.base:]
	for k := 0; k < 64; k += 8 {
		atomic.StoreUint64((*uint64)(unsafe.Pointer(&b[k])), 0)
	}
	if err := s.mem.Persist(r.base, 64); err != nil {
		return s.fail(err)
	}
	if d, ok := s.mem.(pmem.Discarder); ok {
		// Only storage is at stake: the slot is free either way.
		_ = d.Discard(r.base, s.sb.regionSize)
	}
	s.free = append(s.free, r.slot)
	sort.Ints(s.free)
	return nil
}

// sealRegion records durably that every entry of r is durable; recovery then
// trusts the count instead of scanning. Called by the persisting goroutine
// once the persisted position has passed r.
func (s *Stream) sealRegion(r *region) error {
	end := int(r.end.Load())
	count := r.next.Load().first - r.first
	w := (*uint64)(unsafe.Pointer(&s.mem.Bytes()[r.base+regionSealAt]))
	atomic.StoreUint64(w, seal(uint32(count), end))
	if err := s.mem.Persist(r.base+regionSealAt, 8); err != nil {
		return s.fail(err)
	}
	r.sealed.Store(true)
	return nil
}

// Trim frees every region all of whose entries have indexes below before,
// oldest first, never the tail region, and returns the new head. Readers of
// freed positions get ErrTrimmed. Only durable regions are freed.
func (s *Stream) Trim(before uint64) (uint64, error) {
	if err := s.writable(); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// The new head: the first index of the oldest region to keep.
	// Strictly below persisted: the persisting goroutine has then moved
	// past every region freed and sealed it, and never touches it again.
	k := 0
	for k+1 < len(s.regions) {
		nf := s.regions[k+1].first
		if nf > before || nf >= s.persisted.Load() {
			break
		}
		k++
	}
	if k == 0 {
		return s.head.Load(), nil
	}
	head := s.regions[k].first
	if err := s.recordHead(head); err != nil {
		return s.head.Load(), err
	}
	return head, s.trimToLocked(head)
}

// recordHead durably records head as the stream's head before any region
// below it is freed.
func (s *Stream) recordHead(head uint64) error {
	s.trim.gen++
	s.trim.head = head
	s.trim.encode(s.mem.Bytes()[trimRecordAt+16*int(s.trim.gen%2):])
	if err := s.mem.Persist(trimRecordAt+16*int(s.trim.gen%2), 16); err != nil {
		return s.fail(err)
	}
	return nil
}

// trimToLocked frees the regions wholly below head, oldest first.
func (s *Stream) trimToLocked(head uint64) error {
	for len(s.regions) > 1 && s.regions[1].first <= head {
		r := s.regions[0]
		// Move the head first so that readers stop using r.
		s.head.Store(s.regions[1].first)
		s.regions = s.regions[1:]
		if err := s.freeRegion(r); err != nil {
			return err
		}
	}
	return nil
}

// RegionInfo describes one live region.
type RegionInfo struct {
	Seq    uint64 // sequence number, from 1
	Epoch  uint64 // recorded in its header
	Slot   int    // slot in the file
	Offset int    // file offset of the region
	First  uint64 // index of its first entry
	Count  uint64 // entries committed in it
	Used   int    // bytes used, header included
	Sealed bool   // all entries durable and recorded as such
}

// Regions describes the live regions, head first.
func (s *Stream) Regions() []RegionInfo {
	committed := s.Committed() // refreshes a reader's view: before s.mu
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []RegionInfo
	for i, r := range s.regions {
		ri := r.info()
		if i+1 < len(s.regions) {
			ri.Count = s.regions[i+1].first - r.first
			ri.Used = int(r.end.Load())
		} else {
			ri.Count = committed - min(committed, r.first)
			ri.Used = s.tailOff
		}
		out = append(out, ri)
	}
	return out
}

// TailRegion describes the tail region (the one appends go to) as Regions
// does, without describing the others.
func (s *Stream) TailRegion() RegionInfo {
	committed := s.Committed()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.regions) == 0 {
		return RegionInfo{} // a read-only view of a stream given no region yet
	}
	r := s.regions[len(s.regions)-1]
	ri := r.info()
	ri.Count, ri.Used = committed-min(committed, r.first), s.tailOff
	return ri
}

// info is what RegionInfo says of r that does not depend on its successor.
func (r *region) info() RegionInfo {
	return RegionInfo{Seq: r.seq, Epoch: r.epoch, Slot: r.slot, Offset: r.base, First: r.first, Sealed: r.sealed.Load()}
}

// regionOf returns the live region holding index i, or ErrTrimmed, or nil
// if i is beyond the tail.
func (s *Stream) regionOf(i uint64) (*region, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.regions) == 0 || i < s.regions[0].first || i < s.head.Load() {
		return nil, fmt.Errorf("%w: index %d, head %d", ErrTrimmed, i, s.head.Load())
	}
	k := sort.Search(len(s.regions), func(k int) bool { return s.regions[k].first > i }) - 1
	return s.regions[k], nil
}
