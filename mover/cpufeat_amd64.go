package mover

import "unsafe"

// CPU features for the DSA engine, from CPUID leaf 7 sub-leaf 0 ECX, which
// golang.org/x/sys/cpu does not report.
var (
	hasMOVDIRI   bool // bit 27
	hasMOVDIR64B bool // bit 28: 64-byte direct store, to a dedicated WQ portal
	hasENQCMD    bool // bit 29: enqueue to a shared WQ portal
	hasWAITPKG   bool // bit 5: UMONITOR, UMWAIT, TPAUSE
)

func init() {
	if maxLeaf, _, _, _ := cpuid(0, 0); maxLeaf >= 7 {
		_, _, ecx, _ := cpuid(7, 0)
		hasWAITPKG = ecx&(1<<5) != 0
		hasMOVDIRI = ecx&(1<<27) != 0
		hasMOVDIR64B = ecx&(1<<28) != 0
		hasENQCMD = ecx&(1<<29) != 0
	}
}

//go:noescape
func cpuid(eax, ecx uint32) (a, b, c, d uint32)

// movdir64b stores the 64 bytes at src to dst (64-byte aligned) as one
// direct store. Only call it when hasMOVDIR64B.
//
//go:noescape
func movdir64b(dst, src unsafe.Pointer)

// enqcmd submits the 64 bytes at src to the shared-WQ portal dst and
// reports whether the device refused it (queue full: retry). Only call it
// when hasENQCMD.
//
//go:noescape
func enqcmd(dst, src unsafe.Pointer) (retry bool)

// sfence orders earlier stores before the next submission.
func sfence()

// pause is the spin-wait hint.
func pause()

// umwaitOn arms UMONITOR on addr and, unless *addr's first byte is already
// non-zero, waits in C0.2 with UMWAIT until it is written or the TSC passes
// now+cycles (or the OS limit, IA32_UMWAIT_CONTROL, ends it sooner). Only
// call it when hasWAITPKG.
//
//go:noescape
func umwaitOn(addr unsafe.Pointer, cycles uint64)
