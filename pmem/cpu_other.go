//go:build !amd64

package pmem

import (
	"sync/atomic"
	"unsafe"
)

// Other CPUs have no cache-flush instructions here: real persistent memory
// on them is driven through msync (RPSTREAM_PMEM_FORCE=1 gives fences only).
const flushSupported = false

func flushRange(start, end uintptr) {}

var fenceWord atomic.Uint64

// fence is a full barrier through an atomic read-modify-write.
func fence() { fenceWord.Add(1) }

func memmoveNT(dst, src unsafe.Pointer, n uintptr)   {}
func memsetNT(dst unsafe.Pointer, c byte, n uintptr) {}
