package tcp

import (
	"fmt"
	"io"
	"sync/atomic"
	"time"
	"unsafe"

	"encoding/binary"

	"github.com/rpstream/rpstream/rdma"
)

func (c *conn) handle(h *header) error {
	if h.arg != 0 && h.typ != frameFlush && h.typ != frameError {
		return c.violate(h.id, codeProtocol, "reserved header bytes set")
	}
	switch h.typ {
	case frameWrite, frameRead, frameFlush, frameAtomic, frameSend:
		if h.id != c.lastReq+1 {
			return c.violate(h.id, codeProtocol, fmt.Sprintf("request id %d after %d", h.id, c.lastReq))
		}
		c.lastReq = h.id
		if err := c.serve(h); err != nil {
			return err
		}
		if c.owedAck == 0 {
			c.l.owed = append(c.l.owed, c)
		}
		c.owedAck = h.id
		c.owedUrgent = c.owedUrgent || h.typ != frameWrite
		return nil
	case frameAck:
		if h.n != 0 || h.key != 0 || h.off != 0 {
			return protoErr("ack with fields set")
		}
		return c.completeUpTo(h.id)
	case frameReadResp:
		return c.readResponse(h)
	case frameError:
		return c.remoteError(h)
	}
	return fatal(protoErr(fmt.Sprintf("unknown frame type %d", h.typ)))
}

func protoErr(what string) error { return fmt.Errorf("%w: %s", rdma.ErrProtocol, what) }

// violate queues an error frame for the peer's request id and returns the
// error that poisons this side; the writer sends the frame and closes.
func (c *conn) violate(id uint64, code uint8, detail string) error {
	if c.queue(item{h: header{typ: frameError, arg: code, ch: c.ch, id: id}}) {
		c.l.w.signal()
	}
	err := fmt.Errorf("%w: peer's request %d: %s", rdma.ErrProtocol, id, codeText[code])
	if code != codeProtocol && code != codeInflight {
		err = fmt.Errorf("%w: peer's request %d: %s", rdma.ErrRemoteAccess, id, codeText[code])
	}
	if detail != "" {
		err = fmt.Errorf("%w (%s)", err, detail)
	}
	return err
}

// serve executes one request of the peer on local memory.
func (c *conn) serve(h *header) error {
	cfg := &c.p.cfg
	var v [8]byte
	switch h.typ {
	case frameSend:
		return c.serveSend(h)
	case frameAtomic:
		if h.n != 8 {
			return c.violate(h.id, codeProtocol, "atomic write length")
		}
		if err := c.readPayload(v[:]); err != nil {
			return err
		}
	case frameFlush:
		if h.arg != uint8(rdma.Visibility) && h.arg != uint8(rdma.Persistence) {
			return c.violate(h.id, codeProtocol, "flush type")
		}
	}
	if int64(h.n) > int64(cfg.MaxTransfer) {
		return c.violate(h.id, codeTooLarge, "")
	}
	c.access.RLock()
	defer c.access.RUnlock()
	if c.gone.Load() {
		return c.l.skip(h) // closed while the frame was on its way
	}
	if c.denied {
		return c.violate(h.id, codeAccess, "remote access to this connection is switched off")
	}
	m := c.p.lookup(h.key)
	if m == nil {
		return c.violate(h.id, codeBadKey, "")
	}
	release := m.use.RUnlock
	defer func() {
		if release != nil {
			release()
		}
	}()
	need := map[uint8]rdma.Usage{frameWrite: rdma.UsageWriteDst, frameRead: rdma.UsageReadSrc,
		frameAtomic: rdma.UsageAtomicWrite}[h.typ]
	if h.typ == frameFlush {
		need = rdma.UsageFlushVisibility
		if h.arg == uint8(rdma.Persistence) {
			need = rdma.UsageFlushPersistence
		}
	}
	if m.usage&need != need {
		return c.violate(h.id, codeAccess, "")
	}
	size := uint64(len(m.mem))
	if h.off > size || uint64(h.n) > size-h.off {
		return c.violate(h.id, codeBounds, fmt.Sprintf("[%d, +%d) of %d", h.off, h.n, size))
	}
	dst := m.mem[h.off : h.off+uint64(h.n)]
	switch h.typ {
	case frameWrite:
		if err := c.readPayload(dst); err != nil {
			return err
		}
	case frameRead:
		if int(c.readResps.Load()) >= c.l.remote.MaxInflight {
			return c.violate(h.id, codeInflight, "")
		}
		c.readResps.Add(1)
		c.payloads.Add(1)
		unlock := release
		if c.queue(item{h: header{typ: frameReadResp, ch: c.ch, n: h.n, id: h.id}, payload: dst, c: c,
			release: func() { c.readResps.Add(-1); unlock() }}) {
			c.l.w.signal()
		}
		release = nil // the writer releases it
	case frameAtomic:
		p := unsafe.Pointer(unsafe.SliceData(dst))
		if h.off%8 != 0 || uintptr(p)%8 != 0 {
			return c.violate(h.id, codeAlign, "")
		}
		atomic.StoreUint64((*uint64)(p), binary.NativeEndian.Uint64(v[:]))
	case frameFlush:
		// Stores by this goroutine are visible once it moves on; a
		// persistence flush also runs the persister before the ack.
		if h.arg == uint8(rdma.Persistence) {
			if !cfg.DirectWriteToPmem {
				return c.violate(h.id, codeAccess, "this side did not declare persistence")
			}
			if err := m.pers.Persist(int(h.off), int(h.n)); err != nil {
				return c.violate(h.id, codePersist, err.Error())
			}
		}
	}
	return nil
}

// readPayload reads a request's payload into dst while the registration
// (or a posted receive) is held. When it must wait for the socket, the
// whole payload has to arrive within AckTimeout (plus a second per 64 MiB):
// a peer trickling bytes must not hold the registration, and so
// Deregister, forever.
func (c *conn) readPayload(dst []byte) error {
	l := c.l
	if l.br.Buffered() < len(dst) {
		allow := c.p.cfg.AckTimeout + time.Duration(len(dst)>>26)*time.Second
		l.nc.SetReadDeadline(time.Now().Add(allow))
		defer l.nc.SetReadDeadline(time.Time{})
	}
	l.payloadRead = true
	if _, err := io.ReadFull(l.br, dst); err != nil {
		return fatal(lostErr(err))
	}
	return nil
}

func (c *conn) serveSend(h *header) error {
	if h.key != 0 || h.off != 0 {
		return c.violate(h.id, codeProtocol, "send with key or offset")
	}
	if int(h.n) > c.p.cfg.MaxMessage {
		return c.violate(h.id, codeTooLarge, "")
	}
	// Held while a posted receive's buffer is filled: Close waits for it,
	// so that its caller may unmap the buffer once Close returns (the
	// link's reader outlives the channel).
	c.access.RLock()
	defer c.access.RUnlock()
	if c.gone.Load() {
		return c.l.skip(h) // closed while the frame was on its way
	}
	c.pendMu.Lock()
	if len(c.posted) > 0 {
		r := c.posted[0]
		c.posted = c.posted[1:]
		c.pendMu.Unlock()
		if int(h.n) > len(r.buf) {
			err := fmt.Errorf("%w: message of %d bytes for a %d-byte receive", rdma.ErrTooLarge, h.n, len(r.buf))
			r.complete(0, err)
			c.violate(h.id, codeRecvTooBig, "")
			return err
		}
		if err := c.readPayload(r.buf[:h.n]); err != nil {
			r.complete(0, err)
			return err
		}
		r.complete(int(h.n), nil)
		return nil
	}
	full := len(c.early) >= c.p.cfg.RecvQueue
	c.pendMu.Unlock()
	if full {
		return c.violate(h.id, codeNoRecv, "")
	}
	msg := make([]byte, h.n) // bounded by MaxMessage, RecvQueue times
	if err := c.readPayload(msg); err != nil {
		return err
	}
	c.pendMu.Lock()
	if len(c.posted) > 0 {
		// A Recv was posted while the message was being read.
		r := c.posted[0]
		c.posted = c.posted[1:]
		c.pendMu.Unlock()
		if len(msg) > len(r.buf) {
			err := fmt.Errorf("%w: message of %d bytes for a %d-byte receive", rdma.ErrTooLarge, len(msg), len(r.buf))
			r.complete(0, err)
			c.violate(h.id, codeRecvTooBig, "")
			return err
		}
		r.complete(copy(r.buf, msg), nil)
		return nil
	}
	c.early = append(c.early, msg)
	c.pendMu.Unlock()
	return nil
}

// completeUpTo completes every pending Op with an id up to id.
func (c *conn) completeUpTo(id uint64) error {
	c.pendMu.Lock()
	done, err := c.takeUpToLocked(id, false)
	c.pendMu.Unlock()
	if err != nil {
		return err
	}
	for _, p := range done {
		p.complete(0, nil)
		<-c.slots
	}
	return nil
}

// takeUpToLocked removes the pending Ops with an id up to id. With
// uptoRead, the Op id itself is a read whose data the caller has received
// (it is removed but not returned).
func (c *conn) takeUpToLocked(id uint64, uptoRead bool) ([]pend, error) {
	if id > c.lastID || id == 0 {
		return nil, protoErr(fmt.Sprintf("response for request %d never sent", id))
	}
	i := 0
	for i < len(c.pending) && c.pending[i].id <= id {
		if c.pending[i].kind == rdma.OpRead && !(uptoRead && c.pending[i].id == id) {
			return nil, protoErr(fmt.Sprintf("ack %d covers read %d without its data", id, c.pending[i].id))
		}
		i++
	}
	done := c.pending[:i:i]
	c.pending = c.pending[i:]
	if uptoRead && len(done) > 0 {
		done = done[:len(done)-1]
	}
	return done, nil
}

func (c *conn) readResponse(h *header) error {
	if h.key != 0 || h.off != 0 {
		return protoErr("read response with key or offset")
	}
	// Held while the read's destination is filled: Close waits for it (see
	// serveSend).
	c.access.RLock()
	defer c.access.RUnlock()
	if c.gone.Load() {
		return c.l.skip(h)
	}
	c.pendMu.Lock()
	var p *pend
	for i := range c.pending {
		if c.pending[i].id == h.id {
			p = &c.pending[i]
			break
		}
	}
	if p == nil || p.kind != rdma.OpRead || len(p.dst) != int(h.n) {
		c.pendMu.Unlock()
		return protoErr(fmt.Sprintf("read response %d of %d bytes matches no pending read", h.id, h.n))
	}
	rd := *p
	c.inRead = h.id // fail leaves this Op to us: its buffer is being filled
	c.pendMu.Unlock()
	err := c.readPayload(rd.dst)
	c.pendMu.Lock()
	c.inRead = 0
	if c.failed {
		// fail skipped this Op while its buffer was being filled.
		err := c.opErrLocked()
		c.pendMu.Unlock()
		rd.complete(0, err)
		<-c.slots
		return err
	}
	if err != nil {
		c.pendMu.Unlock()
		return err // the link's fail completes the Op
	}
	done, err := c.takeUpToLocked(h.id, true)
	c.pendMu.Unlock()
	if err != nil {
		return err
	}
	for _, p := range done {
		p.complete(0, nil)
		<-c.slots
	}
	rd.complete(len(rd.dst), nil)
	<-c.slots
	return nil
}

func (c *conn) remoteError(h *header) error {
	cause := remoteErr(h.arg)
	c.pendMu.Lock()
	for i := range c.pending {
		if c.pending[i].id == h.id {
			p := c.pending[i]
			c.pending = append(c.pending[:i], c.pending[i+1:]...)
			c.pendMu.Unlock()
			p.complete(0, cause)
			<-c.slots
			return cause
		}
	}
	c.pendMu.Unlock()
	return cause
}
