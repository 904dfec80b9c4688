package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/rpstream/rpstream/internal/parallel"
	"github.com/rpstream/rpstream/rdma"
	"github.com/rpstream/rpstream/remote/remotepb"
)

// HubConfig configures a Hub.
type HubConfig struct {
	// Provider, RDMA, Addr and DeviceAddr are as in Config: one Peer and
	// one Listener serve every stream.
	Provider   rdma.Provider
	RDMA       rdma.Config
	Addr       string
	DeviceAddr string
	// Open creates or opens the store of the stream req names, the first
	// time a connection opens it (the owner decides where files go and
	// checks the name). Wrap ErrNoStream for a stream it does not have and
	// must not create (req.Create false), ErrMismatch for one that cannot
	// serve req, ErrFull at the owner's limit of open copies (the Hub
	// closes its idle ones and asks again, once); other errors answer
	// CODE_INTERNAL. The Hub owns the store
	// from then on: Drop and Close close it if it is an io.Closer. Calls
	// are serialised with each other and with Drop. Required.
	Open func(req *remotepb.OpenRequest) (RegionStore, error)
	// Authorize, if set, is Config.Authorize for every stream, told which
	// stream the grant is for. Same contract: quick, and it must not call
	// the Hub.
	Authorize func(stream string, epoch uint64, writer string) error
}

// Validate checks c.
func (c *HubConfig) Validate() error {
	tc := Config{Provider: c.Provider, RDMA: c.RDMA, Addr: c.Addr}
	if err := tc.Validate(); err != nil {
		return err
	}
	if c.Open == nil {
		return fmt.Errorf("%w: hub without an Open callback", ErrConfig)
	}
	return nil
}

// Hub serves many streams on one address: one rdma Peer and Listener, and
// one Target per stream, made on the first Open of the stream and sharing
// the Hub's Peer. Each connection's first request must be an Open, which
// binds it to that stream's Target for good; from then on the Target
// answers it exactly as a standalone one would, so epochs, grants and
// fencing are per stream.
type Hub struct {
	cfg  HubConfig
	peer rdma.Peer
	ln   rdma.Listener
	wg   sync.WaitGroup // connection goroutines

	openMu sync.Mutex // serialises Opens of new streams and Drop

	mu      sync.Mutex // guards the fields below
	streams map[string]*Target
	conns   map[rdma.Conn]struct{}
	closed  bool
}

// NewHub opens the rdma peer and listens. Call Serve to accept.
func NewHub(ctx context.Context, cfg HubConfig) (*Hub, error) {
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
	return &Hub{cfg: cfg, peer: peer, ln: ln, streams: map[string]*Target{}, conns: map[rdma.Conn]struct{}{}}, nil
}

// Addr is where writers dial.
func (h *Hub) Addr() string { return h.ln.Addr() }

// Streams lists the streams with a Target, sorted.
func (h *Hub) Streams() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	names := make([]string, 0, len(h.streams))
	for n := range h.streams {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Len is how many streams have a Target.
func (h *Hub) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.streams)
}

// Epoch is the current epoch of stream's Target (0 if it has none).
func (h *Hub) Epoch(stream string) uint64 {
	h.mu.Lock()
	t := h.streams[stream]
	h.mu.Unlock()
	if t == nil {
		return 0
	}
	return t.Epoch()
}

// Serve accepts writers until Close or ctx ends. Peers that fail the
// handshake are dropped and the loop goes on.
func (h *Hub) Serve(ctx context.Context) error {
	for {
		c, err := h.ln.Accept(ctx)
		if err != nil {
			if errors.Is(err, rdma.ErrAuth) || errors.Is(err, rdma.ErrVersion) || errors.Is(err, rdma.ErrHandshake) {
				continue
			}
			if errors.Is(err, rdma.ErrClosed) {
				return nil
			}
			return err
		}
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			c.Close()
			return nil
		}
		h.conns[c] = struct{}{}
		h.wg.Add(1)
		h.mu.Unlock()
		go h.serveConn(c)
	}
}

// serveConn answers c's requests: the first Open binds it to a Target,
// which answers the rest.
func (h *Hub) serveConn(c rdma.Conn) {
	var bound *Target
	defer func() {
		c.Close()
		if bound != nil {
			bound.detach(c)
		}
		h.mu.Lock()
		delete(h.conns, c)
		h.mu.Unlock()
		h.wg.Done()
	}()
	serveConn(h.peer, c, h.cfg.RDMA.MaxMessage, func(raw []byte) *remotepb.Response {
		if bound != nil {
			return bound.Handle(c, raw)
		}
		resp, t := h.first(c, raw)
		bound = t
		return resp
	})
}

// first answers the first request of c, which must be an Open; it returns
// the Target c is now bound to (attached), or nil.
func (h *Hub) first(c rdma.Conn, raw []byte) (*remotepb.Response, *Target) {
	var req remotepb.Request
	if err := proto.Unmarshal(raw, &req); err != nil {
		return errResp(0, remotepb.Code_CODE_MALFORMED, fmt.Sprintf("request does not parse: %v", err)), nil
	}
	if req.Id == 0 {
		return errResp(0, remotepb.Code_CODE_MALFORMED, "request id 0"), nil
	}
	if req.Body == nil {
		return errResp(req.Id, remotepb.Code_CODE_MALFORMED, "request without a body"), nil
	}
	o, ok := req.Body.(*remotepb.Request_Open)
	if !ok {
		return errResp(req.Id, remotepb.Code_CODE_NO_STREAM, "no stream is open on this connection: open one first"), nil
	}
	if err := validOpen(o.Open); err != nil {
		return errResp(req.Id, remotepb.Code_CODE_MALFORMED, err.Error()), nil
	}
	name := o.Open.Stream
	h.openMu.Lock()
	defer h.openMu.Unlock()
	h.mu.Lock()
	t, closed := h.streams[name], h.closed
	h.mu.Unlock()
	if closed {
		return errResp(req.Id, remotepb.Code_CODE_NO_STREAM, "the hub is closing"), nil
	}
	created := t == nil
	if created {
		store, err := h.cfg.Open(o.Open)
		if errors.Is(err, ErrFull) {
			// Room is made from the copies no writer is connected to
			// (openMu is held, as CloseIdle would take it), once.
			if n, _ := h.closeIdleOpenLocked(0); n > 0 {
				store, err = h.cfg.Open(o.Open)
			}
		}
		if err != nil {
			code := remotepb.Code_CODE_INTERNAL
			switch {
			case errors.Is(err, ErrNoStream):
				code = remotepb.Code_CODE_NO_STREAM
			case errors.Is(err, ErrMismatch):
				code = remotepb.Code_CODE_MISMATCH
			}
			return errResp(req.Id, code, fmt.Sprintf("stream %q: %v", name, err)), nil
		}
		if store == nil {
			return errResp(req.Id, remotepb.Code_CODE_INTERNAL, fmt.Sprintf("stream %q: no store", name)), nil
		}
		cfg := Config{Provider: h.cfg.Provider, RDMA: h.cfg.RDMA, Addr: h.cfg.Addr, DeviceAddr: h.cfg.DeviceAddr}
		if auth := h.cfg.Authorize; auth != nil {
			cfg.Authorize = func(epoch uint64, writer string) error { return auth(name, epoch, writer) }
		}
		t = newTarget(store, cfg, h.peer)
	}
	if !t.attach(c) {
		return errResp(req.Id, remotepb.Code_CODE_NO_STREAM, fmt.Sprintf("stream %q was dropped", name)), nil
	}
	resp := t.open(req.Id, c, o.Open)
	if resp.Error != nil {
		t.detach(c)
		if created {
			closeTarget(t)
		}
		return resp, nil
	}
	if created {
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			t.detach(c)
			closeTarget(t)
			return errResp(req.Id, remotepb.Code_CODE_NO_STREAM, "the hub is closing"), nil
		}
		h.streams[name] = t
		h.mu.Unlock()
	}
	return resp, t
}

// closeTarget closes a Hub's Target and then its store.
func closeTarget(t *Target) error {
	err := t.Close()
	if cl, ok := t.store.(io.Closer); ok {
		err = errors.Join(err, cl.Close())
	}
	return err
}

// Drop closes stream's Target (its connections, its registrations) and
// its store if that is an io.Closer, and forgets it: for the deletion of
// the stream. A later Open of the name starts afresh.
func (h *Hub) Drop(stream string) error {
	h.openMu.Lock()
	defer h.openMu.Unlock()
	h.mu.Lock()
	t := h.streams[stream]
	delete(h.streams, stream)
	h.mu.Unlock()
	if t == nil {
		return fmt.Errorf("%w: %q", ErrNoStream, stream)
	}
	return closeTarget(t)
}

// Close stops Serve, closes every connection, every Target and its store
// (as Drop), then the peer, and waits for the connection goroutines.
func (h *Hub) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	conns := h.conns
	h.conns = map[rdma.Conn]struct{}{}
	h.mu.Unlock()
	h.ln.Close()
	for c := range conns {
		c.Close()
	}
	h.wg.Wait()
	h.openMu.Lock()
	h.mu.Lock()
	streams := h.streams
	h.streams = map[string]*Target{}
	h.mu.Unlock()
	h.openMu.Unlock()
	return errors.Join(closeTargets(streams), h.peer.Close())
}

// closeParallel bounds how many Targets Close closes at once: each close
// is mostly the kernel's (persisting the copy, undoing its mapping),
// shares nothing with the others, and one after another they made a node
// holding thousands of copies slow to stop.
const closeParallel = 8

// closeTargets closes targets, closeParallel at a time.
func closeTargets(targets map[string]*Target) error {
	return parallel.Each(targets, closeParallel, closeTarget)
}
