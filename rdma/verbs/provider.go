//go:build verbs && cgo

package verbs

/*
#include "rp_verbs.h"
*/
import "C"

import (
	"context"
	"fmt"
	"net"
	"sync"
	"unsafe"

	"github.com/rpstream/rpstream/rdma"
)

// Provider is the verbs provider.
type Provider struct{}

var _ rdma.Provider = Provider{}

// Name implements rdma.Provider.
func (Provider) Name() string { return "verbs" }

// NewPeer implements rdma.Provider: it opens the device that serves the
// local IP addr (the first device when addr is "") and allocates a
// protection domain on it.
func (Provider) NewPeer(addr string, cfg rdma.Config) (rdma.Peer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := Check(); err != nil {
		return nil, err
	}
	cfg.Secret = append([]byte(nil), cfg.Secret...)
	p := &peer{cfg: cfg, mrs: map[*mr]struct{}{}, conns: map[*conn]struct{}{}, lns: map[*listener]struct{}{}}
	if addr == "" {
		var e C.int
		p.ctx = C.rp_first_device(&e)
		if p.ctx == nil {
			return nil, fmt.Errorf("%w: %v", rdma.ErrNoDevice, errnoErr("rdma_get_devices", e))
		}
	} else {
		// Bind a throw-away id to the address: rdma_cm finds the device.
		ch, err := newEventChannel()
		if err != nil {
			return nil, err
		}
		defer C.rdma_destroy_event_channel(ch)
		var id *C.struct_rdma_cm_id
		if e := C.rp_create_id(ch, &id); e != 0 {
			return nil, errnoErr("rdma_create_id", e)
		}
		defer C.rdma_destroy_id(id)
		sa, err := sockaddr(net.JoinHostPort(addr, "0"))
		if err != nil {
			return nil, err
		}
		defer C.free(unsafe.Pointer(sa))
		if e := C.rp_bind(id, sa); e != 0 {
			return nil, fmt.Errorf("%w: %s is not an address of an RDMA device: %v", rdma.ErrNoDevice, addr, errnoErr("rdma_bind_addr", e))
		}
		p.ctx = C.rp_id_verbs(id)
		if p.ctx == nil {
			return nil, fmt.Errorf("%w: %s has no RDMA device", rdma.ErrNoDevice, addr)
		}
	}
	var caps C.struct_rp_caps
	if e := C.rp_query(p.ctx, &caps); e != 0 {
		p.closeCtx()
		return nil, errnoErr("ibv_query_device_ex", e)
	}
	flags := uint64(caps.flags_ex)
	p.nativeAtomic = haveAtomicWrite && flags&devAtomicWrite != 0
	p.nativeFlush = haveFlush && flags&devFlushGlobal != 0 && flags&devFlushPersistent != 0
	p.depth = min(cfg.MaxInflight+cfg.RecvQueue+4, int(caps.max_qp_wr))
	p.rdAtom = max(1, min(16, int(caps.max_rd_atom), int(caps.max_init_rd_atom)))
	p.pd = C.ibv_alloc_pd(p.ctx)
	if p.pd == nil {
		p.closeCtx()
		return nil, fmt.Errorf("rdma/verbs: ibv_alloc_pd failed")
	}
	return p, nil
}

type peer struct {
	cfg          rdma.Config
	ctx          *C.struct_ibv_context // librdmacm's: it stays open for the process
	pd           *C.struct_ibv_pd
	nativeAtomic bool
	nativeFlush  bool
	depth        int // send and receive queue depth
	rdAtom       int // RDMA READs in flight per direction

	mu     sync.Mutex // guards the fields below
	mrs    map[*mr]struct{}
	conns  map[*conn]struct{}
	lns    map[*listener]struct{}
	closed bool
}

var _ rdma.Peer = (*peer)(nil)

func (p *peer) closeCtx() { p.ctx = nil }

func (p *peer) caps() rdma.Caps {
	var c rdma.Caps
	if p.nativeFlush {
		c |= rdma.CapNativeFlush
	}
	if p.nativeAtomic {
		c |= rdma.CapNativeAtomicWrite
	}
	return c
}

type mr struct {
	p     *peer
	mem   []byte
	usage rdma.Usage
	mr    *C.struct_ibv_mr
	lkey  uint32
	rkey  uint32

	mu   sync.Mutex
	dead bool
}

var _ rdma.MR = (*mr)(nil)

// Register implements rdma.Peer. mem must be outside the Go heap
// (rdma.Alloc, a pmem mapping): the NIC keeps its address. The Persister
// is not used: with verbs the target's CPU takes no part in a flush, which
// is why a persistence flush needs the target's DirectWriteToPmem.
func (p *peer) Register(mem []byte, usage rdma.Usage, _ rdma.Persister) (rdma.MR, error) {
	if len(mem) == 0 {
		return nil, fmt.Errorf("%w: register an empty range", rdma.ErrBounds)
	}
	if usage == 0 || usage&^rdma.AllUsage != 0 {
		return nil, fmt.Errorf("%w: usage %#x", rdma.ErrUsage, uint32(usage))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, rdma.ErrClosed
	}
	var e C.int
	// The address crosses as an integer: the memory is not Go's.
	m := C.rp_reg_mr(p.pd, C.uintptr_t(uintptr(unsafe.Pointer(unsafe.SliceData(mem)))), C.size_t(len(mem)),
		accessFor(usage, p.nativeFlush), &e)
	if m == nil {
		return nil, errnoErr("ibv_reg_mr", e)
	}
	r := &mr{p: p, mem: mem, usage: usage, mr: m, lkey: uint32(C.rp_mr_lkey(m)), rkey: uint32(C.rp_mr_rkey(m))}
	p.mrs[r] = struct{}{}
	return r, nil
}

func (m *mr) Bytes() []byte     { return m.mem }
func (m *mr) Usage() rdma.Usage { return m.usage }
func (m *mr) addr() uint64      { return uint64(uintptr(unsafe.Pointer(unsafe.SliceData(m.mem)))) }

func (m *mr) Descriptor() rdma.Descriptor {
	return rdma.Descriptor{Provider: rdma.ProviderVerbs, Usage: m.usage & rdma.RemoteUsage,
		Addr: m.addr(), Len: uint64(len(m.mem)), Key: uint64(m.rkey)}
}

func (m *mr) Deregister() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.dead {
		return rdma.ErrRegistered
	}
	m.dead = true
	m.p.mu.Lock()
	delete(m.p.mrs, m)
	m.p.mu.Unlock()
	if e := C.ibv_dereg_mr(m.mr); e != 0 {
		return errnoErr("ibv_dereg_mr", e)
	}
	return nil
}

func (p *peer) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return rdma.ErrClosed
	}
	p.closed = true
	conns, lns, mrs := p.conns, p.lns, p.mrs
	p.conns, p.lns, p.mrs = map[*conn]struct{}{}, map[*listener]struct{}{}, map[*mr]struct{}{}
	p.mu.Unlock()
	for l := range lns {
		l.Close()
	}
	for c := range conns {
		c.Close()
	}
	for m := range mrs {
		m.Deregister()
	}
	C.ibv_dealloc_pd(p.pd)
	p.closeCtx()
	return nil
}

func (p *peer) forget(c *conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

func (p *peer) track(c *conn) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return rdma.ErrClosed
	}
	p.conns[c] = struct{}{}
	return nil
}

// maxHandshakes bounds the handshakes a listener runs at once, and the
// connections it holds for Accept.
const maxHandshakes = 64

// listener owns an accept-loop goroutine, which takes connection requests
// off the event channel, and one goroutine per handshake in progress (at
// most maxHandshakes), so that a silent client delays no one but itself.
// Close stops them and waits before it frees the cm id and channel.
type listener struct {
	p      *peer
	ch     *C.struct_rdma_event_channel
	id     *C.struct_rdma_cm_id
	addr   string
	ready  chan accepted
	slots  chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

type accepted struct {
	c   rdma.Conn
	err error
}

var _ rdma.Listener = (*listener)(nil)

func (p *peer) Listen(ctx context.Context, addr string) (rdma.Listener, error) {
	ch, err := newEventChannel()
	if err != nil {
		return nil, err
	}
	l := &listener{p: p, ch: ch, ready: make(chan accepted, maxHandshakes), slots: make(chan struct{}, maxHandshakes)}
	fail := func(err error) (rdma.Listener, error) {
		if l.id != nil {
			C.rdma_destroy_id(l.id)
		}
		C.rdma_destroy_event_channel(ch)
		return nil, err
	}
	if e := C.rp_create_id(ch, &l.id); e != 0 {
		return fail(errnoErr("rdma_create_id", e))
	}
	sa, err := sockaddr(addr)
	if err != nil {
		return fail(err)
	}
	defer C.free(unsafe.Pointer(sa))
	if e := C.rp_bind(l.id, sa); e != 0 {
		return fail(errnoErr("rdma_bind_addr "+addr, e))
	}
	if e := C.rp_listen(l.id, 64); e != 0 {
		return fail(errnoErr("rdma_listen", e))
	}
	host, _, _ := net.SplitHostPort(addr)
	l.addr = net.JoinHostPort(host, portOf(l.id))
	l.ctx, l.cancel = context.WithCancel(context.Background())
	p.mu.Lock()
	p.lns[l] = struct{}{}
	p.mu.Unlock()
	l.wg.Add(1)
	go func() { defer l.wg.Done(); l.acceptLoop() }()
	return l, nil
}

func (l *listener) Addr() string { return l.addr }

func (l *listener) acceptLoop() {
	for {
		select {
		case l.slots <- struct{}{}:
		case <-l.ctx.Done():
			return
		}
		var child *C.struct_rdma_cm_id
		for child == nil {
			ev, err := waitEvent(l.ctx, l.ch) // polls, so that cancel is seen
			if err != nil {
				<-l.slots
				return
			}
			if ev.typ == C.RDMA_CM_EVENT_CONNECT_REQUEST {
				child = ev.id
			}
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			c, err := l.p.accept(l.ctx, child)
			select {
			case l.ready <- accepted{c, err}:
			case <-l.ctx.Done():
				if c != nil {
					c.Close()
				}
				<-l.slots
			}
		}()
	}
}

// Accept implements rdma.Listener: the next connection whose handshake
// finished, or the next handshake failure.
func (l *listener) Accept(ctx context.Context) (rdma.Conn, error) {
	select {
	case a := <-l.ready:
		<-l.slots
		return a.c, a.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-l.ctx.Done():
		return nil, rdma.ErrClosed
	}
}

// Close stops accepting, closes the connections not yet returned by Accept
// and waits for the listener's goroutines. Accepted Conns stay open.
func (l *listener) Close() error {
	l.once.Do(func() {
		l.p.mu.Lock()
		delete(l.p.lns, l)
		l.p.mu.Unlock()
		l.cancel()
		l.wg.Wait()
		for {
			select {
			case a := <-l.ready:
				if a.c != nil {
					a.c.Close()
				}
				continue
			default:
			}
			break
		}
		C.rdma_destroy_id(l.id)
		C.rdma_destroy_event_channel(l.ch)
	})
	return nil
}
