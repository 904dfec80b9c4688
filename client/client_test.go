package client_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/client"
	"github.com/rpstream/rpstream/node"
)

// testNode is a node.Server serving on a loopback address.
type testNode struct {
	srv    *node.Server
	served chan error
}

// startNode serves dir at addr ("127.0.0.1:0" for any port) and returns
// the node and its address.
func startNode(t *testing.T, dir, addr string) (*testNode, string) {
	t.Helper()
	cfg := node.DefaultConfig(dir)
	cfg.RegionSize = 64 << 10
	cfg.MaxStreamSize = 64 << 20
	cfg.Logger = slog.New(slog.DiscardHandler)
	srv, err := node.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	n := &testNode{srv: srv, served: make(chan error, 1)}
	go func() { n.served <- srv.Serve(lis) }()
	t.Cleanup(func() { n.stop(t) })
	return n, lis.Addr().String()
}

func (n *testNode) stop(t *testing.T) {
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
	n.srv = nil
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func dial(t *testing.T, addr string, opts client.Options) *client.Client {
	t.Helper()
	c, err := client.Dial(addr, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestClient(t *testing.T) {
	ctx := testCtx(t)
	_, addr := startNode(t, t.TempDir(), "127.0.0.1:0")
	c := dial(t, addr, client.Options{})
	st, err := c.Create(ctx, "s", client.CreateOptions{Replicas: 3, Acks: api.AckPolicy_ACK_POLICY_LEADER})
	if err != nil || st.Replicas != 3 {
		t.Fatalf("create: %v %v", st, err)
	}
	for i := range 50 {
		p, err := c.Append(ctx, "s", fmt.Append(nil, i))
		if err != nil || p != uint64(i) {
			t.Fatalf("append %d: %d %v", i, p, err)
		}
	}
	es, next, err := c.Read(ctx, "s", 10, 5)
	if err != nil || len(es) != 5 || next != 15 || string(es[0].Data) != "10" || es[4].Position != 14 {
		t.Fatalf("read: %v %d %v", es, next, err)
	}
	if st, err := c.Status(ctx, "s"); err != nil || st.Committed != 50 {
		t.Fatalf("status: %v %v", st, err)
	}
	if names, err := c.List(ctx); err != nil || len(names) != 1 {
		t.Fatalf("list: %v %v", names, err)
	}
	if ms, err := c.Members(ctx); err != nil || len(ms) != 1 || ms[0].ClientAddr != addr {
		t.Fatalf("members: %v %v", ms, err)
	}
	if err := c.Delete(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Status(ctx, "s"); status.Code(err) != codes.NotFound {
		t.Fatalf("status of a deleted stream: %v", err)
	}
}

// TestAppendRetryNotStoredTwice loses the answer of every other append on
// the way back: the client retries, and the node answers the retry with
// the original position.
func TestAppendRetryNotStoredTwice(t *testing.T) {
	ctx := testCtx(t)
	_, addr := startNode(t, t.TempDir(), "127.0.0.1:0")
	var calls, lost atomic.Int64
	loseAnswers := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if method == api.Streams_Append_FullMethodName && err == nil && calls.Add(1)%2 == 1 {
			lost.Add(1)
			return status.Error(codes.Unavailable, "test: answer lost")
		}
		return err
	}
	c := dial(t, addr, client.Options{Backoff: time.Millisecond, DialOptions: []grpc.DialOption{grpc.WithUnaryInterceptor(loseAnswers)}})
	if _, err := c.Create(ctx, "s", client.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		p, err := c.Append(ctx, "s", fmt.Append(nil, i))
		if err != nil || p != uint64(i) {
			t.Fatalf("append %d: position %d, %v", i, p, err)
		}
	}
	if lost.Load() < 20 {
		t.Fatalf("only %d answers lost", lost.Load())
	}
	if st, err := c.Status(ctx, "s"); err != nil || st.Committed != 20 {
		t.Fatalf("committed %d (%v), want 20: retries stored twice", st.GetCommitted(), err)
	}
}

// TestRestart appends and tails through a node restart on the same
// address: appends retry until the node is back, the tail reconnects and
// sees every entry once, in order.
func TestRestart(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	n, addr := startNode(t, dir, "127.0.0.1:0")
	// refused is closed when an append first fails with Unavailable.
	refused := make(chan struct{})
	var once sync.Once
	noteRefusal := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if method == api.Streams_Append_FullMethodName && status.Code(err) == codes.Unavailable {
			once.Do(func() { close(refused) })
		}
		return err
	}
	c := dial(t, addr, client.Options{MaxAttempts: 1000, Backoff: 5 * time.Millisecond, DialOptions: []grpc.DialOption{grpc.WithUnaryInterceptor(noteRefusal)}})
	if _, err := c.Create(ctx, "s", client.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	const count = 300
	tailed := make(chan error, 1)
	go func() {
		want := uint64(0)
		for e, err := range c.Tail(ctx, "s", 0) {
			if err != nil {
				tailed <- err
				return
			}
			if e.Position != want || string(e.Data) != fmt.Sprint(want) {
				tailed <- fmt.Errorf("tail: entry %d %q, want %d", e.Position, e.Data, want)
				return
			}
			if want++; want == count {
				tailed <- nil
				return
			}
		}
	}()
	appendOne := func(i int) error {
		p, err := c.Append(ctx, "s", fmt.Append(nil, i))
		if err == nil && p != uint64(i) {
			err = fmt.Errorf("append %d: position %d", i, p)
		}
		return err
	}
	for i := range count {
		if i != count/2 {
			if err := appendOne(i); err != nil {
				t.Fatal(err)
			}
			continue
		}
		// Stop the node; an append (and the tail) fail with Unavailable
		// and retry until the node is back on the same address.
		n.stop(t)
		appended := make(chan error, 1)
		go func() { appended <- appendOne(i) }()
		<-refused
		startNode(t, dir, addr)
		if err := <-appended; err != nil {
			t.Fatal(err)
		}
	}
	if err := <-tailed; err != nil {
		t.Fatal(err)
	}
}

func TestTailEnd(t *testing.T) {
	ctx := testCtx(t)
	_, addr := startNode(t, t.TempDir(), "127.0.0.1:0")
	c := dial(t, addr, client.Options{})
	if _, err := c.Create(ctx, "s", client.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := c.Append(ctx, "s", fmt.Append(nil, i)); err != nil {
			t.Fatal(err)
		}
	}
	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	got := make(chan uint64, 1)
	go func() {
		for e, err := range c.Tail(tctx, "s", client.End) {
			if err == nil {
				got <- e.Position
			}
			return
		}
	}()
	// Whenever the tail starts, its first entry is appended after it.
	for i := 5; ; i++ {
		if _, err := c.Append(ctx, "s", fmt.Append(nil, i)); err != nil {
			t.Fatal(err)
		}
		select {
		case p := <-got:
			if p < 5 {
				t.Fatalf("tail from End yielded %d", p)
			}
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func TestTailMissingStream(t *testing.T) {
	ctx := testCtx(t)
	_, addr := startNode(t, t.TempDir(), "127.0.0.1:0")
	c := dial(t, addr, client.Options{})
	for _, err := range c.Tail(ctx, "nope", 0) {
		if status.Code(err) != codes.NotFound {
			t.Fatalf("tail of a missing stream: %v", err)
		}
	}
}

// TestNewProducer: Appenders of producers sharing one connection, each
// with a full window in flight, all succeed; closing a producer leaves the
// connection to the others.
func TestNewProducer(t *testing.T) {
	ctx := testCtx(t)
	_, addr := startNode(t, t.TempDir(), "127.0.0.1:0")
	c := dial(t, addr, client.Options{})
	if _, err := c.Create(ctx, "s", client.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	const producers, each = 8, 300
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[uint64]bool{}
	ids := map[string]bool{c.ProducerID(): true}
	for g := range producers {
		p := c.NewProducer()
		if ids[p.ProducerID()] {
			t.Fatalf("producer id %s reused", p.ProducerID())
		}
		ids[p.ProducerID()] = true
		wg.Go(func() {
			defer p.Close()
			a := p.NewAppender(ctx, "s")
			var pend []*client.Pending
			for i := range each {
				pd, err := a.Append(fmt.Appendf(nil, "%d-%d", g, i))
				if err != nil {
					t.Errorf("append: %v", err)
					return
				}
				pend = append(pend, pd)
			}
			for _, pd := range pend {
				pos, err := pd.Wait(ctx)
				if err != nil {
					t.Errorf("wait: %v", err)
					return
				}
				mu.Lock()
				if seen[pos] {
					t.Errorf("position %d twice", pos)
				}
				seen[pos] = true
				mu.Unlock()
			}
			if err := a.Close(); err != nil {
				t.Errorf("appender close: %v", err)
			}
		})
	}
	wg.Wait()
	if len(seen) != producers*each {
		t.Fatalf("%d positions, want %d", len(seen), producers*each)
	}
	// Every producer closed; the connection still serves c.
	if st, err := c.Status(ctx, "s"); err != nil || st.Committed != producers*each {
		t.Fatalf("status after the producers closed: %v %v", st, err)
	}
}
