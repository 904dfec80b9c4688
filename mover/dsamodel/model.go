//go:build linux

// Package dsamodel is a software model of an Intel DSA work queue, for
// testing the mover package's dsa engine on machines without the device.
// It is test support: nothing outside tests imports it.
//
// The model consumes the same 64-byte descriptors, laid out as the
// kernel's uapi linux/idxd.h declares them (decoded here independently of
// the engine's encoder, so that each checks the other), from the same
// three submission paths:
//
//   - write(): Pipe returns the write end of a pipe; the engine write()s
//     descriptors to it as to /dev/dsa/wqD.Q, one or several per call,
//     and the model reads them from the other end (a FIFO made with Serve
//     does the same through a path, for the engine's discovery and open
//     code). As the idxd driver, it does not accept batch descriptors
//     this way;
//   - MOVDIR64B: Portal returns a mapped page; the engine stores
//     descriptors into its 64-byte slots in turn with the real MOVDIR64B
//     instruction, and the model polls the slots;
//   - ENQCMD: Enqcmd is a software stand-in for the instruction (no CPU
//     here has it), which accepts a descriptor or reports retry as the
//     instruction's ZF does when a shared queue is full.
//
// It executes memmove (overlap allowed, downwards when needed, as the
// device), memfill (8-byte pattern), cache flush (no-op), batch and drain,
// and writes 32-byte completion records, status last. It checks what the
// device would refuse (reserved fields, flags, alignment, sizes, counts)
// and reports violations through Err. Injectable: page faults
// (DSA_COMP_PAGE_FAULT_NOBOF with bytes_completed and fault address),
// error statuses, ENQCMD retries, faults on a batch's descriptor list.
package dsamodel

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Hardware constants, from linux/idxd.h.
const (
	opNoop    = 0x00
	opBatch   = 0x01
	opDrain   = 0x02
	opMemmove = 0x03
	opMemfill = 0x04
	opCflush  = 0x20

	fFence = 0x0001
	fBOF   = 0x0002
	fCRAV  = 0x0004
	fRCR   = 0x0008
	fCC    = 0x0100
	fSTORD = 0x2000
	fDRDBK = 0x4000

	StatusSuccess      = 0x01
	StatusPageFault    = 0x03
	StatusBatchFail    = 0x05
	StatusBatchFault   = 0x06
	StatusBadOpcode    = 0x10
	StatusInvalidFlags = 0x11
	StatusXferRange    = 0x13
	StatusDescCnt      = 0x14
	StatusOverlap      = 0x16
	StatusListAlign    = 0x18
)

// Config describes the modelled queue.
type Config struct {
	MaxTransfer int  // bytes per descriptor (default 64 KiB, small to make the engine split)
	MaxBatch    int  // descriptors per batch (default 32)
	Overlap     bool // overlapping memmove supported (GENCAP bit 1)
	Readback    bool // destination readback supported (GENCAP bit 8)
	CacheCtl    bool // cache control supported (GENCAP bit 2)
	QueueSize   int  // entries of the shared queue behind Enqcmd (default 32)
	Seed        uint64
}

// GenCap returns the GENCAP value sysfs would show for c.
func (c Config) GenCap() uint64 {
	var g uint64
	if c.Overlap {
		g |= 1 << 1
	}
	if c.CacheCtl {
		g |= 1 << 2
	}
	if c.Readback {
		g |= 1 << 8
	}
	return g
}

// Stats counts what the model saw.
type Stats struct {
	Descriptors, Batches, Drains, Faults, Errors, Busy, Readbacks, ViaWrite, ViaPortal, ViaEnqcmd int64
}

// Device is one modelled work queue. Its goroutines are started by Pipe,
// Serve, Portal and the first Enqcmd, and stopped by Close.
type Device struct {
	cfg Config

	mu        sync.Mutex // guards the injection plan, rng, stats, err
	rng       *rand.Rand
	faultNext int // descriptors to fault
	errNext   []uint8
	busyNext  int
	listFault int
	dropNext  int
	stats     Stats
	err       error

	stop    chan struct{}
	wg      sync.WaitGroup
	closers []func()
	enqOnce sync.Once
	enqQ    chan [64]byte
}

// New returns a device model; Close stops it.
func New(cfg Config) *Device {
	if cfg.MaxTransfer == 0 {
		cfg.MaxTransfer = 64 << 10
	}
	if cfg.MaxBatch == 0 {
		cfg.MaxBatch = 32
	}
	if cfg.QueueSize == 0 {
		cfg.QueueSize = 32
	}
	return &Device{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, 7)), stop: make(chan struct{})}
}

// InjectFaults makes the next n memmove, memfill or cache-flush
// descriptors stop at a page boundary with a page fault.
func (d *Device) InjectFaults(n int) { d.mu.Lock(); d.faultNext += n; d.mu.Unlock() }

// InjectError makes the next descriptors complete with these statuses.
func (d *Device) InjectError(status ...uint8) {
	d.mu.Lock()
	d.errNext = append(d.errNext, status...)
	d.mu.Unlock()
}

// InjectBusy makes the next n Enqcmd calls report retry.
func (d *Device) InjectBusy(n int) { d.mu.Lock(); d.busyNext += n; d.mu.Unlock() }

// InjectDrop makes the next n descriptors vanish: no record is ever
// written, as from a hung device.
func (d *Device) InjectDrop(n int) { d.mu.Lock(); d.dropNext += n; d.mu.Unlock() }

// InjectListFault makes the next n batch descriptors fail reading their
// descriptor list (DSA_COMP_BATCH_PAGE_FAULT), executing none of it.
func (d *Device) InjectListFault(n int) { d.mu.Lock(); d.listFault += n; d.mu.Unlock() }

// Stats returns the counts so far.
func (d *Device) Stats() Stats { d.mu.Lock(); defer d.mu.Unlock(); return d.stats }

// Err returns the first protocol violation seen (a descriptor the real
// device would reject or could not complete), or nil.
func (d *Device) Err() error { d.mu.Lock(); defer d.mu.Unlock(); return d.err }

func (d *Device) violation(format string, a ...any) {
	d.mu.Lock()
	if d.err == nil {
		d.err = fmt.Errorf("dsamodel: "+format, a...)
	}
	d.mu.Unlock()
}

func (d *Device) count(f func(*Stats)) { d.mu.Lock(); f(&d.stats); d.mu.Unlock() }

// Close stops the model's goroutines and releases its pipe and page.
func (d *Device) Close() error {
	select {
	case <-d.stop:
		return nil
	default:
	}
	close(d.stop)
	for _, c := range d.closers {
		c()
	}
	d.wg.Wait()
	return nil
}

func (d *Device) goFunc(f func()) {
	d.wg.Add(1)
	go func() { defer d.wg.Done(); f() }()
}

// Pipe returns the write end of a pipe whose reader is the model: the
// engine's write() path. The model closes the read end on Close; the
// caller owns the write end.
func (d *Device) Pipe() (*os.File, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	d.serveReader(r, func() { r.Close() })
	return w, nil
}

// Serve makes a FIFO at path and consumes the descriptors written to it:
// a stand-in for /dev/dsa/wqD.Q that the engine opens and write()s to.
func (d *Device) Serve(path string) error {
	if err := unix.Mkfifo(path, 0o600); err != nil {
		return err
	}
	// O_RDWR keeps the FIFO open (no EOF) between the engine's opens.
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	d.serveReader(f, func() { f.Close() })
	return nil
}

func (d *Device) serveReader(r *os.File, closer func()) {
	d.closers = append(d.closers, closer)
	d.goFunc(func() {
		var buf [64]byte
		for {
			if _, err := io.ReadFull(r, buf[:]); err != nil {
				return // closed
			}
			d.count(func(s *Stats) { s.ViaWrite++ })
			if buf[7] == opBatch {
				// idxd_cdev_write refuses it (EINVAL) on every device
				// whose user_submission_safe is false: all shipping ones.
				d.violation("batch descriptor through write(): the idxd driver refuses it")
			}
			d.execute(&buf, false)
		}
	})
}

// Portal maps a page standing for a dedicated queue's portal and polls its
// 64 slots in turn for descriptors stored with MOVDIR64B. A slot is taken
// when its first 8 bytes are non-zero (the engine always sets flags) and
// zeroed once read.
func (d *Device) Portal() ([]byte, error) {
	page, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_SHARED)
	if err != nil {
		return nil, err
	}
	d.closers = append(d.closers, func() {})
	d.goFunc(func() {
		defer unix.Munmap(page)
		next := 0
		idle := 0
		for {
			slot := unsafe.Pointer(&page[next*64])
			w0 := (*uint64)(slot)
			if atomic.LoadUint64(w0) == 0 {
				idle++
				if idle < 64 {
					continue
				}
				select {
				case <-d.stop:
					return
				case <-time.After(20 * time.Microsecond):
				}
				continue
			}
			idle = 0
			var desc [64]byte
			for i := 0; i < 64; i += 8 {
				binary.LittleEndian.PutUint64(desc[i:], atomic.LoadUint64((*uint64)(unsafe.Add(slot, i))))
			}
			for i := 0; i < 64; i += 8 {
				atomic.StoreUint64((*uint64)(unsafe.Add(slot, i)), 0)
			}
			next = (next + 1) % 64
			d.count(func(s *Stats) { s.ViaPortal++ })
			d.execute(&desc, false)
		}
	})
	return page, nil
}

// Enqcmd is the model's ENQCMD: it copies the 64 bytes at desc into the
// shared queue and reports retry (true) when the queue is full or a busy
// reply was injected. portal is not used: the software instruction needs
// no page.
func (d *Device) Enqcmd(portal, desc unsafe.Pointer) (retry bool) {
	d.enqOnce.Do(func() {
		d.enqQ = make(chan [64]byte, d.cfg.QueueSize)
		d.goFunc(func() {
			for {
				select {
				case <-d.stop:
					return
				case b := <-d.enqQ:
					d.execute(&b, false)
				}
			}
		})
	})
	d.mu.Lock()
	busy := d.busyNext > 0
	if busy {
		d.busyNext--
		d.stats.Busy++
	}
	d.mu.Unlock()
	if busy {
		return true
	}
	b := *(*[64]byte)(desc)
	select {
	case d.enqQ <- b:
		d.count(func(s *Stats) { s.ViaEnqcmd++ })
		return false
	default:
		d.count(func(s *Stats) { s.Busy++ })
		return true
	}
}
