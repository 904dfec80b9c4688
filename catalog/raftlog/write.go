package raftlog

import (
	"errors"
	"fmt"
	"math"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/rpstream/rpstream/local"
)

// failLocked poisons the log after a failed stream write.
func (l *Log) failLocked(err error) error {
	l.err = fmt.Errorf("%w: %w", ErrFailed, err)
	return l.err
}

// appendFailedLocked handles the failure of the append of record k of a
// write: when the first could not get space, nothing was written.
func (l *Log) appendFailedLocked(k int, err error) error {
	if k == 0 && errors.Is(err, local.ErrNoSpace) {
		return fmt.Errorf("%w: %w", ErrNoSpace, err)
	}
	return l.failLocked(err)
}

// Save makes hs, ents and snap durable (any may be nil/empty), in the
// order Raft requires (a snapshot, then entries — entries at index i
// replace any held at >= i — then the hard state), and then applies them
// to the in-memory storage. It is what the Ready loop calls before sending
// messages.
//
// A snapshot goes to its own file first; the records follow, with one
// Sync for all of them. If the batch needs more than one record, the
// first carries the new term and vote (with the old commit index) and the
// last the new hard state, so that a crash in between leaves a prefix of
// the entries under a term that is not behind them and a commit index
// that is not ahead of them.
//
// ErrTooLarge, ErrInvalid and raft.ErrSnapOutOfDate mean nothing was
// written, and so does ErrNoSpace. A Save with a snapshot that runs out
// of space gives ErrFailed instead: the snapshot's file is durable, and
// Open will apply it. After ErrFailed the log must be reopened.
func (l *Log) Save(hs *raftpb.HardState, ents []*raftpb.Entry, snap *raftpb.Snapshot) error {
	hasHS, hasSnap := !raft.IsEmptyHardState(hs), !raft.IsEmptySnap(snap)
	if !hasHS && !hasSnap && len(ents) == 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return l.err
	}
	if err := l.checkSaveLocked(hs, ents, snap); err != nil {
		return err
	}
	encs := make([][]byte, len(ents))
	for k, e := range ents {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(e)
		if err != nil {
			return fmt.Errorf("raftlog: marshal entry %d: %w", e.GetIndex(), err)
		}
		if len(b) > l.maxEntry {
			return fmt.Errorf("%w: entry %d encodes to %d bytes, at most %d in regions of %d", ErrTooLarge, e.GetIndex(), len(b), l.maxEntry, l.s.RegionSize())
		}
		encs[k] = b
	}
	var md *raftpb.SnapshotMetadata
	if hasSnap {
		md = snap.GetMetadata()
		if err := l.writeSnapLocked(snap, true); err != nil {
			return err
		}
		// The new file stands: trim first, so that a full stream has
		// room for the records.
		if err := l.maintainLocked(snapFile{snapName(md.GetTerm(), md.GetIndex()), md.GetTerm(), md.GetIndex()}); err != nil {
			return err
		}
	}
	var final *raftpb.HardState
	if hasHS {
		final = proto.Clone(hs).(*raftpb.HardState)
	}
	chunks := l.chunk(encs)
	var first, pos uint64
	for k, c := range chunks {
		var m *raftpb.SnapshotMetadata
		var h *raftpb.HardState
		if k == 0 {
			m = md
			switch {
			case hasHS && len(chunks) > 1:
				h = &raftpb.HardState{Term: new(final.GetTerm()), Vote: new(final.GetVote()), Commit: new(l.hs.GetCommit())}
			case hasSnap && !hasHS && !raft.IsEmptyHardState(l.hs):
				// A full-state record carries the hard state: the
				// records before it may be trimmed, and a vote must
				// never be lost.
				h = l.hs
			}
		}
		if k == len(chunks)-1 && hasHS {
			h = final
		}
		l.buf = appendBatch(l.buf[:0], m, h, c)
		var err error
		if pos, err = l.s.AppendNoSync(l.buf); err != nil {
			if hasSnap {
				// Its file is durable: Open will apply it.
				return l.failLocked(err)
			}
			return l.appendFailedLocked(k, err)
		}
		if k == 0 {
			first = pos
		}
	}
	if err := l.s.Sync(pos); err != nil {
		return l.failLocked(err)
	}
	if hasSnap {
		if err := l.ms.ApplySnapshot(snap); err != nil {
			return l.failLocked(err) // checked above: cannot happen
		}
		l.snapIndex = md.GetIndex()
		l.fs = append(l.fs, fsRecord{md.GetIndex(), first})
	}
	if err := l.ms.Append(ents); err != nil {
		return l.failLocked(err)
	}
	if hasHS {
		l.hs = final
		l.ms.SetHardState(final)
	}
	return nil
}

// checkSaveLocked rejects what Raft never asks for and what would panic
// the MemoryStorage.
func (l *Log) checkSaveLocked(hs *raftpb.HardState, ents []*raftpb.Entry, snap *raftpb.Snapshot) error {
	committed := max(l.hs.GetCommit(), l.snapIndex)
	last, _ := l.ms.LastIndex()
	if !raft.IsEmptySnap(snap) {
		si := snap.GetMetadata().GetIndex()
		if si <= l.snapIndex {
			return fmt.Errorf("raftlog: save snapshot %d, have %d: %w", si, l.snapIndex, raft.ErrSnapOutOfDate)
		}
		if si <= l.hs.GetCommit() {
			return fmt.Errorf("%w: snapshot at %d, not past the commit index %d", ErrInvalid, si, l.hs.GetCommit())
		}
		committed, last = max(committed, si), si
	}
	if len(ents) > 0 {
		first := ents[0].GetIndex()
		for k, e := range ents {
			if e == nil || e.GetIndex() != first+uint64(k) {
				return fmt.Errorf("%w: entry %d of the batch is not at index %d", ErrInvalid, k, first+uint64(k))
			}
		}
		if first <= committed {
			return fmt.Errorf("%w: entries from %d would replace committed entries (committed %d)", ErrInvalid, first, committed)
		}
		if first > last+1 {
			return fmt.Errorf("%w: entries from %d, but the log ends at %d", ErrInvalid, first, last)
		}
		last = ents[len(ents)-1].GetIndex()
	}
	if !raft.IsEmptyHardState(hs) {
		switch {
		case hs.GetTerm() < l.hs.GetTerm():
			return fmt.Errorf("%w: term %d after term %d", ErrInvalid, hs.GetTerm(), l.hs.GetTerm())
		case hs.GetCommit() < l.hs.GetCommit():
			return fmt.Errorf("%w: commit index %d after %d", ErrInvalid, hs.GetCommit(), l.hs.GetCommit())
		case hs.GetCommit() > last:
			return fmt.Errorf("%w: commit index %d past the last entry %d", ErrInvalid, hs.GetCommit(), last)
		}
	}
	return nil
}

// chunk splits the encoded entries into runs that each fit in a record
// (with room for the largest header); there is always at least one run.
func (l *Log) chunk(encs [][]byte) [][][]byte {
	budget := l.maxEntry + entryPrefix
	var out [][][]byte
	start, size := 0, 0
	for k, e := range encs {
		if n := entryPrefix + len(e); size+n > budget && k > start {
			out = append(out, encs[start:k])
			start, size = k, 0
		}
		size += entryPrefix + len(e)
	}
	return append(out, encs[start:])
}

// writeSnapLocked writes snap's file durably.
func (l *Log) writeSnapLocked(snap *raftpb.Snapshot, received bool) error {
	md := snap.GetMetadata()
	b, err := encodeSnapFile(snap, received)
	if err != nil {
		return err
	}
	name := snapName(md.GetTerm(), md.GetIndex())
	if err := l.dir.Write(name, b); err != nil {
		return fmt.Errorf("raftlog: write snapshot file %s: %w", name, err)
	}
	return nil
}

// CreateSnapshot records the application's snapshot: data is the state
// machine's snapshot at applied index `index`, which must be committed. It
// is written durably to a snapshot file (checksummed; write temp, fsync,
// rename, fsync dir), the in-memory storage is compacted to
// index-SnapshotCatchUp, the stream is trimmed and snapshot files older
// than the newest two are removed (see the package comment for what is
// kept and why), and a checkpoint restating the hard state and every entry
// still held is appended and synced. If it returns ErrNoSpace, the
// snapshot is taken but its checkpoint could not be written: the log is
// consistent and usable, only not trimmed as far at the next snapshot.
func (l *Log) CreateSnapshot(index uint64, cs *raftpb.ConfState, data []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return l.err
	}
	if index <= l.snapIndex {
		return fmt.Errorf("raftlog: snapshot at %d, have %d: %w", index, l.snapIndex, raft.ErrSnapOutOfDate)
	}
	if index > l.hs.GetCommit() {
		return fmt.Errorf("%w: snapshot at %d of uncommitted state (committed %d)", ErrInvalid, index, l.hs.GetCommit())
	}
	term, err := l.ms.Term(index)
	if err != nil {
		return fmt.Errorf("raftlog: snapshot at %d: %w", index, err)
	}
	var conf *raftpb.ConfState
	if cs != nil {
		conf = proto.Clone(cs).(*raftpb.ConfState)
	}
	snap := &raftpb.Snapshot{Data: data, Metadata: &raftpb.SnapshotMetadata{
		Index: new(index), Term: new(term), ConfState: raftpb.EnsureConfState(conf),
	}}
	if err := l.writeSnapLocked(snap, false); err != nil {
		return err
	}
	if _, err := l.ms.CreateSnapshot(index, snap.Metadata.ConfState, data); err != nil {
		return l.failLocked(err) // checked above: cannot happen
	}
	l.snapIndex = index
	first, _ := l.ms.FirstIndex()
	if index > l.catchUp && index-l.catchUp >= first {
		if err := l.ms.Compact(index - l.catchUp); err != nil {
			return l.failLocked(err)
		}
	}
	// The new file stands: trim first, so that a full stream has room
	// for the checkpoint.
	if err := l.maintainLocked(snapFile{snapName(term, index), term, index}); err != nil {
		return err
	}
	pos, err := l.checkpointLocked(index, term)
	if err != nil {
		return err
	}
	l.fs = append(l.fs, fsRecord{index, pos})
	return nil
}

// checkpointLocked appends and syncs a checkpoint: the hard state and
// every entry the in-memory storage holds, for the snapshot at (index,
// term). It returns the position of its first record.
func (l *Log) checkpointLocked(index, term uint64) (uint64, error) {
	first, _ := l.ms.FirstIndex()
	last, _ := l.ms.LastIndex()
	base := first - 1
	baseTerm, err := l.ms.Term(base)
	if err != nil {
		return 0, l.failLocked(err)
	}
	var ents []*raftpb.Entry
	if last > base {
		if ents, err = l.ms.Entries(first, last+1, math.MaxUint64); err != nil {
			return 0, l.failLocked(err)
		}
	}
	encs := make([][]byte, len(ents))
	for k, e := range ents {
		if encs[k], err = (proto.MarshalOptions{Deterministic: true}).Marshal(e); err != nil {
			return 0, l.failLocked(err)
		}
	}
	var start, pos uint64
	for k, c := range l.chunk(encs) {
		if k == 0 {
			l.buf = appendCheckpoint(l.buf[:0], index, term, base, baseTerm, last, l.hs, c)
		} else {
			l.buf = appendRestate(l.buf[:0], c)
		}
		if pos, err = l.s.AppendNoSync(l.buf); err != nil {
			return 0, l.appendFailedLocked(k, err)
		}
		if k == 0 {
			start = pos
		}
	}
	if err := l.s.Sync(pos); err != nil {
		return 0, l.failLocked(err)
	}
	return start, nil
}

// maintainLocked runs once newest, a new snapshot file, is durable. It
// keeps newest and the newest valid file before it, trims the stream so
// that it starts at a full-state record from which the older of the two
// can be replayed, and removes every other older snapshot file. None of
// this needs newest's own full-state record, which may follow.
func (l *Log) maintainLocked(newest snapFile) error {
	keep := l.snaps[:0:0]
	for _, f := range l.snaps {
		if f.index < newest.index {
			keep = append(keep, f)
		}
	}
	if len(keep) > 0 {
		keep = keep[len(keep)-1:]
	}
	keep = append(keep, newest)
	l.snaps = keep
	if len(keep) < 2 {
		return nil // a damaged newest file would need the whole log
	}
	prev := keep[0]
	var to uint64
	found := false
	for _, f := range l.fs {
		if f.snapIndex <= prev.index {
			to, found = f.pos, true
		}
	}
	if found {
		if _, err := l.s.Trim(to); err != nil {
			return l.failLocked(err)
		}
		head := l.s.Head()
		k := 0
		for k < len(l.fs) && l.fs[k].pos < head {
			k++
		}
		l.fs = l.fs[k:]
	}
	names, err := l.dir.List()
	if err != nil {
		return nil // only space is at stake; the next snapshot retries
	}
	for _, n := range names {
		if _, index, ok := parseSnapName(n); ok && index < newest.index && n != prev.name {
			l.dir.Remove(n)
		}
	}
	return nil
}
