package tcp

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rpstream/rpstream/rdma"
)

// item is one frame to send.
type item struct {
	h       header
	payload []byte
	raw     []byte // if set, already-encoded bytes (the unsent tail of a direct write), sent instead of h and payload
	release func() // called once the frame is written or dropped
	c       *conn  // the channel whose payload this is; a failed channel's payloads are dropped
}

// finish ends the writer's use of it (sent or dropped): its release
// runs, and its channel learns that one payload fewer is in the writer's
// hands (conn.Close waits for none).
func (it *item) finish() {
	if it.release != nil {
		it.release()
	}
	if it.c != nil && it.payload != nil && it.raw == nil {
		it.c.payloadDone()
	}
}

// stale reports whether it carries a payload of a channel that failed
// since it was queued: the caller's buffer is no longer the frame's to
// send (the Op completed with an error) and the peer drops the channel's
// frames anyway.
func (it *item) stale() bool {
	return it.c != nil && it.raw == nil && it.c.gone.Load()
}

// dropStale removes the stale items of batch, releasing them.
func dropStale(batch []item) []item {
	keep := batch[:0]
	for _, it := range batch {
		if it.stale() {
			it.finish()
			continue
		}
		keep = append(keep, it)
	}
	clear(batch[len(keep):])
	return keep
}

func (it *item) size() int {
	if it.raw != nil {
		return len(it.raw)
	}
	return hdrSize + len(it.payload)
}

// writer is the queue between the goroutines that produce frames and the
// ones that send them. Exactly one goroutine at a time sends (busy): the
// writer goroutine, or a producer doing a direct write (tryDirect). Whoever
// clears busy re-signals the writer goroutine if frames are queued, so no
// frame is left behind.
type writer struct {
	mu      sync.Mutex // guards the fields below
	items   []item
	stopped bool          // the writer goroutine has exited: push releases at once
	busy    bool          // a goroutine is sending; only it may write to the socket
	corked  int           // Cork depth: posts only queue while above 0
	wake    chan struct{} // one token while items may be non-empty

	// Used only by the holder of busy in tryDirect.
	direct     []item
	directHdrs [][hdrSize]byte
	directIov  [][]byte
	rc         syscall.RawConn
	// seal, when not nil, seals what is sent into records (seal.go);
	// used only by the holder of busy.
	seal *sealer
}

// sealedWrite is about the most a sealed connection's writer goroutine
// writes at once (more when one frame is bigger).
const sealedWrite = 64 << 10

// directMax bounds a direct write: bigger batches go to the writer
// goroutine, which may block on a full socket.
const directMax = 16 << 10

func (w *writer) init(nc net.Conn, send *aeadState) {
	w.wake = make(chan struct{}, 1)
	if sc, ok := nc.(syscall.Conn); ok {
		w.rc, _ = sc.SyscallConn()
	}
	if send != nil {
		w.seal = newSealer(send)
	}
}

// appendFrames appends to iov the pieces of batch's frames as they go on a
// connection in clear: a raw item's bytes, else its header (encoded into
// hdrs, a header per item) and payload.
func appendFrames(iov [][]byte, batch []item, hdrs [][hdrSize]byte) [][]byte {
	for i := range batch {
		if batch[i].raw != nil {
			iov = append(iov, batch[i].raw)
			continue
		}
		batch[i].h.put(&hdrs[i])
		iov = append(iov, hdrs[i][:])
		if len(batch[i].payload) > 0 {
			iov = append(iov, batch[i].payload)
		}
	}
	return iov
}

// sealBatch puts batch's frames, sealed, in w.seal's output and returns
// it: a raw item's bytes as they are (sealed already), every other frame
// into records. hdrs has room for a header per item.
func (w *writer) sealBatch(batch []item, hdrs [][hdrSize]byte) []byte {
	w.seal.reset()
	for i := range batch {
		if batch[i].raw != nil {
			w.seal.raw(batch[i].raw)
			continue
		}
		batch[i].h.put(&hdrs[i])
		w.seal.add(hdrs[i][:])
		w.seal.add(batch[i].payload)
	}
	return w.seal.bytes()
}

func (w *writer) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// enqueue queues it without waking anyone; the caller then calls kick,
// unless it reports that the writer is corked (Uncork will).
func (w *writer) enqueue(it item) (corked bool) {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		it.finish()
		return false
	}
	w.items = append(w.items, it)
	corked = w.corked > 0
	w.mu.Unlock()
	return corked
}

// cork holds posts back until the matching uncork.
func (w *writer) cork() {
	w.mu.Lock()
	w.corked++
	w.mu.Unlock()
}

// uncork ends a cork; the last one sends what is queued, directly if it
// is small (one writev on the caller's goroutine), else by the writer
// goroutine.
func (w *writer) uncork() {
	w.mu.Lock()
	if w.corked > 0 { // an unmatched Uncork changes nothing
		w.corked--
	}
	send := w.corked == 0 && len(w.items) > 0
	w.mu.Unlock()
	if send {
		w.kick()
	}
}

// push queues it for the writer goroutine.
func (w *writer) push(it item) {
	w.enqueue(it)
	w.signal()
}

// enqueueAck queues an ack of id on channel ch, merging it into a queued
// ack of the channel that nothing follows (acks are cumulative). The
// caller then calls kick.
func (w *writer) enqueueAck(ch uint16, id uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	if n := len(w.items); n > 0 && w.items[n-1].h.typ == frameAck && w.items[n-1].h.ch == ch && w.items[n-1].raw == nil {
		w.items[n-1].h.id = id
		return
	}
	w.items = append(w.items, item{h: header{typ: frameAck, ch: ch, id: id}})
}

// kick gets what is queued on its way: written at once by the calling
// goroutine when no one is sending and the batch is small (saving the
// hand-off to the writer goroutine on the latency path), else by the
// writer goroutine.
func (w *writer) kick() {
	if !w.tryDirect() {
		w.signal()
	}
}

// tryDirect writes the queued frames with one non-blocking writev if no
// one is sending and they are few and small. What the socket does not take
// is put back at the head of the queue for the writer goroutine. It
// returns false when the writer goroutine must be woken instead.
func (w *writer) tryDirect() bool {
	if w.rc == nil {
		return false
	}
	w.mu.Lock()
	if w.stopped || w.busy || len(w.items) == 0 {
		w.mu.Unlock()
		return true // the sender, if any, re-checks the queue when it is done
	}
	total := 0
	for i := range w.items {
		if w.items[i].release != nil {
			w.mu.Unlock()
			return false
		}
		total += w.items[i].size()
	}
	if total > directMax || len(w.items) > 64 {
		w.mu.Unlock()
		return false
	}
	w.busy = true
	batch := dropStale(append(w.direct[:0], w.items...))
	clear(w.items)
	w.items = w.items[:0]
	w.mu.Unlock()
	total = 0
	for i := range batch {
		total += batch[i].size()
	}

	if cap(w.directHdrs) < len(batch) {
		w.directHdrs = make([][hdrSize]byte, len(batch))
	}
	hdrs := w.directHdrs[:len(batch)]
	iov := w.directIov[:0]
	if w.seal != nil {
		out := w.sealBatch(batch, hdrs)
		iov, total = append(iov, out), len(out)
	} else {
		iov = appendFrames(iov, batch, hdrs)
	}
	var (
		n    int
		werr error
	)
	w.rc.Write(func(fd uintptr) bool {
		n, werr = unix.Writev(int(fd), iov)
		return true // never wait: the writer goroutine does the waiting
	})
	if werr != nil {
		n = 0 // EAGAIN, or a broken socket the writer goroutine will report
	}
	var rest []byte
	if n < total {
		rest = make([]byte, 0, total-n)
		skip := n
		for _, b := range iov {
			if skip >= len(b) {
				skip -= len(b)
				continue
			}
			rest = append(rest, b[skip:]...)
			skip = 0
		}
	}
	for i := range batch {
		batch[i].finish() // what the socket did not take was copied into rest
	}
	clear(batch)
	clear(iov)
	w.direct, w.directIov = batch[:0], iov[:0]
	w.mu.Lock()
	if rest != nil {
		w.items = append(w.items, item{})
		copy(w.items[1:], w.items)
		w.items[0] = item{raw: rest}
	}
	w.busy = false
	more := len(w.items) > 0
	w.mu.Unlock()
	if more {
		w.signal()
	}
	return true
}

// take returns the queued frames for the writer goroutine, marking it
// busy, or nil when another goroutine is sending or nothing is queued.
// With stop, the writer stops for good (it first waits for a direct
// writer, which never blocks, to finish).
func (w *writer) take(spare []item, stop bool) []item {
	for {
		w.mu.Lock()
		if !w.busy {
			break
		}
		w.mu.Unlock()
		if !stop {
			return nil
		}
		runtime.Gosched()
	}
	defer w.mu.Unlock()
	w.stopped = w.stopped || stop
	if len(w.items) == 0 {
		return nil
	}
	w.busy = true
	batch := dropStale(w.items)
	w.items = spare[:0]
	return batch
}

// done ends the writer goroutine's turn as the sender.
func (w *writer) done() {
	w.mu.Lock()
	w.busy = false
	more := len(w.items) > 0
	w.mu.Unlock()
	if more {
		w.signal()
	}
}

// lingerTimeout bounds the last write of an error frame to a peer that
// does not read.
const lingerTimeout = time.Second

// writeLoop is the writer goroutine: it sends every queued frame in one
// vectored write per batch until the link fails, then sends what is still
// queued (error and close frames for the peer) within lingerTimeout and
// closes the socket. Its watchdog fails a channel when the peer stops
// answering a channel's Ops.
func (l *link) writeLoop() {
	var (
		spare    []item
		hdrs     [][hdrSize]byte
		bufs     net.Buffers
		stopping bool // the linger deadline is set
	)
	send := func(batch []item) error {
		if cap(hdrs) < len(batch) {
			hdrs = make([][hdrSize]byte, len(batch))
		}
		hdrs = hdrs[:len(batch)]
		if !stopping {
			// A peer that takes nothing for AckTimeout is gone.
			l.nc.SetWriteDeadline(time.Now().Add(l.p.cfg.AckTimeout))
		}
		if l.w.seal != nil {
			// Sealed, in writes of about sealedWrite bytes, so that a
			// batch of large frames does not grow the buffer to its size.
			var err error
			for i := 0; i < len(batch) && err == nil; {
				j := i
				for n := 0; j < len(batch) && (j == i || n+batch[j].size() <= sealedWrite); j++ {
					n += batch[j].size()
				}
				_, err = l.nc.Write(l.w.sealBatch(batch[i:j], hdrs[i:j]))
				i = j
			}
			for i := range batch {
				batch[i].finish()
				batch[i] = item{}
			}
			return err
		}
		bufs = appendFrames(bufs[:0], batch, hdrs)
		b := bufs // WriteTo consumes its receiver
		_, err := b.WriteTo(l.nc)
		for i := range batch {
			batch[i].finish()
			batch[i] = item{}
		}
		clear(bufs)
		return err
	}
	watchdog := time.NewTicker(max(l.p.cfg.AckTimeout/4, time.Millisecond))
	defer watchdog.Stop()
	for {
		select {
		case now := <-watchdog.C:
			for _, c := range l.stalled(now) {
				c.fail(fmt.Errorf("%w: no response from the peer in %v", rdma.ErrConnLost, l.p.cfg.AckTimeout), true)
			}
		case <-l.w.wake:
			batch := l.w.take(spare, false)
			if batch == nil {
				continue
			}
			err := send(batch)
			spare = batch
			l.w.done()
			if err != nil && !errors.Is(err, net.ErrClosed) {
				l.fail(lostErr(err))
			}
		case <-l.dead:
			// Send what tells the peer why (an error frame), but no payload:
			// fail has handed the callers' buffers back, and a read
			// response's memory may be deregistered. Whole frames are
			// dropped, so the stream stays parseable.
			stopping = true
			l.nc.SetWriteDeadline(time.Now().Add(lingerTimeout))
			if batch := l.w.take(spare, true); batch != nil {
				keep := batch[:0]
				for _, it := range batch {
					if it.payload != nil {
						it.finish()
						continue
					}
					keep = append(keep, it)
				}
				clear(batch[len(keep):])
				send(keep)
			}
			l.nc.Close()
			return
		}
	}
}
