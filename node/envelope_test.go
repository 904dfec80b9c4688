package node

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/rpstream/rpstream/local"
)

// FuzzEnvelope: what envelope wraps, unwrap gives back; any other bytes
// unwrap to data or to ErrCorrupt, never a panic.
func FuzzEnvelope(f *testing.F) {
	f.Add([]byte("hello"), true, uint64(7), uint64(1))
	f.Add([]byte{}, false, uint64(0), uint64(0))
	f.Add([]byte{1, 2, 3}, true, ^uint64(0), ^uint64(0))
	f.Fuzz(func(t *testing.T, data []byte, hasProducer bool, key, seq uint64) {
		b := envelope(data, hasProducer, key, seq)
		got, ok, k, s, err := unwrap(b)
		if err != nil || ok != hasProducer || !bytes.Equal(got, data) || (ok && (k != key || s != seq)) {
			t.Fatalf("envelope(%q, %v, %x, %d) unwraps to %q, %v, %x, %d, %v", data, hasProducer, key, seq, got, ok, k, s, err)
		}
		if _, _, _, _, err := unwrap(data); err != nil && !errors.Is(err, local.ErrCorrupt) && !errors.Is(err, errBatchRecord) {
			t.Fatalf("unwrap(%q): %v, not ErrCorrupt", data, err)
		}
	})
}

func TestProducerKeyIsStable(t *testing.T) {
	// The key is on media (every envelope): it is FNV-1a 64 and must never
	// change for an id. 0xaf63dc4c8601ec8c is FNV-1a 64 of "a" in the
	// function's published test vectors.
	for id, want := range map[string]uint64{"a": 0xaf63dc4c8601ec8c, "producer-1": 0x45a2f17985ad4fbd} {
		if k := producerKey(id); k != want {
			t.Errorf("producerKey(%q) = %#x, want %#x", id, k, want)
		}
	}
}

// envelope wraps data as nodes did before times (kinds 0 and 1), with the
// producer's key and seq when hasProducer: tests make older streams with it.
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
