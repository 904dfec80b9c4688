package raftlog

import (
	"encoding/binary"
	"fmt"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Record format constants (see the package comment). They never change
// without a new record kind: old logs must stay readable.
const (
	kindBatch      = 1 // a Save: marker, hard state, overriding entries
	kindCheckpoint = 2 // state restated after a snapshot file is durable
	kindRestate    = 3 // more entries of the checkpoint before it

	flagSnapshot  = 1 << 0 // a batch holds a snapshot marker
	flagHardState = 1 << 1 // a batch holds a hard state
	knownFlags    = flagSnapshot | flagHardState

	// maxRecordHeader bounds the bytes of any record other than its
	// entries: kind, flags or checkpoint fields, marker, hard state
	// (at most 33 bytes of protobuf) and the entry count.
	maxRecordHeader = 96
	// entryPrefix is the length word before each entry's protobuf.
	entryPrefix = 4
	// maxHardState is the most bytes a HardState's protobuf takes:
	// three varint fields of at most 11 bytes each.
	maxHardState = 33
)

var le = binary.LittleEndian

// record is one decoded log record.
type record struct {
	kind  byte
	flags byte // kindBatch only
	// snapIndex and snapTerm: the marker of a batch (flagSnapshot), or the
	// snapshot a checkpoint follows.
	snapIndex, snapTerm uint64
	// base and baseTerm: a checkpoint's compaction point, the entry
	// before its first restated one; last: its last restated entry (base
	// if none), so replay knows when the checkpoint is complete.
	base, baseTerm, last uint64
	hs                   *raftpb.HardState // nil when absent
	ents                 []*raftpb.Entry
}

// appendHardState appends the length byte and protobuf of hs.
func appendHardState(b []byte, hs *raftpb.HardState) []byte {
	n := len(b)
	b = append(b, 0)
	b, err := proto.MarshalOptions{Deterministic: true}.MarshalAppend(b, hs)
	if err != nil {
		// A HardState has three optional varints: it always marshals.
		panic(fmt.Sprintf("raftlog: marshal hard state: %v", err))
	}
	b[n] = byte(len(b) - n - 1)
	return b
}

// appendEntries appends the count and the encoded entries.
func appendEntries(b []byte, encs [][]byte) []byte {
	b = le.AppendUint32(b, uint32(len(encs)))
	for _, e := range encs {
		b = le.AppendUint32(b, uint32(len(e)))
		b = append(b, e...)
	}
	return b
}

// appendBatch appends a batch record. snap is nil or the marker's
// metadata; hs is nil or the hard state.
func appendBatch(b []byte, snap *raftpb.SnapshotMetadata, hs *raftpb.HardState, encs [][]byte) []byte {
	var flags byte
	if snap != nil {
		flags |= flagSnapshot
	}
	if hs != nil {
		flags |= flagHardState
	}
	b = append(b, kindBatch, flags)
	if snap != nil {
		b = le.AppendUint64(b, snap.GetIndex())
		b = le.AppendUint64(b, snap.GetTerm())
	}
	if hs != nil {
		b = appendHardState(b, hs)
	}
	return appendEntries(b, encs)
}

// appendCheckpoint appends the first record of a checkpoint.
func appendCheckpoint(b []byte, snapIndex, snapTerm, base, baseTerm, last uint64, hs *raftpb.HardState, encs [][]byte) []byte {
	b = append(b, kindCheckpoint)
	b = le.AppendUint64(b, snapIndex)
	b = le.AppendUint64(b, snapTerm)
	b = le.AppendUint64(b, base)
	b = le.AppendUint64(b, baseTerm)
	b = le.AppendUint64(b, last)
	b = appendHardState(b, hs)
	return appendEntries(b, encs)
}

// appendRestate appends a record continuing a checkpoint.
func appendRestate(b []byte, encs [][]byte) []byte {
	return appendEntries(append(b, kindRestate), encs)
}

// reader decodes a record body, failing on the first short read.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf(format, args...)
	}
}

func (r *reader) u8() byte {
	if r.err != nil || len(r.b) < 1 {
		r.fail("record ends inside a byte field")
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) u32() uint32 {
	if r.err != nil || len(r.b) < 4 {
		r.fail("record ends inside a 4-byte field")
		return 0
	}
	v := le.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *reader) u64() uint64 {
	if r.err != nil || len(r.b) < 8 {
		r.fail("record ends inside an 8-byte field")
		return 0
	}
	v := le.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) bytes(n int) []byte {
	if r.err != nil || n > len(r.b) {
		r.fail("a %d-byte field runs past the record's end (%d bytes left)", n, len(r.b))
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) hardState() *raftpb.HardState {
	n := int(r.u8())
	if n > maxHardState {
		r.fail("hard state of %d bytes, at most %d", n, maxHardState)
		return nil
	}
	b := r.bytes(n)
	if r.err != nil {
		return nil
	}
	hs := &raftpb.HardState{}
	if err := proto.Unmarshal(b, hs); err != nil {
		r.fail("hard state: %v", err)
		return nil
	}
	return hs
}

// entries decodes the count and the entries, which must be contiguous.
func (r *reader) entries() []*raftpb.Entry {
	n := r.u32()
	if r.err != nil {
		return nil
	}
	if uint64(n) > uint64(len(r.b))/entryPrefix {
		r.fail("%d entries cannot fit in %d bytes", n, len(r.b))
		return nil
	}
	ents := make([]*raftpb.Entry, 0, n)
	for k := uint32(0); k < n; k++ {
		b := r.bytes(int(r.u32()))
		if r.err != nil {
			return nil
		}
		e := &raftpb.Entry{}
		if err := proto.Unmarshal(b, e); err != nil {
			r.fail("entry %d of %d: %v", k, n, err)
			return nil
		}
		if k == 0 && e.GetIndex() == 0 {
			r.fail("entry at index 0")
			return nil
		}
		if k > 0 && e.GetIndex() != ents[0].GetIndex()+uint64(k) {
			r.fail("entry %d of %d has index %d, not %d", k, n, e.GetIndex(), ents[0].GetIndex()+uint64(k))
			return nil
		}
		ents = append(ents, e)
	}
	return ents
}

// decodeRecord decodes and checks one record. Every length and kind is
// checked; an error describes what is wrong (the caller adds where).
func decodeRecord(b []byte) (record, error) {
	r := &reader{b: b}
	rec := record{kind: r.u8()}
	switch rec.kind {
	case kindBatch:
		rec.flags = r.u8()
		if rec.flags&^knownFlags != 0 {
			return record{}, fmt.Errorf("batch record with unknown flags %#x", rec.flags)
		}
		if rec.flags&flagSnapshot != 0 {
			rec.snapIndex, rec.snapTerm = r.u64(), r.u64()
			if r.err == nil && rec.snapIndex == 0 {
				r.fail("snapshot marker at index 0")
			}
		}
		if rec.flags&flagHardState != 0 {
			rec.hs = r.hardState()
		}
	case kindCheckpoint:
		rec.snapIndex, rec.snapTerm = r.u64(), r.u64()
		rec.base, rec.baseTerm, rec.last = r.u64(), r.u64(), r.u64()
		rec.hs = r.hardState()
		if r.err == nil && (rec.snapIndex == 0 || rec.base > rec.snapIndex || rec.last < rec.base) {
			r.fail("checkpoint of snapshot %d with entries %d..%d", rec.snapIndex, rec.base, rec.last)
		}
	case kindRestate:
	default:
		if r.err == nil {
			return record{}, fmt.Errorf("unknown record kind %d", rec.kind)
		}
	}
	rec.ents = r.entries()
	if r.err == nil && rec.kind == kindCheckpoint && len(rec.ents) > 0 &&
		(rec.ents[0].GetIndex() != rec.base+1 || rec.ents[len(rec.ents)-1].GetIndex() > rec.last) {
		r.fail("checkpoint of entries %d..%d holds %d..%d", rec.base+1, rec.last, rec.ents[0].GetIndex(), rec.ents[len(rec.ents)-1].GetIndex())
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail("%d bytes after the last entry", len(r.b))
	}
	if r.err != nil {
		return record{}, r.err
	}
	return rec, nil
}

// fsRecord is a full-state record: a checkpoint or a batch with a
// snapshot marker. Replay can start at one, so Trim can cut before one.
type fsRecord struct {
	snapIndex uint64 // the snapshot it goes with
	pos       uint64 // its position (index) in the stream
}

// view is the log as replay rebuilds it, record by record: the entries
// after base, the last hard state, and the full-state records seen.
type view struct {
	set      bool // false until replay reaches a starting point
	base     uint64
	baseTerm uint64
	ents     []*raftpb.Entry // ents[k] has index base+1+k
	hs       *raftpb.HardState
	fs       []fsRecord
	// pending is a checkpoint whose restated entries up to pendingLast
	// are not all seen yet. Only a complete checkpoint joins fs: one cut
	// short by a crash cannot stand for the records before it, so Trim
	// never cuts before it. tentative says replay started at pending: if
	// it proves incomplete, replay waits for the next full-state record,
	// since the records it failed to restate may be trimmed.
	pending     *fsRecord
	pendingLast uint64
	tentative   bool
}

func (v *view) last() uint64 { return v.base + uint64(len(v.ents)) }

// finish ends replay: a starting checkpoint still incomplete at the end
// of the log cannot stand for the records before it.
func (v *view) finish() {
	if v.pending != nil && v.tentative {
		*v = view{fs: v.fs}
	}
	v.pending, v.tentative = nil, false
}

// term is the term of entry i, which must lie in [base, last].
func (v *view) term(i uint64) uint64 {
	if i == v.base {
		return v.baseTerm
	}
	return v.ents[i-v.base-1].GetTerm()
}

// apply replays one record at stream position pos. A record that cannot
// follow what came before is an error (the caller makes it ErrCorrupt).
func (v *view) apply(pos uint64, rec record) error {
	if rec.kind != kindRestate && v.pending != nil {
		// The pending checkpoint was cut short by a crash (its records
		// are never interleaved with others).
		if v.tentative {
			*v = view{fs: v.fs}
		}
		v.pending, v.tentative = nil, false
	}
	switch rec.kind {
	case kindBatch:
		if rec.flags&flagSnapshot != 0 {
			// A snapshot received from the leader replaced the log.
			v.set, v.base, v.baseTerm, v.ents = true, rec.snapIndex, rec.snapTerm, nil
			v.fs = append(v.fs, fsRecord{rec.snapIndex, pos})
		}
		if !v.set {
			return nil // before the first starting point of a trimmed log
		}
		if rec.hs != nil {
			v.hs = rec.hs
		}
		return v.override(rec.ents)
	case kindCheckpoint:
		switch {
		case !v.set:
			v.set, v.base, v.baseTerm, v.tentative = true, rec.base, rec.baseTerm, true
		case rec.base > v.last():
			return fmt.Errorf("checkpoint based at index %d, but the log ends at %d", rec.base, v.last())
		case rec.base >= v.base && v.term(rec.base) != rec.baseTerm:
			return fmt.Errorf("checkpoint has term %d at index %d, the log %d", rec.baseTerm, rec.base, v.term(rec.base))
		}
		v.hs = rec.hs
		v.pending, v.pendingLast = &fsRecord{rec.snapIndex, pos}, rec.last
		return v.restated(rec.base, rec.ents)
	case kindRestate:
		if !v.set {
			return nil // continues a checkpoint whose start was trimmed
		}
		return v.restated(0, rec.ents)
	}
	return fmt.Errorf("unknown record kind %d", rec.kind)
}

// override makes ents (contiguous) the log from their first index on,
// dropping any entry held at or after it. Entries at or below base are
// already part of the snapshot and are skipped.
func (v *view) override(ents []*raftpb.Entry) error {
	if len(ents) == 0 {
		return nil
	}
	first := ents[0].GetIndex()
	if first > v.last()+1 {
		return fmt.Errorf("entries from index %d, but the log ends at %d", first, v.last())
	}
	if first <= v.base {
		skip := v.base + 1 - first
		if skip >= uint64(len(ents)) {
			return nil
		}
		ents, first = ents[skip:], v.base+1
	}
	v.ents = append(v.ents[:first-v.base-1], ents...)
	return nil
}

// restated restates ents and completes the pending checkpoint if they
// reach its last entry (or if it has none after base).
func (v *view) restated(base uint64, ents []*raftpb.Entry) error {
	if err := v.restate(ents); err != nil {
		return err
	}
	end := base
	if len(ents) > 0 {
		end = ents[len(ents)-1].GetIndex()
	}
	if v.pending != nil && end == v.pendingLast {
		v.fs = append(v.fs, *v.pending)
		v.pending, v.tentative = nil, false
	}
	return nil
}

// restate checks entries a checkpoint states again against those held,
// and appends those beyond the end: a checkpoint never removes an entry,
// so a crash in the middle of one loses nothing.
func (v *view) restate(ents []*raftpb.Entry) error {
	for _, e := range ents {
		i := e.GetIndex()
		switch {
		case i <= v.base:
		case i <= v.last():
			if t := v.ents[i-v.base-1].GetTerm(); t != e.GetTerm() {
				return fmt.Errorf("checkpoint restates entry %d with term %d, the log has term %d", i, e.GetTerm(), t)
			}
		case i == v.last()+1:
			v.ents = append(v.ents, e)
		default:
			return fmt.Errorf("checkpoint restates entry %d, but the log ends at %d", i, v.last())
		}
	}
	return nil
}
