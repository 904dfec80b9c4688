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
	return &peer{cfg: cfg, mrs: map[uint64]*mr{}, conns: map[*conn]struct{}{}, lns: map[*listener]struct{}{}}, nil
}

// caps is what a tcp peer declares: its CPU runs the persister.
const caps = rdma.CapPersistOnFlush

type peer struct {
	cfg rdma.Config

	mu     sync.Mutex // guards the fields below
	mrs    map[uint64]*mr
	conns  map[*conn]struct{}
	lns    map[*listener]struct{}
	closed bool
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
		ready: make(chan accepted, maxHandshakes), slots: make(chan struct{}, maxHandshakes)}
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

func (p *peer) Dial(ctx context.Context, addr string) (rdma.Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("rdma/tcp: dial: %w", err)
	}
	return p.handshake(ctx, nc, true)
}

func (p *peer) handshake(ctx context.Context, nc net.Conn, client bool) (rdma.Conn, error) {
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
	c := newConn(p, nc, remote, !client && p.cfg.DenyOnAccept, send, recv)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.Close()
		return nil, rdma.ErrClosed
	}
	p.conns[c] = struct{}{}
	p.mu.Unlock()
	return c, nil
}

func (p *peer) forget(c *conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

func (p *peer) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return rdma.ErrClosed
	}
	p.closed = true
	conns, lns, mrs := p.conns, p.lns, p.mrs
	p.conns, p.lns = map[*conn]struct{}{}, map[*listener]struct{}{}
	p.mu.Unlock()
	for l := range lns {
		l.Close()
	}
	for c := range conns {
		c.Close()
	}
	for _, m := range mrs {
		m.Deregister()
	}
	return nil
}

// maxHandshakes bounds the handshakes a listener runs at once, and the
// connections it holds for Accept.
const maxHandshakes = 64

// listener owns an accept-loop goroutine and one goroutine per handshake
// in progress (at most maxHandshakes), so that a peer that connects and
// stays silent delays no one but itself. Close stops and waits for them.
type listener struct {
	p      *peer
	ln     *net.TCPListener
	ready  chan accepted // handshakes done, for Accept
	slots  chan struct{} // one token per handshake or ready result
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

func (l *listener) Addr() string { return l.ln.Addr().String() }

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
			c, err := l.p.handshake(l.ctx, nc, false)
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

// Accept implements rdma.Listener: it returns the next connection whose
// handshake finished, or the next handshake failure.
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

// Close stops accepting, closes the connections not yet returned by
// Accept and waits for the listener's goroutines. Accepted Conns stay open.
func (l *listener) Close() error {
	l.once.Do(func() {
		l.p.mu.Lock()
		delete(l.p.lns, l)
		l.p.mu.Unlock()
		l.cancel()
		l.ln.Close()
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
	})
	return nil
}
