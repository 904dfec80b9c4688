//go:build linux

package dsamodel

import (
	"encoding/binary"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// desc is a decoded descriptor (struct dsa_hw_desc).
type desc struct {
	pasidWord uint32 // pasid:20, rsvd:11, priv:1
	flags     uint32
	opcode    uint8
	compl     uint64
	src       uint64 // src_addr | pattern | desc_list_addr
	dst       uint64
	size      uint32 // xfer_size | desc_count
	tail      [28]byte
}

func decode(b *[64]byte) desc {
	w := binary.LittleEndian.Uint32(b[4:])
	d := desc{
		pasidWord: binary.LittleEndian.Uint32(b[0:]),
		flags:     w & 0xffffff,
		opcode:    uint8(w >> 24),
		compl:     binary.LittleEndian.Uint64(b[8:]),
		src:       binary.LittleEndian.Uint64(b[16:]),
		dst:       binary.LittleEndian.Uint64(b[24:]),
		size:      binary.LittleEndian.Uint32(b[32:]),
	}
	copy(d.tail[:], b[36:])
	return d
}

// result is what goes into a completion record.
type result struct {
	status    uint8
	result    uint8
	faultInfo uint8
	done      uint32 // bytes_completed | descs_completed
	faultAddr uint64
}

// ptr turns a device address back into a pointer: the model plays the
// hardware, which addresses the process's memory directly.
func ptr(a uint64) unsafe.Pointer {
	u := uintptr(a)
	return *(*unsafe.Pointer)(unsafe.Pointer(&u))
}

// readMem and writeMem move bytes between the process's memory at a and
// the model's buffer with process_vm_readv/writev on the process itself:
// the kernel copies, as the device's DMA would, outside the Go memory
// model. The race detector then sees no access from the model: it checks
// the engine's own synchronisation, not the model's. A bad address is
// EFAULT, where the device would report a translation failure.
func readMem(a uint64, b []byte) error  { return vm(a, b, false) }
func writeMem(a uint64, b []byte) error { return vm(a, b, true) }

func vm(a uint64, b []byte, write bool) error {
	pid := unix.Getpid()
	for len(b) > 0 {
		local := []unix.Iovec{{Base: &b[0]}}
		local[0].SetLen(len(b))
		remote := []unix.RemoteIovec{{Base: uintptr(a), Len: len(b)}}
		var n int
		var err error
		if write {
			n, err = unix.ProcessVMWritev(pid, local, remote, 0)
		} else {
			n, err = unix.ProcessVMReadv(pid, local, remote, 0)
		}
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n <= 0 {
			return unix.EFAULT
		}
		a += uint64(n)
		b = b[n:]
	}
	return nil
}

func (d *Device) memError(x *desc, err error) result {
	d.violation("opcode %#x: memory at src %#x dst %#x size %d: %v", x.opcode, x.src, x.dst, x.size, err)
	return result{status: 0x1c} // DSA_COMP_TRANSLATION_FAIL
}

// writeRecord writes r to the 32-byte record at a: fault address first,
// then the word holding the status, as the device makes the status visible
// last.
func writeRecord(a uint64, r result) {
	atomic.StoreUint64((*uint64)(ptr(a+8)), r.faultAddr)
	w0 := uint64(r.status) | uint64(r.result)<<8 | uint64(r.faultInfo)<<16 | uint64(r.done)<<32
	atomic.StoreUint64((*uint64)(ptr(a)), w0)
}

const knownFlags = fFence | fBOF | fCRAV | fRCR | fCC | fSTORD | fDRDBK

// execute runs one descriptor and writes its record; it returns the
// status, for batches.
func (d *Device) execute(b *[64]byte, inBatch bool) uint8 {
	x := decode(b)
	if x.pasidWord != 0 {
		d.violation("descriptor with PASID/priv word %#x: user space leaves it 0", x.pasidWord)
	}
	for _, v := range x.tail {
		if v != 0 {
			d.violation("opcode %#x: non-zero reserved or unused bytes 36..63", x.opcode)
			break
		}
	}
	if x.flags&(fCRAV|fRCR) != fCRAV|fRCR {
		d.violation("opcode %#x without CRAV|RCR: no completion record would be written", x.opcode)
		return 0
	}
	if x.compl == 0 || x.compl%32 != 0 {
		d.violation("completion record address %#x not 32-byte aligned", x.compl)
		return 0
	}
	d.mu.Lock()
	drop := d.dropNext > 0 && x.opcode != opDrain
	if drop {
		d.dropNext--
	}
	d.mu.Unlock()
	if drop {
		return 0
	}
	r := d.run(&x, inBatch)
	if r.status != StatusSuccess {
		d.count(func(s *Stats) { s.Errors++ })
	}
	writeRecord(x.compl, r)
	return r.status
}

func (d *Device) run(x *desc, inBatch bool) result {
	if x.flags&^knownFlags != 0 {
		return result{status: StatusInvalidFlags}
	}
	if x.flags&fDRDBK != 0 {
		if !d.cfg.Readback {
			return result{status: StatusInvalidFlags}
		}
		d.count(func(s *Stats) { s.Readbacks++ })
	}
	if x.flags&fCC != 0 && !d.cfg.CacheCtl {
		return result{status: StatusInvalidFlags}
	}
	d.count(func(s *Stats) { s.Descriptors++ })
	switch x.opcode {
	case opNoop:
		return result{status: StatusSuccess}
	case opDrain:
		d.count(func(s *Stats) { s.Drains++ })
		return result{status: StatusSuccess} // executed in order: nothing earlier is pending
	case opBatch:
		if inBatch {
			return result{status: StatusBadOpcode}
		}
		return d.batch(x)
	case opMemmove, opMemfill, opCflush:
	default:
		return result{status: StatusBadOpcode}
	}
	n := int(x.size)
	if n == 0 || n > d.cfg.MaxTransfer {
		return result{status: StatusXferRange}
	}
	if x.dst == 0 || (x.opcode == opMemmove && x.src == 0) {
		d.violation("opcode %#x with a null address", x.opcode)
		return result{status: StatusXferRange}
	}
	d.mu.Lock()
	var inject uint8
	if len(d.errNext) > 0 {
		inject, d.errNext = d.errNext[0], d.errNext[1:]
	}
	fault := d.faultNext > 0
	if fault {
		d.faultNext--
		d.stats.Faults++
	}
	faultOnSrc := x.opcode == opMemmove && d.rng.IntN(2) == 0
	d.mu.Unlock()
	if inject != 0 {
		return result{status: inject}
	}
	// A fault stops at the first page boundary of the faulting buffer
	// inside the transfer (or at its first byte).
	stop := n
	var faultAddr uint64
	var info uint8
	if fault {
		base := x.dst
		info = 1 // write
		if faultOnSrc {
			base, info = x.src, 0
		}
		stop = int((base+4096)&^4095 - base)
		if stop >= n {
			stop = 0
		}
		faultAddr = base + uint64(stop)
	}
	switch x.opcode {
	case opMemfill:
		buf := make([]byte, stop)
		var pat [8]byte
		binary.LittleEndian.PutUint64(pat[:], x.src)
		for i := range buf { // the pattern repeats from the first byte
			buf[i] = pat[i%8]
		}
		if err := writeMem(x.dst, buf); err != nil {
			return d.memError(x, err)
		}
	case opCflush:
	case opMemmove:
		overlap := x.src < x.dst+uint64(n) && x.dst < x.src+uint64(n)
		if overlap && !d.cfg.Overlap {
			return result{status: StatusOverlap}
		}
		lo, hi := 0, stop
		down := overlap && x.dst > x.src
		if down && fault {
			// Downwards from the end, as the device copies when the
			// destination is above an overlapping source; a fault then
			// leaves the top done.
			top := n - stop
			if top == n {
				top = 0
			}
			lo, hi = n-top, n
		}
		buf := make([]byte, hi-lo)
		if err := readMem(x.src+uint64(lo), buf); err != nil {
			return d.memError(x, err)
		}
		if err := writeMem(x.dst+uint64(lo), buf); err != nil {
			return d.memError(x, err)
		}
		if down && fault {
			return result{status: StatusPageFault, result: 1, faultInfo: 1, done: uint32(hi - lo), faultAddr: x.dst + uint64(lo) - 1}
		}
	}
	if fault {
		return result{status: StatusPageFault, faultInfo: info, done: uint32(stop), faultAddr: faultAddr}
	}
	return result{status: StatusSuccess, done: uint32(n)}
}

// batch runs a batch descriptor's list; sub-descriptors write their own
// records before the batch's record is written.
func (d *Device) batch(x *desc) result {
	d.count(func(s *Stats) { s.Batches++ })
	n := int(x.size)
	if n < 2 || n > d.cfg.MaxBatch {
		return result{status: StatusDescCnt}
	}
	if x.src%64 != 0 {
		return result{status: StatusListAlign}
	}
	d.mu.Lock()
	lf := d.listFault > 0
	if lf {
		d.listFault--
	}
	d.mu.Unlock()
	if lf {
		return result{status: StatusBatchFault, faultAddr: x.src}
	}
	ok := 0
	for i := 0; i < n; i++ {
		var b [64]byte
		if err := readMem(x.src+uint64(i*64), b[:]); err != nil {
			return result{status: StatusBatchFault, faultAddr: x.src + uint64(i*64)}
		}
		if d.execute(&b, true) == StatusSuccess {
			ok++
		}
	}
	if ok != n {
		return result{status: StatusBatchFail, done: uint32(ok)}
	}
	return result{status: StatusSuccess, done: uint32(ok)}
}
