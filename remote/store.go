// Package remote is the target side of replication: it exposes the region
// slots of a local stream to one authorised writer as registered rdma
// memory, switches that permission when a newer epoch is granted (as the
// Mu system does), persists on flush, and serves region descriptors over a
// small control protocol (remote/remotepb) carried by rdma Send/Recv on the
// same authenticated connection as the writes.
//
// A Target can serve the node's own stream files (local/ implements
// RegionStore) or run alone as a remote backup target over FileStore, which
// only receives copies.
//
// # Many streams on one address
//
// A Hub serves many streams on one address: one rdma Peer and Listener,
// and one Target per stream, made on the first Open of the stream (the
// owner's HubConfig.Open callback creates or opens its store) and sharing
// the Hub's Peer. A connection's first request must be an Open
// (remotepb.OpenRequest: stream name, region size, the writer's stream id);
// it binds the connection to that stream's Target for good, and every
// later request is answered by that Target as by a standalone one, so
// epochs, writers and fencing are per stream. Any other first request gets
// CODE_NO_STREAM; a second Open CODE_MALFORMED; another region size, or a
// valid superblock with another stream id, CODE_MISMATCH. A standalone
// Target accepts an Open too (any name, matching region size), so a writer
// may always send one first. Hub.Drop closes one stream's Target and store.
//
// # Tail
//
// A TailRequest from the current writer asks where the replica's durable
// valid prefix ends: the last valid region's sequence number, the offset
// after its last valid entry, and the entry count, as local's recovery
// finds them (local.Scan). A replica holding more than the writer's end
// (bytes a crashed leader replicated but never persisted) is cut back to
// it first: later regions are freed, the writer's tail region is unsealed
// and zeroed after its end. Valid regions after a tail that lost entries
// (recovery would drop them) are freed as well. What Tail reports is persisted before it
// answers. The cut writes the store's memory: the store must not be a
// stream the node itself has open for writing.
//
// # Permission switching
//
// The Target holds the current epoch and the connection that was granted
// it. Connections start without one-sided access (rdma.AccessSwitcher);
// the granted one gets it. Every region descriptor handed out is a
// registration made for the current epoch. When a Grant with a higher epoch
// arrives, before it is answered the old writer's connection loses access
// (a queue-pair access change, as Mu does; the connection is closed if a
// request of it is stuck for revokeTimeout) and every registration of the
// old epoch is deregistered: from then on the old writer's writes, flushes
// and atomic writes are rejected and its connection is poisoned. Grants are
// serialised, so racing grants cannot hand access back to a deposed writer. The
// epoch lives in memory: a restarted target accepts the first Grant it
// gets, so the cluster layer must only grant epochs it has made durable.
//
// # Goroutines
//
// Serve (of a Target or a Hub) runs the accept loop in its caller's
// goroutine and one goroutine per connection, which answers that
// connection's control requests. Close stops them all and waits;
// Hub.Drop stops those of one stream.
package remote

import (
	"errors"
	"fmt"
	"io/fs"
	"sync"

	"github.com/rpstream/rpstream/pmem"
)

// SuperblockSize is the size of the stream file's header; region slot k
// starts at SuperblockSize + k*RegionSize. It is local/'s format and must
// never change.
const SuperblockSize = 4096

// RegionStore is what a Target needs of a local stream: one mapped file of
// fixed-size region slots after a SuperblockSize header.
//
// Memory and RegionSize never change, and Memory stays mapped until the
// Target is closed (registered slices of it are written by peers). A slot
// the Target has handed out must not be discarded or reused before
// Target.DropRegion. Regions and EnsureRegion may be called concurrently
// with each other and with the stream's own work.
type RegionStore interface {
	// Memory is the mapped stream file. The Target registers slices of
	// Memory().Bytes() and calls Memory().Persist on persistence flushes.
	Memory() pmem.Memory
	// RegionSize is the size of every region slot, a multiple of 4096.
	RegionSize() int
	// Regions is how many slots exist (are allocated in the file) now.
	Regions() int
	// EnsureRegion makes slot k exist, allocating its range of the file,
	// so that a writer can fill it. It fails with ErrNoRegion when the
	// store cannot hold slot k.
	EnsureRegion(k int) error
}

// HeaderSlot is the region index that names the stream file's header (its
// superblock, SuperblockSize bytes at offset 0) rather than a slot: the
// writer replicates the header like any region, so that the replica's file
// is byte-identical and opens as a stream after a failover.
const HeaderSlot = 1<<32 - 1

// RegionOffset is the offset of slot k (or of the header, HeaderSlot) in
// the stream file.
func RegionOffset(k, regionSize int) int {
	if k == HeaderSlot {
		return 0
	}
	return SuperblockSize + k*regionSize
}

// regionLen is the length of slot k (or of the header).
func regionLen(k, regionSize int) int {
	if k == HeaderSlot {
		return SuperblockSize
	}
	return regionSize
}

// Errors.
var (
	// ErrNoRegion is returned when a region slot does not exist and cannot
	// be created.
	ErrNoRegion = errors.New("remote: no such region")
	// ErrStaleEpoch is returned for a Grant with an epoch older than the
	// current one (or equal but held by another writer).
	ErrStaleEpoch = errors.New("remote: stale epoch")
	// ErrNotWriter is returned for a region request from a connection that
	// does not hold the current epoch.
	ErrNotWriter = errors.New("remote: not the current writer")
	// ErrMalformed is returned for a control message that does not parse
	// or has invalid fields; the target's state is unchanged.
	ErrMalformed = errors.New("remote: malformed control message")
	// ErrTarget is returned when the target failed to carry out a valid
	// request.
	ErrTarget = errors.New("remote: target failure")
	// ErrNoStream is returned for a request on a Hub connection that has
	// not opened a stream, and for an Open of a stream the target does not
	// have (and was not asked to create).
	ErrNoStream = errors.New("remote: no such stream")
	// ErrMismatch is returned when the replica does not match the writer:
	// another region size, another stream id (a different stream of the
	// same name), or content that contradicts the writer's end.
	ErrMismatch = errors.New("remote: replica does not match the writer")
	// ErrConfig is returned for an invalid Config.
	ErrConfig = errors.New("remote: invalid config")
	// ErrFull is what a HubConfig.Open callback wraps when the node holds
	// as many open streams and copies as it may: the Hub then closes the
	// copies no writer is connected to (as CloseIdle) and calls Open
	// once more.
	ErrFull = errors.New("remote: too many open copies")
)

// FileStore is a RegionStore over a pmem mapping, for a backup target
// that has no stream of its own: it only grows the file when a writer asks
// for a slot. The superblock is left to the writer (local/'s format).
type FileStore struct {
	mem        pmem.Memory
	regionSize int
	maxRegions int

	mu    sync.Mutex
	holes map[int]bool // slots discarded since they were allocated
}

var _ RegionStore = (*FileStore)(nil)

// OpenFileStore opens the stream file at path for a backup target,
// creating it (with an empty superblock) if it does not exist. The mapping
// reserves room for maxRegions slots.
func OpenFileStore(path string, regionSize, maxRegions int) (*FileStore, error) {
	if regionSize <= 0 || regionSize%4096 != 0 || maxRegions <= 0 || maxRegions > (1<<46)/regionSize {
		return nil, fmt.Errorf("%w: region size %d, max regions %d", ErrConfig, regionSize, maxRegions)
	}
	opts := pmem.Options{Reserve: SuperblockSize + maxRegions*regionSize}
	mem, err := pmem.Open(path, opts)
	if errors.Is(err, fs.ErrNotExist) {
		mem, err = pmem.Create(path, SuperblockSize, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTarget, err)
	}
	s, err := NewFileStore(mem, regionSize, maxRegions)
	if err != nil {
		mem.Close()
		return nil, err
	}
	return s, nil
}

// Close unmaps the file.
func (s *FileStore) Close() error { return s.mem.Close() }

// NewFileStore serves mem (a fresh or existing stream file) with slots of
// regionSize bytes, at most maxRegions of them.
func NewFileStore(mem pmem.Memory, regionSize, maxRegions int) (*FileStore, error) {
	if regionSize <= 0 || regionSize%4096 != 0 || maxRegions <= 0 {
		return nil, fmt.Errorf("%w: region size %d, max regions %d", ErrConfig, regionSize, maxRegions)
	}
	if mem.Size() < SuperblockSize {
		if err := mem.Allocate(0, SuperblockSize); err != nil {
			return nil, fmt.Errorf("%w: allocate superblock: %w", ErrTarget, err)
		}
	}
	return &FileStore{mem: mem, regionSize: regionSize, maxRegions: maxRegions}, nil
}

// Memory implements RegionStore.
func (s *FileStore) Memory() pmem.Memory { return s.mem }

// RegionSize implements RegionStore.
func (s *FileStore) RegionSize() int { return s.regionSize }

// Regions implements RegionStore.
func (s *FileStore) Regions() int {
	return max(0, (s.mem.Size()-SuperblockSize)/s.regionSize)
}

// EnsureRegion implements RegionStore.
func (s *FileStore) EnsureRegion(k int) error {
	if k < 0 || k >= s.maxRegions {
		return fmt.Errorf("%w: slot %d of at most %d", ErrNoRegion, k, s.maxRegions)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if k < s.Regions() && !s.holes[k] {
		return nil
	}
	delete(s.holes, k)
	if err := s.mem.Allocate(RegionOffset(k, s.regionSize), s.regionSize); err != nil {
		return fmt.Errorf("%w: slot %d: %w", ErrNoRegion, k, err)
	}
	return nil
}
