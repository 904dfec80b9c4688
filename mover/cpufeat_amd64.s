#include "textflag.h"

// func cpuid(eax, ecx uint32) (a, b, c, d uint32)
TEXT ·cpuid(SB), NOSPLIT, $0-24
	MOVL eax+0(FP), AX
	MOVL ecx+4(FP), CX
	CPUID
	MOVL AX, a+8(FP)
	MOVL BX, b+12(FP)
	MOVL CX, c+16(FP)
	MOVL DX, d+20(FP)
	RET

// func movdir64b(dst, src unsafe.Pointer)
// MOVDIR64B RAX, [RDX] = 66 0F 38 F8 /r with ModRM 0x02 (reg RAX holds the
// destination address, r/m [RDX] the source), as the Linux kernel emits it.
TEXT ·movdir64b(SB), NOSPLIT, $0-16
	MOVQ dst+0(FP), AX
	MOVQ src+8(FP), DX
	BYTE $0x66; BYTE $0x0F; BYTE $0x38; BYTE $0xF8; BYTE $0x02
	RET

// func enqcmd(dst, src unsafe.Pointer) (retry bool)
// ENQCMD RAX, [RDX] = F2 0F 38 F8 /r, ModRM 0x02. ZF=1: not accepted.
TEXT ·enqcmd(SB), NOSPLIT, $0-17
	MOVQ dst+0(FP), AX
	MOVQ src+8(FP), DX
	BYTE $0xF2; BYTE $0x0F; BYTE $0x38; BYTE $0xF8; BYTE $0x02
	SETEQ retry+16(FP)
	RET

// func sfence()
TEXT ·sfence(SB), NOSPLIT, $0-0
	SFENCE
	RET

// func pause()
TEXT ·pause(SB), NOSPLIT, $0-0
	PAUSE
	RET

// func umwaitOn(addr unsafe.Pointer, cycles uint64)
// UMONITOR RAX = F3 0F AE /6 (ModRM 0xF0); UMWAIT ECX = F2 0F AE /6
// (ModRM 0xF1) with the deadline in EDX:EAX and ECX=0 (C0.2).
TEXT ·umwaitOn(SB), NOSPLIT, $0-16
	MOVQ addr+0(FP), AX
	MOVQ AX, SI
	BYTE $0xF3; BYTE $0x0F; BYTE $0xAE; BYTE $0xF0
	MOVB (SI), BX
	TESTB BX, BX
	JNE  done
	RDTSC
	SHLQ $32, DX
	ORQ  AX, DX
	ADDQ cycles+8(FP), DX
	MOVQ DX, AX
	SHRQ $32, DX
	XORL CX, CX
	BYTE $0xF2; BYTE $0x0F; BYTE $0xAE; BYTE $0xF1
done:
	RET
