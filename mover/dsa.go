//go:build linux

package mover

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// dsaEngine offloads requests to one DSA work queue.
//
// Memory the device writes or reads on its own — the completion records and
// the descriptor lists of batches — lives in one anonymous mmap owned by the
// engine, never in the Go heap: the garbage collector neither moves nor
// frees it, and it stays mapped until Close has seen every descriptor
// complete and a drain descriptor finish. Completion records are 32 bytes,
// 32-byte aligned; descriptor lists 64-byte aligned. The caller's buffers
// are handed to the device by address while the request (which the engine
// keeps referenced) is in flight; Go heap memory does not move.
//
// Goroutines: one poller, started by newDSAEngine, owned by the engine and
// stopped by Close once every slot is free; it reads completion records,
// resubmits after page faults and completes requests. Submission runs on
// the callers' goroutines (and the poller's, for resubmissions), serialised
// by subMu.
type dsaEngine struct {
	gate gate
	wq   WorkQueue
	sub  submitter
	cfg  DSAConfig
	why  string

	maxXfer   int
	maxBatch  int // descriptors per batch; 0: batches unused
	overlapOK bool
	readback  bool
	cacheCtl  bool
	bof       bool

	mem     []byte // mmap'd: (nslots+1) records, then nbatch descriptor lists
	locked  bool   // mem is mlock'ed
	listOff int
	nslots  int
	slots   []dsaSlot
	active  []atomic.Bool // slot i has a descriptor in flight
	free    chan int32
	bfree   chan int32 // free descriptor lists
	batchMu sync.Mutex // one batch at a time gathers several slots

	subMu  sync.Mutex               // serialises sub.submit
	subBuf descriptor               // guarded by subMu: what sub.submit reads
	vecBuf [maxBatchDesc]descriptor // guarded by subMu: what submitMany reads

	inflight   atomic.Int64 // slots taken
	kick       chan struct{}
	stop       chan struct{}
	pollerDone chan struct{}
	closeDone  chan struct{}
	closeErr   error

	stats dsaStats
}

// dsaStats count what the engine did; tests read them.
type dsaStats struct {
	descs, batches, faults, resubmits, busy, cpuFallbacks, errors atomic.Int64
}

// dsaSlot is one completion record and the descriptor that writes it.
type dsaSlot struct {
	op      *dsaOp // nil for a batch descriptor
	off, n  int    // the range of op's destination this descriptor still covers
	retries int
	desc    descriptor
	list    int32   // batch descriptor: its descriptor list, else -1
	subs    []int32 // batch descriptor: its sub-descriptors' slots
}

// dsaOp is a request in flight, possibly split into several descriptors.
type dsaOp struct {
	r      Request
	c      Completer
	left   atomic.Int32 // descriptors not yet complete
	mu     sync.Mutex
	failAt int // lowest failing destination offset, -1 if none
	err    error
}

var _ Mover = (*dsaEngine)(nil)

// closeTimeout bounds how long Close waits for the device (a variable for
// tests).
var closeTimeout = 10 * time.Second

const (
	maxSlots     = 256
	maxBatchDesc = 32
	nLists       = 4
	busyRetries  = 4000
)

func newDSAEngine(c *Config, w WorkQueue, sub submitter, why string) (*dsaEngine, error) {
	if w.MaxTransferSize <= 0 || w.Size <= 0 {
		return nil, fmt.Errorf("%w: %s: size %d, max transfer %d", ErrNoDevice, w.Name, w.Size, w.MaxTransferSize)
	}
	e := &dsaEngine{
		wq:         w,
		sub:        sub,
		cfg:        c.DSA,
		why:        why,
		maxXfer:    min(w.MaxTransferSize, 1<<30),
		overlapOK:  w.GenCap&genOverlapCopy != 0,
		readback:   w.GenCap&genDestReadback != 0,
		cacheCtl:   w.GenCap&genCacheControl != 0,
		bof:        c.DSA.BlockOnFault && w.BlockOnFault,
		kick:       make(chan struct{}, 1),
		stop:       make(chan struct{}),
		pollerDone: make(chan struct{}),
		closeDone:  make(chan struct{}),
	}
	e.gate.init()
	e.nslots = min(w.Size, maxSlots)
	if m := c.DSA.MaxInflight; m > 0 && m < e.nslots {
		e.nslots = m
	}
	// A batch needs its own slot plus one per descriptor, and may hold at
	// most half of them so that single requests keep moving.
	e.maxBatch = min(w.MaxBatchSize, maxBatchDesc, e.nslots/2-1)
	if _, vector := sub.(vectorSubmitter); vector {
		e.maxBatch = min(maxBatchDesc, e.nslots/2) // descriptors per write()
	}
	if e.maxBatch < 2 {
		e.maxBatch = 0
	}
	recBytes := (e.nslots + 1) * complSize
	e.listOff = (recBytes + descSize - 1) &^ (descSize - 1)
	size := e.listOff + nLists*maxBatchDesc*descSize
	size = (size + os.Getpagesize() - 1) &^ (os.Getpagesize() - 1)
	// Completion records and descriptor lists: written and read by the
	// device behind the Go runtime's back, so never Go heap memory (which
	// the collector could free once unreferenced, and which the cgo
	// pointer rules keep from foreign code). Page-aligned, so records are
	// 32-byte and lists 64-byte aligned; populated, so the device never
	// faults on them. Unmapped by Close only after a drain.
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("mover: dsa: mapping completion records: %w", err)
	}
	e.mem = mem
	// Locked, best effort, so the records are never swapped out: the
	// device cannot take a page fault on a completion record and report
	// it anywhere we would look. RLIMIT_MEMLOCK is usually far above the
	// few KiB this needs.
	e.locked = unix.Mlock(mem) == nil
	e.slots = make([]dsaSlot, e.nslots)
	e.active = make([]atomic.Bool, e.nslots)
	e.free = make(chan int32, e.nslots)
	for i := range e.slots {
		e.slots[i].list = -1
		e.free <- int32(i)
	}
	e.bfree = make(chan int32, nLists)
	for i := 0; i < nLists; i++ {
		e.bfree <- int32(i)
	}
	go e.poll()
	return e, nil
}

// rec is slot s's completion record; slot nslots is the drain's.
func (e *dsaEngine) rec(s int32) record {
	return record{unsafe.Pointer(&e.mem[int(s)*complSize])}
}

func (e *dsaEngine) list(l int32) unsafe.Pointer {
	return unsafe.Pointer(&e.mem[e.listOff+int(l)*maxBatchDesc*descSize])
}

func (e *dsaEngine) acquire(ctx context.Context) (int32, error) {
	select {
	case s := <-e.free:
		e.inflight.Add(1)
		return s, nil
	default:
	}
	select {
	case s := <-e.free:
		e.inflight.Add(1)
		return s, nil
	case <-ctx.Done():
		return -1, ctx.Err()
	}
}

func (e *dsaEngine) release(s int32) {
	sl := &e.slots[s]
	sl.op, sl.subs, sl.list = nil, nil, -1
	e.active[s].Store(false)
	e.inflight.Add(-1)
	e.free <- s
}

// flags chooses the descriptor flags for a request's Flags: Durable asks
// the device to write past the caches (cache control clear) and, where it
// can, to read the destination back before it writes the completion
// record, so the data is in the persistence domain when the request
// completes; NonTemporal clears cache control only; otherwise the written
// lines are allocated in the cache for a reader that comes soon.
func (e *dsaEngine) flags(f Flags) uint32 {
	fl := uint32(flagCRAV | flagRCR)
	if e.bof {
		fl |= flagBOF
	}
	switch {
	case f&Durable != 0:
		if e.readback {
			fl |= flagDRDBK
		}
	case f&NonTemporal != 0:
	default:
		if e.cacheCtl {
			fl |= flagCC
		}
	}
	return fl
}

// build writes slot s's descriptor for its current range.
func (e *dsaEngine) build(s int32) {
	sl := &e.slots[s]
	r := &sl.op.r
	compl := addr(e.rec(s).p)
	dst := addr(unsafe.Pointer(&r.Dst[sl.off]))
	switch r.Kind {
	case KindCopy, KindMove:
		sl.desc.set(opMemmove, e.flags(r.Flags), compl, addr(unsafe.Pointer(&r.Src[sl.off])), dst, uint32(sl.n))
	case KindFill:
		sl.desc.set(opMemfill, e.flags(r.Flags), compl, uint64(r.Value)*0x0101010101010101, dst, uint32(sl.n))
	case KindFlush:
		fl := uint32(flagCRAV | flagRCR)
		if e.cacheCtl {
			fl |= flagCC // write back and keep the lines, as CLWB
		}
		sl.desc.set(opCflush, fl, compl, 0, dst, uint32(sl.n))
	}
}

// submitDesc hands d to the queue, backing off while a shared queue is
// full.
func (e *dsaEngine) submitDesc(d *descriptor) error {
	var bo backoff
	for i := 0; ; i++ {
		e.subMu.Lock()
		e.subBuf = *d // so that d, on the caller's stack, does not escape
		err := e.sub.submit(&e.subBuf)
		e.subMu.Unlock()
		if err == nil {
			e.stats.descs.Add(1)
			return nil
		}
		if !errors.Is(err, errBusy) || i >= busyRetries {
			return err
		}
		e.stats.busy.Add(1)
		bo.wait(nil)
	}
}

// push submits slot s's descriptor, or does its range on the CPU if the
// queue will not take it.
//
// The descriptor is copied before the slot is marked active: from then on
// the poller may see the record written and reuse the slot, and the
// active flag is the only edge between the two goroutines that the Go
// memory model (and the race detector) can see; the device is outside it.
func (e *dsaEngine) push(s int32) {
	d := e.slots[s].desc
	e.rec(s).reset()
	e.active[s].Store(true)
	if err := e.submitDesc(&d); err != nil {
		e.active[s].Store(false)
		e.finishOnCPU(s)
		return
	}
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// finishOnCPU does what is left of slot s's range on the CPU and completes
// the slot.
func (e *dsaEngine) finishOnCPU(s int32) {
	sl := &e.slots[s]
	r := sl.op.r
	p := Request{Kind: r.Kind, Dst: r.Dst[sl.off : sl.off+sl.n], Value: r.Value, Flags: r.Flags}
	if r.Src != nil {
		p.Src = r.Src[sl.off : sl.off+sl.n]
	}
	if p.Kind == KindFlush {
		p.Flags = Durable
	}
	e.stats.cpuFallbacks.Add(1)
	execCPU(&p)
	e.slotDone(s, 0, nil)
}

// slotDone completes slot s's part of its request, failed at destination
// offset failAt if err is set.
func (e *dsaEngine) slotDone(s int32, failAt int, err error) {
	op := e.slots[s].op
	if err != nil {
		e.stats.errors.Add(1)
		op.mu.Lock()
		if op.failAt < 0 || failAt < op.failAt {
			op.failAt, op.err = failAt, err
		}
		op.mu.Unlock()
	}
	if op.left.Add(-1) != 0 {
		e.release(s) // op is not touched again here: another slot finishes it
		return
	}
	var result error
	if op.err != nil {
		result = &PartialError{Kind: op.r.Kind, Done: op.failAt, Len: op.r.Len(), Err: op.err}
	}
	op.c.Complete(op.r.Tag, result)
	e.release(s) // after Complete, so that Close waits for it
	op.r, op.c, op.err = Request{}, nil, nil
	opPool.Put(op)
}

// opPool recycles dsaOps: a request in flight costs no allocation.
var opPool = sync.Pool{New: func() any { return new(dsaOp) }}

// newOp returns a dsaOp for r, counting the descriptors it will take.
func (e *dsaEngine) newOp(r *Request, c Completer) *dsaOp {
	op := opPool.Get().(*dsaOp)
	op.r, op.c, op.failAt = *r, c, -1
	op.left.Store(int32((r.Len() + e.maxXfer - 1) / e.maxXfer))
	return op
}

// onCPU reports whether r is better done on the CPU.
func (e *dsaEngine) onCPU(r *Request) bool {
	n := r.Len()
	if n == 0 || n < e.cfg.CPUBelow {
		return true
	}
	return r.Kind == KindMove && overlap(r.Dst[:n], r.Src) && (!e.overlapOK || n > e.maxXfer)
}

func (e *dsaEngine) Submit(ctx context.Context, r Request, c Completer) error {
	if err := r.Validate(); err != nil {
		return err
	}
	if !e.gate.enter() {
		return ErrClosed
	}
	defer e.gate.exit()
	if e.onCPU(&r) {
		execCPU(&r)
		c.Complete(r.Tag, nil)
		return nil
	}
	n := r.Len()
	op := e.newOp(&r, c)
	for off := 0; off < n; off += e.maxXfer {
		s, err := e.acquire(ctx)
		if err != nil {
			op.r, op.c = Request{}, nil
			opPool.Put(op)
			return err // only on the first descriptor: nothing started
		}
		ctx = context.Background() // accepted: the rest must follow
		sl := &e.slots[s]
		sl.op, sl.off, sl.n, sl.retries = op, off, min(e.maxXfer, n-off), 0
		e.build(s)
		e.push(s)
	}
	return nil
}

func (e *dsaEngine) Name() string { return "dsa" }

func (e *dsaEngine) Describe() string {
	w := &e.wq
	dur := "durable: cache control off, destination readback"
	if !e.readback {
		dur = "durable: cache control off (device has no destination readback: relies on the completion record being written after the data)"
	}
	poll := "pause/yield/sleep backoff"
	if hasWAITPKG {
		poll = "UMWAIT"
	}
	small := "every request to the device"
	if e.cfg.CPUBelow > 0 {
		small = fmt.Sprintf("requests below %d B on the CPU", e.cfg.CPUBelow)
	}
	return fmt.Sprintf("dsa: %s on %s (%s, size %d, max transfer %d B, batches of %d), %s; %d completion records in mmap'd memory%s; %s; %s; page faults: touch and resubmit up to %d times, then CPU; polling with %s; %s",
		w.Name, w.Device, w.Mode, w.Size, e.maxXfer, e.maxBatch, e.sub.path(), e.nslots, lockedNote(e.locked), small, dur, e.cfg.FaultRetries, poll, e.why)
}

func lockedNote(locked bool) string {
	if locked {
		return " (mlock'ed)"
	}
	return " (mlock failed: they could be swapped out)"
}

// Close refuses new requests, waits for every descriptor to complete,
// submits a drain descriptor as a last barrier, then stops the poller and
// unmaps the completion records.
func (e *dsaEngine) Close() error {
	if !e.gate.close() {
		<-e.closeDone
		return e.closeErr
	}
	var bo backoff
	for deadline := time.Now().Add(closeTimeout); e.inflight.Load() > 0; bo.wait(nil) {
		if time.Now().After(deadline) {
			// A hung device: its records and the poller must stay, as it
			// may still write them; the requests never complete.
			e.closeErr = fmt.Errorf("%w: close: %d descriptors still in flight after %v; records stay mapped", ErrDevice, e.inflight.Load(), closeTimeout)
			close(e.closeDone)
			return e.closeErr
		}
	}
	err := e.drain()
	close(e.stop)
	<-e.pollerDone
	if cerr := e.sub.close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = unix.Munmap(e.mem)
	} // else leave the records mapped: the device may still write them
	e.closeErr = err
	close(e.closeDone)
	return err
}

// drain submits a drain descriptor and waits up to a second for it.
func (e *dsaEngine) drain() error {
	s := int32(e.nslots)
	var d descriptor
	d.set(opDrain, flagCRAV|flagRCR, addr(e.rec(s).p), 0, 0, 0)
	e.rec(s).reset()
	if err := e.submitDesc(&d); err != nil {
		return fmt.Errorf("mover: dsa: drain on close: %w", err)
	}
	deadline := time.Now().Add(time.Second)
	var bo backoff
	for e.rec(s).status() == statusNone {
		if time.Now().After(deadline) {
			return fmt.Errorf("mover: dsa: drain on close: no completion after 1s")
		}
		bo.wait(e.rec(s).p)
	}
	if st := e.rec(s).status(); st != statusSuccess {
		return &DeviceError{Status: st, Opcode: opDrain}
	}
	return nil
}
