package remote

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/rpstream/rpstream/rdma"
	"github.com/rpstream/rpstream/remote/remotepb"
)

// Config configures a Target.
type Config struct {
	// Provider is the rdma provider (tcp.Provider{} where there is no
	// RDMA device).
	Provider rdma.Provider
	// RDMA configures the Peer. Secret is required; DirectWriteToPmem
	// must be set for writers to flush to persistence (the Target then
	// persists with the store's Memory).
	RDMA rdma.Config
	// Addr is the address to listen on ("127.0.0.1:0", ":7300").
	Addr string
	// DeviceAddr selects the RDMA device by local IP (verbs); "" for tcp.
	DeviceAddr string
	// Authorize, if set, is asked before a newer epoch is granted: the
	// cluster layer says whether writer really leads under epoch. An error
	// refuses the grant (CODE_NOT_WRITER, its text in the message) and
	// changes nothing. Nil trusts every authenticated writer, which lets
	// any of them depose the current one with a higher epoch. It runs with
	// the Target locked: it must be quick and must not call the Target.
	Authorize func(epoch uint64, writer string) error
}

// Validate checks c.
func (c *Config) Validate() error {
	if c.Provider == nil {
		return fmt.Errorf("%w: no rdma provider", ErrConfig)
	}
	if c.Addr == "" {
		return fmt.Errorf("%w: no listen address", ErrConfig)
	}
	if err := c.RDMA.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return nil
}

// regionUsage is what a writer may do to a region.
const regionUsage = rdma.UsageWriteDst | rdma.UsageReadSrc | rdma.UsageFlushVisibility |
	rdma.UsageFlushPersistence | rdma.UsageAtomicWrite

// Target serves a RegionStore to one writer per epoch.
type Target struct {
	store RegionStore
	cfg   Config
	peer  rdma.Peer
	ln    rdma.Listener  // nil for a Hub's target, which shares the Hub's peer
	wg    sync.WaitGroup // connections being served (attach/detach)

	grantMu sync.Mutex // serialises grants, which revoke outside mu

	mu     sync.Mutex // guards the fields below
	epoch  uint64
	writer rdma.Conn          // holder of epoch; nil before the first Grant
	name   string             // the holder's writer name, for a reconnect
	mrs    map[int]rdma.MR    // registrations of the current epoch, by slot
	conns  map[rdma.Conn]bool // connections served; true once Opened
	closed bool
	// unused is when the last connection detached (or the Target was
	// made); the Hub closes Targets unused for long (CloseIdle).
	unused time.Time
}

// NewTarget opens the rdma peer and listens. Call Serve to accept.
func NewTarget(ctx context.Context, store RegionStore, cfg Config) (*Target, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// Connections get one-sided access only when granted an epoch.
	cfg.RDMA.DenyOnAccept = true
	peer, err := cfg.Provider.NewPeer(cfg.DeviceAddr, cfg.RDMA)
	if err != nil {
		return nil, err
	}
	ln, err := peer.Listen(ctx, cfg.Addr)
	if err != nil {
		peer.Close()
		return nil, err
	}
	t := newTarget(store, cfg, peer)
	t.ln = ln
	return t, nil
}

// newTarget is the core of a Target over peer, without a listener: the
// owner (NewTarget or a Hub) hands it connections with attach.
func newTarget(store RegionStore, cfg Config, peer rdma.Peer) *Target {
	return &Target{store: store, cfg: cfg, peer: peer,
		mrs: map[int]rdma.MR{}, conns: map[rdma.Conn]bool{}, unused: time.Now()}
}

// Addr is where writers dial.
func (t *Target) Addr() string { return t.ln.Addr() }

// Epoch is the current epoch (0 before the first Grant).
func (t *Target) Epoch() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.epoch
}

// Serve accepts writers until Close or ctx ends. Peers that fail the
// handshake are dropped and the loop goes on.
func (t *Target) Serve(ctx context.Context) error {
	for {
		c, err := t.ln.Accept(ctx)
		if err != nil {
			if errors.Is(err, rdma.ErrAuth) || errors.Is(err, rdma.ErrVersion) || errors.Is(err, rdma.ErrHandshake) {
				continue
			}
			if errors.Is(err, rdma.ErrClosed) {
				return nil
			}
			return err
		}
		if !t.attach(c) {
			c.Close()
			return nil
		}
		go func() {
			defer t.detach(c)
			defer c.Close()
			serveConn(t.peer, c, t.cfg.RDMA.MaxMessage, func(raw []byte) *remotepb.Response { return t.Handle(c, raw) })
		}()
	}
}

// attach makes c one of the connections t serves (Close closes it and
// waits for its detach); false once t is closed.
func (t *Target) attach(c rdma.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.conns[c] = false
	t.wg.Add(1)
	return true
}

// detach ends the service of an attached connection (it does not close
// it).
func (t *Target) detach(c rdma.Conn) {
	t.mu.Lock()
	delete(t.conns, c)
	if len(t.conns) == 0 {
		t.unused = time.Now()
	}
	t.mu.Unlock()
	t.wg.Done()
}

// Close stops Serve, closes every connection and the peer (which revokes
// every registration), and waits for the connection goroutines. A Hub's
// target leaves the shared peer open and deregisters its own regions.
func (t *Target) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	conns := t.conns
	t.conns = map[rdma.Conn]bool{}
	t.mu.Unlock()
	if t.ln != nil {
		t.ln.Close()
	}
	for c := range conns {
		c.Close()
	}
	t.wg.Wait()
	if t.ln != nil {
		return t.peer.Close()
	}
	t.mu.Lock()
	mrs := t.mrs
	t.mrs = map[int]rdma.MR{}
	t.mu.Unlock()
	for _, mr := range mrs {
		mr.Deregister()
	}
	return nil
}

// serveConn answers one connection's control requests with handle until
// the connection fails. peer is the Peer c belongs to; requests may be as
// long as recvMax (our MaxMessage).
func serveConn(peer rdma.Peer, c rdma.Conn, recvMax int, handle func([]byte) *remotepb.Response) {
	// Responses must fit the writer's limit and are kept within
	// MaxResponse.
	sendMax := min(c.Remote().MaxMessage, MaxResponse)
	buf, err := rdma.Alloc(recvMax + sendMax)
	if err != nil {
		return
	}
	defer buf.Free()
	mr, err := peer.Register(buf.Bytes(), rdma.UsageSend|rdma.UsageRecv, nil)
	if err != nil {
		return
	}
	defer mr.Deregister()
	ctx := context.Background() // ops end when the Conn fails or closes
	for {
		r := c.Recv(mr, 0, recvMax)
		if r.Wait(ctx) != nil {
			return
		}
		resp := handle(buf.Bytes()[:r.Len()])
		out, err := proto.Marshal(resp)
		if e := resp.GetError(); err == nil && len(out) > sendMax && e != nil {
			// Cut the error text to fit the writer's message limit.
			e.Message = e.Message[:max(0, len(e.Message)-(len(out)-sendMax))]
			out, err = proto.Marshal(resp)
		}
		if err != nil || len(out) > sendMax {
			return
		}
		copy(buf.Bytes()[recvMax:], out)
		if c.Send(mr, recvMax, len(out)).Wait(ctx) != nil {
			return
		}
	}
}

// MaxResponse bounds a control response; error messages are cut to fit.
const MaxResponse = 4096

// DropRegion revokes the current epoch's registration of slot k, if any,
// so that the store may recycle or discard the slot: the writer's later
// operations on it fail (and poison its connection), and it must ask for
// the slot again. It waits for a request being served on the slot.
func (t *Target) DropRegion(k int) error {
	t.mu.Lock()
	mr := t.mrs[k]
	delete(t.mrs, k)
	t.mu.Unlock()
	if mr == nil {
		return fmt.Errorf("%w: slot %d is not registered", ErrNoRegion, k)
	}
	return mr.Deregister()
}

// Handle answers one control request from c. It is the pure core of the
// control protocol: a malformed request gets CODE_MALFORMED and changes
// nothing.
func (t *Target) Handle(c rdma.Conn, raw []byte) *remotepb.Response {
	var req remotepb.Request
	if err := proto.Unmarshal(raw, &req); err != nil {
		return errResp(0, remotepb.Code_CODE_MALFORMED, fmt.Sprintf("request does not parse: %v", err))
	}
	if req.Id == 0 {
		return errResp(0, remotepb.Code_CODE_MALFORMED, "request id 0")
	}
	switch b := req.Body.(type) {
	case *remotepb.Request_Info:
		t.mu.Lock()
		defer t.mu.Unlock()
		return &remotepb.Response{Id: req.Id, Body: &remotepb.Response_Info{Info: &remotepb.InfoResponse{
			SuperblockSize: SuperblockSize, RegionSize: uint64(t.store.RegionSize()),
			Regions: uint32(t.store.Regions()), Epoch: t.epoch, Persistent: t.cfg.RDMA.DirectWriteToPmem,
		}}}
	case *remotepb.Request_Grant:
		if b.Grant == nil || b.Grant.Epoch == 0 {
			return errResp(req.Id, remotepb.Code_CODE_MALFORMED, "grant without an epoch")
		}
		return t.grant(req.Id, c, b.Grant.Epoch, b.Grant.Writer)
	case *remotepb.Request_Region:
		if b.Region == nil || b.Region.Epoch == 0 {
			return errResp(req.Id, remotepb.Code_CODE_MALFORMED, "region request without an epoch")
		}
		return t.region(req.Id, c, b.Region.Epoch, int(b.Region.Index))
	case *remotepb.Request_Open:
		if err := validOpen(b.Open); err != nil {
			return errResp(req.Id, remotepb.Code_CODE_MALFORMED, err.Error())
		}
		return t.open(req.Id, c, b.Open)
	case *remotepb.Request_Tail:
		if b.Tail == nil || b.Tail.Epoch == 0 {
			return errResp(req.Id, remotepb.Code_CODE_MALFORMED, "tail request without an epoch")
		}
		return t.tail(req.Id, c, b.Tail)
	case *remotepb.Request_Discard:
		if b.Discard == nil || b.Discard.Epoch == 0 {
			return errResp(req.Id, remotepb.Code_CODE_MALFORMED, "discard request without an epoch")
		}
		return t.discard(req.Id, c, b.Discard)
	}
	return errResp(req.Id, remotepb.Code_CODE_MALFORMED, "request without a body")
}

func errResp(id uint64, code remotepb.Code, msg string) *remotepb.Response {
	if len(msg) > 1024 {
		msg = msg[:1024]
	}
	return &remotepb.Response{Id: id, Error: &remotepb.Error{Code: code, Message: msg}}
}

// revokeTimeout bounds the wait for a deposed writer's request in
// progress (it may be frozen mid-frame); after it the connection is closed,
// which ends the request.
const revokeTimeout = time.Second

// grant switches permission to c for epoch: the previous writer's
// connection loses one-sided access and every registration of the old
// epoch is revoked before the answer leaves, so once the new writer hears
// yes the old one can no longer write.
func (t *Target) grant(id uint64, c rdma.Conn, epoch uint64, name string) *remotepb.Response {
	t.grantMu.Lock()
	defer t.grantMu.Unlock()
	t.mu.Lock()
	// The holder of the current epoch may come back on a new connection
	// once its old one is gone (closed or lost), under the same name.
	reconnect := epoch == t.epoch && t.writer != nil && t.writer != c && name != "" &&
		name == t.name && t.writer.Err() != nil
	switch {
	case reconnect:
	case epoch < t.epoch || (epoch == t.epoch && t.writer != c):
		cur := t.epoch
		t.mu.Unlock()
		return errResp(id, remotepb.Code_CODE_STALE_EPOCH, fmt.Sprintf("epoch %d, current %d", epoch, cur))
	case epoch == t.epoch:
		t.mu.Unlock() // the holder asks again: idempotent
		return grantResp(id, epoch)
	}
	if t.cfg.Authorize != nil {
		if err := t.cfg.Authorize(epoch, name); err != nil {
			t.mu.Unlock()
			return errResp(id, remotepb.Code_CODE_NOT_WRITER, fmt.Sprintf("epoch %d for %q not authorised: %v", epoch, name, err))
		}
	}
	t.name = name
	old, oldMRs := t.writer, t.mrs
	t.epoch, t.writer, t.mrs = epoch, c, map[int]rdma.MR{}
	t.mu.Unlock()

	if old != nil && old != c {
		revoke(old)
	}
	for _, mr := range oldMRs {
		mr.Deregister()
	}
	if sw, ok := c.(rdma.AccessSwitcher); ok {
		if err := sw.SetRemoteAccess(true); err != nil {
			return errResp(id, remotepb.Code_CODE_INTERNAL, err.Error())
		}
	}
	return grantResp(id, epoch)
}

func grantResp(id, epoch uint64) *remotepb.Response {
	return &remotepb.Response{Id: id, Body: &remotepb.Response_Grant{Grant: &remotepb.GrantResponse{Epoch: epoch}}}
}

// revoke switches a deposed writer's one-sided access off, or closes its
// connection when that does not complete in revokeTimeout.
func revoke(c rdma.Conn) {
	sw, ok := c.(rdma.AccessSwitcher)
	if !ok {
		return // deregistration alone revokes
	}
	done := make(chan error, 1)
	go func() { done <- sw.SetRemoteAccess(false) }()
	select {
	case err := <-done:
		if err != nil { // a connection that cannot switch is closed
			c.Close()
		}
		return
	case <-time.After(revokeTimeout):
	}
	c.Close()
	<-done
}

// region registers slot k for the current epoch, once, and describes it.
func (t *Target) region(id uint64, c rdma.Conn, epoch uint64, k int) *remotepb.Response {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.writer != c || epoch != t.epoch {
		return errResp(id, remotepb.Code_CODE_NOT_WRITER, fmt.Sprintf("epoch %d is not held by this connection (current %d)", epoch, t.epoch))
	}
	off, rs := RegionOffset(k, t.store.RegionSize()), regionLen(k, t.store.RegionSize())
	mr := t.mrs[k]
	if mr == nil {
		if k != HeaderSlot { // the header always exists
			if err := t.store.EnsureRegion(k); err != nil {
				return errResp(id, remotepb.Code_CODE_NO_REGION, err.Error())
			}
		}
		mem := t.store.Memory()
		b := mem.Bytes()
		if off+rs > len(b) {
			return errResp(id, remotepb.Code_CODE_NO_REGION, fmt.Sprintf("slot %d beyond the mapping", k))
		}
		var err error
		mr, err = t.peer.Register(b[off:off+rs:off+rs], regionUsage, rdma.PersisterAt(mem, off))
		if err != nil {
			return errResp(id, remotepb.Code_CODE_INTERNAL, err.Error())
		}
		t.mrs[k] = mr
	}
	desc, err := mr.Descriptor().MarshalBinary()
	if err != nil {
		return errResp(id, remotepb.Code_CODE_INTERNAL, err.Error())
	}
	return &remotepb.Response{Id: id, Body: &remotepb.Response_Region{Region: &remotepb.RegionResponse{
		Index: uint32(k), Offset: uint64(off), RdmaDescriptor: desc, Epoch: epoch}}}
}
