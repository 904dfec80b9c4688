package node

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
)

// Entries of the streams a node makes carry a small envelope before the
// client's data, so that which producer stored an entry, and under which
// sequence number, is as durable as the entry itself, is replicated with
// it, and lets a leader that restarts (after a crash too) remember the
// sequence numbers it stored instead of storing a retry twice; and so
// that each entry carries the time the leader appended it (Unix
// nanoseconds, increasing with the position: see stamp in append.go):
//
//	kind 0:  [0x00] data                                  (before times)
//	kind 1:  [0x01] producer key (8 bytes, little-endian) sequence (8 bytes) data
//	kind 2:  [0x02] epoch (8 bytes): an epoch marker, no data
//	kind 3:  [0x03] time (8 bytes) data
//	kind 4:  [0x04] time key sequence data
//	kind 5:  [0x05]: a batch slot, no data
//	kind 6:  [0x06] time, flags (1 byte: 1 = with sequence numbers), key,
//	         sequence of the first entry (8 bytes each), count (u32),
//	         then count entries: length (u32) [sequence (8 bytes)] data
//
// Kinds 0 and 1 are what nodes wrote before times; they are read as
// ever, with no time. An epoch marker is the first entry a leader appends
// under a new epoch (takeover.go); it takes a position like any entry,
// and reads skip it, as Kafka's consumers skip control records.
//
// A batch of n entries is stored atomically as n-1 slots followed by one
// record holding all n entries (a batch of one is a kind 3 or 4 entry):
// its entries take the positions of the slots and of the record, the
// last being the record's. A local entry is written whole or not at all
// (local/'s checksums, recovery and replication all work per entry), so
// the batch is: slots without their record (a crash, or a record that
// could not be stored) are positions readers skip, as they skip markers,
// and a reader shows a batch's entries only once it has read its record
// (batchread.go). docs/design-notes.md says why this and not a commit
// marker.
//
// The producer key is the 64-bit FNV-1a hash of the producer id. Reads
// strip the envelope. Streams made before envelopes (meta.json without
// "envelope") hold bare data and are read as such; copies held for other
// leaders always have envelopes (replication came with them).
const (
	envPlain    byte = 0
	envProducer byte = 1
	envMarker   byte = 2
	envHeader        = 17 // the kind, key and sequence of a producer's entry
	markerSize       = 9  // an epoch marker: the kind and the epoch
)

// producerKey names producer id in envelopes and in the idempotence state.
func producerKey(id string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(id))
	return h.Sum64()
}

// marker returns an epoch marker's entry.
func marker(epoch uint64) []byte {
	b := make([]byte, markerSize)
	b[0] = envMarker
	binary.LittleEndian.PutUint64(b[1:], epoch)
	return b
}

// isMarker says whether stored entry b is an epoch marker.
func isMarker(b []byte) bool { return len(b) == markerSize && b[0] == envMarker }

// unwrap parses a stored entry's envelope: the data of a single entry
// (none for a marker or a batch slot). A batch record holds several:
// decodeStored.
func unwrap(b []byte) (data []byte, hasProducer bool, key, seq uint64, err error) {
	st, err := decodeStored(b)
	if err != nil {
		return nil, false, 0, 0, err
	}
	if st.kind == envBatchRecord {
		return nil, false, 0, 0, fmt.Errorf("%w (%d)", errBatchRecord, st.count)
	}
	return st.data, st.producer, st.key, st.seq, nil
}

// errBatchRecord is unwrap's error for a batch record, which holds
// several entries.
var errBatchRecord = errors.New("node: a batch record holds several entries")

// rebuildProducers remembers the sequence numbers stored by producers in
// the last horizon entries of a stream with envelopes, oldest first, as
// if they had just been appended.
func (st *stream) rebuildProducers(horizon uint64) error {
	end := st.ls.Committed()
	from := st.ls.Head()
	if end-from > horizon {
		from = end - horizon
	}
	it := st.ls.Iterator(from)
	for it.Pos() < end && it.Next() {
		e := it.Entry()
		d, err := decodeStored(e.Data)
		if err != nil {
			return fmt.Errorf("node: stream %s, entry %d: %w", st.name, e.Index, err)
		}
		if !d.producer {
			continue
		}
		p := st.prod.lock(d.key)
		first := e.Index + 1 - uint64(d.visible())
		_ = d.eachEntry(func(j int, seq uint64, _ []byte) error {
			p.record(seq, first+uint64(j), st.prod.window)
			return nil
		})
		st.prod.unlock(p)
	}
	return it.Err()
}

// EntryData returns the client's data of an entry as a node stored it in
// a stream with envelopes (any stream made by this version, and every
// copy held for another leader), for tools and tests that read stream
// files directly.
func EntryData(stored []byte) ([]byte, error) {
	data, _, _, _, err := unwrap(stored)
	return data, err
}
