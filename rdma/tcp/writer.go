package tcp

import (
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/rpstream/rpstream/rdma"
)

// item is one frame to send.
type item struct {
	h       header
	payload []byte
	release func() // called once the frame is written or dropped
}

// writer is the queue between the goroutines that produce frames and the
// one that sends them.
type writer struct {
	mu        sync.Mutex // guards items and readResps
	items     []item
	readResps int           // read responses queued (bounded by the peer's in-flight limit)
	stopped   bool          // the writer goroutine has exited: push releases at once
	wake      chan struct{} // one token while items is non-empty
}

func (w *writer) init() { w.wake = make(chan struct{}, 1) }

func (w *writer) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *writer) push(it item) {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		if it.release != nil {
			it.release()
		}
		return
	}
	w.items = append(w.items, it)
	if it.h.typ == frameReadResp {
		w.readResps++
	}
	w.mu.Unlock()
	w.signal()
}

// pushAck queues an ack of id, merging it into a queued ack that nothing
// follows (acks are cumulative).
func (w *writer) pushAck(id uint64) {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return
	}
	if n := len(w.items); n > 0 && w.items[n-1].h.typ == frameAck {
		w.items[n-1].h.id = id
		w.mu.Unlock()
		return
	}
	w.items = append(w.items, item{h: header{typ: frameAck, id: id}})
	w.mu.Unlock()
	w.signal()
}

func (w *writer) queuedReadResps() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.readResps
}

func (w *writer) take(spare []item, stop bool) []item {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = w.stopped || stop
	batch := w.items
	w.items = spare[:0]
	w.readResps = 0
	return batch
}

// lingerTimeout bounds the last write of an error frame to a peer that
// does not read.
const lingerTimeout = time.Second

// writeLoop is the writer goroutine: it sends every queued frame in one
// vectored write per batch until the Conn fails, then sends what is still
// queued (an error frame for the peer) within lingerTimeout and closes the
// socket.
func (c *conn) writeLoop() {
	var (
		spare []item
		hdrs  [][hdrSize]byte
		bufs  net.Buffers
	)
	send := func(batch []item) error {
		if cap(hdrs) < len(batch) {
			hdrs = make([][hdrSize]byte, len(batch))
		}
		hdrs = hdrs[:len(batch)]
		bufs = bufs[:0]
		for i := range batch {
			batch[i].h.put(&hdrs[i])
			bufs = append(bufs, hdrs[i][:])
			if len(batch[i].payload) > 0 {
				bufs = append(bufs, batch[i].payload)
			}
		}
		b := bufs // WriteTo consumes its receiver
		_, err := b.WriteTo(c.nc)
		for i := range batch {
			if r := batch[i].release; r != nil {
				r()
			}
			batch[i] = item{}
		}
		return err
	}
	watchdog := time.NewTicker(max(c.p.cfg.AckTimeout/4, time.Millisecond))
	defer watchdog.Stop()
	for {
		select {
		case now := <-watchdog.C:
			if c.stalled(now) {
				c.fail(fmt.Errorf("%w: no response from the peer in %v", rdma.ErrConnLost, c.p.cfg.AckTimeout))
			}
		case <-c.w.wake:
			batch := c.w.take(spare, false)
			if err := send(batch); err != nil {
				c.fail(lostErr(err))
			}
			spare = batch
		case <-c.dead:
			c.nc.SetWriteDeadline(time.Now().Add(lingerTimeout))
			send(c.w.take(spare, true)) // releases even when the write fails
			c.nc.Close()
			return
		}
	}
}
