package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/catalog/controller"
	"github.com/rpstream/rpstream/cluster"
	"github.com/rpstream/rpstream/local"
)

// testNode is a Server on a loopback port and a client connected to it.
type testNode struct {
	srv     *Server
	ctl     *controller.Controller
	members atomic.Pointer[cluster.Cluster]
	addr    string
	conn    *grpc.ClientConn
	c       api.StreamsClient
	served  chan error
	reg     *prometheus.Registry // the node's metrics (cluster nodes)
}

func startNode(t *testing.T, dir string, opts ...func(*Config)) *testNode {
	t.Helper()
	cfg := DefaultConfig(dir)
	cfg.RegionSize = 64 << 10
	cfg.MaxStreamSize = 64 << 20
	cfg.Logger = slog.New(slog.DiscardHandler)
	for _, o := range opts {
		o(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n := &testNode{srv: srv, addr: lis.Addr().String(), served: make(chan error, 1)}
	go func() { n.served <- srv.Serve(lis) }()
	n.conn, err = grpc.NewClient(n.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	n.c = api.NewStreamsClient(n.conn)
	t.Cleanup(func() { n.stop(t) })
	return n
}

// stop shuts the server down (once) and checks Serve returned nil.
func (n *testNode) stop(t *testing.T) {
	t.Helper()
	if n.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.srv.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-n.served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if n.conn != nil {
		n.conn.Close()
	}
	n.srv = nil
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func wantCode(t *testing.T, err error, code codes.Code) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("got %v, want code %v", err, code)
	}
}

func TestCreateAppendReadDelete(t *testing.T) {
	ctx := testCtx(t)
	n := startNode(t, t.TempDir())
	cr, err := n.c.CreateStream(ctx, &api.CreateStreamRequest{Stream: "orders", Replicas: 3, Acks: api.AckPolicy_ACK_POLICY_ALL})
	if err != nil {
		t.Fatal(err)
	}
	if st := cr.Status; st.Replicas != 3 || st.Acks != api.AckPolicy_ACK_POLICY_ALL || !st.UnderReplicated || st.Epoch != 1 || st.LeaderAddr != n.addr || st.RegionSize != 64<<10 {
		t.Fatalf("status after create: %v", st)
	}
	_, err = n.c.CreateStream(ctx, &api.CreateStreamRequest{Stream: "orders"})
	wantCode(t, err, codes.AlreadyExists)

	// Enough entries to fill several 64 KiB regions.
	const count = 300
	for i := range count {
		r, err := n.c.Append(ctx, &api.AppendRequest{Stream: "orders", Data: fmt.Appendf(nil, "entry %d %0500d", i, i)})
		if err != nil {
			t.Fatal(err)
		}
		if r.Position != uint64(i) || r.Duplicate {
			t.Fatalf("append %d: %v", i, r)
		}
	}
	var got int
	for from := uint64(0); from < count; {
		r, err := n.c.Read(ctx, &api.ReadRequest{Stream: "orders", From: from, MaxEntries: 70})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Entries) == 0 || len(r.Entries) > 70 || r.Committed != count {
			t.Fatalf("read from %d: %d entries, committed %d", from, len(r.Entries), r.Committed)
		}
		for _, e := range r.Entries {
			if want := fmt.Sprintf("entry %d %0500d", got, got); e.Position != uint64(got) || string(e.Data) != want {
				t.Fatalf("entry %d: position %d, %.20q", got, e.Position, e.Data)
			}
			got++
		}
		from = r.Next
	}
	r, err := n.c.Read(ctx, &api.ReadRequest{Stream: "orders", From: count})
	if err != nil || len(r.Entries) != 0 || r.Next != count {
		t.Fatalf("read at the end: %v, %v", r, err)
	}
	st, err := n.c.StreamStatus(ctx, &api.StreamStatusRequest{Stream: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	if st.Committed != count || st.Persisted != count || len(st.Regions) < 3 || st.Leader != "node" {
		t.Fatalf("status: %v", st)
	}
	ls, err := n.c.ListStreams(ctx, &api.ListStreamsRequest{})
	if err != nil || len(ls.Streams) != 1 || ls.Streams[0] != "orders" {
		t.Fatalf("list: %v, %v", ls, err)
	}
	if _, err := n.c.DeleteStream(ctx, &api.DeleteStreamRequest{Stream: "orders"}); err != nil {
		t.Fatal(err)
	}
	_, err = n.c.Read(ctx, &api.ReadRequest{Stream: "orders"})
	wantCode(t, err, codes.NotFound)
	_, err = n.c.DeleteStream(ctx, &api.DeleteStreamRequest{Stream: "orders"})
	wantCode(t, err, codes.NotFound)
	// The name is free again.
	if _, err := n.c.CreateStream(ctx, &api.CreateStreamRequest{Stream: "orders"}); err != nil {
		t.Fatal(err)
	}
	m, err := n.c.Members(ctx, &api.MembersRequest{})
	if err != nil || len(m.Members) != 1 || !m.Members[0].Self || m.Members[0].ClientAddr != n.addr {
		t.Fatalf("members: %v, %v", m, err)
	}
}

func TestErrorCodes(t *testing.T) {
	ctx := testCtx(t)
	n := startNode(t, t.TempDir())
	for _, name := range []string{"", ".hidden", "a/b", "-x", "a b", string(make([]byte, 129))} {
		_, err := n.c.CreateStream(ctx, &api.CreateStreamRequest{Stream: name})
		wantCode(t, err, codes.InvalidArgument)
	}
	_, err := n.c.CreateStream(ctx, &api.CreateStreamRequest{Stream: "s", RegionSize: 5000})
	wantCode(t, err, codes.InvalidArgument)
	_, err = n.c.CreateStream(ctx, &api.CreateStreamRequest{Stream: "s", Acks: 9})
	wantCode(t, err, codes.InvalidArgument)
	_, err = n.c.Append(ctx, &api.AppendRequest{Stream: "missing"})
	wantCode(t, err, codes.NotFound)
	_, err = n.c.Append(ctx, &api.AppendRequest{Stream: "../x"})
	wantCode(t, err, codes.InvalidArgument)
	if _, err := n.c.CreateStream(ctx, &api.CreateStreamRequest{Stream: "small", RegionSize: 16 << 10}); err != nil {
		t.Fatal(err)
	}
	_, err = n.c.Append(ctx, &api.AppendRequest{Stream: "small", Data: make([]byte, 16<<10)})
	wantCode(t, err, codes.ResourceExhausted)
	// The stream still works after a refused append.
	if r, err := n.c.Append(ctx, &api.AppendRequest{Stream: "small", Data: []byte("ok")}); err != nil || r.Position != 0 {
		t.Fatalf("append after a refused one: %v, %v", r, err)
	}
}

func TestStatusOf(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code codes.Code
	}{
		{fmt.Errorf("x: %w", local.ErrTrimmed), codes.FailedPrecondition},
		{local.ErrNoSpace, codes.ResourceExhausted},
		{local.ErrTooLarge, codes.ResourceExhausted},
		{local.ErrClosed, codes.Unavailable},
		{ErrClosing, codes.Unavailable},
		{fmt.Errorf("y: %w", local.ErrCorrupt), codes.DataLoss},
		{errSeqTooOld, codes.FailedPrecondition},
		{local.ErrLocked, codes.FailedPrecondition},
		{ErrNoStream, codes.NotFound},
		{ErrExists, codes.AlreadyExists},
		{ErrBadName, codes.InvalidArgument},
		{context.Canceled, codes.Canceled},
		{errors.New("other"), codes.Internal},
		{status.Error(codes.Aborted, "kept"), codes.Aborted},
	} {
		if got := status.Code(statusOf(tc.err)); got != tc.code {
			t.Errorf("statusOf(%v) = %v, want %v", tc.err, got, tc.code)
		}
	}
	if statusOf(nil) != nil {
		t.Error("statusOf(nil) != nil")
	}
}

func TestIdempotentAppend(t *testing.T) {
	ctx := testCtx(t)
	n := startNode(t, t.TempDir())
	if _, err := n.c.CreateStream(ctx, &api.CreateStreamRequest{Stream: "s"}); err != nil {
		t.Fatal(err)
	}
	app := func(pid string, seq uint64, data string) (*api.AppendResponse, error) {
		return n.c.Append(ctx, &api.AppendRequest{Stream: "s", ProducerId: pid, Sequence: seq, Data: []byte(data)})
	}
	r1, err := app("p", 1, "one")
	if err != nil || r1.Position != 0 || r1.Duplicate {
		t.Fatalf("%v %v", r1, err)
	}
	r2, err := app("p", 1, "one again")
	if err != nil || r2.Position != 0 || !r2.Duplicate {
		t.Fatalf("retry: %v %v", r2, err)
	}
	r3, err := app("q", 1, "other producer")
	if err != nil || r3.Position != 1 || r3.Duplicate {
		t.Fatalf("other producer: %v %v", r3, err)
	}
	// Gaps and reordering are allowed.
	if r, err := app("p", 5, "five"); err != nil || r.Position != 2 {
		t.Fatalf("%v %v", r, err)
	}
	if r, err := app("p", 3, "three"); err != nil || r.Position != 3 || r.Duplicate {
		t.Fatalf("%v %v", r, err)
	}
	// Beyond the window the position is forgotten: 1, 3 and 5 drop out.
	for seq := uint64(6); seq < 6+64; seq++ {
		if _, err := app("p", seq, "x"); err != nil {
			t.Fatal(err)
		}
	}
	for _, seq := range []uint64{1, 2, 3, 4, 5} {
		_, err = app("p", seq, "old")
		wantCode(t, err, codes.FailedPrecondition)
	}
	if r, err := app("p", 6, "x"); err != nil || !r.Duplicate || r.Position != 4 {
		t.Fatalf("oldest in window: %v %v", r, err)
	}

	// Concurrent retries of the same requests store each once.
	var wg sync.WaitGroup
	pos := make([][]uint64, 4)
	for g := range pos {
		wg.Go(func() {
			for seq := uint64(1); seq <= 50; seq++ {
				r, err := app("c", seq, fmt.Sprint(seq))
				if err != nil {
					t.Error(err)
					return
				}
				pos[g] = append(pos[g], r.Position)
			}
		})
	}
	wg.Wait()
	for g := range pos {
		if fmt.Sprint(pos[g]) != fmt.Sprint(pos[0]) {
			t.Fatalf("goroutine %d got positions %v, goroutine 0 %v", g, pos[g], pos[0])
		}
	}
	st, err := n.c.StreamStatus(ctx, &api.StreamStatusRequest{Stream: "s"})
	if err != nil {
		t.Fatal(err)
	}
	if want := uint64(4 + 64 + 50); st.Committed != want {
		t.Fatalf("committed %d, want %d (each sequence stored once)", st.Committed, want)
	}
}

func TestAppendStream(t *testing.T) {
	ctx := testCtx(t)
	n := startNode(t, t.TempDir())
	if _, err := n.c.CreateStream(ctx, &api.CreateStreamRequest{Stream: "s"}); err != nil {
		t.Fatal(err)
	}
	call, err := n.c.AppendStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const count = 2000
	sent := make(chan error, 1)
	go func() {
		for i := range count {
			// Every tenth request is a retry of the one before.
			seq := uint64(i)
			if i%10 == 9 {
				seq--
			}
			if err := call.Send(&api.AppendRequest{Stream: "s", Data: fmt.Appendf(nil, "%d", seq), ProducerId: "p", Sequence: seq}); err != nil {
				sent <- err
				return
			}
		}
		sent <- call.CloseSend()
	}()
	var next uint64
	for i := range count {
		r, err := call.Recv()
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		if i%10 == 9 {
			if !r.Duplicate || r.Position != next-1 {
				t.Fatalf("answer %d: %v, want duplicate of %d", i, r, next-1)
			}
			continue
		}
		if r.Duplicate || r.Position != next {
			t.Fatalf("answer %d: %v, want position %d", i, r, next)
		}
		next++
	}
	if _, err := call.Recv(); err != io.EOF {
		t.Fatalf("after the last answer: %v", err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}

	// A failing append ends the call with its status.
	call, err = n.c.AppendStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	call.Send(&api.AppendRequest{Stream: "s", Data: []byte("fine")})
	call.Send(&api.AppendRequest{Stream: "nope"})
	if r, err := call.Recv(); err != nil || r.Position != next {
		t.Fatalf("%v %v", r, err)
	}
	_, err = call.Recv()
	wantCode(t, err, codes.InvalidArgument)

	call, err = n.c.AppendStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	call.Send(&api.AppendRequest{Stream: "missing"})
	_, err = call.Recv()
	wantCode(t, err, codes.NotFound)
}

// tailUntil reads tail messages until n entries arrived, checking order.
func tailUntil(t *testing.T, call api.Streams_TailClient, from uint64, n int) {
	t.Helper()
	next := from
	for next < from+uint64(n) {
		r, err := call.Recv()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range r.Entries {
			if e.Position != next || string(e.Data) != fmt.Sprint(next) {
				t.Fatalf("tail: entry %d %q, want %d", e.Position, e.Data, next)
			}
			next++
		}
	}
}

func TestTailFollows(t *testing.T) {
	ctx := testCtx(t)
	n := startNode(t, t.TempDir())
	if _, err := n.c.CreateStream(ctx, &api.CreateStreamRequest{Stream: "s"}); err != nil {
		t.Fatal(err)
	}
	appendN := func(from, count int) {
		for i := from; i < from+count; i++ {
			if _, err := n.c.Append(ctx, &api.AppendRequest{Stream: "s", Data: fmt.Append(nil, i)}); err != nil {
				t.Error(err)
				return
			}
		}
	}
	appendN(0, 10)
	call, err := n.c.Tail(ctx, &api.TailRequest{Stream: "s", From: 3})
	if err != nil {
		t.Fatal(err)
	}
	tailUntil(t, call, 3, 7)
	done := make(chan struct{})
	go func() { defer close(done); appendN(10, 500) }()
	tailUntil(t, call, 10, 500)
	<-done

	// from_end sees only new entries.
	call2, err := n.c.Tail(ctx, &api.TailRequest{Stream: "s", FromEnd: true})
	if err != nil {
		t.Fatal(err)
	}
	// Whenever the tail starts on the server, its first entry is one
	// appended after the 510 above: append one at a time until it sees one.
	got := make(chan error, 1)
	go func() {
		r, err := call2.Recv()
		if err == nil && r.Entries[0].Position < 510 {
			err = fmt.Errorf("from_end tail started at %d", r.Entries[0].Position)
		}
		got <- err
	}()
	for i := 510; ; i++ {
		appendN(i, 1)
		select {
		case err := <-got:
			if err != nil {
				t.Fatal(err)
			}
			goto deleted
		case <-time.After(10 * time.Millisecond):
		}
	}
deleted:
	// Deleting the stream ends its tails with NotFound.
	if _, err := n.c.DeleteStream(ctx, &api.DeleteStreamRequest{Stream: "s"}); err != nil {
		t.Fatal(err)
	}
	for {
		if _, err = call.Recv(); err != nil {
			break
		}
	}
	wantCode(t, err, codes.NotFound)
}

func TestTailEndsOnShutdownAndCancel(t *testing.T) {
	ctx := testCtx(t)
	n := startNode(t, t.TempDir())
	if _, err := n.c.CreateStream(ctx, &api.CreateStreamRequest{Stream: "s"}); err != nil {
		t.Fatal(err)
	}
	// A tail whose client goes away ends on the server: Shutdown below
	// would otherwise wait for it.
	cctx, cancel := context.WithCancel(ctx)
	gone, err := n.c.Tail(cctx, &api.TailRequest{Stream: "s"})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	_, err = gone.Recv()
	wantCode(t, err, codes.Canceled)

	call, err := n.c.Tail(ctx, &api.TailRequest{Stream: "s"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.c.Append(ctx, &api.AppendRequest{Stream: "s", Data: []byte("0")}); err != nil {
		t.Fatal(err)
	}
	tailUntil(t, call, 0, 1)
	n.stop(t)
	_, err = call.Recv()
	wantCode(t, err, codes.Unavailable)
}

func TestDataSurvivesRestart(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	n := startNode(t, dir)
	if _, err := n.c.CreateStream(ctx, &api.CreateStreamRequest{Stream: "s", Replicas: 2, Acks: api.AckPolicy_ACK_POLICY_LEADER}); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if _, err := n.c.Append(ctx, &api.AppendRequest{Stream: "s", Data: fmt.Append(nil, i)}); err != nil {
			t.Fatal(err)
		}
	}
	n.stop(t)
	n = startNode(t, dir)
	st, err := n.c.StreamStatus(ctx, &api.StreamStatusRequest{Stream: "s"})
	if err != nil {
		t.Fatal(err)
	}
	if st.Committed != 100 || st.Replicas != 2 || st.Acks != api.AckPolicy_ACK_POLICY_LEADER {
		t.Fatalf("after restart: %v", st)
	}
	call, err := n.c.Tail(ctx, &api.TailRequest{Stream: "s"})
	if err != nil {
		t.Fatal(err)
	}
	tailUntil(t, call, 0, 100)
}

func TestShutdownDrainsAppends(t *testing.T) {
	ctx := testCtx(t)
	n := startNode(t, t.TempDir())
	if _, err := n.c.CreateStream(ctx, &api.CreateStreamRequest{Stream: "s"}); err != nil {
		t.Fatal(err)
	}
	// Appenders race Shutdown: every append answered with a position must
	// be readable after a restart; the others fail with Unavailable.
	var mu sync.Mutex
	acked := map[uint64]string{}
	enough := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				data := fmt.Sprintf("%d-%d", g, i)
				r, err := n.c.Append(ctx, &api.AppendRequest{Stream: "s", Data: []byte(data)})
				if err != nil {
					if c := status.Code(err); c != codes.Unavailable {
						t.Errorf("append during shutdown: %v", err)
					}
					return
				}
				mu.Lock()
				acked[r.Position] = data
				if len(acked) >= 200 {
					once.Do(func() { close(enough) })
				}
				mu.Unlock()
			}
		})
	}
	<-enough
	dir := n.srv.cfg.Dir
	if err := n.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	n.stop(t)
	n = startNode(t, dir)
	r, err := n.c.Read(ctx, &api.ReadRequest{Stream: "s", MaxEntries: maxReadEntries})
	if err != nil {
		t.Fatal(err)
	}
	have := map[uint64]string{}
	for _, e := range r.Entries {
		have[e.Position] = string(e.Data)
	}
	for p, d := range acked {
		if have[p] != d {
			t.Fatalf("acknowledged entry %d %q lost (read %q)", p, d, have[p])
		}
	}
}

// An open AppendStream call does not hold up Shutdown or DeleteStream:
// what it stored is answered, then the call ends with Unavailable or
// NotFound.
func TestAppendStreamEndsOnShutdownAndDelete(t *testing.T) {
	for _, how := range []string{"shutdown", "delete"} {
		t.Run(how, func(t *testing.T) {
			ctx := testCtx(t)
			n := startNode(t, t.TempDir())
			if _, err := n.c.CreateStream(ctx, &api.CreateStreamRequest{Stream: "s"}); err != nil {
				t.Fatal(err)
			}
			call, err := n.c.AppendStream(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 10 {
				if err := call.Send(&api.AppendRequest{Stream: "s", Data: fmt.Append(nil, i)}); err != nil {
					t.Fatal(err)
				}
			}
			for i := range 10 {
				if r, err := call.Recv(); err != nil || r.Position != uint64(i) {
					t.Fatalf("answer %d: %v %v", i, r, err)
				}
			}
			want := codes.Unavailable
			if how == "shutdown" {
				n.stop(t)
			} else {
				want = codes.NotFound
				if _, err := n.c.DeleteStream(ctx, &api.DeleteStreamRequest{Stream: "s"}); err != nil {
					t.Fatal(err)
				}
			}
			_, err = call.Recv()
			wantCode(t, err, want)
		})
	}
}
