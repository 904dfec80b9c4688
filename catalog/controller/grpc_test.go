package controller

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/rpstream/rpstream/catalog/catalogpb"
	"github.com/rpstream/rpstream/cluster"
	"github.com/rpstream/rpstream/internal/testutil"
)

var testSecret = []byte("controller tests' cluster secret")

// grpcMember is a controller served by a real gRPC server on loopback.
type grpcMember struct {
	name string
	dir  string
	inc  uint64
	addr string
	lis  net.Listener
	srv  *grpc.Server
	tr   *GRPC
	ctl  *Controller
}

// grpcBook is the address book of gRPC members: their Members func and
// addrOf.
type grpcBook struct {
	mu    sync.Mutex
	addrs map[string]string // by name, of the members that are up
}

func (b *grpcBook) addrOf(name string) (string, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	a, ok := b.addrs[name]
	return a, ok
}

func (b *grpcBook) members() []cluster.Member {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []cluster.Member
	for name, addr := range b.addrs {
		out = append(out, cluster.Member{Name: name, State: cluster.StateAlive, Meta: cluster.Meta{Role: cluster.RoleNode, ClientAddr: addr, Capacity: 1}})
	}
	return out
}

// startGRPC starts member m's gRPC server (on m.addr, or a new port) and
// controller; both are stopped in t.Cleanup (or by stopGRPC).
func startGRPC(t *testing.T, book *grpcBook, m *grpcMember, voters []string) {
	t.Helper()
	addr := m.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	m.lis, m.addr = lis, lis.Addr().String()
	m.tr = NewGRPC(m.name, testSecret, book.addrOf)
	m.srv = grpc.NewServer()
	pb.RegisterControlServer(m.srv, m.tr.Service())
	go m.srv.Serve(lis)
	book.mu.Lock()
	book.addrs[m.name] = m.addr
	book.mu.Unlock()
	cfg := fastConfig(m.name)
	cfg.Incarnation = m.inc
	cfg.Dir = m.dir
	cfg.Voters = voters
	cfg.Transport = m.tr
	cfg.Members = book.members
	cfg.Logger = testLogger().With("member", m.name)
	m.ctl, err = Start(cfg)
	if err != nil {
		m.srv.Stop()
		t.Fatal(err)
	}
	t.Cleanup(func() { stopGRPC(book, m) })
}

func stopGRPC(book *grpcBook, m *grpcMember) {
	if m.ctl == nil {
		return
	}
	book.mu.Lock()
	delete(book.addrs, m.name)
	book.mu.Unlock()
	m.ctl.Stop()
	m.srv.Stop()
	m.ctl = nil
}

// TestGRPCCluster: three voters on real gRPC servers form the group,
// register, create from every member, and a voter restarted on its
// directory (and address) catches up.
func TestGRPCCluster(t *testing.T) {
	book := &grpcBook{addrs: map[string]string{}}
	voters := []string{"g0", "g1", "g2"}
	var ms []*grpcMember
	for i, name := range voters {
		m := &grpcMember{name: name, dir: t.TempDir(), inc: uint64(0x1000 + i)}
		startGRPC(t, book, m, voters)
		ms = append(ms, m)
	}
	ctx := testCtx(t, 30*time.Second)
	for _, m := range ms {
		if err := m.ctl.Register(ctx); err != nil {
			t.Fatalf("register %s: %v", m.name, err)
		}
	}
	for _, m := range ms {
		s, err := m.ctl.CreateStream(ctx, createReq("s-"+m.name, 3))
		if err != nil || s.Leader != m.name {
			t.Fatalf("create from %s: %v, %v", m.name, s, err)
		}
	}
	stopGRPC(book, ms[1])
	if _, err := ms[2].ctl.CreateStream(ctx, createReq("while-down", 2)); err != nil {
		t.Fatal(err)
	}
	startGRPC(t, book, ms[1], voters)
	if !eventually(10*time.Second, func() bool {
		_, ok := ms[1].ctl.Stream("while-down")
		return ok && ms[1].ctl.Applied() == ms[0].ctl.Applied()
	}) {
		t.Fatalf("restarted %s does not catch up: %+v", ms[1].name, ms[1].ctl.Status())
	}
}

// TestGRPCBadInput: what reaches the Control service from outside the
// group is refused with the right code, and the controller goes on
// working: calls without the cluster's token, Raft batches that do not
// decode, messages for another member or of a local type, too many
// messages, requests passed on too often.
func TestGRPCBadInput(t *testing.T) {
	book := &grpcBook{addrs: map[string]string{}}
	m := &grpcMember{name: "solo", dir: t.TempDir(), inc: 7}
	startGRPC(t, book, m, []string{"solo"})
	if !eventually(10*time.Second, m.ctl.IsController) {
		t.Fatal("a group of one elects no controller")
	}
	ctx := testCtx(t, 30*time.Second)
	if err := m.ctl.Register(ctx); err != nil {
		t.Fatal(err)
	}
	term := m.ctl.Status().Term
	cc, err := grpc.NewClient(m.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	cl := pb.NewControlClient(cc)
	authed := m.tr.outgoing(ctx)
	register := &pb.ControlRequest{Req: &pb.ControlRequest_RegisterNode{RegisterNode: &pb.RegisterNode{Name: "other", Incarnation: 9, Role: pb.Role_ROLE_NODE}}}
	heartbeat := func(to uint64, typ raftpb.MessageType) []byte {
		b, err := proto.Marshal(&raftpb.Message{Type: typ.Enum(), To: &to, From: new(RaftID("other")), Term: new(uint64(1))})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tooMany := make([][]byte, maxRaftBatch+1)
	for i := range tooMany {
		tooMany[i] = heartbeat(m.ctl.id, raftpb.MsgHeartbeat)
	}
	wrongToken := metadata.AppendToOutgoingContext(ctx, tokenKey, "not the token")
	for _, tt := range []struct {
		what string
		call func() error
		want codes.Code
	}{
		{"forward without a token", func() error { _, err := cl.Forward(ctx, register); return err }, codes.Unauthenticated},
		{"raft without a token", func() error {
			_, err := cl.Raft(ctx, &pb.RaftBatch{From: "other", Messages: [][]byte{heartbeat(m.ctl.id, raftpb.MsgHeartbeat)}})
			return err
		}, codes.Unauthenticated},
		{"forward with a wrong token", func() error { _, err := cl.Forward(wrongToken, register); return err }, codes.Unauthenticated},
		{"raft with garbage", func() error {
			_, err := cl.Raft(authed, &pb.RaftBatch{From: "other", Messages: [][]byte{{0xff, 0xff, 0xff, 0xff}}})
			return err
		}, codes.InvalidArgument},
		{"raft for another member", func() error {
			_, err := cl.Raft(authed, &pb.RaftBatch{From: "other", Messages: [][]byte{heartbeat(RaftID("someone-else"), raftpb.MsgHeartbeat)}})
			return err
		}, codes.InvalidArgument},
		{"raft of a local type", func() error {
			_, err := cl.Raft(authed, &pb.RaftBatch{From: "other", Messages: [][]byte{heartbeat(m.ctl.id, raftpb.MsgHup)}})
			return err
		}, codes.InvalidArgument},
		{"too many messages", func() error {
			_, err := cl.Raft(authed, &pb.RaftBatch{From: "other", Messages: tooMany})
			return err
		}, codes.InvalidArgument},
		{"forwarded too often", func() error {
			_, err := cl.Forward(authed, &pb.ControlRequest{Hops: maxHops + 1, Req: register.Req})
			return err
		}, codes.InvalidArgument},
	} {
		if err := tt.call(); status.Code(err) != tt.want {
			t.Errorf("%s: %v, want %v", tt.what, err, tt.want)
		}
	}
	// The controller still decides: a forwarded registration, and a
	// create from the member itself.
	resp, err := cl.Forward(authed, register)
	if err != nil || resp.Code != pb.ErrorCode_ERROR_CODE_NONE || resp.Controller != "solo" {
		t.Fatalf("forwarded register: %v, %v", resp, err)
	}
	if _, err := m.ctl.CreateStream(ctx, createReq("after-garbage", 1)); err != nil {
		t.Fatal(err)
	}
	// A refused message must not have moved the group to another term.
	if st := m.ctl.Status(); st.State != "leader" || st.Term != term {
		t.Fatalf("status after bad input: %+v; term %d before", st, term)
	}
}

// blockingSink is a Sink whose ReportSnapshot waits until release is
// closed, as the Controller's does while its Raft loop (the caller of
// Send) is busy and its queue of operations full.
type blockingSink struct {
	release     chan struct{}
	unreachable atomic.Int64
	snapshots   atomic.Int64
}

func (s *blockingSink) NameOf(id uint64) (string, bool) { return "peer", true }
func (s *blockingSink) Receive(context.Context, string, []*raftpb.Message) error {
	return errors.New("blockingSink: Receive")
}
func (s *blockingSink) ReportUnreachable(uint64) { s.unreachable.Add(1) }
func (s *blockingSink) ReportSnapshot(uint64, bool) {
	<-s.release
	s.snapshots.Add(1)
}
func (s *blockingSink) Handle(context.Context, *pb.ControlRequest) (*pb.ControlResponse, error) {
	return nil, errors.New("blockingSink: Handle")
}

// TestGRPCSendNeverBlocks: Send runs on the Raft loop and must return at
// once, even when a peer's queue is full (the peer hangs) and the
// message that does not fit is a snapshot, whose failure is reported
// through the loop itself.
func TestGRPCSendNeverBlocks(t *testing.T) {
	// A peer that accepts connections and never answers.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.Map
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			conns.Store(c, true)
		}
	}()
	sink := &blockingSink{release: make(chan struct{})}
	release := sync.OnceFunc(func() { close(sink.release) })
	tr := NewGRPC("self", testSecret, func(string) (string, bool) { return lis.Addr().String(), true })
	tr.Attach(sink)
	defer func() {
		release()
		lis.Close()
		<-accepted
		conns.Range(func(c, _ any) bool { c.(net.Conn).Close(); return true })
		tr.Close()
	}()
	msg := func(typ raftpb.MessageType) *raftpb.Message {
		return &raftpb.Message{Type: typ.Enum(), To: new(RaftID("peer")), From: new(RaftID("self")), Term: new(uint64(1))}
	}
	// One message the peer's goroutine takes and hangs on, then a full
	// queue.
	tr.Send([]*raftpb.Message{msg(raftpb.MsgApp)})
	time.Sleep(50 * time.Millisecond)
	var fill []*raftpb.Message
	for range 1024 {
		fill = append(fill, msg(raftpb.MsgHeartbeat))
	}
	tr.Send(fill)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tr.Send([]*raftpb.Message{msg(raftpb.MsgSnap)})
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		release()
		<-done
		t.Fatal("Send of a snapshot to a full queue blocked until the sink's ReportSnapshot returned: it would stop the Raft loop that calls both")
	}
	if sink.unreachable.Load() == 0 {
		t.Fatal("the message that did not fit was not reported unreachable")
	}
}

// acceptSink takes every Raft message.
type acceptSink struct{ blockingSink }

func (s *acceptSink) Receive(context.Context, string, []*raftpb.Message) error { return nil }

// TestGRPCLogsUndelivered: Raft messages that do not reach a member for
// seconds are logged with the reason (Raft itself only marks the member
// unreachable, and a member that never catches up showed nothing in any
// log), and so is their reaching it again.
func TestGRPCLogsUndelivered(t *testing.T) {
	// An address that refuses connections, and then a member that serves.
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := closed.Addr().String()
	closed.Close()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	peer := NewGRPC("peer", testSecret, func(string) (string, bool) { return "", false })
	peer.Attach(&acceptSink{})
	srv := grpc.NewServer()
	pb.RegisterControlServer(srv, peer.Service())
	go srv.Serve(lis)
	defer srv.Stop()
	defer peer.Close()

	var mu sync.Mutex
	addr := refused
	tr := NewGRPC("self", testSecret, func(string) (string, bool) {
		mu.Lock()
		defer mu.Unlock()
		return addr, true
	})
	var out testutil.Buffer
	tr.UseLogger(slog.New(slog.NewTextHandler(&out, nil)))
	sink := &blockingSink{release: make(chan struct{})}
	tr.Attach(sink)
	defer tr.Close()
	msg := &raftpb.Message{Type: raftpb.MsgHeartbeat.Enum(), To: new(RaftID("peer")), From: new(RaftID("self")), Term: new(uint64(1))}
	waitLog := func(what string) {
		t.Helper()
		for deadline := time.Now().Add(undeliveredAfter + 10*time.Second); !strings.Contains(out.String(), what); time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no log %q; the log:\n%s", what, out.String())
			}
			tr.Send([]*raftpb.Message{msg})
		}
	}
	waitLog("do not reach a member")
	if s := out.String(); !strings.Contains(s, "member=peer") || !strings.Contains(s, "connection refused") {
		t.Fatalf("the log names neither the member nor the reason:\n%s", s)
	}
	if sink.unreachable.Load() == 0 {
		t.Fatal("the undelivered messages were not reported unreachable to Raft")
	}
	mu.Lock()
	addr = lis.Addr().String()
	mu.Unlock()
	waitLog("reach the member again")
	if n := strings.Count(out.String(), "do not reach a member"); n != 1 {
		t.Fatalf("%d logs of the same failure, want 1 (at most one every %v):\n%s", n, undeliveredLogEvery, out.String())
	}
}
