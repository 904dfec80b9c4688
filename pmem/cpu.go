package pmem

import "unsafe"

// Flush instructions available on this CPU, read once at start-up.
var (
	hasCLWB       bool
	hasCLFLUSHOPT bool
	hasNT         bool // non-temporal 16-byte stores (SSE2 MOVNTDQ)
)

// NTThreshold is the size from which Copy and Fill use non-temporal stores.
// Below it, ordinary stores followed by a cache-line flush are faster.
const NTThreshold = 256

// FlushInstruction names the instruction FlushLines uses on this CPU.
func FlushInstruction() string {
	switch {
	case hasCLWB:
		return "clwb"
	case hasCLFLUSHOPT:
		return "clflushopt"
	case flushSupported:
		return "clflush"
	}
	return "none"
}

// FlushLines writes back every cache line that overlaps [p, p+n) towards
// the persistence domain. It does not wait: call Fence after it.
func FlushLines(p unsafe.Pointer, n int) {
	if n <= 0 {
		return
	}
	start := uintptr(p) &^ (CacheLine - 1)
	end := uintptr(p) + uintptr(n)
	flushRange(start, end)
}

// Fence orders and completes earlier flushes and non-temporal stores
// (SFENCE on amd64).
func Fence() { fence() }

// Copy copies src into dst (len(dst) must be at least len(src)) with
// non-temporal stores where the size and the CPU allow, so that the copied
// range needs only a Fence, not a flush, to become durable on persistent
// memory; the partial cache lines at either end are flushed. It returns the
// number of bytes copied.
func Copy(dst, src []byte) int {
	n := len(src)
	if n > len(dst) {
		n = len(dst)
	}
	if n < NTThreshold || !hasNT {
		return copy(dst, src[:n])
	}
	copyNT(dst[:n], src[:n])
	return n
}

// Fill sets every byte of dst to c, with non-temporal stores where the size
// and the CPU allow (see Copy).
func Fill(dst []byte, c byte) {
	if len(dst) < NTThreshold || !hasNT {
		for i := range dst {
			dst[i] = c
		}
		return
	}
	fillNT(dst, c)
}

// copyNT copies with an ordinary head up to a 16-byte boundary of dst,
// non-temporal 16-byte stores for the body, and an ordinary tail. Head and
// tail lines are flushed so the whole range needs only a fence.
func copyNT(dst, src []byte) {
	n := len(src)
	head := int((16 - uintptr(unsafe.Pointer(&dst[0]))&15) & 15)
	copy(dst[:head], src[:head])
	body := (n - head) &^ 63
	if body > 0 {
		memmoveNT(unsafe.Pointer(&dst[head]), unsafe.Pointer(&src[head]), uintptr(body))
	}
	copy(dst[head+body:], src[head+body:])
	FlushLines(unsafe.Pointer(&dst[0]), head)
	if t := n - head - body; t > 0 {
		FlushLines(unsafe.Pointer(&dst[head+body]), t)
	}
}

func fillNT(dst []byte, c byte) {
	n := len(dst)
	head := int((16 - uintptr(unsafe.Pointer(&dst[0]))&15) & 15)
	for i := 0; i < head; i++ {
		dst[i] = c
	}
	body := (n - head) &^ 63
	if body > 0 {
		memsetNT(unsafe.Pointer(&dst[head]), c, uintptr(body))
	}
	for i := head + body; i < n; i++ {
		dst[i] = c
	}
	FlushLines(unsafe.Pointer(&dst[0]), head)
	if t := n - head - body; t > 0 {
		FlushLines(unsafe.Pointer(&dst[head+body]), t)
	}
}
