package mover

import (
	"unsafe"

	"github.com/rpstream/rpstream/pmem"
)

// execCPU performs r on the calling goroutine. r must be valid.
func execCPU(r *Request) {
	n := r.Len()
	if n == 0 {
		return
	}
	dst := r.Dst[:n]
	switch r.Kind {
	case KindCopy:
		execCopy(dst, r.Src, r.Flags)
	case KindMove:
		if !overlap(dst, r.Src) {
			execCopy(dst, r.Src, r.Flags)
			return
		}
		copy(dst, r.Src) // memmove; non-temporal stores are not safe here
		finish(dst, r.Flags, false)
	case KindFill:
		nt := r.Flags&(Durable|NonTemporal) != 0 && n >= pmem.NTThreshold
		if nt {
			pmem.Fill(dst, r.Value)
		} else {
			for i := range dst {
				dst[i] = r.Value
			}
		}
		finish(dst, r.Flags, nt)
	case KindFlush:
		pmem.FlushLines(unsafe.Pointer(&dst[0]), n)
		pmem.Fence()
	}
}

// execCopy copies with non-temporal stores when the result should leave
// the caches (Durable or NonTemporal) and the size makes them pay.
func execCopy(dst, src []byte, f Flags) {
	nt := f&(Durable|NonTemporal) != 0 && len(src) >= pmem.NTThreshold
	if nt {
		pmem.Copy(dst, src) // flushes the partial lines at either end itself
	} else {
		copy(dst, src)
	}
	finish(dst, f, nt)
}

// finish makes dst durable as f asks. Non-temporal stores need only the
// fence; ordinary stores need the flush too, unless NoFlush.
func finish(dst []byte, f Flags, nt bool) {
	switch {
	case f&NoFlush != 0:
	case nt:
		pmem.Fence()
	case f&Durable != 0:
		pmem.FlushLines(unsafe.Pointer(&dst[0]), len(dst))
		pmem.Fence()
	}
}

// overlap reports whether a and b share a byte.
func overlap(a, b []byte) bool {
	if len(a) == 0 || len(b) == 0 {
		return false
	}
	pa, pb := uintptr(unsafe.Pointer(&a[0])), uintptr(unsafe.Pointer(&b[0]))
	return pa < pb+uintptr(len(b)) && pb < pa+uintptr(len(a))
}

// FlagsFor returns the flags that make a destination inside a mapping of
// mode m durable, and whether the caller must still call Memory.Persist on
// the range after the operation completes. Flush and fence mappings (real
// persistent memory, eADR, tmpfs) are made durable by the mover itself
// (Durable); an msync mapping is not, so the mover only copies (NoFlush)
// and Persist does the msync.
func FlagsFor(m pmem.Mode) (f Flags, persistAfter bool) {
	switch m {
	case pmem.PersistFlush, pmem.PersistFence:
		return Durable, false
	}
	return NoFlush, true
}
