package tcp

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/rpstream/rpstream/rdma"
	"github.com/rpstream/rpstream/rdma/internal/hs"
)

// Provider is the tcp provider.
type Provider struct{}

var _ rdma.Provider = Provider{}

// Name implements rdma.Provider.
func (Provider) Name() string { return "tcp" }

// NewPeer implements rdma.Provider. addr is ignored: there is no device.
func (Provider) NewPeer(addr string, cfg rdma.Config) (rdma.Peer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Secret = append([]byte(nil), cfg.Secret...)
	return &peer{cfg: cfg, mrs: map[uint64]*mr{}, links: map[string]*link{}, dialing: map[string]*dialing{},
		all: map[*link]struct{}{}, lns: map[*listener]struct{}{}}, nil
}

// caps is what a tcp peer declares: its CPU runs the persister.
const caps = rdma.CapPersistOnFlush

// A peer keeps one link (one TCP connection and its handshake) per
// address it dials, and carries every Conn to that address on it, each on
// a channel of its own (link.go): a node replicating thousands of streams
// to another holds one socket to it, not one per stream.
type peer struct {
	cfg rdma.Config

	mu      sync.Mutex // guards the fields below
	mrs     map[uint64]*mr
	links   map[string]*link    // dialled links in use, by address
	dialing map[string]*dialing // handshakes in progress, by address
	all     map[*link]struct{}  // every link whose goroutines run
	lns     map[*listener]struct{}
	closed  bool
}

// dialing is a link being dialled; Dials to the same address wait for it.
type dialing struct {
	done chan struct{}
	l    *link
	err  error
}

var _ rdma.Peer = (*peer)(nil)

type mr struct {
	p     *peer
	mem   []byte
	usage rdma.Usage
	pers  rdma.Persister
	key   uint64

	// use is read-locked while a request of a peer touches mem (for a read
	// response, until the writer has sent it); Deregister write-locks it.
	use  sync.RWMutex
	dead bool // guarded by use
}

var _ rdma.MR = (*mr)(nil)

func (p *peer) Register(mem []byte, usage rdma.Usage, pers rdma.Persister) (rdma.MR, error) {
	switch {
	case len(mem) == 0:
		return nil, fmt.Errorf("%w: register an empty range", rdma.ErrBounds)
	case usage == 0 || usage&^rdma.AllUsage != 0:
		return nil, fmt.Errorf("%w: usage %#x", rdma.ErrUsage, uint32(usage))
	case usage&rdma.UsageFlushPersistence != 0 && pers == nil:
		return nil, fmt.Errorf("%w: UsageFlushPersistence needs a Persister with the tcp provider", rdma.ErrUsage)
	}
	m := &mr{p: p, mem: mem, usage: usage, pers: pers}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, rdma.ErrClosed
	}
	for m.key == 0 || p.mrs[m.key] != nil {
		var b [8]byte
		rand.Read(b[:])
		m.key = binary.LittleEndian.Uint64(b[:])
	}
	p.mrs[m.key] = m
	return m, nil
}

// lookup returns the registration with key, read-locked; the caller
// releases it with m.use.RUnlock.
func (p *peer) lookup(key uint64) *mr {
	p.mu.Lock()
	m := p.mrs[key]
	p.mu.Unlock()
	if m == nil {
		return nil
	}
	m.use.RLock()
	if m.dead {
		m.use.RUnlock()
		return nil
	}
	return m
}

func (m *mr) Bytes() []byte     { return m.mem }
func (m *mr) Usage() rdma.Usage { return m.usage }

func (m *mr) Descriptor() rdma.Descriptor {
	return rdma.Descriptor{Provider: rdma.ProviderTCP, Usage: m.usage & rdma.RemoteUsage,
		Len: uint64(len(m.mem)), Key: m.key}
}

func (m *mr) Deregister() error {
	m.use.Lock()
	defer m.use.Unlock()
	if m.dead {
		return rdma.ErrRegistered
	}
	m.dead = true
	m.p.mu.Lock()
	delete(m.p.mrs, m.key)
	m.p.mu.Unlock()
	return nil
}

func (p *peer) Listen(ctx context.Context, addr string) (rdma.Listener, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("rdma/tcp: listen: %w", err)
	}
	l := &listener{p: p, ln: ln.(*net.TCPListener),
		slots: make(chan struct{}, maxHandshakes), notify: make(chan struct{}, 1)}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		ln.Close()
		return nil, rdma.ErrClosed
	}
	p.lns[l] = struct{}{}
	p.mu.Unlock()
	l.wg.Add(1)
	go func() { defer l.wg.Done(); l.acceptLoop() }()
	return l, nil
}

// Dial opens a Conn to addr: a new channel on the link to addr, dialled
// (with its handshake) if there is none. Concurrent Dials to an address
// share one handshake.
func (p *peer) Dial(ctx context.Context, addr string) (rdma.Conn, error) {
	for range 3 {
		l, err := p.link(ctx, addr)
		if err != nil {
			return nil, err
		}
		c, err := l.open()
		if err == errLinkGone {
			continue // it closed meanwhile: dial a new one
		}
		if err != nil {
			return nil, err
		}
		return c, nil
	}
	return nil, fmt.Errorf("%w: connection to %s kept closing while opening a channel", rdma.ErrConnLost, addr)
}

// link returns the link to addr, dialling it if there is none.
func (p *peer) link(ctx context.Context, addr string) (*link, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, rdma.ErrClosed
	}
	if l := p.links[addr]; l != nil {
		p.mu.Unlock()
		return l, nil
	}
	if d := p.dialing[addr]; d != nil {
		p.mu.Unlock()
		select {
		case <-d.done:
			return d.l, d.err
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w", rdma.ErrHandshake, ctx.Err())
		}
	}
	d := &dialing{done: make(chan struct{})}
	p.dialing[addr] = d
	p.mu.Unlock()
	d.l, d.err = p.dial(ctx, addr)
	p.mu.Lock()
	delete(p.dialing, addr)
	if d.err == nil {
		d.l.addr = addr
		p.links[addr] = d.l
	}
	p.mu.Unlock()
	close(d.done)
	return d.l, d.err
}

func (p *peer) dial(ctx context.Context, addr string) (*link, error) {
	var dd net.Dialer
	nc, err := dd.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("rdma/tcp: dial: %w", err)
	}
	return p.handshake(ctx, nc, nil)
}

// dropLink forgets l as the link to its address (it is closing): the
// next Dial to the address dials a new one.
func (p *peer) dropLink(l *link) {
	p.mu.Lock()
	if l.addr != "" && p.links[l.addr] == l {
		delete(p.links, l.addr)
	}
	p.mu.Unlock()
}

// linkDone forgets l once its goroutines have exited.
func (p *peer) linkDone(l *link) {
	p.mu.Lock()
	delete(p.all, l)
	p.mu.Unlock()
}

// handshake runs the handshake on nc and starts a link on it: the
// dialling side's when ln is nil, else one accepted by ln.
func (p *peer) handshake(ctx context.Context, nc net.Conn, ln *listener) (*link, error) {
	client := ln == nil
	deadline := time.Now().Add(p.cfg.HandshakeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	nc.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	// With TLS, the hello goes inside the TLS session and the frames
	// after it in records sealed under keys exported from it (seal.go);
	// hc is what the hello runs over.
	var (
		hc         io.ReadWriter = nc
		tc         *tls.Conn
		send, recv *aeadState
	)
	if p.cfg.TLS != nil {
		rr := &recordReader{Conn: nc}
		if client {
			tc = tls.Client(rr, p.cfg.TLS)
		} else {
			tc = tls.Server(rr, p.cfg.TLS)
		}
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, fmt.Errorf("%w: TLS with %s: %w", rdma.ErrAuth, nc.RemoteAddr(), err)
		}
		hc = tc
	}
	mine := hs.NewHello(rdma.ProviderTCP, caps, p.cfg)
	var (
		remote hs.Hello
		err    error
	)
	if client {
		remote, err = hs.Client(hc, p.cfg.Secret, mine)
	} else {
		remote, err = hs.Server(hc, p.cfg.Secret, mine)
	}
	if err == nil && remote.Provider != rdma.ProviderTCP {
		err = fmt.Errorf("%w: peer runs provider %d", rdma.ErrHandshake, remote.Provider)
	}
	if err == nil && tc != nil {
		if send, recv, err = sealKeys(tc, client); err != nil {
			err = fmt.Errorf("%w: TLS with %s: %w", rdma.ErrAuth, nc.RemoteAddr(), err)
		}
	}
	if err == nil && !stop() {
		err = fmt.Errorf("%w: %w", rdma.ErrHandshake, ctx.Err())
	}
	if err != nil {
		nc.Close()
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		nc.Close()
		return nil, rdma.ErrClosed
	}
	l := newLink(p, nc, remote, send, recv, ln)
	p.all[l] = struct{}{}
	p.mu.Unlock()
	return l, nil
}

func (p *peer) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return rdma.ErrClosed
	}
	p.closed = true
	lns, mrs := p.lns, p.mrs
	p.lns = map[*listener]struct{}{}
	all := make([]*link, 0, len(p.all))
	for l := range p.all {
		all = append(all, l)
	}
	p.mu.Unlock()
	for l := range lns {
		l.Close()
	}
	for _, l := range all {
		l.fail(rdma.ErrClosed)
	}
	for _, l := range all {
		<-l.done
	}
	for _, m := range mrs {
		m.Deregister()
	}
	return nil
}

// maxHandshakes bounds the handshakes a listener runs at once.
const maxHandshakes = 64

// maxQueued bounds the handshake failures a listener keeps for Accept
// (later ones are dropped: a flood of bad peers must not grow memory).
const maxQueued = 1024

// listener owns an accept-loop goroutine and one goroutine per handshake
// in progress (at most maxHandshakes), so that a peer that connects and
// stays silent delays no one but itself. Each handshake makes a link; the
// channels its dialler opens on it are queued for Accept. Close stops and
// waits for the goroutines.
type listener struct {
	p      *peer
	ln     *net.TCPListener
	slots  chan struct{} // one token per handshake in progress
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	mu     sync.Mutex // guards the fields below
	queue  []accepted // channels opened and handshake failures, for Accept
	failed int        // handshake failures in queue
	closed bool
	notify chan struct{} // one token while queue may be non-empty
}

type accepted struct {
	c   *conn
	err error
}

var _ rdma.Listener = (*listener)(nil)

func (l *listener) Addr() string { return l.ln.Addr().String() }

// push queues a for Accept; false if the listener is closed.
func (l *listener) push(a accepted) bool {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false
	}
	if a.err != nil {
		if l.failed >= maxQueued {
			l.mu.Unlock()
			return true
		}
		l.failed++
	}
	l.queue = append(l.queue, a)
	l.mu.Unlock()
	select {
	case l.notify <- struct{}{}:
	default:
	}
	return true
}

// deliver queues a channel a peer opened for Accept; false if the
// listener is closed (the caller closes the channel).
func (l *listener) deliver(c *conn) bool { return l.push(accepted{c: c}) }

func (l *listener) acceptLoop() {
	for {
		select {
		case l.slots <- struct{}{}:
		case <-l.ctx.Done():
			return
		}
		nc, err := l.ln.Accept()
		if err != nil {
			<-l.slots
			if l.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Transient (out of file descriptors): back off a little.
			select {
			case <-time.After(10 * time.Millisecond):
			case <-l.ctx.Done():
				return
			}
			continue
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer func() { <-l.slots }()
			if _, err := l.p.handshake(l.ctx, nc, l); err != nil {
				l.push(accepted{err: err})
			}
		}()
	}
}

// Accept implements rdma.Listener: it returns the next channel a peer
// opened, or the next handshake failure.
func (l *listener) Accept(ctx context.Context) (rdma.Conn, error) {
	for {
		l.mu.Lock()
		if len(l.queue) > 0 {
			a := l.queue[0]
			l.queue[0] = accepted{}
			l.queue = l.queue[1:]
			if a.err != nil {
				l.failed--
			}
			more := len(l.queue) > 0
			l.mu.Unlock()
			if more {
				select {
				case l.notify <- struct{}{}:
				default:
				}
			}
			if a.err != nil {
				return nil, a.err
			}
			return a.c, nil
		}
		l.mu.Unlock()
		select {
		case <-l.notify:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-l.ctx.Done():
			return nil, rdma.ErrClosed
		}
	}
}

// Close stops accepting, closes the channels not yet returned by Accept
// and waits for the listener's goroutines. Accepted Conns stay open;
// links it accepted refuse new channels.
func (l *listener) Close() error {
	l.once.Do(func() {
		l.p.mu.Lock()
		delete(l.p.lns, l)
		l.p.mu.Unlock()
		l.cancel()
		l.ln.Close()
		l.wg.Wait()
		l.mu.Lock()
		l.closed = true
		queue := l.queue
		l.queue = nil
		l.mu.Unlock()
		for _, a := range queue {
			if a.c != nil {
				a.c.Close()
			}
		}
	})
	return nil
}
