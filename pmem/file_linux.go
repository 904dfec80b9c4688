package pmem

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DefaultReserve is the largest size a file may grow to while mapped when
// Options.Reserve is zero.
const DefaultReserve = 64 << 30

// Options for Create and Open.
type Options struct {
	// Reserve is the largest size the file can reach by Allocate while
	// mapped. Zero means DefaultReserve. It is rounded up to a page. The
	// address space actually reserved starts smaller and grows with the
	// file (see growth.go).
	Reserve int
	// ReadOnly maps the file for reading only. Allocate, Persist and
	// Discard then return ErrReadOnly; Mode and Describe report what a
	// writer of the same file gets.
	ReadOnly bool
}

// File is a Memory backed by a mapped file.
type File struct {
	f *os.File
	// data is the current mapping: the whole file and more, up to
	// len(data). It is replaced (never shortened) when the file grows
	// past it; the mappings it replaced stay in old until Close, so that
	// slices taken from them stay valid (growth.go).
	data     atomic.Pointer[[]byte]
	old      [][]byte // earlier mappings; under mu
	limit    int      // the most data may grow to (Options.Reserve)
	mapFlags int      // flags of the mappings (MAP_SYNC or not)
	prot     int
	size     atomic.Int64
	mode     Mode
	why      string
	readOnly bool

	mu     sync.Mutex // serialises Allocate, Discard and Close
	closed bool
}

var (
	_ Memory    = (*File)(nil)
	_ Discarder = (*File)(nil)
	_ Describer = (*File)(nil)
	_ Refresher = (*File)(nil)
)

// Create creates a new file of size bytes (it must not exist) and maps it.
// The blocks are allocated and the size is durable when it returns.
func Create(path string, size int, opts Options) (*File, error) {
	if opts.ReadOnly {
		return nil, fmt.Errorf("pmem: create %s: %w", path, ErrReadOnly)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("pmem: create: %w", err)
	}
	if err := fallocate(f, 0, size); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("pmem: create %s: %w", path, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	m, err := mapFile(f, opts)
	if err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	return m, nil
}

// Open maps an existing file.
func Open(path string, opts Options) (*File, error) {
	flag := os.O_RDWR
	if opts.ReadOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("pmem: open: %w", err)
	}
	m, err := mapFile(f, opts)
	if err != nil {
		f.Close()
		return nil, err
	}
	return m, nil
}

func mapFile(f *os.File, opts Options) (*File, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("pmem: %w", err)
	}
	reserve := opts.Reserve
	if reserve == 0 {
		reserve = DefaultReserve
	}
	pg := os.Getpagesize()
	reserve = (reserve + pg - 1) &^ (pg - 1)
	if st.Size() > int64(reserve) {
		return nil, fmt.Errorf("%w: file of %d bytes exceeds the reservation of %d", ErrOutOfRange, st.Size(), reserve)
	}
	prot := unix.PROT_READ
	if !opts.ReadOnly {
		prot |= unix.PROT_WRITE
	}
	m := &File{f: f, readOnly: opts.ReadOnly, limit: reserve, prot: prot}
	m.size.Store(st.Size())
	length := initialReserve(int(st.Size()), reserve)

	// Real persistent memory accepts a synchronous mapping; anything else
	// refuses it with EOPNOTSUPP (or EINVAL on old kernels). A reader maps
	// plainly but still asks, with a one-page probe, so that its Mode is
	// the one a writer of the same file gets (streamcli ls reports it).
	var data []byte
	var dax bool
	if !opts.ReadOnly {
		data, err = unix.Mmap(int(f.Fd()), 0, length, prot, unix.MAP_SHARED_VALIDATE|unix.MAP_SYNC)
		dax = err == nil
		if dax {
			m.mapFlags = unix.MAP_SHARED_VALIDATE | unix.MAP_SYNC
		}
	} else {
		dax = mapSyncProbe(f)
	}
	if data == nil {
		m.mapFlags = unix.MAP_SHARED
		data, err = unix.Mmap(int(f.Fd()), 0, length, prot, m.mapFlags)
		if err != nil {
			return nil, mmapError(f.Name(), length, err)
		}
	}
	m.data.Store(&data)
	m.mode, m.why = detectMode(f, dax)
	return m, nil
}

// mapSyncProbe says whether f accepts a MAP_SYNC mapping (a DAX file),
// mapping one page read-only and unmapping it at once.
func mapSyncProbe(f *os.File) bool {
	b, err := unix.Mmap(int(f.Fd()), 0, os.Getpagesize(), unix.PROT_READ, unix.MAP_SHARED_VALIDATE|unix.MAP_SYNC)
	if err != nil {
		return false
	}
	unix.Munmap(b)
	return true
}

// detectMode decides what Persist does for f, honouring RPSTREAM_PMEM_FORCE.
func detectMode(f *os.File, dax bool) (Mode, string) {
	switch os.Getenv("RPSTREAM_PMEM_FORCE") {
	case "1":
		return PersistFlush, "forced by RPSTREAM_PMEM_FORCE=1"
	case "0":
		return PersistMsync, "forced by RPSTREAM_PMEM_FORCE=0"
	}
	if dax {
		if eadr(f) {
			return PersistFence, "MAP_SYNC mapping; the platform flushes CPU caches on power loss (eADR)"
		}
		return PersistFlush, "MAP_SYNC mapping on a DAX file system"
	}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &sfs); err == nil && sfs.Type == unix.TMPFS_MAGIC {
		return PersistFence, "tmpfs: the file lives in memory, msync has nothing to write"
	}
	return PersistMsync, "ordinary file: msync"
}

// eadr reports whether the NVDIMM region under f reports its persistence
// domain as the CPU cache. It finds the region through the block device's
// sysfs path (.../ndbusN/regionM/namespaceM.K/block/pmemK).
func eadr(f *os.File) bool {
	var st unix.Stat_t
	if unix.Fstat(int(f.Fd()), &st) != nil {
		return false
	}
	link := fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev))
	p, err := filepath.EvalSymlinks(link)
	if err != nil {
		return false
	}
	for dir := p; dir != "/" && dir != "."; dir = filepath.Dir(dir) {
		if strings.HasPrefix(filepath.Base(dir), "region") {
			b, err := os.ReadFile(filepath.Join(dir, "persistence_domain"))
			return err == nil && strings.TrimSpace(string(b)) == "cpu_cache"
		}
	}
	return false
}

// Bytes implements Memory.
func (m *File) Bytes() []byte {
	n := m.size.Load()
	return (*m.data.Load())[:n:n]
}

// Size implements Memory.
func (m *File) Size() int { return int(m.size.Load()) }

// Mode implements Memory.
func (m *File) Mode() Mode { return m.mode }

// Describe implements Describer.
func (m *File) Describe() string { return m.mode.String() + " (" + m.why + ")" }

// Allocate implements Memory.
func (m *File) Allocate(off, n int) error {
	if m.readOnly {
		return ErrReadOnly
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if err := checkRange(off, n, m.limit); err != nil {
		return err
	}
	if err := m.growLocked(off + n); err != nil {
		return err
	}
	if err := fallocate(m.f, off, n); err != nil {
		return err
	}
	if end := int64(off + n); end > m.size.Load() {
		// The new size must survive a crash before anything is stored
		// in the grown range.
		if err := unix.Fdatasync(int(m.f.Fd())); err != nil {
			return fmt.Errorf("pmem: fdatasync: %w", err)
		}
		m.size.Store(end)
	}
	if m.mode != PersistMsync {
		m.prefault(off, n)
	}
	return nil
}

// prefault populates the page tables for a range, so that first touches do
// not dominate the first appends into it. Failure is harmless.
func (m *File) prefault(off, n int) {
	pg := os.Getpagesize()
	start := off &^ (pg - 1)
	end := (off + n + pg - 1) &^ (pg - 1)
	data := *m.data.Load()
	if end > len(data) {
		end = len(data)
	}
	_ = unix.Madvise(data[start:end], unix.MADV_POPULATE_WRITE)
}

// Discard implements Discarder: it punches a hole over the whole pages of
// the range, keeping the size.
func (m *File) Discard(off, n int) error {
	if m.readOnly {
		return ErrReadOnly
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if err := checkRange(off, n, m.Size()); err != nil {
		return err
	}
	pg := os.Getpagesize()
	start := (off + pg - 1) &^ (pg - 1)
	end := (off + n) &^ (pg - 1)
	if end <= start {
		return nil
	}
	err := unix.Fallocate(int(m.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, int64(start), int64(end-start))
	if errors.Is(err, unix.EOPNOTSUPP) {
		return nil // the range keeps its storage; that is allowed
	}
	if err != nil {
		return fmt.Errorf("pmem: punch hole: %w", err)
	}
	return nil
}

// Persist implements Memory.
func (m *File) Persist(off, n int) error {
	if m.readOnly {
		return ErrReadOnly
	}
	if err := checkRange(off, n, m.Size()); err != nil {
		return err
	}
	switch m.mode {
	case PersistFlush:
		if n > 0 {
			FlushLines(unsafe.Pointer(&(*m.data.Load())[off]), n)
		}
		Fence()
		return nil
	case PersistFence:
		Fence()
		return nil
	}
	if n == 0 {
		return nil
	}
	pg := os.Getpagesize()
	start := off &^ (pg - 1)
	end := off + n
	if err := unix.Msync((*m.data.Load())[start:end], unix.MS_SYNC); err != nil {
		return fmt.Errorf("pmem: msync: %w", err)
	}
	return nil
}

// Refresh implements Refresher.
func (m *File) Refresh() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	st, err := m.f.Stat()
	if err != nil {
		return fmt.Errorf("pmem: %w", err)
	}
	if st.Size() > int64(m.limit) {
		return fmt.Errorf("%w: file grew to %d bytes, beyond the reservation of %d", ErrOutOfRange, st.Size(), m.limit)
	}
	if err := m.growLocked(int(st.Size())); err != nil {
		return err
	}
	m.size.Store(st.Size())
	return nil
}

// TryLock takes an exclusive flock on the file without waiting, on the
// descriptor the mapping already holds (one descriptor per file, not two:
// a node keeps thousands open). It is released by Close. A lock held by
// another open of the file gives an error wrapping unix.EWOULDBLOCK.
func (m *File) TryLock() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if err := unix.Flock(int(m.f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return fmt.Errorf("pmem: lock %s: %w", m.f.Name(), err)
	}
	return nil
}

// Close implements Memory.
func (m *File) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	m.closed = true
	err := unix.Munmap(*m.data.Load())
	for _, b := range m.old {
		if uerr := unix.Munmap(b); err == nil {
			err = uerr
		}
	}
	m.old = nil
	if cerr := m.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// fallocate reserves blocks for [off, off+n), growing the file if needed.
// maxFallocateRetries bounds the retries of a fallocate interrupted by
// signals.
const maxFallocateRetries = 10000

func fallocate(f *os.File, off, n int) error {
	if n == 0 {
		return nil
	}
	err := unix.Fallocate(int(f.Fd()), 0, int64(off), int64(n))
	// A signal (the Go runtime's preemption, SIGURG) interrupts a long
	// fallocate with EINTR: on DAX, where it zeroes the blocks, under
	// QEMU's TCG a 4 MiB region failed so. What was allocated stays, so a
	// retry goes on from there; the bound only keeps a pathology finite.
	for i := 0; errors.Is(err, unix.EINTR) && i < maxFallocateRetries; i++ {
		err = unix.Fallocate(int(f.Fd()), 0, int64(off), int64(n))
	}
	if errors.Is(err, unix.EOPNOTSUPP) {
		// A file system without fallocate: grow with ftruncate. Stores
		// into a full such file system may fault; there is nothing
		// better to do there.
		st, serr := f.Stat()
		if serr != nil {
			return fmt.Errorf("pmem: %w", serr)
		}
		if int64(off+n) > st.Size() {
			err = f.Truncate(int64(off + n))
		} else {
			err = nil
		}
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w (allocating %d bytes at %d): %w", ErrNoSpace, n, off, err)
	}
	if err != nil {
		return fmt.Errorf("pmem: fallocate: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("pmem: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("pmem: sync %s: %w", dir, err)
	}
	return nil
}
