package controller

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/rpstream/rpstream/catalog/catalogpb"
	"github.com/rpstream/rpstream/pki"
)

// Transport carries the controller group's traffic between nodes.
type Transport interface {
	// Attach gives the transport the controller it delivers to (once,
	// from Start).
	Attach(Sink)
	// Send delivers Raft messages, best effort: it never blocks the Raft
	// loop for long, and reports what it could not deliver to the Sink
	// (ReportUnreachable, ReportSnapshot).
	Send(msgs []*raftpb.Message)
	// Forward passes a request to member name's controller (Sink.Handle
	// there). An error with code Unavailable means it did not get there.
	Forward(ctx context.Context, name string, req *pb.ControlRequest) (*pb.ControlResponse, error)
	// Close stops sending and releases connections.
	Close()
}

// Sink is what a transport delivers to: the Controller.
type Sink interface {
	NameOf(id uint64) (string, bool)
	Receive(ctx context.Context, from string, msgs []*raftpb.Message) error
	ReportUnreachable(id uint64)
	ReportSnapshot(id uint64, failed bool)
	Handle(ctx context.Context, req *pb.ControlRequest) (*pb.ControlResponse, error)
}

var _ Sink = (*Controller)(nil)

// GRPC is the Transport over the Control gRPC service, which every node
// serves beside its client service (Service). Without TLS, calls carry a
// token derived from the cluster's secret; a call without the right one
// is refused (Unauthenticated). With TLS (UseTLS), calls go over mutual
// TLS and the caller must present a node certificate of the cluster's CA
// (pki.NodeName); the token is not used.
type GRPC struct {
	self    string
	addrOf  func(name string) (string, bool)
	token   string
	maxSize int
	tls     *tls.Config // nil: plaintext and the token
	tlsLog  *handshakeLog
	log     *slog.Logger // where undelivered Raft messages are told (UseLogger)

	mu    sync.Mutex
	sink  Sink
	peers map[string]*grpcPeer // by member name
	conns map[string]*grpc.ClientConn
	done  bool
	// ctx ends with Close: it bounds the sends in flight.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

var _ Transport = (*GRPC)(nil)

// tokenKey is the metadata key of the control token.
const tokenKey = "rpstream-control-token"

// NewGRPC returns a transport for member self that reaches member name at
// addrOf(name) (its client address), authenticating with secret.
func NewGRPC(self string, secret []byte, addrOf func(name string) (string, bool)) *GRPC {
	sum := sha256.Sum256(append([]byte("rpstream control token\x00"), secret...))
	t := &GRPC{self: self, addrOf: addrOf, token: hex.EncodeToString(sum[:]), maxSize: 64 << 20,
		log:   slog.New(slog.DiscardHandler),
		peers: map[string]*grpcPeer{}, conns: map[string]*grpc.ClientConn{}}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	return t
}

// UseTLS makes the transport dial with cfg (pki.Keys.PeerConfig) and
// its service require the caller's node certificate. Call it before
// Attach; the node's gRPC server must then serve TLS. Handshakes that
// fail (a member whose certificate this node does not trust, or that
// does not trust this node's) are logged to log, once per address every
// handshakeLogEvery: the calls themselves only time out.
func (t *GRPC) UseTLS(cfg *tls.Config, log *slog.Logger) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.tls = cfg
	t.tlsLog = &handshakeLog{log: log, last: map[string]time.Time{}}
}

// UseLogger makes the transport log, to log, a member its Raft messages
// have not reached for undeliveredAfter (once every undeliveredLogEvery
// while that lasts, with the last error), and when they reach it again.
// Call it before Attach. Without it nothing is logged: Raft only sees
// the member as unreachable, and an operator would see a member that
// never catches up without a reason.
func (t *GRPC) UseLogger(log *slog.Logger) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.log = log
}

// undeliveredAfter is how long sends to a member fail before it is
// logged (a member starting or restarting refuses connections for a
// moment); undeliveredLogEvery the least time between two such logs.
const (
	undeliveredAfter    = 3 * time.Second
	undeliveredLogEvery = 30 * time.Second
)

// handshakeLogEvery is the least time between two logs of failed
// handshakes with one address.
const handshakeLogEvery = 10 * time.Second

type handshakeLog struct {
	log  *slog.Logger
	mu   sync.Mutex
	last map[string]time.Time // by address
}

func (h *handshakeLog) failed(addr string, err error) {
	h.mu.Lock()
	if time.Since(h.last[addr]) < handshakeLogEvery {
		h.mu.Unlock()
		return
	}
	h.last[addr] = time.Now()
	h.mu.Unlock()
	h.log.Warn("control: TLS handshake with a member failed (is its certificate from this cluster's CA?)", "addr", addr, "err", err)
}

// loggedClientCreds logs the client handshakes that fail.
type loggedClientCreds struct {
	credentials.TransportCredentials
	log *handshakeLog
}

func (c loggedClientCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ClientHandshake(ctx, authority, raw)
	if err != nil && ctx.Err() == nil {
		c.log.failed(authority, err)
	}
	return conn, info, err
}

func (c loggedClientCreds) Clone() credentials.TransportCredentials {
	return loggedClientCreds{c.TransportCredentials.Clone(), c.log}
}

func (t *GRPC) Attach(s Sink) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sink = s
}

// grpcPeer sends Raft messages to one member from its own goroutine, so
// that a slow or dead member delays nobody else.
type grpcPeer struct {
	name string
	q    chan *raftpb.Message
	stop chan struct{}
	// failingSince is when the sends began to fail (zero: the last one
	// got through), logged when the last log of it was; the send loop's.
	failingSince, logged time.Time
}

// noteSend logs, per UseLogger, what a send to p says of p's reach.
func (t *GRPC) noteSend(p *grpcPeer, n int, err error) {
	now := time.Now()
	t.mu.Lock()
	log, done := t.log, t.done
	t.mu.Unlock()
	switch {
	case err == nil:
		if !p.logged.IsZero() {
			log.Info("control: Raft messages reach the member again", "member", p.name, "after", now.Sub(p.failingSince).Round(time.Millisecond))
		}
		p.failingSince, p.logged = time.Time{}, time.Time{}
	case done || t.ctx.Err() != nil:
	case p.failingSince.IsZero():
		p.failingSince = now
	case now.Sub(p.failingSince) >= undeliveredAfter && now.Sub(p.logged) >= undeliveredLogEvery:
		p.logged = now
		log.Warn("control: Raft messages do not reach a member (it does not follow the catalog meanwhile)", "member", p.name, "for", now.Sub(p.failingSince).Round(time.Millisecond), "last_batch", n, "err", err)
	}
}

func (t *GRPC) Send(msgs []*raftpb.Message) {
	for _, m := range msgs {
		t.mu.Lock()
		sink, done := t.sink, t.done
		t.mu.Unlock()
		if done || sink == nil {
			return
		}
		name, ok := sink.NameOf(m.GetTo())
		if !ok {
			sink.ReportUnreachable(m.GetTo())
			continue
		}
		p := t.peer(name)
		if p == nil {
			return
		}
		select {
		case p.q <- m:
		default:
			// Full: Raft sends again.
			sink.ReportUnreachable(m.GetTo())
			if m.GetType() == raftpb.MsgSnap {
				// Reported from another goroutine: ReportSnapshot waits
				// for the Raft loop, which is the caller of Send.
				t.reportSnapshotFailed(sink, m.GetTo())
			}
		}
	}
}

// reportSnapshotFailed tells sink, from a goroutine Close waits for,
// that a snapshot to id was not sent.
func (t *GRPC) reportSnapshotFailed(sink Sink, id uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done {
		return
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		sink.ReportSnapshot(id, true)
	}()
}

func (t *GRPC) peer(name string) *grpcPeer {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done {
		return nil
	}
	if p := t.peers[name]; p != nil {
		return p
	}
	p := &grpcPeer{name: name, q: make(chan *raftpb.Message, 1024), stop: make(chan struct{})}
	t.peers[name] = p
	t.wg.Add(1)
	go t.sendLoop(p)
	return p
}

// sendLoop sends what is queued for p, as batches.
func (t *GRPC) sendLoop(p *grpcPeer) {
	defer t.wg.Done()
	for {
		var batch []*raftpb.Message
		select {
		case <-p.stop:
			return
		case m := <-p.q:
			batch = append(batch, m)
		}
	more:
		for len(batch) < 256 {
			select {
			case m := <-p.q:
				batch = append(batch, m)
			default:
				break more
			}
		}
		err := t.sendBatch(p.name, batch)
		t.noteSend(p, len(batch), err)
		t.mu.Lock()
		sink := t.sink
		t.mu.Unlock()
		for _, m := range batch {
			if err != nil {
				sink.ReportUnreachable(m.GetTo())
			}
			if m.GetType() == raftpb.MsgSnap {
				sink.ReportSnapshot(m.GetTo(), err != nil)
			}
		}
	}
}

func (t *GRPC) sendBatch(name string, batch []*raftpb.Message) error {
	cc, err := t.conn(name)
	if err != nil {
		return err
	}
	rb := &pb.RaftBatch{From: t.self}
	for _, m := range batch {
		b, err := proto.Marshal(m)
		if err != nil {
			return err
		}
		rb.Messages = append(rb.Messages, b)
	}
	// Close ends a send to a hung member at once.
	ctx, cancel := context.WithTimeout(t.ctx, 5*time.Second)
	defer cancel()
	_, err = pb.NewControlClient(cc).Raft(t.outgoing(ctx), rb)
	return err
}

func (t *GRPC) outgoing(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, tokenKey, t.token)
}

// reconnect is how often a connection to a member that is down tries
// again: at least every second. gRPC's default backoff grows to two
// minutes, and a call on a connection waiting to try again fails at
// once: a member back after a long absence would hear nothing from the
// leader (no entries, no answers to its read barriers) for that long.
var reconnect = grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
	MinConnectTimeout: 5 * time.Second,
}

// conn is a connection to member name's current address.
func (t *GRPC) conn(name string) (*grpc.ClientConn, error) {
	addr, ok := t.addrOf(name)
	if !ok {
		return nil, status.Errorf(codes.Unavailable, "controller: no address known for member %s", name)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done {
		return nil, status.Error(codes.Unavailable, ErrStopped.Error())
	}
	if cc := t.conns[addr]; cc != nil {
		return cc, nil
	}
	creds := insecure.NewCredentials()
	if t.tls != nil {
		creds = loggedClientCreds{credentials.NewTLS(t.tls), t.tlsLog}
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds),
		grpc.WithConnectParams(reconnect),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(t.maxSize), grpc.MaxCallSendMsgSize(t.maxSize)))
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "controller: %s at %s: %v", name, addr, err)
	}
	t.conns[addr] = cc
	return cc, nil
}

func (t *GRPC) Forward(ctx context.Context, name string, req *pb.ControlRequest) (*pb.ControlResponse, error) {
	cc, err := t.conn(name)
	if err != nil {
		return nil, err
	}
	return pb.NewControlClient(cc).Forward(t.outgoing(ctx), req)
}

func (t *GRPC) Close() {
	t.mu.Lock()
	if t.done {
		t.mu.Unlock()
		return
	}
	t.done = true
	t.cancel()
	for _, p := range t.peers {
		close(p.stop)
	}
	conns := t.conns
	t.mu.Unlock()
	t.wg.Wait()
	for _, cc := range conns {
		cc.Close()
	}
}

// Service is the Control gRPC service of this transport's controller,
// to register on the node's gRPC server.
func (t *GRPC) Service() pb.ControlServer { return &controlService{t: t} }

type controlService struct {
	pb.UnimplementedControlServer
	t *GRPC
}

func (s *controlService) check(ctx context.Context) (Sink, error) {
	s.t.mu.Lock()
	sink, useTLS := s.t.sink, s.t.tls != nil
	s.t.mu.Unlock()
	if useTLS {
		if _, ok := callerNode(ctx); !ok {
			return nil, status.Error(codes.Unauthenticated, "control: the caller presented no node certificate of this cluster's CA")
		}
	} else {
		md, _ := metadata.FromIncomingContext(ctx)
		got := md.Get(tokenKey)
		if len(got) != 1 || subtle.ConstantTimeCompare([]byte(got[0]), []byte(s.t.token)) != 1 {
			return nil, status.Error(codes.Unauthenticated, "control: missing or wrong cluster token (is this member started with the cluster's secret?)")
		}
	}
	if sink == nil {
		return nil, status.Error(codes.Unavailable, "control: the catalog is not started yet")
	}
	return sink, nil
}

// maxRaftBatch bounds the messages of one RaftBatch.
const maxRaftBatch = 4096

func (s *controlService) Raft(ctx context.Context, b *pb.RaftBatch) (*pb.RaftAck, error) {
	sink, err := s.check(ctx)
	if err != nil {
		return nil, err
	}
	if len(b.Messages) > maxRaftBatch {
		return nil, status.Errorf(codes.InvalidArgument, "control: %d Raft messages in one batch, at most %d", len(b.Messages), maxRaftBatch)
	}
	msgs := make([]*raftpb.Message, 0, len(b.Messages))
	for i, raw := range b.Messages {
		m := &raftpb.Message{}
		if err := proto.Unmarshal(raw, m); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "control: Raft message %d from %q is malformed: %v", i, b.From, err)
		}
		msgs = append(msgs, m)
	}
	if err := sink.Receive(ctx, b.From, msgs); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return &pb.RaftAck{}, nil
}

func (s *controlService) Forward(ctx context.Context, req *pb.ControlRequest) (*pb.ControlResponse, error) {
	sink, err := s.check(ctx)
	if err != nil {
		return nil, err
	}
	if req.Hops > maxHops {
		return nil, status.Errorf(codes.InvalidArgument, "control: request forwarded %d times", req.Hops)
	}
	return sink.Handle(ctx, req)
}

// callerNode is the member name in the verified node certificate of a
// call's TLS connection.
func callerNode(ctx context.Context) (string, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", false
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return "", false
	}
	return pki.NodeName(ti.State)
}

// String names the transport in logs.
func (t *GRPC) String() string { return fmt.Sprintf("grpc control transport of %s", t.self) }
