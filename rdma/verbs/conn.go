//go:build verbs && cgo

package verbs

/*
#include "rp_verbs.h"
*/
import "C"

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/rpstream/rpstream/rdma"
	"github.com/rpstream/rpstream/rdma/internal/hs"
)

// Layout of a Conn's scratch registration (rdma.Alloc memory).
const (
	scratchSend = 0    // outgoing handshake message
	scratchRecv = 2048 // incoming handshake messages, hsRecvs of msgMax
	scratchSink = 6144 // target of read-after-write flushes
	scratchSize = 8192
	msgMax      = 2048
	// hsRecvs is how many messages one side of the handshake receives
	// (package hs: the dialer a Hello with a proof and a status, the
	// listener a Hello and a proof).
	hsRecvs = 2
)

type conn struct {
	p          *peer
	ch         *C.struct_rdma_event_channel // this connection's own
	id         *C.struct_rdma_cm_id
	rc         *C.struct_rp_conn
	nativeAtom bool
	nativeFl   bool
	inline     bool
	remote     rdma.PeerInfo
	remoteAddr string
	events     chan rdma.Event
	dead       chan struct{} // closed by fail
	stop       chan struct{} // closed by Close: the poller exits
	wakeFd     int           // eventfd written by Close to wake the poller
	slots      chan struct{}
	wg         sync.WaitGroup
	scratch    *rdma.Buffer
	smr        *mr
	wc         *C.struct_rp_wc // poller only; C memory
	hsRecv     []*rdma.Op      // the handshake's receives, posted before connecting

	postMu sync.Mutex      // serialises posting; guards wr
	wr     *C.struct_rp_wr // C memory
	nextID uint64          // guarded by postMu

	pendMu  sync.Mutex // guards the fields below
	pending map[uint64]vpend
	failed  bool
	err     error

	closeOnce sync.Once
}

type vpend struct {
	complete rdma.Completer
	slot     bool
}

var (
	_ rdma.Conn           = (*conn)(nil)
	_ rdma.AccessSwitcher = (*conn)(nil)
)

// SetRemoteAccess implements rdma.AccessSwitcher by changing the queue
// pair's access flags (what Mu does to switch permission between leaders).
func (c *conn) SetRemoteAccess(allowed bool) error {
	c.postMu.Lock() // keeps Close from freeing the queue pair meanwhile
	defer c.postMu.Unlock()
	if c.rc == nil {
		return rdma.ErrClosed
	}
	flags := 0
	if allowed {
		flags = accessRemoteWrite | accessRemoteRead | accessRemoteAtomic
		if c.nativeFl {
			flags |= accessFlushGlobal | accessFlushPersistent
		}
	}
	if e := C.rp_qp_access(c.rc, C.int(flags)); e != 0 {
		return errnoErr("ibv_modify_qp access flags", e)
	}
	return nil
}

// newConn makes the queue pair of id, trying the extended API (native
// atomic write or flush) first, then the classic one, then without
// inline data.
func (p *peer) newConn(ch *C.struct_rdma_event_channel, id *C.struct_rdma_cm_id) (*conn, error) {
	if C.rp_id_verbs(id) != p.ctx {
		return nil, fmt.Errorf("%w: the address is served by another RDMA device than the peer's", rdma.ErrNoDevice)
	}
	c := &conn{p: p, ch: ch, id: id,
		events:  make(chan rdma.Event, 4),
		dead:    make(chan struct{}),
		stop:    make(chan struct{}),
		slots:   make(chan struct{}, p.cfg.MaxInflight),
		pending: map[uint64]vpend{},
	}
	type try struct {
		ex     bool
		inline int
	}
	var err error
	if c.wakeFd, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
		return nil, fmt.Errorf("rdma/verbs: eventfd: %w", err)
	}
	for _, t := range []try{{true, 64}, {false, 64}, {false, 0}} {
		if t.ex && !p.nativeAtomic && !p.nativeFlush {
			continue
		}
		var ops C.uint64_t
		if t.ex {
			ops = C.rp_ex_ops(cbool(p.nativeAtomic), cbool(p.nativeFlush))
		}
		e := C.rp_conn_new(id, p.pd, C.int(p.depth), ops, C.int(t.inline), &c.rc)
		if e == 0 {
			c.nativeAtom, c.nativeFl, c.inline = t.ex && p.nativeAtomic, t.ex && p.nativeFlush, t.inline > 0
			err = nil
			break
		}
		err = errnoErr("create queue pair", e)
	}
	if err != nil {
		unix.Close(c.wakeFd)
		return nil, err
	}
	c.wr = (*C.struct_rp_wr)(C.calloc(1, C.size_t(unsafe.Sizeof(C.struct_rp_wr{}))))
	c.wc = (*C.struct_rp_wc)(C.calloc(32, C.size_t(unsafe.Sizeof(C.struct_rp_wc{}))))
	if c.scratch, err = rdma.Alloc(scratchSize); err == nil {
		var m rdma.MR
		m, err = p.Register(c.scratch.Bytes(), rdma.UsageSend|rdma.UsageRecv|rdma.UsageReadDst, nil)
		if err == nil {
			c.smr = m.(*mr)
		}
	}
	if err != nil {
		c.id, c.ch = nil, nil // the caller still owns and destroys them
		c.destroy()
		return nil, err
	}
	return c, nil
}

func cbool(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

// destroy frees every resource, the cm id and event channel included
// unless detached (nil); the poller must not run.
func (c *conn) destroy() {
	if c.rc != nil {
		C.rp_conn_free(c.rc)
		c.rc = nil
	}
	if c.id != nil {
		C.rdma_destroy_id(c.id)
		c.id = nil
	}
	if c.ch != nil {
		C.rdma_destroy_event_channel(c.ch)
		c.ch = nil
	}
	if c.smr != nil {
		c.smr.Deregister()
	}
	if c.scratch != nil {
		c.scratch.Free()
	}
	C.free(unsafe.Pointer(c.wr))
	C.free(unsafe.Pointer(c.wc))
	c.wr, c.wc = nil, nil
	if c.wakeFd > 0 {
		unix.Close(c.wakeFd)
		c.wakeFd = -1
	}
}

func (p *peer) Dial(ctx context.Context, addr string) (rdma.Conn, error) {
	ch, err := newEventChannel()
	if err != nil {
		return nil, err
	}
	var id *C.struct_rdma_cm_id
	if e := C.rp_create_id(ch, &id); e != 0 {
		C.rdma_destroy_event_channel(ch)
		return nil, errnoErr("rdma_create_id", e)
	}
	cleanup := func() { C.rdma_destroy_id(id); C.rdma_destroy_event_channel(ch) }
	sa, err := sockaddr(addr)
	if err != nil {
		cleanup()
		return nil, err
	}
	defer C.free(unsafe.Pointer(sa))
	ctx, cancel := context.WithTimeout(ctx, p.cfg.HandshakeTimeout)
	defer cancel()
	if e := C.rp_resolve_addr(id, sa, 2000); e != 0 {
		cleanup()
		return nil, errnoErr("rdma_resolve_addr "+addr, e)
	}
	if _, err := expect(ctx, ch, C.RDMA_CM_EVENT_ADDR_RESOLVED); err != nil {
		cleanup()
		return nil, err
	}
	if e := C.rp_resolve_route(id, 2000); e != 0 {
		cleanup()
		return nil, errnoErr("rdma_resolve_route", e)
	}
	if _, err := expect(ctx, ch, C.RDMA_CM_EVENT_ROUTE_RESOLVED); err != nil {
		cleanup()
		return nil, err
	}
	c, err := p.newConn(ch, id)
	if err != nil {
		cleanup()
		return nil, err
	}
	c.remoteAddr = addr
	c.postHandshakeRecvs()
	if e := C.rp_conn_param(id, 0, C.int(p.rdAtom)); e != 0 {
		c.destroy()
		return nil, errnoErr("rdma_connect", e)
	}
	if _, err := expect(ctx, ch, C.RDMA_CM_EVENT_ESTABLISHED); err != nil {
		c.destroy()
		return nil, err
	}
	return c.handshake(ctx, true)
}

func (p *peer) accept(ctx context.Context, child *C.struct_rdma_cm_id) (rdma.Conn, error) {
	ch, err := newEventChannel()
	if err != nil {
		C.rdma_reject(child, nil, 0)
		C.rdma_destroy_id(child)
		return nil, err
	}
	if e := C.rp_migrate(child, ch); e != 0 {
		C.rdma_reject(child, nil, 0)
		C.rdma_destroy_id(child)
		C.rdma_destroy_event_channel(ch)
		return nil, errnoErr("rdma_migrate_id", e)
	}
	c, err := p.newConn(ch, child)
	if err != nil {
		C.rdma_reject(child, nil, 0)
		C.rdma_destroy_id(child)
		C.rdma_destroy_event_channel(ch)
		return nil, err
	}
	var buf [64]C.char
	if C.rp_peer_addr(child, &buf[0], C.int(len(buf))) == 0 {
		c.remoteAddr = C.GoString(&buf[0])
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.HandshakeTimeout)
	defer cancel()
	c.postHandshakeRecvs()
	if e := C.rp_conn_param(child, 1, C.int(p.rdAtom)); e != 0 {
		c.destroy()
		return nil, errnoErr("rdma_accept", e)
	}
	if _, err := expect(ctx, ch, C.RDMA_CM_EVENT_ESTABLISHED); err != nil {
		c.destroy()
		return nil, err
	}
	if p.cfg.DenyOnAccept {
		if e := C.rp_qp_access(c.rc, 0); e != 0 {
			c.destroy()
			return nil, errnoErr("ibv_modify_qp access flags", e)
		}
	}
	return c.handshake(ctx, false)
}

// postHandshakeRecvs posts the receives of every handshake message this
// side gets, before the connection is made: a SEND that finds no receive
// posted is retried by the sender only after the receiver's RNR timer,
// which rdma_cm leaves at its largest (655 ms), so a handshake that posted
// each receive when it came to read paid that several times and overran
// HandshakeTimeout on SoftRoCE. Messages complete in the order the
// receives were posted (one RC queue pair).
func (c *conn) postHandshakeRecvs() {
	for i := 0; i < hsRecvs; i++ {
		off := scratchRecv + i*msgMax
		c.hsRecv = append(c.hsRecv, c.post(rdma.OpRecv, false, func(w *C.struct_rp_wr) {
			c.local(w, C.RP_RECV, c.smr, off, msgMax)
		}))
	}
}

// handshake starts the poller and runs package hs over SEND/RECV.
func (c *conn) handshake(ctx context.Context, client bool) (rdma.Conn, error) {
	// Receives the application posts late cost the sender the RNR timer
	// rdma_cm set (655 ms); a short one keeps a late receive cheap. Best
	// effort: the IB spec allows it from RTS to RTS, and a device that
	// refuses it only makes late receives slow, not wrong.
	C.rp_qp_rnr_timer(c.rc, rnrTimer)
	c.wg.Add(1)
	go func() { defer c.wg.Done(); c.poll() }()
	rw := &msgRW{c: c, ctx: ctx}
	mine := hs.NewHello(rdma.ProviderVerbs, c.p.caps(), c.p.cfg)
	var (
		remote hs.Hello
		err    error
	)
	if client {
		remote, err = hs.Client(rw, c.p.cfg.Secret, mine)
	} else {
		remote, err = hs.Server(rw, c.p.cfg.Secret, mine)
	}
	if err == nil && remote.Provider != rdma.ProviderVerbs {
		err = fmt.Errorf("%w: peer runs provider %d", rdma.ErrHandshake, remote.Provider)
	}
	if err == nil {
		err = c.p.track(c)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	c.remote = remote.Info("verbs")
	c.events <- rdma.Event{Kind: rdma.Established}
	return c, nil
}

// rnrTimer is the queue pair's min_rnr_timer once connected: IB encoding
// 6, 0.12 ms, what a sender waits before retrying a SEND that found no
// receive posted (rnr_retry_count 7: without end).
const rnrTimer = 6

// msgRW carries the handshake as one message per Write and per Read; the
// reads take the receives of postHandshakeRecvs in order.
type msgRW struct {
	c     *conn
	ctx   context.Context
	nread int
}

func (m *msgRW) Write(b []byte) (int, error) {
	if len(b) > msgMax {
		return 0, rdma.ErrTooLarge
	}
	copy(m.c.scratch.Bytes()[scratchSend:], b)
	op := m.c.post(rdma.OpSend, true, func(w *C.struct_rp_wr) {
		m.c.local(w, C.RP_SEND, m.c.smr, scratchSend, len(b))
	})
	if err := op.Wait(m.ctx); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (m *msgRW) Read(b []byte) (int, error) {
	if m.nread >= len(m.c.hsRecv) {
		return 0, fmt.Errorf("%w: more handshake messages than receives posted", rdma.ErrHandshake)
	}
	op := m.c.hsRecv[m.nread]
	off := scratchRecv + m.nread*msgMax
	m.nread++
	if err := op.Wait(m.ctx); err != nil {
		return 0, err
	}
	return copy(b, m.c.scratch.Bytes()[off:off+op.Len()]), nil
}

func (c *conn) local(w *C.struct_rp_wr, kind C.uint32_t, m *mr, off, n int) {
	w.kind = kind
	w.laddr = C.uint64_t(m.addr() + uint64(off))
	w.len = C.uint32_t(n)
	w.lkey = C.uint32_t(m.lkey)
}

func remoteWR(w *C.struct_rp_wr, d rdma.Descriptor, off int) {
	w.raddr = C.uint64_t(d.Addr + uint64(off))
	w.rkey = C.uint32_t(d.Key)
}

// post posts one work request filled by fill. Ops that use the send queue
// take an in-flight slot.
func (c *conn) post(kind rdma.OpKind, slot bool, fill func(w *C.struct_rp_wr)) *rdma.Op {
	op, complete := rdma.NewOp(kind)
	if slot {
		select {
		case c.slots <- struct{}{}:
		case <-c.dead:
			complete(0, c.failedErr())
			return op
		}
	}
	c.postMu.Lock()
	defer c.postMu.Unlock()
	c.pendMu.Lock()
	if c.failed {
		c.pendMu.Unlock()
		if slot {
			<-c.slots
		}
		complete(0, c.failedErr())
		return op
	}
	c.nextID++
	id := c.nextID
	c.pending[id] = vpend{complete: complete, slot: slot}
	c.pendMu.Unlock()
	*c.wr = C.struct_rp_wr{}
	fill(c.wr)
	c.wr.wr_id = C.uint64_t(id)
	if e := C.rp_post(c.rc, c.wr); e != 0 {
		err := fmt.Errorf("%w: %v", rdma.ErrConnLost, errnoErr("post work request", e))
		c.take(id, err)
		c.fail(err)
	}
	return op
}

// take completes pending Op id with err (nil: success, n bytes).
func (c *conn) take(id uint64, err error) {
	c.takeN(id, 0, err)
}

func (c *conn) takeN(id uint64, n int, err error) {
	c.pendMu.Lock()
	p, ok := c.pending[id]
	delete(c.pending, id)
	c.pendMu.Unlock()
	if !ok {
		return // completed by fail already (a flushed work request)
	}
	p.complete(n, err)
	if p.slot {
		<-c.slots
	}
}

func (c *conn) failedErr() error {
	c.pendMu.Lock()
	defer c.pendMu.Unlock()
	if errors.Is(c.err, rdma.ErrClosed) {
		return c.err
	}
	return fmt.Errorf("%w: %w", rdma.ErrPoisoned, c.err)
}

// fail puts the Conn in the error state (first cause wins): it
// disconnects, which moves the queue pair to the error state, and
// completes every pending Op.
func (c *conn) fail(cause error) {
	c.pendMu.Lock()
	if c.failed {
		c.pendMu.Unlock()
		return
	}
	c.failed, c.err = true, cause
	pending := c.pending
	c.pending = map[uint64]vpend{}
	c.pendMu.Unlock()
	close(c.dead)
	C.rdma_disconnect(c.id)
	opErr := cause
	if !errors.Is(cause, rdma.ErrClosed) {
		opErr = fmt.Errorf("%w: %w", rdma.ErrPoisoned, cause)
	}
	for _, p := range pending {
		p.complete(0, opErr)
		if p.slot {
			<-c.slots
		}
	}
	ev := rdma.Event{Kind: rdma.Lost, Err: cause}
	if errors.Is(cause, rdma.ErrClosed) {
		ev = rdma.Event{Kind: rdma.Closed}
	}
	select {
	case c.events <- ev:
	default:
	}
}

// wcErr maps a completion status to the error of its Op.
func wcErr(status, vendor uint32) error {
	name := C.GoString(C.ibv_wc_status_str(C.enum_ibv_wc_status(status)))
	switch status {
	case C.IBV_WC_REM_ACCESS_ERR, C.IBV_WC_REM_INV_REQ_ERR, C.IBV_WC_LOC_PROT_ERR:
		return fmt.Errorf("%w: %s", rdma.ErrRemoteAccess, name)
	case C.IBV_WC_REM_OP_ERR:
		return fmt.Errorf("%w: %s", rdma.ErrRemoteFailure, name)
	case C.IBV_WC_LOC_LEN_ERR:
		return fmt.Errorf("%w: %s", rdma.ErrTooLarge, name)
	}
	return fmt.Errorf("%w: %s (vendor error %#x)", rdma.ErrConnLost, name, vendor)
}

// poll is the poller goroutine: completions and connection events. It
// sleeps in poll(2) on the completion channel, the event channel and the
// wake eventfd, which Close writes.
func (c *conn) poll() {
	fds := []unix.PollFd{
		{Fd: int32(C.rp_comp_fd(c.rc)), Events: unix.POLLIN},
		{Fd: int32(C.rp_ech_fd(c.ch)), Events: unix.POLLIN},
		{Fd: int32(c.wakeFd), Events: unix.POLLIN},
	}
	wcs := unsafe.Slice(c.wc, 32)
	for {
		select {
		case <-c.stop:
			return
		default:
		}
		unix.Poll(fds, -1) // EINTR: just go round
		for {
			n := int(C.rp_poll(c.rc, c.wc, 32))
			for i := 0; i < n; i++ {
				wc := wcs[i]
				if wc.status == C.IBV_WC_SUCCESS {
					c.takeN(uint64(wc.wr_id), int(wc.byte_len), nil)
					continue
				}
				if wc.status == C.IBV_WC_WR_FLUSH_ERR {
					c.take(uint64(wc.wr_id), fmt.Errorf("%w: flushed", rdma.ErrPoisoned))
					continue
				}
				err := wcErr(uint32(wc.status), uint32(wc.vendor_err))
				c.take(uint64(wc.wr_id), err)
				c.fail(err)
			}
			if n < 32 {
				break
			}
		}
		var typ, status C.int
		var id *C.struct_rdma_cm_id
		if C.rp_event(c.ch, &typ, &status, &id) == 0 {
			switch typ {
			case C.RDMA_CM_EVENT_DISCONNECTED, C.RDMA_CM_EVENT_DEVICE_REMOVAL, C.RDMA_CM_EVENT_TIMEWAIT_EXIT:
				c.fail(fmt.Errorf("%w: %s", rdma.ErrConnLost, C.GoString(C.rdma_event_str(C.enum_rdma_cm_event_type(typ)))))
			}
		}
	}
}

func (c *conn) Remote() rdma.PeerInfo     { return c.remote }
func (c *conn) RemoteAddr() string        { return c.remoteAddr }
func (c *conn) Events() <-chan rdma.Event { return c.events }

func (c *conn) Err() error {
	c.pendMu.Lock()
	defer c.pendMu.Unlock()
	return c.err
}

func (c *conn) Close() error {
	c.closeOnce.Do(func() {
		c.fail(rdma.ErrClosed)
		close(c.stop)
		var one [8]byte
		one[0] = 1 // eventfd counters are host-endian; any non-zero value wakes
		unix.Write(c.wakeFd, one[:])
		c.wg.Wait()
		c.p.forget(c)
		// A post that passed its failed check before fail may still be
		// inside rp_post: postMu keeps destroy from freeing under it.
		c.postMu.Lock()
		c.destroy()
		c.postMu.Unlock()
	})
	return nil
}

// localMR checks that m is a registration of this Conn's peer.
func (c *conn) localMR(m rdma.MR, off, n int, need rdma.Usage) (*mr, error) {
	if err := rdma.CheckLocal(m, off, n, need); err != nil {
		return nil, err
	}
	vm, ok := m.(*mr)
	if !ok || vm.p != c.p {
		return nil, fmt.Errorf("%w: local registration of another peer", rdma.ErrUsage)
	}
	return vm, nil
}

func (c *conn) Write(dst rdma.Descriptor, dstOff int, src rdma.MR, srcOff, n int) *rdma.Op {
	if err := rdma.CheckRemote(dst, rdma.ProviderVerbs, dstOff, n, rdma.UsageWriteDst); err != nil {
		return rdma.FailedOp(rdma.OpWrite, err)
	}
	lm, err := c.localMR(src, srcOff, n, rdma.UsageWriteSrc)
	if err != nil {
		return rdma.FailedOp(rdma.OpWrite, err)
	}
	if n > c.p.cfg.MaxTransfer {
		return rdma.FailedOp(rdma.OpWrite, rdma.ErrTooLarge)
	}
	return c.post(rdma.OpWrite, true, func(w *C.struct_rp_wr) {
		c.local(w, C.RP_WRITE, lm, srcOff, n)
		remoteWR(w, dst, dstOff)
	})
}

func (c *conn) Read(dst rdma.MR, dstOff int, src rdma.Descriptor, srcOff, n int) *rdma.Op {
	if err := rdma.CheckRemote(src, rdma.ProviderVerbs, srcOff, n, rdma.UsageReadSrc); err != nil {
		return rdma.FailedOp(rdma.OpRead, err)
	}
	lm, err := c.localMR(dst, dstOff, n, rdma.UsageReadDst)
	if err != nil {
		return rdma.FailedOp(rdma.OpRead, err)
	}
	if n > c.p.cfg.MaxTransfer {
		return rdma.FailedOp(rdma.OpRead, rdma.ErrTooLarge)
	}
	return c.post(rdma.OpRead, true, func(w *C.struct_rp_wr) {
		c.local(w, C.RP_READ, lm, dstOff, n)
		remoteWR(w, src, srcOff)
	})
}

func (c *conn) AtomicWrite(dst rdma.Descriptor, dstOff int, v [8]byte) *rdma.Op {
	if dstOff%8 != 0 || (dst.Addr+uint64(dstOff))%8 != 0 {
		return rdma.FailedOp(rdma.OpAtomicWrite, fmt.Errorf("%w: offset %d", rdma.ErrAlign, dstOff))
	}
	if err := rdma.CheckRemote(dst, rdma.ProviderVerbs, dstOff, 8, rdma.UsageAtomicWrite); err != nil {
		return rdma.FailedOp(rdma.OpAtomicWrite, err)
	}
	kind := C.uint32_t(C.RP_ATOMIC)
	if !c.nativeAtom || c.remote.Caps&rdma.CapNativeAtomicWrite == 0 { // both ends must have it
		if !c.inline {
			return rdma.FailedOp(rdma.OpAtomicWrite, fmt.Errorf("%w: device has neither atomic write nor inline data", rdma.ErrUsage))
		}
		kind = C.RP_FENCED_WRITE8
	}
	return c.post(rdma.OpAtomicWrite, true, func(w *C.struct_rp_wr) {
		w.kind = kind
		w.value = C.uint64_t(binary.NativeEndian.Uint64(v[:])) // the same 8 bytes in memory
		remoteWR(w, dst, dstOff)
	})
}

// IBV_FLUSH_GLOBAL and IBV_FLUSH_PERSISTENT (rdma-core 45).
const (
	flushGlobal     = 1
	flushPersistent = 2
)

func (c *conn) Flush(dst rdma.Descriptor, off, n int, t rdma.FlushType) *rdma.Op {
	if err := rdma.CheckFlush(dst, rdma.ProviderVerbs, c.remote, off, n, t); err != nil {
		return rdma.FailedOp(rdma.OpFlush, err)
	}
	ft := flushGlobal
	if t == rdma.Persistence {
		ft = flushPersistent
	}
	if c.nativeFl && c.remote.Caps&rdma.CapNativeFlush != 0 {
		return c.post(rdma.OpFlush, true, func(w *C.struct_rp_wr) {
			w.kind = C.RP_FLUSH
			w.len = C.uint32_t(n)
			w.flush_type = C.uint32_t(ft)
			remoteWR(w, dst, off)
		})
	}
	// Read after write: an RDMA READ completes only after every earlier
	// RDMA WRITE on the queue pair has been placed at the target.
	rn := min(n, 8)
	return c.post(rdma.OpFlush, true, func(w *C.struct_rp_wr) {
		c.local(w, C.RP_READ, c.smr, scratchSink, rn)
		remoteWR(w, dst, off)
	})
}

func (c *conn) Send(src rdma.MR, off, n int) *rdma.Op {
	lm, err := c.localMR(src, off, n, rdma.UsageSend)
	if err != nil {
		return rdma.FailedOp(rdma.OpSend, err)
	}
	if n > c.remote.MaxMessage {
		return rdma.FailedOp(rdma.OpSend, fmt.Errorf("%w: message of %d bytes, peer takes %d", rdma.ErrTooLarge, n, c.remote.MaxMessage))
	}
	return c.post(rdma.OpSend, true, func(w *C.struct_rp_wr) { c.local(w, C.RP_SEND, lm, off, n) })
}

func (c *conn) Recv(dst rdma.MR, off, n int) *rdma.Op {
	lm, err := c.localMR(dst, off, n, rdma.UsageRecv)
	if err != nil {
		return rdma.FailedOp(rdma.OpRecv, err)
	}
	return c.post(rdma.OpRecv, false, func(w *C.struct_rp_wr) { c.local(w, C.RP_RECV, lm, off, n) })
}
