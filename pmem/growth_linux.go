package pmem

import (
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// A mapping reserves address space sized to the file, not to the largest
// size it may reach: a node holds thousands of stream files, and 64 GiB
// each exhausts the 128 TiB of a process's address space at the 2,047th.
//
// The first mapping covers twice the file's size (at least MinReserve, at
// most Options.Reserve). When Allocate or Refresh needs more, the mapping
// grows: in place with mremap when the address space after it is free,
// else by a new mapping of the whole file at another address. A mapping
// never moves under its users: the replaced one stays mapped until Close,
// so slices into it (an entry being read, a registered rdma region, the
// live area a futex waits on) stay valid. Both map the same file pages
// (MAP_SHARED), so a store through either is seen through both, msync of
// a range writes back the file's pages whoever dirtied them, and cache
// line flushes act on the physical line whatever the alias. Growth
// doubles, so the old mappings together take less address space than the
// current one, and a file growing to 64 GiB in 4 MiB regions is remapped
// about a dozen times.

// MinReserve is the least address space a mapping reserves.
const MinReserve = 64 << 20

// initialReserve is the length of the first mapping of a file of size
// bytes that may grow to limit.
func initialReserve(size, limit int) int {
	return roundReserve(2*size, limit)
}

// roundReserve rounds n up to a power of two of at least MinReserve,
// capped by limit (a page multiple).
func roundReserve(n, limit int) int {
	r := MinReserve
	for r < n && r < limit {
		r *= 2
	}
	return min(r, limit)
}

// growLocked makes the mapping cover [0, need) (need <= m.limit). m.mu is
// held.
func (m *File) growLocked(need int) error {
	cur := *m.data.Load()
	if need <= len(cur) {
		return nil
	}
	length := roundReserve(2*need, m.limit)
	// In place first: only the length of the mapping changes.
	if b, err := mremapInPlace(cur, length); err == nil {
		m.data.Store(&b)
		return nil
	}
	b, err := unix.Mmap(int(m.f.Fd()), 0, length, m.prot, m.mapFlags)
	if err != nil {
		return mmapError(m.f.Name(), length, err)
	}
	m.old = append(m.old, cur)
	m.data.Store(&b)
	return nil
}

// mremapInPlace grows the mapping b to length without moving it, or fails
// (the address space after it is in use).
func mremapInPlace(b []byte, length int) ([]byte, error) {
	// Without MREMAP_MAYMOVE the kernel either extends the mapping where
	// it is or fails with ENOMEM.
	nb, err := unix.Mremap(b, length, 0)
	if err != nil {
		return nil, err
	}
	if &nb[0] != &b[0] {
		// Not possible without MREMAP_MAYMOVE; refuse to go on if it
		// ever happens rather than leave slices dangling.
		panic("pmem: mremap without MREMAP_MAYMOVE moved the mapping")
	}
	return nb, nil
}

// mmapError says why a mapping of length bytes of file name failed;
// ENOMEM (no address space, or vm.max_map_count reached) is
// ErrAddressSpace.
func mmapError(name string, length int, err error) error {
	if errors.Is(err, syscall.ENOMEM) {
		return fmt.Errorf("%w: mapping %d MiB of %s: %w (the process maps too much: close streams, or lower the reservation's limit)", ErrAddressSpace, length>>20, name, err)
	}
	return fmt.Errorf("pmem: mmap %s: %w", name, err)
}

// Reserved is the address space the mapping takes now, its earlier
// mappings included (Close frees them all).
func (m *File) Reserved() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := len(*m.data.Load())
	for _, b := range m.old {
		n += len(b)
	}
	return n
}
