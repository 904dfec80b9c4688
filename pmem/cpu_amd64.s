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

// func clwbRange(start, end uintptr); start is cache-line aligned.
TEXT ·clwbRange(SB), NOSPLIT, $0-16
	MOVQ start+0(FP), AX
	MOVQ end+8(FP), BX
clwbloop:
	CMPQ AX, BX
	JAE  clwbdone
	CLWB (AX)
	ADDQ $64, AX
	JMP  clwbloop
clwbdone:
	RET

// func clflushoptRange(start, end uintptr)
TEXT ·clflushoptRange(SB), NOSPLIT, $0-16
	MOVQ start+0(FP), AX
	MOVQ end+8(FP), BX
cfoloop:
	CMPQ AX, BX
	JAE  cfodone
	CLFLUSHOPT (AX)
	ADDQ $64, AX
	JMP  cfoloop
cfodone:
	RET

// func clflushRange(start, end uintptr)
TEXT ·clflushRange(SB), NOSPLIT, $0-16
	MOVQ start+0(FP), AX
	MOVQ end+8(FP), BX
cfloop:
	CMPQ AX, BX
	JAE  cfdone
	CLFLUSH (AX)
	ADDQ $64, AX
	JMP  cfloop
cfdone:
	RET

// func fence()
TEXT ·fence(SB), NOSPLIT, $0-0
	SFENCE
	RET

// func memmoveNT(dst, src unsafe.Pointer, n uintptr)
// dst is 16-byte aligned, n a multiple of 64. Loads are unaligned.
TEXT ·memmoveNT(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
ntloop:
	CMPQ CX, $0
	JE   ntdone
	MOVOU 0(SI), X0
	MOVOU 16(SI), X1
	MOVOU 32(SI), X2
	MOVOU 48(SI), X3
	MOVNTO X0, 0(DI)
	MOVNTO X1, 16(DI)
	MOVNTO X2, 32(DI)
	MOVNTO X3, 48(DI)
	ADDQ $64, SI
	ADDQ $64, DI
	SUBQ $64, CX
	JMP  ntloop
ntdone:
	RET

// func memsetNT(dst unsafe.Pointer, c byte, n uintptr)
// dst is 16-byte aligned, n a multiple of 64.
TEXT ·memsetNT(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVBQZX c+8(FP), AX
	MOVQ $0x0101010101010101, BX
	IMULQ BX, AX
	MOVQ AX, X0
	PUNPCKLQDQ X0, X0
	MOVQ n+16(FP), CX
nsloop:
	CMPQ CX, $0
	JE   nsdone
	MOVNTO X0, 0(DI)
	MOVNTO X0, 16(DI)
	MOVNTO X0, 32(DI)
	MOVNTO X0, 48(DI)
	ADDQ $64, DI
	SUBQ $64, CX
	JMP  nsloop
nsdone:
	RET
