package local

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// Format constants. They never change without a bump of FormatVersion.
const (
	// FormatVersion is the version of the files this build creates.
	// Version 2 puts the region's epoch into every entry's checksum;
	// files of version 1 (epoch not in it) are still read and written in
	// their own format (see the package comment).
	FormatVersion = 2
	// FormatVersion1 is the oldest version this build opens.
	FormatVersion1 = 1

	SuperblockSize   = 4096
	RegionHeaderSize = 128 // lines 0 and 1
	EntryHeaderSize  = 8
	EntryAlign       = 8

	MinRegionSize     = 16 << 10
	MaxRegionSize     = 1 << 30
	DefaultRegionSize = 4 << 20

	superMagic  = "rpstream"
	regionMagic = "rpregion"

	superCRCOff    = 124
	trimRecordAt   = 128 // two records of 16 bytes: head u64, gen u32, crc u32
	liveCommitted  = 2048
	liveWaiters    = 2056
	regionCRCOff   = 60
	regionCommitAt = 64
	regionSealAt   = 72
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var le = binary.LittleEndian

// superblock is the decoded fixed part of the superblock.
type superblock struct {
	version    uint32 // FormatVersion1 or FormatVersion
	regionSize int
	streamID   uint64
	created    uint64
}

func (sb superblock) encode(b []byte) {
	clear(b[:SuperblockSize])
	copy(b, superMagic)
	le.PutUint32(b[8:], sb.version)
	le.PutUint32(b[12:], 0)
	le.PutUint64(b[16:], uint64(sb.regionSize))
	le.PutUint64(b[24:], sb.streamID)
	le.PutUint64(b[32:], sb.created)
	le.PutUint32(b[superCRCOff:], crc32.Checksum(b[:superCRCOff], castagnoli))
}

func decodeSuperblock(b []byte) (superblock, error) {
	if len(b) < SuperblockSize {
		return superblock{}, fmt.Errorf("%w: %d bytes, shorter than a superblock", ErrNotStream, len(b))
	}
	if string(b[:8]) != superMagic {
		return superblock{}, ErrNotStream
	}
	v := le.Uint32(b[8:])
	if v < FormatVersion1 || v > FormatVersion {
		return superblock{}, fmt.Errorf("%w: format version %d, this build reads %d to %d", ErrVersion, v, FormatVersion1, FormatVersion)
	}
	if got, want := le.Uint32(b[superCRCOff:]), crc32.Checksum(b[:superCRCOff], castagnoli); got != want {
		return superblock{}, fmt.Errorf("%w: superblock checksum %08x, want %08x", ErrCorrupt, got, want)
	}
	sb := superblock{
		version:    v,
		regionSize: int(le.Uint64(b[16:])),
		streamID:   le.Uint64(b[24:]),
		created:    le.Uint64(b[32:]),
	}
	if flags := le.Uint32(b[12:]); flags != 0 {
		return superblock{}, fmt.Errorf("%w: unknown superblock flags %#x", ErrCorrupt, flags)
	}
	if err := validRegionSize(sb.regionSize); err != nil {
		return superblock{}, fmt.Errorf("%w: superblock: %w", ErrCorrupt, err)
	}
	if sb.streamID == 0 {
		return superblock{}, fmt.Errorf("%w: superblock: stream id is zero", ErrCorrupt)
	}
	return sb, nil
}

func validRegionSize(n int) error {
	if n < MinRegionSize || n > MaxRegionSize || n%4096 != 0 {
		return fmt.Errorf("region size %d: must be a multiple of 4096 from %d to %d", n, MinRegionSize, MaxRegionSize)
	}
	return nil
}

// regionHeader is the decoded line 0 of a region.
type regionHeader struct {
	seq      uint64
	first    uint64
	streamID uint64
	epoch    uint64
}

func (h regionHeader) encode(b []byte) {
	clear(b[:64])
	copy(b, regionMagic)
	le.PutUint64(b[8:], h.seq)
	le.PutUint64(b[16:], h.first)
	le.PutUint64(b[24:], h.streamID)
	le.PutUint64(b[32:], h.epoch)
	le.PutUint32(b[regionCRCOff:], crc32.Checksum(b[:regionCRCOff], castagnoli))
}

// decodeRegionHeader returns the header in b and whether it is a valid
// region header at all (a free slot is not).
func decodeRegionHeader(b []byte) (regionHeader, bool) {
	if string(b[:8]) != regionMagic {
		return regionHeader{}, false
	}
	if le.Uint32(b[regionCRCOff:]) != crc32.Checksum(b[:regionCRCOff], castagnoli) {
		return regionHeader{}, false
	}
	h := regionHeader{
		seq:      le.Uint64(b[8:]),
		first:    le.Uint64(b[16:]),
		streamID: le.Uint64(b[24:]),
		epoch:    le.Uint64(b[32:]),
	}
	return h, h.seq != 0
}

// seal packs a sealed region's entry count and data end.
func seal(count uint32, end int) uint64 { return uint64(count)<<32 | uint64(uint32(end)) }

func unseal(w uint64) (count uint32, end int) { return uint32(w >> 32), int(uint32(w)) }

// entrySize is the bytes an entry of n payload bytes occupies.
func entrySize(n int) int { return EntryHeaderSize + (n+EntryAlign-1)&^(EntryAlign-1) }

// MaxEntrySize is the largest payload a region of regionSize bytes holds.
func MaxEntrySize(regionSize int) int {
	return (regionSize - RegionHeaderSize - EntryHeaderSize) &^ (EntryAlign - 1)
}

// entryKey is what an entry's checksum binds it to in region seq of
// epoch epoch, in a file of format version: the running (inverted)
// CRC-32C of the fields its checksum starts with. Version 1 covers the
// sequence number only, so an entry left in a slot by an earlier region
// of the same sequence number validates again; from version 2 the epoch
// follows it, and such an entry of another epoch fails its check.
func entryKey(version uint32, seq, epoch uint64) uint32 {
	c := crcWord(^uint32(0), seq)
	if version >= 2 {
		c = crcWord(c, epoch)
	}
	return c
}

// entryCRC is the checksum of an entry at offset off of the region whose
// entryKey is key.
func entryCRC(key uint32, off int, payload []byte) uint32 {
	// The header words go through the table by hand: a buffer passed to
	// crc32.Update would escape and cost an allocation per append.
	c := crcWord(key, uint64(uint32(off))|uint64(uint32(len(payload)))<<32)
	return crc32.Update(^c, castagnoli, payload)
}

// entryCRCParts is entryCRC of the payload prefix followed by p, without
// assembling it.
func entryCRCParts(key uint32, off int, prefix, p []byte) uint32 {
	c := crcWord(key, uint64(uint32(off))|uint64(uint32(len(prefix)+len(p)))<<32)
	return crc32.Update(crc32.Update(^c, castagnoli, prefix), castagnoli, p)
}

// crcWord feeds the 8 little-endian bytes of w into a running (inverted)
// CRC-32C.
func crcWord(c uint32, w uint64) uint32 {
	for k := 0; k < 8; k++ {
		c = castagnoli[byte(c)^byte(w)] ^ c>>8
		w >>= 8
	}
	return c
}

// readEntry validates the entry at offset off of region r (r is the
// region's bytes, key its entryKey) and returns its payload (aliasing r)
// and the offset after it. ok is false where no valid entry stands.
func readEntry(r []byte, key uint32, off int) (payload []byte, next int, ok bool) {
	if off+EntryHeaderSize > len(r) {
		return nil, 0, false
	}
	n := int(le.Uint32(r[off:]))
	if n > len(r)-off-EntryHeaderSize {
		return nil, 0, false
	}
	p := r[off+EntryHeaderSize : off+EntryHeaderSize+n]
	if le.Uint32(r[off+4:]) != entryCRC(key, off, p) {
		return nil, 0, false
	}
	next = off + entrySize(n)
	if next > len(r) {
		next = len(r)
	}
	return p, next, true
}

// writeEntryHeader stores the header of an entry whose payload is already in
// place at r[off+EntryHeaderSize:], and zeroes its padding.
func writeEntryHeader(r []byte, key uint32, off, n int) {
	writeEntryHeaderCRC(r, off, n, entryCRC(key, off, r[off+EntryHeaderSize:off+EntryHeaderSize+n]))
}

// writeEntryHeaderCRC is writeEntryHeader with the checksum computed by
// the caller (asynchronous appends compute it from the source).
func writeEntryHeaderCRC(r []byte, off, n int, crc uint32) {
	clear(r[off+EntryHeaderSize+n : off+entrySize(n)])
	le.PutUint32(r[off+4:], crc)
	le.PutUint32(r[off:], uint32(n))
}

// trimRecord is the head of the stream as Trim last recorded it. Two slots
// are written alternately (by generation), so a torn write leaves the
// previous record intact.
type trimRecord struct {
	head uint64
	gen  uint32
}

func (t trimRecord) encode(b []byte) {
	le.PutUint64(b[0:], t.head)
	le.PutUint32(b[8:], t.gen)
	le.PutUint32(b[12:], crc32.Checksum(b[:12], castagnoli))
}

// decodeTrimRecords returns the newest valid record (the zero record if
// none: nothing was ever trimmed).
func decodeTrimRecords(sb []byte) trimRecord {
	var best trimRecord
	for k := 0; k < 2; k++ {
		b := sb[trimRecordAt+16*k:]
		if le.Uint32(b[12:]) != crc32.Checksum(b[:12], castagnoli) {
			continue
		}
		t := trimRecord{head: le.Uint64(b[0:]), gen: le.Uint32(b[8:])}
		if t.gen > best.gen {
			best = t
		}
	}
	return best
}
