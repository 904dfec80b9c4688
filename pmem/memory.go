package pmem

import (
	"errors"
	"fmt"
)

// Mode says how Persist makes a range durable. See the package comment.
type Mode int

const (
	// PersistMsync: ordinary file, msync of the page-aligned range.
	PersistMsync Mode = iota
	// PersistFlush: real persistent memory, cache-line write-back and a fence.
	PersistFlush
	// PersistFence: a store fence only (eADR platform or memory-backed file).
	PersistFence
)

func (m Mode) String() string {
	switch m {
	case PersistMsync:
		return "msync"
	case PersistFlush:
		return "flush"
	case PersistFence:
		return "fence"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// CacheLine is the unit of cache write-back, and of loss in a crash.
const CacheLine = 64

// Errors returned by this package. Errors from the operating system are
// wrapped with %w and keep their errno (errors.Is(err, syscall.ENOSPC)).
var (
	// ErrOutOfRange is returned when an offset or length falls outside the
	// mapping's accessible size or its reservation.
	ErrOutOfRange = errors.New("pmem: range outside the mapping")
	// ErrReadOnly is returned by operations that modify a read-only mapping.
	ErrReadOnly = errors.New("pmem: mapping is read-only")
	// ErrNoSpace is returned by Allocate when the file system is full. It
	// wraps syscall.ENOSPC.
	ErrNoSpace = errors.New("pmem: no space left on device")
	// ErrClosed is returned by operations on a closed mapping.
	ErrClosed = errors.New("pmem: mapping is closed")
	// ErrAddressSpace is returned when the process has no address space
	// left for a mapping or its growth (mmap failed with ENOMEM: the
	// address space or vm.max_map_count is exhausted). It wraps
	// syscall.ENOMEM. Closing mappings frees address space.
	ErrAddressSpace = errors.New("pmem: out of address space for the mapping")
)

// Memory is a mapped range of persistent memory, or of a file standing in for
// it, or of a simulation of either.
//
// Offsets are from the start of the mapping. Bytes and Size may be called
// concurrently with everything; Persist may be called concurrently with
// itself and with stores to other ranges; Allocate and Close must not be
// called concurrently with each other.
type Memory interface {
	// Bytes returns the accessible part of the mapping, [0, Size()). The
	// slice stays valid until Close; Allocate never moves it.
	Bytes() []byte
	// Size is the accessible (allocated) length.
	Size() int
	// Allocate makes [off, off+n) accessible and backed by storage, growing
	// the file if needed; the new size is durable when it returns. Bytes of
	// a newly grown range read as zero. A full device gives ErrNoSpace.
	Allocate(off, n int) error
	// Persist makes the stores to [off, off+n) durable. It returns only
	// after they are.
	Persist(off, n int) error
	// Mode says what Persist does.
	Mode() Mode
	// Close unmaps the memory. Slices from Bytes must not be used after.
	Close() error
}

// Discarder is implemented by memories that can give the storage of a range
// back to the system. After Discard the range reads as zero (possibly only
// after a crash: until then it may keep its old contents) and must be
// Allocated again before it is stored to.
type Discarder interface {
	Discard(off, n int) error
}

// Refresher is implemented by memories whose size another process may
// change: Refresh learns the current size (a reader following a writer).
type Refresher interface {
	Refresh() error
}

// Describer is implemented by memories that can say why they chose their
// Mode ("MAP_SYNC mapping on a DAX file system", "tmpfs", ...).
type Describer interface {
	Describe() string
}

// checkRange reports whether [off, off+n) lies within [0, size).
func checkRange(off, n, size int) error {
	if off < 0 || n < 0 || off > size || n > size-off {
		return fmt.Errorf("%w: [%d, %d) of %d bytes", ErrOutOfRange, off, off+n, size)
	}
	return nil
}
