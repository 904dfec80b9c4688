package tcp

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rpstream/rpstream/rdma"
)

// conn is one rdma.Conn: a channel of a link (link.go). It numbers its
// own requests and serves the peer's requests on its channel; the link's
// goroutines read and write for it.
type conn struct {
	l      *link
	p      *peer
	ch     uint16
	events chan rdma.Event
	dead   chan struct{} // closed by fail
	slots  chan struct{} // one token per pending initiator Op
	gone   atomic.Bool   // set by fail: the writer drops this channel's payloads

	// payloads counts this channel's frames with a payload (callers'
	// memory, or a registration's for a read response) in the writer's
	// hands; drained gets a token when it falls to zero after fail.
	payloads atomic.Int32
	drained  chan struct{}

	// lastHeard is when a frame of this channel last arrived (unix
	// nanoseconds); the writer's watchdog compares it with AckTimeout.
	lastHeard atomic.Int64

	postMu sync.Mutex // orders id assignment with queueing, and every frame of the channel before its close
	nextID uint64     // guarded by postMu

	pendMu  sync.Mutex // guards the fields below
	pending []pend     // ascending ids
	lastID  uint64     // highest id ever pending
	posted  []recvPost
	early   [][]byte // messages that arrived before a Recv
	inRead  uint64   // id of the read whose data the reader is receiving
	failed  bool
	err     error

	// sentClose and gotClose record the channel's close frames; guarded
	// by the link's mu.
	sentClose, gotClose bool

	// target state, reader goroutine only
	lastReq    uint64       // id of the peer's last request
	owedAck    uint64       // highest request served but not yet acknowledged
	owedUrgent bool         // a request other than a plain write is among them
	readResps  atomic.Int32 // read responses queued and not yet sent

	// access is read-locked while the reader executes a one-sided request
	// of the peer or fills local memory of this channel (a posted receive,
	// a read's destination); SetRemoteAccess and Close write-lock it.
	access sync.RWMutex
	denied bool // guarded by access
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

// Cork implements rdma.Corker: posts queue until the matching Uncork. The
// connection's other channels are held back too (they share its writer).
func (c *conn) Cork() { c.l.w.cork() }

// Uncork implements rdma.Corker: the last one sends what the posts queued,
// with one write when it is small.
func (c *conn) Uncork() { c.l.w.uncork() }

// SetRemoteAccess implements rdma.AccessSwitcher. It waits for a request
// being executed to finish.
func (c *conn) SetRemoteAccess(allowed bool) error {
	c.access.Lock()
	defer c.access.Unlock()
	c.denied = !allowed
	return nil
}

// newConn makes channel ch of l; the caller adds it to l.chans.
func newConn(l *link, ch uint16, denied bool) *conn {
	c := &conn{
		l: l, p: l.p, ch: ch,
		events:  make(chan rdma.Event, 4),
		dead:    make(chan struct{}),
		slots:   make(chan struct{}, l.p.cfg.MaxInflight),
		drained: make(chan struct{}, 1),
		denied:  denied,
	}
	c.lastHeard.Store(time.Now().UnixNano())
	c.events <- rdma.Event{Kind: rdma.Established}
	return c
}

func (c *conn) Remote() rdma.PeerInfo     { return c.l.remote }
func (c *conn) RemoteAddr() string        { return c.l.nc.RemoteAddr().String() }
func (c *conn) Events() <-chan rdma.Event { return c.events }

func (c *conn) Err() error {
	c.pendMu.Lock()
	defer c.pendMu.Unlock()
	return c.err
}

// Close fails the channel and waits for a request of the peer being
// executed on it, or a receive or read being filled, to finish (none is
// executed and no local memory is written after it returns) and for
// the writer to be done with the payloads of its posts (the caller may
// unmap them once it returns): at most about AckTimeout, after which a
// peer that does not read has lost the connection anyway.
func (c *conn) Close() error {
	c.fail(rdma.ErrClosed, true)
	c.access.Lock()
	c.access.Unlock()
	// The writer's own deadline (AckTimeout per write) bounds the wait:
	// it writes, or the connection fails and it drops what it holds.
	if !c.awaitPayloads(c.p.cfg.AckTimeout + 2*lingerTimeout) {
		c.l.fail(fmt.Errorf("%w: the writer held a closed channel's data for %v", rdma.ErrConnLost, c.p.cfg.AckTimeout+2*lingerTimeout))
		c.awaitPayloads(2 * lingerTimeout)
	}
	return nil
}

// awaitPayloads waits at most d for the writer to be done with the
// channel's payloads; false if it is not.
func (c *conn) awaitPayloads(d time.Duration) bool {
	if c.payloads.Load() == 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	for c.payloads.Load() > 0 {
		select {
		case <-c.drained:
		case <-t.C:
			return c.payloads.Load() == 0
		}
	}
	return true
}

// queue queues it, a frame of this channel that is not a post (an ack,
// an error, a read response), unless the channel has failed: then its
// close may be queued already, and it is dropped.
func (c *conn) queue(it item) bool {
	c.postMu.Lock()
	defer c.postMu.Unlock()
	if c.gone.Load() {
		it.finish()
		return false
	}
	c.l.w.enqueue(it)
	return true
}

// payloadDone counts one of the channel's payloads out of the writer.
func (c *conn) payloadDone() {
	if c.payloads.Add(-1) == 0 && c.gone.Load() {
		select {
		case c.drained <- struct{}{}:
		default:
		}
	}
}

// fail puts the Conn in the error state: the first cause wins. Every
// pending Op completes (ErrClosed for a local close, else ErrPoisoned
// wrapping cause). With sendClose (the link lives on) the channel's close
// frame is queued behind whatever it already queued (an error frame).
func (c *conn) fail(cause error, sendClose bool) {
	c.pendMu.Lock()
	if c.failed {
		c.pendMu.Unlock()
		return
	}
	c.failed, c.err = true, cause
	c.gone.Store(true)
	pending, posted, inRead := c.pending, c.posted, c.inRead
	c.pending, c.posted, c.early = nil, nil, nil
	c.pendMu.Unlock()
	close(c.dead)
	if sendClose {
		// Under postMu: a post, ack, error or read response of this
		// channel that saw it alive is queued before its close, never
		// after (a frame after the close ends the peer's connection).
		c.postMu.Lock()
		c.l.w.enqueue(item{h: header{typ: frameClose, ch: c.ch}})
		c.postMu.Unlock()
		c.l.w.kick()
		c.l.closeSent(c)
	}
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

// waiting reports whether Ops are pending.
func (c *conn) waiting() bool {
	c.pendMu.Lock()
	defer c.pendMu.Unlock()
	return len(c.pending) > 0
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
	if testHookPost != nil {
		testHookPost(c)
	}
	h.ch = c.ch
	if payload != nil {
		c.payloads.Add(1)
	}
	corked := c.l.w.enqueue(item{h: h, payload: payload, c: c})
	c.postMu.Unlock()
	if corked {
		return op // sent by Uncork
	}
	if direct {
		c.l.w.kick()
	} else {
		c.l.w.signal()
	}
	return op
}

// testHookPost, set by tests only, runs in post between the check that
// the channel is alive and the queueing of its frame.
var testHookPost func(*conn)

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
	if err := rdma.CheckFlush(dst, rdma.ProviderTCP, c.l.remote, off, n, t); err != nil {
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
	if n > c.l.remote.MaxMessage {
		return rdma.FailedOp(rdma.OpSend, fmt.Errorf("%w: message of %d bytes, peer takes %d", rdma.ErrTooLarge, n, c.l.remote.MaxMessage))
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
			c.fail(err, true)
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
