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

// link is one TCP connection between two peers after the handshake. It
// carries the frames of many Conns, each on a channel of its own: the
// dialling side opens a channel per Dial, the accepting side hands each
// new channel to its Listener's Accept. One reader goroutine executes the
// frames of every channel in arrival order; one writer queue (writer.go)
// coalesces the frames of every channel into shared system calls. A
// failure of one channel (a rejected request, a local Close) ends that
// channel only; a failure of the socket or of the framing ends them all.
type link struct {
	p      *peer
	nc     net.Conn
	br     *bufio.Reader // reader goroutine only; over an opener when sealed
	remote rdma.PeerInfo
	w      writer
	dead   chan struct{} // closed by fail
	done   chan struct{} // closed once both goroutines have exited
	wg     sync.WaitGroup

	// addr is the address a dialled link was dialled at (its key in
	// peer.links); ln is the listener an accepted link hands channels to.
	addr string
	ln   *listener

	mu      sync.Mutex // guards the fields below
	chans   map[uint16]*conn
	nextCh  uint16 // the last channel opened (dialling side)
	closing bool   // a dialled link with no channel left: no new ones
	failed  bool
	err     error

	// lastHeard is when a frame last arrived (unix nanoseconds); the
	// writer's watchdog compares it with AckTimeout.
	lastHeard atomic.Int64

	// owed lists the channels that owe the peer an ack (reader only).
	owed []*conn
	// payloadRead: the frame being dispatched had its payload read
	// (reader only); a channel that rejects a frame before reading it
	// has it skipped, so that the link stays in step.
	payloadRead bool
}

// linkErr marks an error that ends the whole link, not one channel.
type linkErr struct{ err error }

func (e *linkErr) Error() string { return e.err.Error() }
func (e *linkErr) Unwrap() error { return e.err }

func fatal(err error) error { return &linkErr{err} }

// newLink starts a link on nc after the handshake. With send and recv
// (TLS) the frames travel in sealed records (seal.go), else as they are.
func newLink(p *peer, nc net.Conn, remote hs.Hello, send, recv *aeadState, ln *listener) *link {
	var src io.Reader = nc
	if recv != nil {
		src = newOpener(recv, nc)
	}
	l := &link{
		p: p, nc: nc,
		br:     bufio.NewReaderSize(src, 64<<10),
		remote: remote.Info("tcp"),
		dead:   make(chan struct{}),
		done:   make(chan struct{}),
		chans:  map[uint16]*conn{},
		ln:     ln,
	}
	l.w.init(nc, send)
	l.lastHeard.Store(time.Now().UnixNano())
	l.wg.Add(2)
	go func() { defer l.wg.Done(); l.readLoop() }()
	go func() { defer l.wg.Done(); l.writeLoop() }()
	go func() { l.wg.Wait(); p.dropLink(l); p.linkDone(l); close(l.done) }()
	return l
}

// errLinkGone is what opening a channel on a link that is going away
// returns; Dial then dials a new link.
var errLinkGone = errors.New("rdma/tcp: connection closing")

// open opens a new channel on a dialled link.
func (l *link) open() (*conn, error) {
	l.mu.Lock()
	if l.failed || l.closing {
		l.mu.Unlock()
		return nil, errLinkGone
	}
	if len(l.chans) >= maxChannels {
		l.mu.Unlock()
		return nil, fmt.Errorf("%w: %d connections to %s already", rdma.ErrTooLarge, maxChannels, l.addr)
	}
	ch := l.nextCh
	for {
		ch++
		if ch == 0 {
			ch = 1
		}
		if l.chans[ch] == nil {
			break
		}
	}
	l.nextCh = ch
	c := newConn(l, ch, false)
	l.chans[ch] = c
	l.mu.Unlock()
	l.w.enqueue(item{h: header{typ: frameOpen, ch: ch}})
	l.w.kick()
	return c, nil
}

// closeSent records that this side sent channel c's close frame, and
// forgets the channel once both sides have.
func (l *link) closeSent(c *conn) {
	l.mu.Lock()
	c.sentClose = true
	l.forgetLocked(c)
}

// forgetLocked removes c once both close frames have passed, and closes a
// dialled link left without channels; it unlocks l.mu.
func (l *link) forgetLocked(c *conn) {
	idle := false
	if c.sentClose && c.gotClose && l.chans[c.ch] == c {
		delete(l.chans, c.ch)
		idle = l.ln == nil && len(l.chans) == 0 && !l.failed
		l.closing = l.closing || idle
	}
	l.mu.Unlock()
	if idle {
		// A dialled link lives as long as its channels: the last close
		// ends it (the next Dial to the address dials a new one).
		l.p.dropLink(l)
		l.fail(fmt.Errorf("%w: no channel left", rdma.ErrClosed))
	}
}

// fail ends the link: the first cause wins. Every channel fails with it
// (its close frame is not sent: the socket goes), the writer sends what is
// queued without payloads (error frames) and closes the socket, which
// stops the reader.
func (l *link) fail(cause error) {
	l.mu.Lock()
	if l.failed {
		l.mu.Unlock()
		return
	}
	l.failed, l.err = true, cause
	chans := l.chans
	l.chans = map[uint16]*conn{}
	l.mu.Unlock()
	l.p.dropLink(l)
	close(l.dead)
	// A writer blocked on a peer that does not read must give up soon, so
	// that the socket gets closed.
	l.nc.SetWriteDeadline(time.Now().Add(lingerTimeout))
	for _, c := range chans {
		c.fail(cause, false)
	}
}

// stalled returns the channels whose Ops have waited longer than
// AckTimeout without any frame of the channel from the peer. They fail
// alone, as Conns of their own did: a peer slow to serve one stream must
// not take every stream on the connection down with it. A peer that
// stops reading altogether ends the connection by the writer's deadline.
func (l *link) stalled(now time.Time) []*conn {
	limit := now.Add(-l.p.cfg.AckTimeout).UnixNano()
	l.mu.Lock()
	var late []*conn
	for _, c := range l.chans {
		if c.lastHeard.Load() <= limit && c.waiting() {
			late = append(late, c)
		}
	}
	l.mu.Unlock()
	return late
}

func lostErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: peer closed the connection", rdma.ErrConnLost)
	}
	return fmt.Errorf("%w: %v", rdma.ErrConnLost, err)
}

// readLoop is the reader goroutine. It runs until the first error that
// ends the link; errors of one channel fail that channel only.
func (l *link) readLoop() {
	var hb [hdrSize]byte
	for {
		if _, err := io.ReadFull(l.br, hb[:]); err != nil {
			l.fail(lostErr(err))
			return
		}
		l.lastHeard.Store(time.Now().UnixNano())
		h := parseHeader(&hb)
		if err := l.dispatch(&h); err != nil {
			l.fail(err)
			return
		}
		// Acknowledge the peer's requests once no further frame header is
		// already buffered (whatever kind the frames in between were). The
		// ack of a flush, atomic write, read or send is what a caller waits
		// for: send it now. Acks of plain writes only go through the writer
		// goroutine, which coalesces them under load.
		if len(l.owed) > 0 && l.br.Buffered() < hdrSize {
			urgent := false
			for i, c := range l.owed {
				c.postMu.Lock() // before the channel's close, if any
				if !c.gone.Load() {
					l.w.enqueueAck(c.ch, c.owedAck)
				}
				c.postMu.Unlock()
				urgent = urgent || c.owedUrgent
				c.owedAck, c.owedUrgent = 0, false
				l.owed[i] = nil
			}
			l.owed = l.owed[:0]
			if urgent {
				l.w.kick()
			} else {
				l.w.signal()
			}
		}
	}
}

// dispatch hands a frame to its channel. A non-nil error ends the link.
func (l *link) dispatch(h *header) error {
	if h.ch == 0 {
		return fatal(protoErr(fmt.Sprintf("frame type %d on channel 0", h.typ)))
	}
	l.mu.Lock()
	c := l.chans[h.ch]
	if h.typ == frameOpen {
		l.mu.Unlock()
		return l.accept(h, c)
	}
	if c == nil {
		l.mu.Unlock()
		return fatal(protoErr(fmt.Sprintf("frame type %d on channel %d, which is not open", h.typ, h.ch)))
	}
	if h.typ == frameClose {
		if c.gotClose || h.arg != 0 || h.n != 0 || h.id != 0 || h.key != 0 || h.off != 0 {
			l.mu.Unlock()
			return fatal(protoErr(fmt.Sprintf("close of channel %d repeated or with fields set", h.ch)))
		}
		c.gotClose = true
		sent := c.sentClose
		l.mu.Unlock()
		if !sent {
			c.fail(fmt.Errorf("%w: peer closed the connection", rdma.ErrConnLost), true)
		}
		l.mu.Lock()
		l.forgetLocked(c)
		return nil
	}
	if c.gotClose {
		l.mu.Unlock()
		return fatal(protoErr(fmt.Sprintf("frame type %d on channel %d after its close", h.typ, h.ch)))
	}
	l.mu.Unlock()
	c.lastHeard.Store(l.lastHeard.Load())
	if c.gone.Load() {
		// This side failed the channel; the peer's frames sent before it
		// saw our close are dropped (their payload skipped).
		return l.skip(h)
	}
	l.payloadRead = false
	if err := c.handle(h); err != nil {
		var le *linkErr
		if errors.As(err, &le) {
			return err
		}
		c.fail(err, true)
		if !l.payloadRead {
			return l.skip(h)
		}
	}
	return nil
}

// accept opens channel h.ch for the peer (the accepting side).
func (l *link) accept(h *header, old *conn) error {
	if l.ln == nil || old != nil || h.arg != 0 || h.n != 0 || h.id != 0 || h.key != 0 || h.off != 0 {
		return fatal(protoErr(fmt.Sprintf("open of channel %d not allowed here, in use or with fields set", h.ch)))
	}
	l.mu.Lock()
	if l.failed {
		l.mu.Unlock()
		return nil
	}
	c := newConn(l, h.ch, l.p.cfg.DenyOnAccept)
	l.chans[h.ch] = c
	l.mu.Unlock()
	if !l.ln.deliver(c) {
		c.fail(fmt.Errorf("%w: listener closed", rdma.ErrClosed), true)
	}
	return nil
}

// skip consumes the payload of a frame for a channel this side has
// failed.
func (l *link) skip(h *header) error {
	var n int64
	switch h.typ {
	case frameWrite, frameSend, frameReadResp:
		n = int64(h.n)
	case frameAtomic:
		n = 8
	case frameRead, frameFlush, frameAck, frameError:
	default:
		return fatal(protoErr(fmt.Sprintf("unknown frame type %d", h.typ)))
	}
	if n == 0 {
		return nil
	}
	if n > int64(l.p.cfg.MaxTransfer) {
		return fatal(protoErr(fmt.Sprintf("frame of %d bytes on channel %d, beyond MaxTransfer", n, h.ch)))
	}
	if int64(l.br.Buffered()) < n {
		allow := l.p.cfg.AckTimeout + time.Duration(n>>26)*time.Second
		l.nc.SetReadDeadline(time.Now().Add(allow))
		defer l.nc.SetReadDeadline(time.Time{})
	}
	if _, err := l.br.Discard(int(n)); err != nil {
		return fatal(lostErr(err))
	}
	return nil
}
