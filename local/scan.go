package local

import "github.com/rpstream/rpstream/pmem"

// ScanRegion is one valid region found by Scan.
type ScanRegion struct {
	Slot   int    // slot number
	Offset int    // file offset of the slot
	Seq    uint64 // region sequence number
	Epoch  uint64 // recorded in its header
	First  uint64 // index of the region's first entry
	// Count is the number of its entries that End covers.
	Count uint64
	// End is the offset within the region after its last valid entry
	// (for a region that recovery keeps: the entries its successor
	// requires, or every valid one in the tail).
	End int
	// Sealed says the region's seal word is set.
	Sealed bool
	// Commit is the region's commit word (line 1) as found: on a
	// replica's copy, the end offset of the entries a leader committed
	// in it; zero where none did (and on a writer's own file). CommitIndex
	// is the entry index there (0 when Commit is 0 or beyond End).
	Commit      uint64
	CommitIndex uint64
}

// ScanResult is what recovery would make of a stream image, without
// changing it.
type ScanResult struct {
	StreamID   uint64
	RegionSize int
	// Version is the file's format version (FormatVersion1 files do not
	// check entries against their region's epoch).
	Version int
	// Regions is the recovered sequence, head first; the last is the
	// tail. Empty only for a stream formatted but given no region yet.
	Regions []ScanRegion
	// Truncated are the valid regions after the tail, which lost their
	// predecessor's entries and which recovery frees.
	Truncated []ScanRegion
	// Next is the index after the last valid entry.
	Next uint64
	// Head is the head the trim records name (0 if never trimmed):
	// regions wholly before it are freed by recovery.
	Head uint64
	// DirtyTo is the end of the tail region's last non-zero word after
	// its last valid entry (its End if there is none): recovery zeroes the
	// bytes in between.
	DirtyTo int
}

// Scan reads the stream image mem (a mapped stream file, perhaps a
// replica's copy) as recovery does (see the package comment), read-only:
// the superblock, the region headers, the seal and commit words and the
// entry checksums, never the live area. A leader taking over reads each
// copy's durable tail with it: the epoch and end of every region, and
// how far a leader committed in each. It returns ErrNotStream, ErrVersion or
// ErrCorrupt errors as Open does, and does not write to mem. The caller
// must keep mem from changing while Scan runs.
func Scan(mem []byte) (ScanResult, error) { return scanImage(mem, scanFile) }

// ScanCopy is Scan of a replica's copy, whose last region may
// legitimately be sealed (see SealedTail): such a region is the tail, its
// entries those its seal counts (Sealed is set). Scan calls that image
// corrupt; ScanCopy reads it without clearing the seal word.
func ScanCopy(mem []byte) (ScanResult, error) { return scanImage(mem, scanCopy) }

func scanImage(mem []byte, mode scanMode) (ScanResult, error) {
	sb, err := decodeSuperblock(mem)
	if err != nil {
		return ScanResult{}, err
	}
	s := &Stream{mem: bytesMemory(mem), sb: sb, readOnly: true}
	st, err := s.scan(mode)
	if err != nil {
		return ScanResult{}, err
	}
	res := ScanResult{StreamID: sb.streamID, RegionSize: sb.regionSize, Version: int(sb.version), Next: st.next, DirtyTo: st.dirtyTo, Head: st.trim.head}
	conv := func(rs []*region, tail *region) []ScanRegion {
		var out []ScanRegion
		for i, r := range rs {
			rb := s.regionBytes(r)
			end := int(r.end.Load())
			var count uint64
			switch {
			case r == tail:
				end, count = st.tailEnd, st.next-r.first
			case end < 0:
				// A truncated region: its valid prefix, unlimited.
				count, end = scanEntries(rb, r.key, ^uint64(0))
			default:
				count = rs[i+1].first - r.first
			}
			sr := ScanRegion{Slot: r.slot, Offset: r.base, Seq: r.seq, Epoch: r.epoch, First: r.first, Count: count,
				End: end, Sealed: r.sealed.Load(), Commit: loadWord(rb, regionCommitAt)}
			if sr.Commit > RegionHeaderSize && sr.Commit <= uint64(end) {
				sr.CommitIndex = r.first + countEntries(rb, int(sr.Commit))
			}
			out = append(out, sr)
		}
		return out
	}
	var tail *region
	if n := len(st.regions); n > 0 {
		tail = st.regions[n-1]
	}
	res.Regions = conv(st.regions, tail)
	res.Truncated = conv(st.truncated, nil)
	for i := range res.Truncated {
		res.Truncated[i].Sealed = sealWord(s.regionBytes(st.truncated[i])) != 0
	}
	return res, nil
}

// NoRegions reports whether mem, a stream image with a valid superblock,
// holds no valid region of its stream: a replica's copy that its leader
// cut back to nothing (a stream file never is, once formatted: Scan calls
// it corrupt).
func NoRegions(mem []byte) bool {
	sb, err := decodeSuperblock(mem)
	if err != nil {
		return false
	}
	found, _, _ := findRegions(mem, sb)
	return len(found) == 0
}

// countEntries counts the entries of region rb that end at or before to,
// which must lie within its valid entries.
func countEntries(rb []byte, to int) uint64 {
	var n uint64
	for off := RegionHeaderSize; off+EntryHeaderSize <= to; {
		next := off + entrySize(int(le.Uint32(rb[off:])))
		if next > to {
			break
		}
		n++
		off = next
	}
	return n
}

// Committed is the highest entry index the regions' commit words say is
// committed (0 if none says).
func (r ScanResult) Committed() uint64 {
	var c uint64
	for _, g := range r.Regions {
		c = max(c, g.CommitIndex)
	}
	return c
}

// RegionEpoch is the epoch recorded in a region's header (line 0, the
// first 64 bytes of its slot); ok is false if line 0 holds no valid
// header.
func RegionEpoch(line0 []byte) (epoch uint64, ok bool) {
	h, ok := decodeRegionHeader(line0)
	return h.epoch, ok
}

// sealWord reads a region's seal word.
func sealWord(rb []byte) uint64 { return le.Uint64(rb[regionSealAt:]) }

// RegionSealOffset and RegionCommitOffset are the offsets of a region's
// seal and commit words within the region (see the package comment).
const (
	RegionSealOffset   = regionSealAt
	RegionCommitOffset = regionCommitAt
)

// bytesMemory is a read-only pmem.Memory over a byte slice, for Scan.
type bytesMemory []byte

var _ pmem.Memory = bytesMemory(nil)

func (m bytesMemory) Bytes() []byte   { return m }
func (m bytesMemory) Size() int       { return len(m) }
func (m bytesMemory) Mode() pmem.Mode { return pmem.PersistFence }
func (m bytesMemory) Close() error    { return nil }
func (m bytesMemory) Allocate(off, n int) error {
	return ErrReadOnly
}
func (m bytesMemory) Persist(off, n int) error { return ErrReadOnly }

// StreamIDOf returns the stream id in the superblock at the start of mem,
// or the error Open would give for it (ErrNotStream for a file that is not
// a stream yet, ErrVersion, ErrCorrupt).
func StreamIDOf(mem []byte) (uint64, error) {
	sb, err := decodeSuperblock(mem)
	if err != nil {
		return 0, err
	}
	return sb.streamID, nil
}

// SealedTail reports whether the last valid region of the stream image mem
// has its seal word set, and that region's file offset. Recovery calls
// such an image corrupt (a sealed region's successor existed), but a
// replica can hold it legitimately when a leader's copy of the successor
// was lost: clearing the seal word (it is advisory: recovery then checks
// the region's entries by checksum) makes the image readable, and
// ScanCopy reads it as it is.
func SealedTail(mem []byte) (offset int, sealed bool) {
	sb, err := decodeSuperblock(mem)
	if err != nil {
		return 0, false
	}
	s := &Stream{mem: bytesMemory(mem), sb: sb, readOnly: true}
	found, _, _, err := s.scanHeaders()
	if err != nil || len(found) == 0 {
		return 0, false
	}
	last := found[len(found)-1]
	return last.base, sealWord(s.regionBytes(last)) != 0
}
