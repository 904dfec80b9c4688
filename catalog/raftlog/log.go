package raftlog

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"

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
