package tcp

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rpstream/rpstream/rdma"
	"github.com/rpstream/rpstream/rdma/internal/hs"
)

type conn struct {
	p      *peer
	nc     net.Conn
	br     *bufio.Reader // reader goroutine only; over an opener when sealed
	remote rdma.PeerInfo
	events chan rdma.Event
	dead   chan struct{} // closed by fail
	slots  chan struct{} // one token per pending initiator Op
	w      writer
	wg     sync.WaitGroup // reader and writer

	postMu sync.Mutex // orders id assignment with queueing
	nextID uint64     // guarded by postMu

	pendMu  sync.Mutex // guards the fields below
	pending []pend     // ascending ids
	lastID  uint64     // highest id ever pending
	posted  []recvPost
	early   [][]byte // messages that arrived before a Recv
	inRead  uint64   // id of the read whose data the reader is receiving
	failed  bool
	err     error

	// target state, reader goroutine only
	lastReq    uint64 // id of the peer's last request
	owedAck    uint64 // highest request served but not yet acknowledged
	owedUrgent bool   // a request other than a plain write is among them

	// access is read-locked while the reader executes a one-sided request
	// of the peer; SetRemoteAccess write-locks it to switch denied.
	access sync.RWMutex
	denied bool // guarded by access

	// lastHeard is when a frame last arrived (unix nanoseconds); the
	// writer's watchdog compares it with AckTimeout.
	lastHeard atomic.Int64
}

// pend is an initiator Op waiting for its response.
type pend struct {
	id       uint64
	kind     rdma.OpKind
	dst      []byte // read destination
	complete rdma.Completer
}

type recvPost struct {
	buf      []byte
	complete rdma.Completer
}

var (
	_ rdma.Conn           = (*conn)(nil)
	_ rdma.AccessSwitcher = (*conn)(nil)
	_ rdma.Corker         = (*conn)(nil)
)

// Cork implements rdma.Corker: posts queue until the matching Uncork.
func (c *conn) Cork() { c.w.cork() }

// Uncork implements rdma.Corker: the last one sends what the posts queued,
// with one write when it is small.
func (c *conn) Uncork() { c.w.uncork() }

// SetRemoteAccess implements rdma.AccessSwitcher. It waits for a request
// being executed to finish.
func (c *conn) SetRemoteAccess(allowed bool) error {
	c.access.Lock()
	defer c.access.Unlock()
	c.denied = !allowed
	return nil
}

// newConn starts a Conn on nc after the handshake. With send and recv
// (TLS) the frames travel in sealed records (seal.go), else as they are.
func newConn(p *peer, nc net.Conn, remote hs.Hello, denied bool, send, recv *aeadState) *conn {
	var src io.Reader = nc
	if recv != nil {
		src = newOpener(recv, nc)
	}
	c := &conn{
		p: p, nc: nc,
		br:     bufio.NewReaderSize(src, 64<<10),
		remote: remote.Info("tcp"),
		events: make(chan rdma.Event, 4),
		dead:   make(chan struct{}),
		slots:  make(chan struct{}, p.cfg.MaxInflight),
		denied: denied,
	}
	c.w.init(nc, send)
	c.lastHeard.Store(time.Now().UnixNano())
	c.events <- rdma.Event{Kind: rdma.Established}
	c.wg.Add(2)
	go func() { defer c.wg.Done(); c.readLoop() }()
	go func() { defer c.wg.Done(); c.writeLoop() }()
	return c
}

func (c *conn) Remote() rdma.PeerInfo     { return c.remote }
func (c *conn) RemoteAddr() string        { return c.nc.RemoteAddr().String() }
func (c *conn) Events() <-chan rdma.Event { return c.events }

func (c *conn) Err() error {
	c.pendMu.Lock()
	defer c.pendMu.Unlock()
	return c.err
}

func (c *conn) Close() error {
	c.fail(rdma.ErrClosed)
	c.wg.Wait()
	c.p.forget(c)
	return nil
}

// fail puts the Conn in the error state: the first cause wins. Every
// pending Op completes (ErrClosed for a local close, else ErrPoisoned
// wrapping cause), the writer flushes what is queued (an error frame) and
// closes the socket, which stops the reader.
func (c *conn) fail(cause error) {
	c.pendMu.Lock()
	if c.failed {
		c.pendMu.Unlock()
		return
	}
	c.failed, c.err = true, cause
	pending, posted, inRead := c.pending, c.posted, c.inRead
	c.pending, c.posted, c.early = nil, nil, nil
	c.pendMu.Unlock()
	close(c.dead)
	// A writer blocked on a peer that does not read must give up soon, so
	// that the socket gets closed and Close returns.
	c.nc.SetWriteDeadline(time.Now().Add(lingerTimeout))
	opErr := cause
	if !errors.Is(cause, rdma.ErrClosed) {
		opErr = fmt.Errorf("%w: %w", rdma.ErrPoisoned, cause)
	}
	for _, p := range pending {
		if p.id == inRead {
			continue // the reader completes it once it stops writing into it
		}
		p.complete(0, opErr)
		<-c.slots
	}
	for _, r := range posted {
		r.complete(0, opErr)
	}
	ev := rdma.Event{Kind: rdma.Lost, Err: cause}
	if errors.Is(cause, rdma.ErrClosed) {
		ev = rdma.Event{Kind: rdma.Closed}
	}
	c.events <- ev
}

// stalled reports whether Ops have waited longer than AckTimeout without
// any frame from the peer.
func (c *conn) stalled(now time.Time) bool {
	c.pendMu.Lock()
	waiting := len(c.pending) > 0
	c.pendMu.Unlock()
	return waiting && now.Sub(time.Unix(0, c.lastHeard.Load())) > c.p.cfg.AckTimeout
}

// failedErr is the error for an Op posted after fail.
func (c *conn) failedErr() error {
	c.pendMu.Lock()
	defer c.pendMu.Unlock()
	return c.opErrLocked()
}

func (c *conn) opErrLocked() error {
	if errors.Is(c.err, rdma.ErrClosed) {
		return c.err
	}
	return fmt.Errorf("%w: %w", rdma.ErrPoisoned, c.err)
}

// post queues a request frame for a new initiator Op.
func (c *conn) post(kind rdma.OpKind, h header, payload []byte, dst []byte) *rdma.Op {
	op, complete := rdma.NewOp(kind)
	select {
	case c.slots <- struct{}{}:
	case <-c.dead:
		complete(0, c.failedErr())
		return op
	}
	c.postMu.Lock()
	c.pendMu.Lock()
	if c.failed {
		c.pendMu.Unlock()
		c.postMu.Unlock()
		<-c.slots
		complete(0, c.failedErr())
		return op
	}
	c.nextID++
	h.id = c.nextID
	c.pending = append(c.pending, pend{id: h.id, kind: kind, dst: dst, complete: complete})
	c.lastID = h.id
	// Send at once, from this goroutine, an op that ends a run of writes
	// on an otherwise idle connection: that is the latency path (write +
	// flush), where the hand-off to the writer goroutine costs as much as
	// the syscall. Under load the writer goroutine coalesces instead.
	direct := kind != rdma.OpWrite && len(c.pending) <= directPending
	c.pendMu.Unlock()
	corked := c.w.enqueue(item{h: h, payload: payload})
	c.postMu.Unlock()
	if corked {
		return op // sent by Uncork
	}
	if direct {
		c.w.kick()
	} else {
		c.w.signal()
	}
	return op
}

// directPending is the most pending Ops (this one included) for which a
// post writes directly.
const directPending = 2

func (c *conn) Write(dst rdma.Descriptor, dstOff int, src rdma.MR, srcOff, n int) *rdma.Op {
	if err := c.check(dst, dstOff, n, rdma.UsageWriteDst, src, srcOff, rdma.UsageWriteSrc); err != nil {
		return rdma.FailedOp(rdma.OpWrite, err)
	}
	return c.post(rdma.OpWrite, header{typ: frameWrite, n: uint32(n), key: dst.Key, off: uint64(dstOff)},
		src.Bytes()[srcOff:srcOff+n], nil)
}

func (c *conn) Read(dst rdma.MR, dstOff int, src rdma.Descriptor, srcOff, n int) *rdma.Op {
	if err := c.check(src, srcOff, n, rdma.UsageReadSrc, dst, dstOff, rdma.UsageReadDst); err != nil {
		return rdma.FailedOp(rdma.OpRead, err)
	}
	return c.post(rdma.OpRead, header{typ: frameRead, n: uint32(n), key: src.Key, off: uint64(srcOff)},
		nil, dst.Bytes()[dstOff:dstOff+n])
}

func (c *conn) AtomicWrite(dst rdma.Descriptor, dstOff int, v [8]byte) *rdma.Op {
	if dstOff%8 != 0 {
		return rdma.FailedOp(rdma.OpAtomicWrite, fmt.Errorf("%w: offset %d", rdma.ErrAlign, dstOff))
	}
	if err := rdma.CheckRemote(dst, rdma.ProviderTCP, dstOff, 8, rdma.UsageAtomicWrite); err != nil {
		return rdma.FailedOp(rdma.OpAtomicWrite, err)
	}
	return c.post(rdma.OpAtomicWrite, header{typ: frameAtomic, n: 8, key: dst.Key, off: uint64(dstOff)}, v[:], nil)
}

func (c *conn) Flush(dst rdma.Descriptor, off, n int, t rdma.FlushType) *rdma.Op {
	if err := rdma.CheckFlush(dst, rdma.ProviderTCP, c.remote, off, n, t); err != nil {
		return rdma.FailedOp(rdma.OpFlush, err)
	}
	if n > c.p.cfg.MaxTransfer {
		return rdma.FailedOp(rdma.OpFlush, fmt.Errorf("%w: %d bytes", rdma.ErrTooLarge, n))
	}
	return c.post(rdma.OpFlush, header{typ: frameFlush, arg: uint8(t), n: uint32(n), key: dst.Key, off: uint64(off)}, nil, nil)
}

func (c *conn) Send(src rdma.MR, off, n int) *rdma.Op {
	if err := rdma.CheckLocal(src, off, n, rdma.UsageSend); err != nil {
		return rdma.FailedOp(rdma.OpSend, err)
	}
	if n > c.remote.MaxMessage {
		return rdma.FailedOp(rdma.OpSend, fmt.Errorf("%w: message of %d bytes, peer takes %d", rdma.ErrTooLarge, n, c.remote.MaxMessage))
	}
	return c.post(rdma.OpSend, header{typ: frameSend, n: uint32(n)}, src.Bytes()[off:off+n], nil)
}

func (c *conn) Recv(dst rdma.MR, off, n int) *rdma.Op {
	if err := rdma.CheckLocal(dst, off, n, rdma.UsageRecv); err != nil {
		return rdma.FailedOp(rdma.OpRecv, err)
	}
	op, complete := rdma.NewOp(rdma.OpRecv)
	buf := dst.Bytes()[off : off+n]
	c.pendMu.Lock()
	if c.failed {
		c.pendMu.Unlock()
		complete(0, c.failedErr())
		return op
	}
	if len(c.early) > 0 {
		msg := c.early[0]
		c.early = c.early[1:]
		c.pendMu.Unlock()
		if len(msg) > n {
			err := fmt.Errorf("%w: message of %d bytes for a %d-byte receive", rdma.ErrTooLarge, len(msg), n)
			complete(0, err)
			c.fail(err)
			return op
		}
		complete(copy(buf, msg), nil)
		return op
	}
	c.posted = append(c.posted, recvPost{buf: buf, complete: complete})
	c.pendMu.Unlock()
	return op
}

// check validates the remote and local sides of a Write or Read.
func (c *conn) check(d rdma.Descriptor, roff, n int, rneed rdma.Usage, local rdma.MR, loff int, lneed rdma.Usage) error {
	if err := rdma.CheckRemote(d, rdma.ProviderTCP, roff, n, rneed); err != nil {
		return err
	}
	if err := rdma.CheckLocal(local, loff, n, lneed); err != nil {
		return err
	}
	if n > c.p.cfg.MaxTransfer {
		return fmt.Errorf("%w: %d bytes, MaxTransfer %d", rdma.ErrTooLarge, n, c.p.cfg.MaxTransfer)
	}
	return nil
}
