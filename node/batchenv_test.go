package node

import (
	"bytes"
	"errors"
	"testing"

	"github.com/rpstream/rpstream/local"
)

// FuzzBatchRecord: what putBatchRecord and putTimed write, decodeStored
// gives back (entries, sequence numbers, time); any other bytes decode
// to ErrCorrupt or to a valid entry, never a panic, and a record that
// decodes lists its entries without error.
func FuzzBatchRecord(f *testing.F) {
	f.Add([]byte("a,bb,,ccc"), true, uint64(7), uint64(100), int64(1e18))
	f.Add([]byte{}, false, uint64(0), uint64(0), int64(-5))
	f.Add([]byte{6, 0, 0, 0, 0, 0, 0, 0, 0, 1}, true, ^uint64(0), ^uint64(0), int64(0))
	f.Fuzz(func(t *testing.T, raw []byte, hasProducer bool, key, seq0 uint64, tm int64) {
		entries := bytes.Split(raw, []byte(","))
		seq := func(k int) uint64 { return seq0 + 3*uint64(k) }
		b := make([]byte, batchRecordSize(entries, hasProducer))
		putBatchRecord(b, entries, tm, hasProducer, key, 0, seq)
		d, err := decodeStored(b)
		if err != nil || d.kind != envBatchRecord || d.count != len(entries) || d.time != tm || d.producer != hasProducer || (hasProducer && d.key != key) {
			t.Fatalf("record of %q: %+v, %v", entries, d, err)
		}
		if got, ok := storedTime(b); !ok || got != tm || batchCount(b) != len(entries) {
			t.Fatalf("record of %q: time %d %v, count %d", entries, got, ok, batchCount(b))
		}
		n := 0
		d.eachEntry(func(j int, s uint64, data []byte) error {
			if !bytes.Equal(data, entries[j]) || (hasProducer && s != seq(j)) {
				t.Fatalf("entry %d: %q seq %d, want %q seq %d", j, data, s, entries[j], seq(j))
			}
			n++
			return nil
		})
		if n != len(entries) {
			t.Fatalf("%d entries listed of %d", n, len(entries))
		}
		one := timedEntry(raw, tm, hasProducer, key, seq0)
		if d, err := decodeStored(one); err != nil || !bytes.Equal(d.data, raw) || d.time != tm || d.producer != hasProducer || (hasProducer && (d.key != key || d.seq != seq0)) {
			t.Fatalf("timed entry of %q: %+v, %v", raw, d, err)
		}
		if d, err := decodeStored(raw); err != nil {
			if !errors.Is(err, local.ErrCorrupt) {
				t.Fatalf("decodeStored(%q): %v, not ErrCorrupt", raw, err)
			}
		} else if err := d.eachEntry(func(int, uint64, []byte) error { return nil }); err != nil {
			t.Fatalf("decodeStored(%q) passed, listing its entries failed: %v", raw, err)
		}
	})
}

// timedEntry returns data wrapped as putTimed does.
func timedEntry(data []byte, t int64, hasProducer bool, key, seq uint64) []byte {
	b := make([]byte, timedSize(len(data), hasProducer))
	putTimed(b, data, t, hasProducer, key, seq)
	return b
}
