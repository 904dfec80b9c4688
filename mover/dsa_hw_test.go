package mover

import (
	"encoding/hex"
	"testing"
	"unsafe"
)

// The descriptor bytes, spelled out from linux/idxd.h by hand: a change
// here is a change of the hardware format, which must never happen.
func TestDescriptorLayout(t *testing.T) {
	var d descriptor
	d.set(opMemmove, flagCRAV|flagRCR|flagDRDBK, 0x1122334455667780, 0x0102030405060708, 0x1112131415161718, 0x00a0b0c0)
	want := "00000000" + "0c4000" + "03" + // pasid word; flags 0x00400c LE; opcode
		"8077665544332211" + // completion_addr
		"0807060504030201" + // src_addr
		"1817161514131211" + // dst_addr
		"c0b0a000" + // xfer_size
		"0000" + "0000" + // int_handle, rsvd
		"000000000000000000000000000000000000000000000000" // op specific
	if got := hex.EncodeToString(d[:]); got != want {
		t.Fatalf("descriptor\n got %s\nwant %s", got, want)
	}
	if unsafe.Sizeof(d) != 64 {
		t.Fatal("descriptor is not 64 bytes")
	}
}

func TestCompletionRecordLayout(t *testing.T) {
	var buf [64]byte
	p := unsafe.Pointer(&buf[(32-uintptr(unsafe.Pointer(&buf[0]))%32)%32])
	rec := record{p}
	b := unsafe.Slice((*byte)(p), 32)
	copy(b, []byte{0x83, 1, 1, 0, 0x00, 0x10, 0, 0, 0xef, 0xbe, 0xad, 0xde, 0, 0, 0, 0})
	w0 := rec.word0()
	if rec.status() != statusPageFault || uint8(w0>>8) != 1 || uint8(w0>>16) != 1 || uint32(w0>>32) != 4096 || rec.faultAddr() != 0xdeadbeef {
		t.Fatalf("status %#x word0 %#x fault %#x", rec.status(), w0, rec.faultAddr())
	}
	rec.reset()
	if rec.word0() != 0 || rec.faultAddr() != 0 {
		t.Fatal("reset left bytes")
	}
}
