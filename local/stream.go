package local

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rpstream/rpstream/pmem"
)

// Errors returned by this package. Errors from below are wrapped with %w.
var (
	// ErrCorrupt is the class of every error caused by damaged bytes in a
	// stream file: a bad superblock checksum, inconsistent region headers, an
	// entry whose checksum fails where a valid one must stand. Test with
	// errors.Is; the message says what and where.
	ErrCorrupt = errors.New("local: stream file is corrupt")
	// ErrNotStream is returned when a file is not a stream file at all.
	ErrNotStream = errors.New("local: not an rpstream stream file")
	// ErrVersion is returned for a stream file of an unknown format version.
	ErrVersion = errors.New("local: unsupported stream format version")
	// ErrLocked is returned when another process has the stream open for
	// writing.
	ErrLocked = errors.New("local: stream is open for writing by another process")
	// ErrReadOnly is returned by writing calls on a read-only stream.
	ErrReadOnly = errors.New("local: stream is open read-only")
	// ErrClosed is returned by calls on a closed stream or iterator.
	ErrClosed = errors.New("local: stream is closed")
	// ErrTooLarge is returned for an entry larger than a region can hold.
	ErrTooLarge = errors.New("local: entry larger than a region")
	// ErrTrimmed is returned for a position that retention has freed.
	ErrTrimmed = errors.New("local: position was trimmed")
	// ErrNoSpace is returned when a new region cannot be allocated: the
	// file system is full, or the file reached Options.MaxSize. Nothing
	// already appended is lost; appends may be retried after space is freed
	// (by Trim, for instance).
	ErrNoSpace = errors.New("local: no space for a new region")
	// ErrFailed is returned by every write after a persist failed: what
	// reached the media is unknown, so the stream must be reopened (which
	// recovers the valid prefix).
	ErrFailed = errors.New("local: stream failed after a persist error; reopen it")
	// ErrTooManyReservations is returned by Reserve when MaxInFlight
	// reservations are outstanding (unpublished or not yet committed).
	ErrTooManyReservations = errors.New("local: too many reservations in flight")
	// ErrEpoch is returned by StartEpoch for an epoch older than the
	// stream's: its tail region's, or one the opener already holds.
	ErrEpoch = errors.New("local: epoch older than the stream's")
)

// MaxInFlight is the most reservations that may be outstanding at once.
const MaxInFlight = 1 << 14

// Options configure Create and Open. The zero value is usable.
type Options struct {
	// RegionSize is the size of every region of a new stream (Create only;
	// Open reads it from the file). Zero means DefaultRegionSize.
	RegionSize int
	// MaxSize is the largest the file may grow to while open (address space
	// reserved for it). Zero means pmem.DefaultReserve.
	MaxSize int
	// ReadOnly opens for reading and following only: no recovery writes,
	// no lock, any number of such openers beside one writer.
	ReadOnly bool
	// Epoch is recorded in the header of every region this opener
	// allocates (or the epoch of the region before it, if that is
	// greater: epochs never go back along a stream). Appends continue in
	// the tail region, whatever its epoch, until it is full; StartEpoch
	// starts a region under a new epoch at once.
	Epoch uint64
	// StreamID is the identity of a new stream (Create only); zero means
	// a random one. A cluster gives a stream the id its catalog assigned.
	StreamID uint64
	// SpareRegions is how many regions a background goroutine keeps
	// allocated (and prefaulted on memory-speed media) beyond the tail of a
	// stream file, so that appends do not wait for a new region's blocks
	// and page faults. Zero means 1; negative means none.
	SpareRegions int

	// formatVersion is the version of a new stream's file; zero means
	// FormatVersion. Tests set it (export_test.go) to write files of an
	// older version.
	formatVersion uint32
}

// Validate reports whether the options are usable.
func (o Options) Validate() error {
	if o.RegionSize != 0 {
		if err := validRegionSize(o.RegionSize); err != nil {
			return fmt.Errorf("local: %w", err)
		}
	}
	if o.MaxSize < 0 {
		return fmt.Errorf("local: negative MaxSize %d", o.MaxSize)
	}
	return nil
}

// Stream is one stream file, open for writing (one process) or reading.
type Stream struct {
	mem      pmem.Memory // a writer's flock is on its descriptor (pmem.File.TryLock)
	sb       superblock
	readOnly bool
	epoch    uint64 // the opener's (Options.Epoch, StartEpoch); under mu

	// mu guards the reservation state and the region list.
	mu      sync.Mutex
	regions []*region // live regions by sequence number, head first; empty until the first reservation
	free    []int     // free slots, ascending
	nslots  int
	tailOff int    // next free offset in the tail region
	next    uint64 // index of the next reservation

	// pub guards in-order commit.
	pub       sync.Mutex
	ring      []ringSlot // a power of two of slots (at most MaxInFlight), indexed by index mod len (ring.go)
	commitLoc loc        // end of the last committed entry; r is nil while there is no region
	committed atomic.Uint64

	// persistMu is held by the goroutine persisting on behalf of everyone
	// (group commit); it owns persistLoc. Waiters wait on the channel in
	// roundCh, which the persisting goroutine closes and replaces when its
	// round ends and syncWaiters says anyone waits.
	persistMu   sync.Mutex
	roundCh     atomic.Pointer[chan struct{}]
	syncWaiters atomic.Int32
	persistLoc  loc
	persisted   atomic.Uint64

	head   atomic.Uint64 // index of the oldest entry not trimmed
	trim   trimRecord    // last recorded head, under mu
	failed atomic.Pointer[error]
	closed atomic.Bool

	copies copyTracker // asynchronous copies into the mapping (async.go)

	spares      []int // slots allocated ahead by the preparer; under mu
	spareTarget int   // how many to keep ready; under mu
	// prepEligible says the preparer may start (prepare.go); under mu,
	// as are the channels, set when it starts.
	prepEligible bool
	prepWake     chan struct{}
	prepStop     chan struct{}
	prepDone     chan struct{}

	notify notifier
	live   *liveArea
	probe  *os.File // reader: tests whether a writer holds the lock
	// roLastLive is the live area's committed count when a reader last
	// scanned the file without a writer present.
	roLastLive atomic.Uint64

	// obs is told of every commit (observe.go); nil: none. Guarded by
	// pub. Last, so that it does not move the hot fields above.
	obs Observer
}

// region is a live region in memory. Immutable after allocation except next
// and end (set under Stream.mu when a successor is allocated) and sealed
// (set by the persisting goroutine).
type region struct {
	slot  int
	base  int // file offset of the slot
	seq   uint64
	first uint64
	epoch uint64 // recorded in its header
	key   uint32 // entryKey of its entries
	next  atomic.Pointer[region]
	// end is the data end offset within the region once a successor
	// exists (the region is full); -1 while it is the tail.
	end    atomic.Int64
	sealed atomic.Bool
	// marks are the offsets of every WalkStride-th entry, once a walk
	// has needed them (walk.go); only for a full region whose entries are
	// all committed, which never change.
	marks atomic.Pointer[[]int32]
}

// loc is a position in the file: the end of an entry in a region.
type loc struct {
	r   *region
	off int // offset within the region
}

type ringSlot struct {
	done bool
	end  loc
}

// Create makes a new stream file at path (it must not exist), holding
// only its superblock, and opens it for writing. The first region is
// allocated by the first append (or Reserve, StartEpoch does not), so an
// empty stream costs one page of storage.
func Create(path string, opts Options) (*Stream, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.ReadOnly {
		return nil, fmt.Errorf("local: create %s: %w", path, ErrReadOnly)
	}
	rs := opts.RegionSize
	if rs == 0 {
		rs = DefaultRegionSize
	}
	mem, err := pmem.Create(path, SuperblockSize, pmem.Options{Reserve: opts.MaxSize})
	if err != nil {
		return nil, fmt.Errorf("local: create %s: %w", path, err)
	}
	if err := lockWriter(mem, path); err != nil {
		mem.Close()
		os.Remove(path)
		return nil, err
	}
	s, err := format(mem, rs, opts)
	if err != nil {
		mem.Close()
		os.Remove(path)
		return nil, fmt.Errorf("local: create %s: %w", path, err)
	}
	s.startPreparer()
	return s, nil
}

// Open opens an existing stream file. Opened for writing, it first recovers
// the valid prefix of every region (see the package comment).
func Open(path string, opts Options) (*Stream, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	mem, err := pmem.Open(path, pmem.Options{Reserve: opts.MaxSize, ReadOnly: opts.ReadOnly})
	if err != nil {
		return nil, fmt.Errorf("local: open %s: %w", path, err)
	}
	if !opts.ReadOnly {
		// Before recovery, which writes.
		if err := lockWriter(mem, path); err != nil {
			mem.Close()
			return nil, err
		}
	}
	s, err := OpenOn(mem, opts)
	if err != nil {
		mem.Close()
		return nil, fmt.Errorf("local: open %s: %w", path, err)
	}
	s.startPreparer()
	return s, nil
}

// lockWriter takes the exclusive writer lock of the file at path, mapped
// as mem, on mem's own descriptor (released when mem closes).
func lockWriter(mem *pmem.File, path string) error {
	if err := mem.TryLock(); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return fmt.Errorf("%w: %s", ErrLocked, path)
		}
		return fmt.Errorf("local: %w", err)
	}
	return nil
}

// CreateOn formats mem (its current contents are ignored) as a new stream.
// Tests use it with a simulated persistence domain.
func CreateOn(mem pmem.Memory, opts Options) (*Stream, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	rs := opts.RegionSize
	if rs == 0 {
		rs = DefaultRegionSize
	}
	return format(mem, rs, opts)
}

func format(mem pmem.Memory, regionSize int, opts Options) (*Stream, error) {
	if mem.Size() < SuperblockSize {
		if err := mem.Allocate(0, SuperblockSize); err != nil {
			return nil, wrapAlloc(err)
		}
	}
	var idb [8]byte
	id := opts.StreamID
	for id == 0 {
		rand.Read(idb[:])
		id = binary.LittleEndian.Uint64(idb[:])
	}
	version := uint32(FormatVersion)
	if opts.formatVersion != 0 {
		version = opts.formatVersion
	}
	sb := superblock{version: version, regionSize: regionSize, streamID: id, created: uint64(time.Now().UnixNano())}
	b := mem.Bytes()
	sb.encode(b)
	if err := mem.Persist(0, SuperblockSize); err != nil {
		return nil, err
	}
	s := newStream(mem, sb, opts)
	s.nslots = (mem.Size() - SuperblockSize) / regionSize
	for k := 0; k < s.nslots; k++ {
		s.free = append(s.free, k)
	}
	// No region yet: the first is allocated by the first reservation
	// (firstRegionLocked), so a stream nobody writes to holds only its
	// superblock's page.
	s.tailOff = RegionHeaderSize
	s.live.reset(0)
	return s, nil
}

func newStream(mem pmem.Memory, sb superblock, opts Options) *Stream {
	s := &Stream{
		mem:         mem,
		sb:          sb,
		readOnly:    opts.ReadOnly,
		epoch:       opts.Epoch,
		spareTarget: spareTarget(opts.SpareRegions),
	}
	ch := make(chan struct{})
	s.roundCh.Store(&ch)
	if !opts.ReadOnly {
		s.ring = make([]ringSlot, ringMin)
	}
	s.notify.init()
	s.live = newLiveArea(mem)
	return s
}

// RegionSize is the size of every region of the stream.
func (s *Stream) RegionSize() int { return s.sb.regionSize }

// StreamID is the random identity of the stream, repeated in every region.
func (s *Stream) StreamID() uint64 { return s.sb.streamID }

// Mode is how the stream's memory persists (see package pmem).
func (s *Stream) Mode() pmem.Mode { return s.mem.Mode() }

// Memory is the mapped file. Replication exposes its regions to peers.
func (s *Stream) Memory() pmem.Memory { return s.mem }

// Committed is the index after the last committed entry: entries below it
// are visible to readers, in order.
func (s *Stream) Committed() uint64 {
	if s.readOnly {
		return s.roCommitted()
	}
	return s.committed.Load()
}

// Persisted is the index after the last durable entry: entries below it
// survive a crash.
func (s *Stream) Persisted() uint64 { return s.persisted.Load() }

// Head is the index of the oldest entry that has not been trimmed.
func (s *Stream) Head() uint64 { return s.head.Load() }

// Close persists every committed entry and closes the stream. Iterators
// and waiters see ErrClosed. Reservations not yet published are lost (they
// were never committed).
func (s *Stream) Close() error {
	if s.closed.Swap(true) {
		return ErrClosed
	}
	s.stopPreparer()
	s.copies.closeAndWait() // before unmapping; their entries get persisted below
	var err error
	if !s.readOnly && s.failed.Load() == nil {
		err = s.syncAll()
	}
	s.notify.close()
	if s.live != nil && !s.readOnly {
		s.live.wakeAll()
	}
	if cerr := s.mem.Close(); err == nil && !errors.Is(cerr, pmem.ErrClosed) {
		err = cerr
	}
	if s.probe != nil {
		s.probe.Close()
	}
	s.live.detach()
	return err
}

// fail poisons the stream after a persist error.
func (s *Stream) fail(err error) error {
	e := fmt.Errorf("%w: %w", ErrFailed, err)
	s.failed.CompareAndSwap(nil, &e)
	return *s.failed.Load()
}

func (s *Stream) writable() error {
	if s.closed.Load() {
		return ErrClosed
	}
	if s.readOnly {
		return ErrReadOnly
	}
	if e := s.failed.Load(); e != nil {
		return *e
	}
	return nil
}

func wrapAlloc(err error) error {
	if errors.Is(err, pmem.ErrNoSpace) {
		return fmt.Errorf("%w: %w", ErrNoSpace, err)
	}
	if errors.Is(err, pmem.ErrOutOfRange) {
		return fmt.Errorf("%w: the stream reached its maximum size (MaxSize): %w", ErrNoSpace, err)
	}
	return err
}

func spareTarget(n int) int {
	switch {
	case n == 0:
		return 1
	case n < 0:
		return 0
	}
	return n
}
