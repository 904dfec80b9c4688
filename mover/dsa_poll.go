//go:build linux

package mover

import (
	"context"
	"errors"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// poll is the poller goroutine: it scans the records of the slots in
// flight, handles those the device has written, and backs off while none
// is: spinning with PAUSE briefly, then yielding, then UMWAIT on the record
// of a slot in flight where the CPU has WAITPKG, else sleeping for growing
// intervals from 2µs to 64µs. It parks while nothing is in flight.
//
// The poller keeps its OS thread and sets that thread's timer slack to
// 1µs (best effort), so that its sleeps (nanosleep) last tens of
// microseconds rather than the default slack's 50µs more, or
// time.Sleep's timer granularity (0.3 to 1 ms measured here).
func (e *dsaEngine) poll() {
	defer close(e.pollerDone)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	unix.Prctl(unix.PR_SET_TIMERSLACK, 1000, 0, 0, 0)
	var bo backoff
	for {
		busy, progress := false, false
		var watch unsafe.Pointer
		for i := 0; i < e.nslots; i++ {
			if !e.active[i].Load() {
				continue
			}
			busy = true
			rec := e.rec(int32(i))
			if rec.status() == statusNone {
				if watch == nil {
					watch = rec.p
				}
				continue
			}
			e.handle(int32(i))
			progress = true
		}
		switch {
		case progress:
			bo.reset()
		case busy:
			bo.wait(watch)
		default:
			select {
			case <-e.kick:
				bo.reset()
			case <-e.stop:
				return
			}
		}
	}
}

// handle acts on slot s's written completion record.
func (e *dsaEngine) handle(s int32) {
	sl := &e.slots[s]
	rec := e.rec(s)
	w0 := rec.word0()
	st := uint8(w0) & statusMask
	if sl.list >= 0 {
		e.batchDone(s, st)
		return
	}
	switch st {
	case statusSuccess:
		e.slotDone(s, 0, nil)
	case statusPageFault:
		e.pageFault(s, w0, rec.faultAddr())
	default:
		e.slotDone(s, sl.off, &DeviceError{Status: st, Opcode: sl.desc[7], FaultAddr: rec.faultAddr()})
	}
}

// pageFault handles a partial completion: the device stopped at a page
// that was not mapped (DSA_COMP_PAGE_FAULT_NOBOF). The bytes before it are
// done (for a move that ran downwards, the bytes after it): touch the page
// so the kernel maps it, and submit the rest; after FaultRetries faults of
// the same descriptor, finish on the CPU.
func (e *dsaEngine) pageFault(s int32, w0, faultAddr uint64) {
	e.stats.faults.Add(1)
	sl := &e.slots[s]
	done := int(uint32(w0 >> 32))
	result, info := uint8(w0>>8), uint8(w0>>16)
	if done > sl.n {
		e.slotDone(s, sl.off, &DeviceError{Status: statusPageFault, Opcode: sl.desc[7], FaultAddr: faultAddr})
		return
	}
	if sl.op.r.Kind == KindMove && result&1 != 0 {
		sl.n -= done // copied downwards: the top is done
	} else {
		sl.off += done
		sl.n -= done
	}
	if sl.n == 0 {
		e.slotDone(s, 0, nil)
		return
	}
	sl.retries++
	if sl.retries > e.cfg.FaultRetries {
		e.finishOnCPU(s)
		return
	}
	touch(&sl.op.r, sl.off, sl.n, faultAddr, info&1 != 0)
	e.stats.resubmits.Add(1)
	e.build(s)
	e.push(s)
}

// touch makes the kernel map the page holding a, if a lies in the range
// [off, off+n) of r's destination (write fault) or source (read fault):
// a locked add of zero writes without changing anything, a load reads.
// Addresses outside the request are not touched.
func touch(r *Request, off, n int, a uint64, write bool) {
	in := func(b []byte) bool {
		if len(b) < off+n || n == 0 {
			return false
		}
		lo := addr(unsafe.Pointer(&b[off]))
		return a >= lo && a < lo+uint64(n)
	}
	// The pointer is made only once a is known to lie in the request's
	// memory: a stray address held as a pointer could upset the garbage
	// collector.
	switch {
	case write && in(r.Dst):
		atomic.AddUint32((*uint32)(pointerAt(a&^3)), 0)
	case !write && r.Src != nil && in(r.Src):
		_ = atomic.LoadUint32((*uint32)(pointerAt(a &^ 3)))
	}
}

// SubmitBatch sends b's requests as DSA batch descriptors of up to
// maxBatch descriptors each (requests larger than the maximum transfer
// size take several); requests better done on the CPU run in SubmitBatch.
func (e *dsaEngine) SubmitBatch(ctx context.Context, b *Batch) error {
	if err := b.validate(); err != nil {
		return b.reject(err)
	}
	if !e.gate.enter() {
		return b.reject(ErrClosed)
	}
	defer e.gate.exit()
	type part struct {
		op     *dsaOp
		off, n int
	}
	var parts []part
	var onCPU []int
	for i := range b.items {
		it := &b.items[i]
		if e.onCPU(&it.r) {
			onCPU = append(onCPU, i)
			continue
		}
		n := it.r.Len()
		op := e.newOp(&it.r, it.c)
		for off := 0; off < n; off += e.maxXfer {
			parts = append(parts, part{op, off, min(e.maxXfer, n-off)})
		}
	}
	_, vector := e.sub.(vectorSubmitter)
	for first := true; len(parts) > 0; first = false {
		g := min(len(parts), max(e.maxBatch, 1))
		need := g + 1 // the batch descriptor's own record
		if g == 1 || vector {
			need = g
		}
		// Take the slots (and a list) for the group; only the first group
		// may give up, before anything is started.
		actx := ctx
		if !first {
			actx = context.Background()
		}
		e.batchMu.Lock()
		slots := make([]int32, 0, need)
		var err error
		for len(slots) < need && err == nil {
			var s int32
			if s, err = e.acquire(actx); err == nil {
				slots = append(slots, s)
			}
		}
		list := int32(-1)
		if err == nil && need > g {
			select {
			case list = <-e.bfree:
			case <-actx.Done():
				err = actx.Err()
			}
		}
		e.batchMu.Unlock()
		if err != nil {
			for _, s := range slots {
				e.release(s)
			}
			return b.reject(err)
		}
		for i, s := range slots[:g] {
			p := parts[i]
			sl := &e.slots[s]
			sl.op, sl.off, sl.n, sl.retries = p.op, p.off, p.n, 0
			e.build(s)
		}
		parts = parts[g:]
		switch {
		case g == 1:
			e.push(slots[0])
		case vector:
			e.pushMany(slots)
		default:
			e.pushBatch(slots[g], list, slots[:g])
		}
	}
	for _, i := range onCPU {
		it := &b.items[i]
		execCPU(&it.r)
		it.c.Complete(it.r.Tag, nil)
	}
	return nil
}

// pushMany submits the descriptors of several slots in one call, for the
// write() path: the kernel refuses batch descriptors there on every DSA
// device it does not deem safe for user submission (all shipping ones, as
// of Linux 6.12), but takes any number of descriptors per write(). Those
// it does not take are submitted one by one.
func (e *dsaEngine) pushMany(slots []int32) {
	var local [maxBatchDesc]descriptor
	for i, s := range slots {
		local[i] = e.slots[s].desc // before active: see push
	}
	for _, s := range slots {
		e.rec(s).reset()
		e.active[s].Store(true)
	}
	vs := e.sub.(vectorSubmitter)
	var bo backoff
	taken := 0
	for i := 0; ; i++ {
		e.subMu.Lock()
		e.vecBuf = local
		n, err := vs.submitMany(e.vecBuf[:len(slots)])
		e.subMu.Unlock()
		taken = n
		if err == nil || !errors.Is(err, errBusy) || n > 0 || i >= busyRetries {
			break
		}
		e.stats.busy.Add(1)
		bo.wait(nil)
	}
	e.stats.descs.Add(int64(taken))
	if taken > 0 {
		e.stats.batches.Add(1)
	}
	for _, s := range slots[taken:] {
		e.push(s)
	}
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// pushBatch copies the sub-descriptors into descriptor list l and submits
// a batch descriptor for them with slot s's record. Each sub-descriptor
// keeps its own completion record.
func (e *dsaEngine) pushBatch(s, l int32, subs []int32) {
	list := e.list(l)
	for i, sub := range subs {
		*(*descriptor)(unsafe.Add(list, i*descSize)) = e.slots[sub].desc
		e.rec(sub).reset()
		e.active[sub].Store(true)
	}
	sl := &e.slots[s]
	sl.op, sl.list, sl.subs = nil, l, subs
	sl.desc.set(opBatch, flagCRAV|flagRCR, addr(e.rec(s).p), addr(list), 0, uint32(len(subs)))
	d := sl.desc // see push
	e.rec(s).reset()
	e.active[s].Store(true)
	if err := e.submitDesc(&d); err != nil {
		for _, sub := range subs {
			e.active[sub].Store(false)
			e.finishOnCPU(sub)
		}
		e.bfree <- l
		e.release(s)
		return
	}
	e.stats.batches.Add(1)
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// batchDone handles a batch descriptor's record. Its sub-descriptors write
// their own records before the batch's; if the batch failed as a whole
// (a fault on its list, a bad count), those never processed still read
// zero and are submitted one by one.
func (e *dsaEngine) batchDone(s int32, st uint8) {
	sl := &e.slots[s]
	if st != statusSuccess && st != statusBatchFail {
		for _, sub := range sl.subs {
			if e.rec(sub).status() == statusNone {
				e.stats.resubmits.Add(1)
				e.push(sub)
			}
		}
	}
	l := sl.list
	e.release(s)
	e.bfree <- l
}

// backoff paces a wait for the device without burning a core.
type backoff struct{ n int }

func (b *backoff) reset() { b.n = 0 }

func (b *backoff) wait(watch unsafe.Pointer) {
	b.n++
	switch {
	case b.n <= 16:
		for i := 0; i < 32; i++ {
			pause()
		}
	case b.n <= 48:
		runtime.Gosched()
	case hasWAITPKG && watch != nil:
		umwaitOn(watch, 50000) // ~20µs; the OS may cut it shorter
	default:
		ts := unix.NsecToTimespec(int64(time.Microsecond << min(b.n-48, 6)))
		unix.Nanosleep(&ts, nil) // blocks this thread only; see poll
	}
}
