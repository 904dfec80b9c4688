package rdma

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Buffer is memory outside the Go heap (an anonymous mmap), suitable for
// registration with any provider: the NIC may keep its address, and stores
// by a remote peer do not race with the Go memory model's view of the heap.
type Buffer struct {
	b []byte
}

// Alloc maps n bytes of zeroed, page-aligned memory.
func Alloc(n int) (*Buffer, error) {
	if n <= 0 {
		return nil, fmt.Errorf("%w: allocate %d bytes", ErrBounds, n)
	}
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("rdma: mmap %d bytes: %w", n, err)
	}
	return &Buffer{b: b}, nil
}

// Bytes is the memory; valid until Free.
func (b *Buffer) Bytes() []byte { return b.b }

// Free unmaps the memory. Deregister it first.
func (b *Buffer) Free() error {
	if b.b == nil {
		return nil
	}
	err := unix.Munmap(b.b)
	b.b = nil
	return err
}
