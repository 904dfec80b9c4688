package raftlog

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/rpstream/rpstream/local"
	"github.com/rpstream/rpstream/pmem"
)

// Errors returned by this package. Errors from below (local, the file
// system) are wrapped with %w.
var (
	// ErrCorrupt is the class of every error caused by damaged or missing
	// bytes: a stream record that does not decode or cannot follow the
	// records before it, a log that needs a snapshot no valid file holds,
	// a damaged stream file. Open returns it and changes nothing; the
	// message says what and where. Warnings about damaged snapshot files
	// that Open could do without wrap it too.
	ErrCorrupt = errors.New("raftlog: log is corrupt")
	// ErrTooLarge is returned by Save for an entry whose encoding does not
	// fit in one record (a region of the stream). Nothing is written.
	ErrTooLarge = errors.New("raftlog: entry larger than a log record")
	// ErrInvalid is returned by Save and CreateSnapshot for arguments that
	// Raft never produces and that would make the durable state
	// inconsistent: entries that are not contiguous, leave a gap or
	// replace a committed entry, a term or commit index going backwards, a
	// commit index past the last entry, a snapshot of uncommitted state.
	// Nothing is written.
	ErrInvalid = errors.New("raftlog: invalid save")
	// ErrClosed is returned by calls on a closed log.
	ErrClosed = errors.New("raftlog: log is closed")
	// ErrNoSpace is returned by Save and CreateSnapshot when the stream
	// cannot grow (the disk is full, or the file reached Options.MaxSize)
	// before any of their records was written: nothing changed, and the
	// log stays usable. A snapshot trims the stream (the second one on; a
	// log without snapshots only grows). Running out of space after some
	// of the records were written is ErrFailed.
	ErrNoSpace = errors.New("raftlog: no space for the log")
	// ErrFailed is returned by Save and CreateSnapshot once a write to the
	// stream failed part way (full disk, I/O error): what reached the disk
	// is a prefix of the records, which Open recovers; until then the log
	// refuses writes. Reopen it.
	ErrFailed = errors.New("raftlog: a write failed; reopen the log")
)

// Options configure Open. Zero values mean the defaults.
type Options struct {
	// RegionSize is the region size of a new log's stream (an existing
	// log keeps its own); default 1 MiB. One record fits in a region, so
	// it also bounds the size of an entry.
	RegionSize int
	// MaxSize is the most bytes the stream file may grow to (address
	// space reserved); default 1 GiB.
	MaxSize int
	// SnapshotCatchUp is how many entries are kept, in memory and on disk,
	// behind a snapshot for followers that are slightly behind; default
	// 1000.
	SnapshotCatchUp uint64
}

// Defaults.
const (
	DefaultRegionSize      = 1 << 20
	DefaultMaxSize         = 1 << 30
	DefaultSnapshotCatchUp = 1000
)

func (o Options) withDefaults() Options {
	if o.RegionSize == 0 {
		o.RegionSize = DefaultRegionSize
	}
	if o.MaxSize == 0 {
		o.MaxSize = DefaultMaxSize
	}
	if o.SnapshotCatchUp == 0 {
		o.SnapshotCatchUp = DefaultSnapshotCatchUp
	}
	return o
}

// Validate reports whether the options are usable.
func (o Options) Validate() error {
	o = o.withDefaults()
	if err := (local.Options{RegionSize: o.RegionSize, MaxSize: o.MaxSize}).Validate(); err != nil {
		return fmt.Errorf("raftlog: %w", err)
	}
	if o.MaxSize < local.SuperblockSize+2*o.RegionSize {
		return fmt.Errorf("raftlog: MaxSize %d holds fewer than two regions of %d", o.MaxSize, o.RegionSize)
	}
	return nil
}

// streamName is the log's stream file in its directory.
const streamName = "raft.stream"

// Log is one node's durable Raft storage. It is a raft.Storage (reads are
// served from an in-memory raft.MemoryStorage loaded at Open) whose every
// Save is durable on return.
//
// The raft.Storage methods may be called from any goroutine, concurrently
// with everything (the MemoryStorage locks). Save, CreateSnapshot and Close
// are serialized by the Log. Entries handed to Save are kept by reference
// and must not be modified afterwards (Raft never does).
//
// The Log owns no goroutine; its stream keeps one that prepares regions
// ahead of the tail (package local), stopped by Close.
type Log struct {
	ms       *raft.MemoryStorage
	catchUp  uint64
	dir      snapDir
	warnings []error

	mu        sync.Mutex // serializes writers; guards what follows
	s         *local.Stream
	maxEntry  int               // largest entry encoding a record holds
	hs        *raftpb.HardState // last saved (empty if none), never modified
	snapIndex uint64            // the in-memory storage's snapshot
	fs        []fsRecord        // full-state records in the stream, oldest first
	snaps     []snapFile        // valid snapshot files, oldest first
	err       error             // sticky: ErrClosed or ErrFailed
	closed    bool              // Close was called
	buf       []byte            // record scratch
}

var _ raft.Storage = (*Log)(nil)

// Open opens (creating if missing) the log in directory dir and recovers
// it: the newest valid snapshot file, then every valid record after it. A
// new log's stream file is created under a temporary name and renamed into
// place, so a crash during creation leaves no half-made log.
func Open(dir string, opts Options) (*Log, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("raftlog: %w", err)
	}
	path := filepath.Join(dir, streamName)
	lopts := local.Options{RegionSize: opts.RegionSize, MaxSize: opts.MaxSize, SpareRegions: 1}
	s, err := local.Open(path, lopts)
	if errors.Is(err, fs.ErrNotExist) {
		s, err = create(dir, lopts)
	}
	if err != nil {
		return nil, wrapLocal(err)
	}
	l, err := newLog(s, osDir{dir}, opts)
	if err != nil {
		s.Close()
		return nil, err
	}
	return l, nil
}

// create makes a new stream file in dir, refusing if snapshot files are
// there: they belong to a log whose stream file is gone.
func create(dir string, lopts local.Options) (*local.Stream, error) {
	names, err := osDir{dir}.List()
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		if _, _, ok := parseSnapName(n); ok {
			return nil, fmt.Errorf("%w: %s holds snapshot file %s but no %s", ErrCorrupt, dir, n, streamName)
		}
	}
	path := filepath.Join(dir, streamName)
	tmp := path + tmpSuffix
	os.Remove(tmp) // left by a crash during an earlier creation
	s, err := local.Create(tmp, lopts)
	if err != nil {
		return nil, err
	}
	if err := s.Close(); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, err
	}
	if err := syncDir(dir); err != nil {
		return nil, err
	}
	return local.Open(path, lopts)
}

// wrapLocal puts a stream file that is not a readable stream in the
// corruption class.
func wrapLocal(err error) error {
	if errors.Is(err, ErrCorrupt) {
		return err
	}
	if errors.Is(err, local.ErrCorrupt) || errors.Is(err, local.ErrNotStream) || errors.Is(err, local.ErrVersion) {
		return fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return fmt.Errorf("raftlog: %w", err)
}

// openOn opens the log whose stream is mem (formatted if empty) and
// whose snapshot files are in dir. Tests use it with simulated media.
func openOn(mem pmem.Memory, dir snapDir, opts Options) (*Log, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	lopts := local.Options{RegionSize: opts.RegionSize, SpareRegions: -1}
	var s *local.Stream
	var err error
	if mem.Size() == 0 {
		s, err = local.CreateOn(mem, lopts)
	} else {
		s, err = local.OpenOn(mem, lopts)
	}
	if err != nil {
		return nil, wrapLocal(err)
	}
	l, err := newLog(s, dir, opts)
	if err != nil {
		s.Close()
		return nil, err
	}
	return l, nil
}

// newLog recovers the log held by s and the snapshot files of dir.
func newLog(s *local.Stream, dir snapDir, opts Options) (*Log, error) {
	l := &Log{
		catchUp:  opts.SnapshotCatchUp,
		dir:      dir,
		s:        s,
		maxEntry: local.MaxEntrySize(s.RegionSize()) - maxRecordHeader - entryPrefix,
	}
	valid, snap, warnings, err := loadSnapshots(dir)
	if err != nil {
		return nil, err
	}
	l.warnings, l.snaps = warnings, valid
	v, err := replayStream(s)
	if err != nil {
		return nil, err
	}
	describe := func() string {
		if len(warnings) == 0 {
			return "no snapshot file is damaged: one is missing"
		}
		var b strings.Builder
		for i, w := range warnings {
			if i > 0 {
				b.WriteString("; ")
			}
			b.WriteString(w.Error())
		}
		return b.String()
	}
	st, err := build(v, snap, l.catchUp, describe)
	if err != nil {
		return nil, err
	}
	l.ms, l.hs, l.snapIndex, l.fs = st.ms, st.hs, st.snapIndex, v.fs
	if st.fix {
		// Finish the interrupted Save: say in the log that the snapshot
		// replaced it, so that entries appended from now on follow it.
		md := snap.snap.GetMetadata()
		l.buf = appendBatch(l.buf[:0], md, l.hs, nil)
		pos, err := l.s.AppendNoSync(l.buf)
		if err == nil {
			err = l.s.Sync(pos)
		}
		if err != nil {
			return nil, fmt.Errorf("raftlog: record the snapshot at %d: %w", md.GetIndex(), err)
		}
		l.fs = append(l.fs, fsRecord{md.GetIndex(), pos})
	}
	return l, nil
}

// Warnings describes what Open found damaged but could do without: a
// snapshot file cut short or corrupt, skipped for an older one. Each wraps
// ErrCorrupt and names the file.
func (l *Log) Warnings() []error { return l.warnings }

// Close closes the log. Everything Save returned for is already durable.
// The raft.Storage methods go on answering from memory.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	l.closed, l.err = true, ErrClosed
	return l.s.Close()
}

// HardState is the last hard state saved (empty if none was). The caller
// must not modify it.
func (l *Log) HardState() *raftpb.HardState {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.hs
}

// Empty reports whether nothing was ever saved: no hard state, entry or
// snapshot. A node whose log is empty bootstraps.
func (l *Log) Empty() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	last, _ := l.ms.LastIndex()
	return last == 0 && l.snapIndex == 0 && raft.IsEmptyHardState(l.hs)
}

// InitialState implements raft.Storage.
func (l *Log) InitialState() (*raftpb.HardState, *raftpb.ConfState, error) {
	return l.ms.InitialState()
}

// Entries implements raft.Storage.
func (l *Log) Entries(lo, hi, maxSize uint64) ([]*raftpb.Entry, error) {
	return l.ms.Entries(lo, hi, maxSize)
}

// Term implements raft.Storage.
func (l *Log) Term(i uint64) (uint64, error) { return l.ms.Term(i) }

// LastIndex implements raft.Storage.
func (l *Log) LastIndex() (uint64, error) { return l.ms.LastIndex() }

// FirstIndex implements raft.Storage.
func (l *Log) FirstIndex() (uint64, error) { return l.ms.FirstIndex() }

// Snapshot implements raft.Storage.
func (l *Log) Snapshot() (*raftpb.Snapshot, error) { return l.ms.Snapshot() }

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
		if k == len(chunks)-1 {
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
