package node

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"

	"github.com/rpstream/rpstream/local"
)

// Entries of the streams a node makes carry a small envelope before the
// client's data, so that which producer stored an entry, and under which
// sequence number, is as durable as the entry itself, is replicated with
// it, and lets a leader that restarts (after a crash too) remember the
// sequence numbers it stored instead of storing a retry twice:
//
//	kind 0:  [0x00] data
//	kind 1:  [0x01] producer key (8 bytes, little-endian) sequence (8 bytes) data
//	kind 2:  [0x02] epoch (8 bytes): an epoch marker, no data
//
// An epoch marker is the first entry a leader appends under a new epoch
// (takeover.go); it takes a position like any entry, and reads skip it,
// as Kafka's consumers skip control records.
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

// envelope returns data wrapped for storing: with the producer's key and
// seq when hasProducer.
func envelope(data []byte, hasProducer bool, key, seq uint64) []byte {
	if !hasProducer {
		b := make([]byte, 1+len(data))
		copy(b[1:], data)
		return b
	}
	b := make([]byte, envHeader+len(data))
	b[0] = envProducer
	binary.LittleEndian.PutUint64(b[1:], key)
	binary.LittleEndian.PutUint64(b[9:], seq)
	copy(b[envHeader:], data)
	return b
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

// unwrap parses a stored entry's envelope.
func unwrap(b []byte) (data []byte, hasProducer bool, key, seq uint64, err error) {
	if len(b) == 0 {
		return nil, false, 0, 0, fmt.Errorf("%w: an entry without its envelope", local.ErrCorrupt)
	}
	switch b[0] {
	case envPlain:
		return b[1:], false, 0, 0, nil
	case envMarker:
		if len(b) != markerSize {
			return nil, false, 0, 0, fmt.Errorf("%w: an epoch marker of %d bytes", local.ErrCorrupt, len(b))
		}
		return nil, false, 0, 0, nil
	case envProducer:
		if len(b) < envHeader {
			return nil, false, 0, 0, fmt.Errorf("%w: a producer's entry of %d bytes, shorter than its envelope", local.ErrCorrupt, len(b))
		}
		return b[envHeader:], true, binary.LittleEndian.Uint64(b[1:]), binary.LittleEndian.Uint64(b[9:]), nil
	}
	return nil, false, 0, 0, fmt.Errorf("%w: an entry with envelope kind %d", local.ErrCorrupt, b[0])
}

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
	n := 0
	for it.Pos() < end && it.Next() {
		e := it.Entry()
		_, ok, key, seq, err := unwrap(e.Data)
		if err != nil {
			return fmt.Errorf("node: stream %s, entry %d: %w", st.name, e.Index, err)
		}
		if ok {
			p := st.prod.lock(key)
			p.record(seq, e.Index, st.prod.window)
			st.prod.unlock(p)
			n++
		}
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
