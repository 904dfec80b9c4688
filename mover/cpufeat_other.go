//go:build !amd64

package mover

import "unsafe"

// Other CPUs have no DSA submission instructions: only the write() path.
var hasMOVDIRI, hasMOVDIR64B, hasENQCMD, hasWAITPKG bool

func movdir64b(dst, src unsafe.Pointer)           {}
func enqcmd(dst, src unsafe.Pointer) (retry bool) { return true }
func sfence()                                     {}
func pause()                                      {}
func umwaitOn(addr unsafe.Pointer, cycles uint64) {}
