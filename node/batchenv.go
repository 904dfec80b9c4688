package node

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/rpstream/rpstream/local"
)

// Envelope kinds from 3 on (envelope.go has the table): entries with the
// leader's append time, and atomic batches. Kinds 0 to 2 are still read
// (streams and copies written before them), never written for a client's
// entry any more.
const (
	envTimed         byte = 3 // [3] time data
	envTimedProducer byte = 4 // [4] time key seq data
	envBatchSlot     byte = 5 // [5]: a position of the batch whose record follows
	envBatchRecord   byte = 6 // [6] time flags key seq count, then the entries

	timedHeader    = 9  // kind, time
	timedProdHdr   = 25 // kind, time, key, seq
	batchRecHeader = 30 // kind, time, flags, key, seq (of the first entry), count u32
	batchSlotSize  = 1

	batchFlagProducer byte = 1 // the entries carry their producer's sequence numbers
)

var le64 = binary.LittleEndian

// stored is a decoded stored entry. Kinds that readers skip (epoch
// markers, batch slots) have neither data nor a count.
type stored struct {
	kind     byte
	time     int64 // the leader's append time, Unix ns; 0 if the kind has none
	producer bool
	key, seq uint64 // producer key and sequence number (of the batch's first entry)
	data     []byte // one entry's data (kinds 0, 1, 3, 4)
	count    int    // a batch record's entries
	body     []byte // a batch record's entries, framed
}

// visible is how many client entries s holds.
func (s stored) visible() int {
	switch s.kind {
	case envMarker, envBatchSlot:
		return 0
	case envBatchRecord:
		return s.count
	}
	return 1
}

// decodeStored parses a stored entry of a stream with envelopes; bytes
// that are no envelope are ErrCorrupt. It checks a batch record's framing
// whole, so that eachEntry cannot fail afterwards.
func decodeStored(b []byte) (stored, error) {
	if len(b) == 0 {
		return stored{}, fmt.Errorf("%w: an entry without its envelope", local.ErrCorrupt)
	}
	s := stored{kind: b[0]}
	short := func(n int) error {
		return fmt.Errorf("%w: an entry of kind %d and %d bytes, shorter than its envelope (%d)", local.ErrCorrupt, b[0], len(b), n)
	}
	switch b[0] {
	case envPlain:
		s.data = b[1:]
	case envProducer:
		if len(b) < envHeader {
			return stored{}, short(envHeader)
		}
		s.producer, s.key, s.seq, s.data = true, le64.Uint64(b[1:]), le64.Uint64(b[9:]), b[envHeader:]
	case envMarker:
		if len(b) != markerSize {
			return stored{}, fmt.Errorf("%w: an epoch marker of %d bytes", local.ErrCorrupt, len(b))
		}
	case envTimed:
		if len(b) < timedHeader {
			return stored{}, short(timedHeader)
		}
		s.time, s.data = int64(le64.Uint64(b[1:])), b[timedHeader:]
	case envTimedProducer:
		if len(b) < timedProdHdr {
			return stored{}, short(timedProdHdr)
		}
		s.time, s.producer, s.key, s.seq, s.data = int64(le64.Uint64(b[1:])), true, le64.Uint64(b[9:]), le64.Uint64(b[17:]), b[timedProdHdr:]
	case envBatchSlot:
		if len(b) != batchSlotSize {
			return stored{}, fmt.Errorf("%w: a batch slot of %d bytes", local.ErrCorrupt, len(b))
		}
	case envBatchRecord:
		if len(b) < batchRecHeader {
			return stored{}, short(batchRecHeader)
		}
		flags := b[9]
		if flags&^batchFlagProducer != 0 {
			return stored{}, fmt.Errorf("%w: a batch record with flags %#x", local.ErrCorrupt, flags)
		}
		s.time, s.producer = int64(le64.Uint64(b[1:])), flags&batchFlagProducer != 0
		s.key, s.seq = le64.Uint64(b[10:]), le64.Uint64(b[18:])
		s.count, s.body = int(binary.LittleEndian.Uint32(b[26:])), b[batchRecHeader:]
		if s.count < 1 {
			return stored{}, fmt.Errorf("%w: a batch record of no entry", local.ErrCorrupt)
		}
		if err := s.eachEntry(func(int, uint64, []byte) error { return nil }); err != nil {
			return stored{}, err
		}
	default:
		return stored{}, fmt.Errorf("%w: an entry with envelope kind %d", local.ErrCorrupt, b[0])
	}
	return s, nil
}

// eachEntry calls f with each client entry of s, in order: its number
// within s, its producer sequence number (with s.producer) and its data
// (aliasing s's bytes).
func (s stored) eachEntry(f func(j int, seq uint64, data []byte) error) error {
	if s.kind != envBatchRecord {
		if s.visible() == 0 {
			return nil
		}
		return f(0, s.seq, s.data)
	}
	b := s.body
	hdr := 4
	if s.producer {
		hdr = 12
	}
	for j := 0; j < s.count; j++ {
		if len(b) < hdr {
			return fmt.Errorf("%w: batch record: entry %d of %d runs off the record", local.ErrCorrupt, j, s.count)
		}
		n := int(binary.LittleEndian.Uint32(b))
		seq := uint64(0)
		if s.producer {
			seq = le64.Uint64(b[4:])
		}
		if n > len(b)-hdr {
			return fmt.Errorf("%w: batch record: entry %d of %d runs off the record", local.ErrCorrupt, j, s.count)
		}
		if err := f(j, seq, b[hdr:hdr+n:hdr+n]); err != nil {
			return err
		}
		b = b[hdr+n:]
	}
	if len(b) != 0 {
		return fmt.Errorf("%w: batch record: %d bytes after its %d entries", local.ErrCorrupt, len(b), s.count)
	}
	return nil
}

// timedSize is the bytes of a timed entry of n data bytes.
func timedSize(n int, hasProducer bool) int {
	if hasProducer {
		return timedProdHdr + n
	}
	return timedHeader + n
}

// putTimed writes data wrapped with its append time t, and with its
// producer's key and seq when hasProducer, into b, of
// timedSize(len(data), hasProducer) bytes.
func putTimed(b, data []byte, t int64, hasProducer bool, key, seq uint64) {
	le64.PutUint64(b[1:], uint64(t))
	if !hasProducer {
		b[0] = envTimed
		copy(b[timedHeader:], data)
		return
	}
	b[0] = envTimedProducer
	le64.PutUint64(b[9:], key)
	le64.PutUint64(b[17:], seq)
	copy(b[timedProdHdr:], data)
}

// batchSlot is the stored entry of a batch slot.
var batchSlot = []byte{envBatchSlot}

// errBatchTooLarge says a batch does not fit in one record.
var errBatchTooLarge = errors.New("node: batch larger than a record")

// batchEntrySize is the bytes an entry of n data bytes takes in a record.
func batchEntrySize(n int, hasProducer bool) int {
	if hasProducer {
		return 12 + n
	}
	return 4 + n
}

// batchRecordSize is the bytes of the record of entries, with sequence
// numbers if hasProducer.
func batchRecordSize(entries [][]byte, hasProducer bool) int {
	n := batchRecHeader
	for _, e := range entries {
		n += batchEntrySize(len(e), hasProducer)
	}
	return n
}

// putBatchRecord writes the record of entries (at least one), appended
// at time t, into b, of batchRecordSize bytes; with hasProducer, entry j
// carries sequence number seq(lo+j).
func putBatchRecord(b []byte, entries [][]byte, t int64, hasProducer bool, key uint64, lo int, seq func(int) uint64) {
	clear(b[:batchRecHeader])
	b[0] = envBatchRecord
	le64.PutUint64(b[1:], uint64(t))
	if hasProducer {
		b[9] = batchFlagProducer
		le64.PutUint64(b[10:], key)
		le64.PutUint64(b[18:], seq(lo))
	}
	binary.LittleEndian.PutUint32(b[26:], uint32(len(entries)))
	off := batchRecHeader
	for j, e := range entries {
		binary.LittleEndian.PutUint32(b[off:], uint32(len(e)))
		off += 4
		if hasProducer {
			le64.PutUint64(b[off:], seq(lo+j))
			off += 8
		}
		off += copy(b[off:], e)
	}
}

// storedTime is the append time in a stored entry's first bytes, read
// without decoding the rest (lookups by time read it from many entries
// in place: local.Stream.Walk).
func storedTime(b []byte) (int64, bool) {
	if len(b) < timedHeader {
		return 0, false
	}
	switch b[0] {
	case envTimed, envTimedProducer, envBatchRecord:
		return int64(le64.Uint64(b[1:])), true
	}
	return 0, false
}

// batchCount is the number of entries of a stored batch record (0 for
// any other entry), read in place.
func batchCount(b []byte) int {
	if len(b) < batchRecHeader || b[0] != envBatchRecord {
		return 0
	}
	return int(binary.LittleEndian.Uint32(b[26:]))
}

// Entries returns the client's entries of an entry as a node stored it
// in a stream with envelopes: none for an epoch marker or a batch slot,
// several for a batch record (their positions end at the record's), for
// tools and tests that read stream files directly.
func Entries(stored []byte) ([][]byte, error) {
	s, err := decodeStored(stored)
	if err != nil {
		return nil, err
	}
	var out [][]byte
	err = s.eachEntry(func(_ int, _ uint64, data []byte) error {
		out = append(out, data)
		return nil
	})
	return out, err
}

// maxBatchRecord is the largest batch record a region of regionSize
// bytes holds.
func maxBatchRecord(regionSize int) int { return min(local.MaxEntrySize(regionSize), math.MaxUint32) }
