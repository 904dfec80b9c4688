//go:build linux

package mover

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// submitter hands descriptors to a work queue: the production ones are
// write() on the queue's file, MOVDIR64B to a dedicated queue's mapped
// portal and ENQCMD to a shared queue's portal; tests put the device model
// behind the same three.
//
// submit is called with the engine's submission mutex held, so an
// implementation needs no locking of its own.
type submitter interface {
	// submit hands d to the queue. errBusy means the queue refused it for
	// now (shared queue full); the caller backs off and retries.
	submit(d *descriptor) error
	// path says how descriptors are submitted, for Describe.
	path() string
	close() error
}

// errBusy: the shared work queue is full (ENQCMD set ZF, or write()
// returned EAGAIN/EBUSY).
var errBusy = errors.New("mover: dsa: work queue busy")

// vectorSubmitter is a submitter that takes several descriptors in one
// call and must not be given batch descriptors. submitMany returns how many
// of ds, from the first, were submitted; errBusy with 0 means retry.
type vectorSubmitter interface {
	submitMany(ds []descriptor) (int, error)
}

// fileSubmitter writes each descriptor to the work queue's file. The idxd
// driver checks and submits it; on kernels patched for CVE-2024-21823 this
// is the only path that needs no CAP_SYS_RAWIO.
type fileSubmitter struct {
	fd   int
	name string
	own  bool // close fd on close
}

var (
	_ submitter       = (*fileSubmitter)(nil)
	_ vectorSubmitter = (*fileSubmitter)(nil)
)

// submitMany writes ds in one write(): the driver submits them in order
// and stops at the first it cannot, returning the bytes of those it took.
func (s *fileSubmitter) submitMany(ds []descriptor) (int, error) {
	if len(ds) == 0 {
		return 0, nil
	}
	b := unsafe.Slice((*byte)(unsafe.Pointer(&ds[0])), len(ds)*descSize)
	for {
		n, err := unix.Write(s.fd, b)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN || err == unix.EBUSY:
			return 0, errBusy
		case err != nil:
			return 0, fmt.Errorf("mover: dsa: write %s: %w", s.name, err)
		}
		return n / descSize, nil
	}
}

func (s *fileSubmitter) submit(d *descriptor) error {
	for {
		n, err := unix.Write(s.fd, d[:])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN || err == unix.EBUSY:
			return errBusy
		case err != nil:
			return fmt.Errorf("mover: dsa: write %s: %w", s.name, err)
		case n != descSize:
			return fmt.Errorf("mover: dsa: write %s: short write of %d bytes", s.name, n)
		}
		return nil
	}
}

func (s *fileSubmitter) path() string { return "write() on " + s.name }

func (s *fileSubmitter) close() error {
	if s.own {
		return unix.Close(s.fd)
	}
	return nil
}

// portalSubmitter stores descriptors into a work queue's portal page:
// MOVDIR64B for a dedicated queue, ENQCMD (retried while busy) for a shared
// one. Successive descriptors go to successive 64-byte slots of the page,
// as the kernel's own driver does; the device accepts a descriptor at any
// offset of its portal.
type portalSubmitter struct {
	portal unsafe.Pointer // 4 KiB: mmap of the queue's file, or the model's page
	next   uintptr
	shared bool
	// enq submits to a shared queue and reports whether to retry; it is
	// enqcmd except in tests, as no CPU here has ENQCMD.
	enq   func(portal, desc unsafe.Pointer) bool
	name  string
	unmap func() error
}

var _ submitter = (*portalSubmitter)(nil)

const portalSize = 4096

func (s *portalSubmitter) submit(d *descriptor) error {
	// Earlier stores (the reset completion record, a batch's descriptor
	// list) must be visible to the device before it reads the descriptor:
	// MOVDIR64B and ENQCMD are weakly ordered against them.
	sfence()
	slot := unsafe.Add(s.portal, (s.next%(portalSize/descSize))*descSize)
	s.next++
	if s.shared {
		if s.enq(slot, unsafe.Pointer(d)) {
			return errBusy
		}
		return nil
	}
	movdir64b(slot, unsafe.Pointer(d))
	return nil
}

func (s *portalSubmitter) path() string {
	if s.shared {
		return "ENQCMD to the shared portal of " + s.name
	}
	return "MOVDIR64B to the dedicated portal of " + s.name
}

func (s *portalSubmitter) close() error {
	if s.unmap != nil {
		return s.unmap()
	}
	return nil
}

// openSubmitter opens w's character device and picks the submission path.
func openSubmitter(w *WorkQueue, mode SubmitMode) (submitter, error) {
	fd, err := unix.Open(w.Path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: open %s: %v", ErrNoDevice, w.Path, err)
	}
	if mode == SubmitWrite {
		return &fileSubmitter{fd: fd, name: w.Path, own: true}, nil
	}
	var why string
	switch {
	case w.Dedicated() && !hasMOVDIR64B:
		why = "CPU lacks MOVDIR64B"
	case !w.Dedicated() && !hasENQCMD:
		why = "CPU lacks ENQCMD"
	}
	if why == "" {
		mem, err := unix.Mmap(fd, 0, portalSize, unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
		if err == nil {
			s := &portalSubmitter{portal: unsafe.Pointer(&mem[0]), shared: !w.Dedicated(), enq: enqcmd, name: w.Path}
			s.unmap = func() error {
				err := unix.Munmap(mem)
				if cerr := unix.Close(fd); err == nil {
					err = cerr
				}
				return err
			}
			return s, nil
		}
		why = fmt.Sprintf("mapping the portal failed: %v", err)
	}
	if mode == SubmitPortal {
		unix.Close(fd)
		return nil, fmt.Errorf("%w: %s: portal submission requested but %s", ErrNoDevice, w.Path, why)
	}
	return &fileSubmitter{fd: fd, name: w.Path + " (portal unused: " + why + ")", own: true}, nil
}
