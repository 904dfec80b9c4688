package local

import (
	"hash/crc32"
	"testing"
)

// TestEntryCRCMatchesReference checks the checksum of each format version
// against the fields laid out as the package comment draws them.
func TestEntryCRCMatchesReference(t *testing.T) {
	const seq, epoch, off = 0x1122334455667788, 0x0102030405060708, 4096
	for _, n := range []int{0, 1, 7, 64, 1000} {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(i * 7)
		}
		var h [24]byte
		le.PutUint64(h[0:], seq)
		le.PutUint32(h[8:], off)
		le.PutUint32(h[12:], uint32(n))
		want1 := crc32.Update(crc32.Update(0, castagnoli, h[:16]), castagnoli, p)
		if got := entryCRC(entryKey(FormatVersion1, seq, epoch), off, p); got != want1 {
			t.Fatalf("v1 n=%d: %08x, want %08x", n, got, want1)
		}
		le.PutUint64(h[8:], epoch)
		le.PutUint32(h[16:], off)
		le.PutUint32(h[20:], uint32(n))
		want2 := crc32.Update(crc32.Update(0, castagnoli, h[:]), castagnoli, p)
		if got := entryCRC(entryKey(2, seq, epoch), off, p); got != want2 {
			t.Fatalf("v2 n=%d: %08x, want %08x", n, got, want2)
		}
	}
	if a := testing.AllocsPerRun(100, func() { entryCRC(entryKey(FormatVersion, 1, 2), 2, make([]byte, 0)) }); a != 0 {
		t.Fatalf("entryCRC allocates %v times", a)
	}
}

// TestEntryOfAnotherEpochFails: from version 2, the same bytes at the
// same offset of a region of the same sequence number fail their check
// under any other epoch (certainly, not by chance, for epochs that differ
// within 32 consecutive bits: CRC-32C detects every burst that short);
// version 1 cannot tell them apart.
func TestEntryOfAnotherEpochFails(t *testing.T) {
	rb := make([]byte, MinRegionSize)
	p := []byte("written by the old leader")
	for _, c := range []struct{ old, new uint64 }{{1, 2}, {7, 8}, {1, 1 << 31}, {0, 0xffffffff}, {5, 1 << 40}} {
		copy(rb[RegionHeaderSize+EntryHeaderSize:], p)
		writeEntryHeader(rb, entryKey(FormatVersion, 9, c.old), RegionHeaderSize, len(p))
		if _, _, ok := readEntry(rb, entryKey(FormatVersion, 9, c.old), RegionHeaderSize); !ok {
			t.Fatalf("epoch %d: the entry fails under its own epoch", c.old)
		}
		if _, _, ok := readEntry(rb, entryKey(FormatVersion, 9, c.new), RegionHeaderSize); ok {
			t.Fatalf("an entry of epoch %d validates under epoch %d", c.old, c.new)
		}
		writeEntryHeader(rb, entryKey(FormatVersion1, 9, c.old), RegionHeaderSize, len(p))
		if _, _, ok := readEntry(rb, entryKey(FormatVersion1, 9, c.new), RegionHeaderSize); !ok {
			t.Fatalf("v1: an entry of epoch %d fails under epoch %d", c.old, c.new)
		}
	}
}
