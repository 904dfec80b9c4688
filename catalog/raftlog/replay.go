package raftlog

import (
	"fmt"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/rpstream/rpstream/local"
)

// replayStream replays every record of s from its head. A trimmed log
// (head above 0) is replayed from its first full-state record: the records
// before it are older than the state it restates.
func replayStream(s *local.Stream) (*view, error) {
	head := s.Head()
	v := &view{set: head == 0}
	it := s.Iterator(head)
	for it.Next() {
		e := it.Entry()
		rec, err := decodeRecord(e.Data)
		if err == nil {
			err = v.apply(e.Index, rec)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: record %d: %w", ErrCorrupt, e.Index, err)
		}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("%w: reading record %d: %w", ErrCorrupt, it.Pos(), err)
	}
	v.finish()
	if !v.set {
		return nil, fmt.Errorf("%w: the log was trimmed to record %d but holds no checkpoint or snapshot marker after it", ErrCorrupt, head)
	}
	return v, nil
}

// state is what Open rebuilds: the in-memory storage and the hard state
// (never nil; empty if none was ever saved).
type state struct {
	ms                  *raft.MemoryStorage
	hs                  *raftpb.HardState
	snapIndex, snapTerm uint64
	// fix is set when the snapshot replaced the log's entries without a
	// record saying so (a crash after a received snapshot's file was
	// durable and before its marker): Open must write the marker.
	fix bool
}

// build combines the replayed log with the newest valid snapshot file
// (nil if none) into the state Raft restarts from. It checks everything
// the MemoryStorage would panic on, so garbage gives an error, never a
// panic. describe names the damaged snapshot files for an error about a
// missing one.
func build(v *view, newest *newestSnap, catchUp uint64, describe func() string) (*state, error) {
	var snap *raftpb.Snapshot
	if newest != nil {
		snap = newest.snap
	}
	base, baseTerm, ents := v.base, v.baseTerm, v.ents
	st := &state{hs: &raftpb.HardState{}}
	if v.hs != nil {
		st.hs = proto.Clone(v.hs).(*raftpb.HardState)
	}
	termAt := func(i uint64) uint64 {
		if i == base {
			return baseTerm
		}
		return ents[i-base-1].GetTerm()
	}
	last := func() uint64 { return base + uint64(len(ents)) }
	if snap != nil {
		si, term := snap.GetMetadata().GetIndex(), snap.GetMetadata().GetTerm()
		st.snapIndex, st.snapTerm = si, term
		if base > si {
			return nil, fmt.Errorf("%w: the log starts after index %d, but the newest valid snapshot is at %d (%s)", ErrCorrupt, base, si, describe())
		}
		if si > last() || termAt(si) != term {
			if !newest.received {
				// Taken from this log's entries, which Raft never
				// replaces once committed: they were lost.
				what := fmt.Sprintf("ends at index %d", last())
				if si <= last() {
					what = fmt.Sprintf("has term %d there", termAt(si))
				}
				return nil, fmt.Errorf("%w: snapshot file %s was taken at index %d term %d, but the log %s: entries it covers are lost",
					ErrCorrupt, newest.name, si, term, what)
			}
			// The log does not hold the snapshot's entry: the snapshot
			// came from the leader and replaces the log, as
			// MemoryStorage.ApplySnapshot does.
			base, baseTerm, ents = si, term, nil
			st.fix = true
		}
		// Keep catchUp entries behind the snapshot, as CreateSnapshot
		// does, for followers that are a little behind.
		if si > catchUp && si-catchUp > base {
			c := si - catchUp
			baseTerm, ents, base = termAt(c), ents[c-base:], c
		}
	} else if base > 0 {
		return nil, fmt.Errorf("%w: the log starts after index %d, and no valid snapshot file holds what comes before (%s)", ErrCorrupt, base, describe())
	}

	// A snapshot is committed state; the hard state may predate it.
	hs := st.hs
	if hs.GetCommit() < st.snapIndex {
		hs.Commit = new(st.snapIndex)
	}
	if hs.GetCommit() > last() {
		return nil, fmt.Errorf("%w: the hard state commits index %d, past the last entry %d", ErrCorrupt, hs.GetCommit(), last())
	}
	// The term is never behind an entry or snapshot the node holds. Only
	// a fix can raise it: a vote for the old term says nothing of the new.
	if t := max(termAt(last()), st.snapTerm); hs.GetTerm() < t {
		hs.Term, hs.Vote = new(t), new(uint64(0))
	}

	ms := raft.NewMemoryStorage()
	switch {
	case snap == nil:
	case base == st.snapIndex:
		if err := ms.ApplySnapshot(snap); err != nil {
			return nil, fmt.Errorf("raftlog: load snapshot %d: %w", st.snapIndex, err)
		}
	case base > 0:
		// Entries from base+1 on, then the snapshot above them.
		stub := &raftpb.Snapshot{Metadata: &raftpb.SnapshotMetadata{
			Index: new(base), Term: new(baseTerm), ConfState: snap.GetMetadata().GetConfState(),
		}}
		if err := ms.ApplySnapshot(stub); err != nil {
			return nil, fmt.Errorf("raftlog: load compaction point %d: %w", base, err)
		}
	}
	if err := ms.Append(ents); err != nil {
		return nil, fmt.Errorf("raftlog: load entries: %w", err)
	}
	if snap != nil && base < st.snapIndex {
		md := snap.GetMetadata()
		if _, err := ms.CreateSnapshot(md.GetIndex(), md.GetConfState(), snap.GetData()); err != nil {
			return nil, fmt.Errorf("raftlog: load snapshot %d: %w", st.snapIndex, err)
		}
	}
	if !raft.IsEmptyHardState(hs) {
		ms.SetHardState(hs)
	}
	st.ms = ms
	return st, nil
}
