package pmem

import "unsafe"

const flushSupported = true

func init() {
	// CPUID leaf 7, sub-leaf 0: EBX bit 23 is CLFLUSHOPT, bit 24 CLWB.
	// golang.org/x/sys/cpu has no bits for either.
	maxLeaf, _, _, _ := cpuid(0, 0)
	if maxLeaf >= 7 {
		_, ebx, _, _ := cpuid(7, 0)
		hasCLFLUSHOPT = ebx&(1<<23) != 0
		hasCLWB = ebx&(1<<24) != 0
	}
	hasNT = true // SSE2 is part of amd64
}

func flushRange(start, end uintptr) {
	switch {
	case hasCLWB:
		clwbRange(start, end)
	case hasCLFLUSHOPT:
		clflushoptRange(start, end)
	default:
		clflushRange(start, end)
	}
}

//go:noescape
func cpuid(eax, ecx uint32) (a, b, c, d uint32)

func clwbRange(start, end uintptr)
func clflushoptRange(start, end uintptr)
func clflushRange(start, end uintptr)
func fence()

//go:noescape
func memmoveNT(dst, src unsafe.Pointer, n uintptr)

//go:noescape
func memsetNT(dst unsafe.Pointer, c byte, n uintptr)
