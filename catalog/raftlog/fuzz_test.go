package raftlog

import (
	"encoding/binary"
	"math"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// FuzzReplay feeds arbitrary record bodies to replay and to the rebuild of
// the in-memory storage: garbage must give an error, never a panic, and
// whatever is accepted must be a consistent raft.Storage.
//
// The input is a flag byte (bit 0: the log was trimmed, so replay waits
// for a full-state record) and then records, each a u16 length and that
// many bytes.

func fuzzRecords(b []byte) (trimmed bool, recs [][]byte) {
	if len(b) == 0 {
		return false, nil
	}
	trimmed, b = b[0]&1 != 0, b[1:]
	for len(b) >= 2 {
		n := int(binary.LittleEndian.Uint16(b))
		b = b[2:]
		if n > len(b) {
			n = len(b)
		}
		recs = append(recs, b[:n])
		b = b[n:]
	}
	return trimmed, recs
}

func fuzzInput(trimmed bool, recs ...[]byte) []byte {
	out := []byte{0}
	if trimmed {
		out[0] = 1
	}
	for _, r := range recs {
		out = binary.LittleEndian.AppendUint16(out, uint16(len(r)))
		out = append(out, r...)
	}
	return out
}

func encs(es []*raftpb.Entry) [][]byte {
	out := make([][]byte, len(es))
	for k, e := range es {
		out[k], _ = proto.Marshal(e)
	}
	return out
}

func FuzzReplay(f *testing.F) {
	md := &raftpb.SnapshotMetadata{Index: new(uint64(20)), Term: new(uint64(3))}
	batch := appendBatch(nil, nil, hs(1, 1, 2), encs(ents(1, 3, 1, 5)))
	marker := appendBatch(nil, md, hs(3, 0, 20), encs(ents(21, 22, 3, 5)))
	override := appendBatch(nil, nil, hs(2, 2, 2), encs(ents(3, 4, 2, 5)))
	cp := appendCheckpoint(nil, 3, 1, 1, 1, 4, hs(2, 2, 3), encs(ents(2, 3, 1, 5)))
	restate := appendRestate(nil, encs(ents(4, 4, 1, 5)))
	f.Add(fuzzInput(false, batch, override))
	f.Add(fuzzInput(false, batch, cp, restate, override))
	f.Add(fuzzInput(true, batch, cp, restate, batch))
	f.Add(fuzzInput(true, override, marker))
	f.Add(fuzzInput(false, batch, marker, override))
	f.Add(fuzzInput(true, cp, batch))
	f.Add(fuzzInput(false, []byte{kindBatch, 0xff}, []byte{9}))
	f.Fuzz(func(t *testing.T, in []byte) {
		trimmed, recs := fuzzRecords(in)
		v := &view{set: !trimmed}
		for k, b := range recs {
			rec, err := decodeRecord(b)
			if err != nil {
				return
			}
			if err := v.apply(uint64(k), rec); err != nil {
				return
			}
		}
		v.finish()
		if !v.set {
			return
		}
		// The log must be contiguous after replay.
		for k, e := range v.ents {
			if e.GetIndex() != v.base+1+uint64(k) {
				t.Fatalf("entry %d at position %d after base %d", e.GetIndex(), k, v.base)
			}
		}
		var snaps []*newestSnap
		snaps = append(snaps, nil)
		for _, at := range []uint64{v.base, v.last(), v.base + 1, v.last() + 3} {
			for _, recv := range []bool{false, true} {
				term := uint64(7)
				if at >= v.base && at <= v.last() {
					term = v.term(at)
				}
				if at == 0 {
					continue
				}
				snaps = append(snaps, &newestSnap{name: "fuzz", received: recv, snap: &raftpb.Snapshot{
					Data:     []byte("x"),
					Metadata: raftpb.EnsureSnapshotMetadata(&raftpb.SnapshotMetadata{Index: new(at), Term: new(term)}),
				}})
			}
		}
		for _, sn := range snaps {
			st, err := build(v, sn, 2, func() string { return "" })
			if err != nil {
				continue
			}
			first, _ := st.ms.FirstIndex()
			last, _ := st.ms.LastIndex()
			if st.hs.GetCommit() > last || st.hs.GetCommit() < st.snapIndex || first-1 > st.snapIndex && sn != nil {
				t.Fatalf("inconsistent: entries %d..%d, hard state %v, snapshot %d", first, last, st.hs, st.snapIndex)
			}
			if last >= first {
				es, err := st.ms.Entries(first, last+1, math.MaxUint64)
				if err != nil || uint64(len(es)) != last-first+1 {
					t.Fatalf("Entries(%d, %d): %d, %v", first, last+1, len(es), err)
				}
			}
			if _, err := st.ms.Term(first - 1); err != nil {
				t.Fatalf("Term(%d): %v", first-1, err)
			}
		}
	})
}
