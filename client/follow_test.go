package client_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/client"
)

// streamsFake is a node's client service whose answers to appends the
// test chooses: refuse (an error, such as Unavailable saying a quorum is
// lost, or a leader hint), hang (never answer), or store (positions from
// 0). It records every append it receives.
type streamsFake struct {
	api.UnimplementedStreamsServer
	mu     sync.Mutex
	refuse error // answered to every append, if set
	hang   bool  // appends are received and never answered
	next   uint64
	got    []*api.AppendRequest
	// received gets a token for each append received.
	received chan struct{}
}

func newStreamsFake() *streamsFake { return &streamsFake{received: make(chan struct{}, 1024)} }

func (f *streamsFake) set(refuse error, hang bool) {
	f.mu.Lock()
	f.refuse, f.hang = refuse, hang
	f.mu.Unlock()
}

// take records req and says how to answer it.
func (f *streamsFake) take(req *api.AppendRequest) (*api.AppendResponse, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got = append(f.got, req)
	select {
	case f.received <- struct{}{}:
	default:
	}
	if f.refuse != nil {
		return nil, false, f.refuse
	}
	if f.hang {
		return nil, true, nil
	}
	r := &api.AppendResponse{Position: f.next}
	f.next++
	return r, false, nil
}

func (f *streamsFake) requests() []*api.AppendRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*api.AppendRequest(nil), f.got...)
}

func (f *streamsFake) Append(ctx context.Context, req *api.AppendRequest) (*api.AppendResponse, error) {
	r, hang, err := f.take(req)
	if hang {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return r, err
}

func (f *streamsFake) AppendStream(call api.Streams_AppendStreamServer) error {
	for {
		req, err := call.Recv()
		if err != nil {
			return nil
		}
		r, hang, err := f.take(req)
		if err != nil {
			return err
		}
		if !hang {
			if err := call.Send(r); err != nil {
				return err
			}
		}
	}
}

func (f *streamsFake) StreamStatus(ctx context.Context, req *api.StreamStatusRequest) (*api.StreamStatusResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refuse != nil {
		return nil, f.refuse
	}
	return &api.StreamStatusResponse{Stream: req.Stream, Committed: f.next}, nil
}

// serveStreams serves f on a loopback port until stop (or the test's
// end) and returns its address.
func serveStreams(t *testing.T, f *streamsFake) (addr string, stop func()) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	api.RegisterStreamsServer(srv, f)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			srv.Stop()
			<-served
		})
	}
	t.Cleanup(stop)
	return lis.Addr().String(), stop
}

// hint is the FailedPrecondition a node that does not lead answers.
func hint(leader, addr string) error {
	st, err := status.New(codes.FailedPrecondition, "stream s is led by "+leader).WithDetails(&api.NotLeader{Leader: leader, LeaderAddr: addr, Epoch: 2})
	if err != nil {
		panic(err)
	}
	return st.Err()
}

// checkTimeout checks that err is the client's timeout: ErrTimeout,
// Unavailable, carrying want, after took within [timeout, bound).
func checkTimeout(t *testing.T, what string, err error, want string, took, timeout, bound time.Duration) {
	t.Helper()
	if !errors.Is(err, client.ErrTimeout) || status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), want) {
		t.Fatalf("%s: %v (code %v), want ErrTimeout, Unavailable, saying %q", what, err, status.Code(err), want)
	}
	if took < timeout-50*time.Millisecond || took >= bound {
		t.Fatalf("%s: failed after %v, want %v to %v", what, took, timeout, bound)
	}
}

// TestAppendBounded: an append whose node keeps answering Unavailable
// (its policy cannot be met), or answers nothing, fails with ErrTimeout
// within Options.Timeout, saying the node's reason; unary, batch and
// Appender alike, and the Appender refuses further appends with it.
func TestAppendBounded(t *testing.T) {
	ctx := testCtx(t)
	f := newStreamsFake()
	addr, _ := serveStreams(t, f)
	const timeout = 600 * time.Millisecond
	const bound = timeout + 2*time.Second
	c := dial(t, addr, client.Options{Timeout: timeout, Backoff: 10 * time.Millisecond})
	quorum := status.Error(codes.Unavailable, "node: quorum lost: entry 3 of s is stored here but not on enough copies for its policy yet")
	f.set(quorum, false)

	t0 := time.Now()
	_, err := c.Append(ctx, "s", []byte("a"))
	checkTimeout(t, "unary append", err, "not on enough copies", time.Since(t0), timeout, bound)
	if n := len(f.requests()); n < 2 {
		t.Errorf("the append was tried %d times within the timeout, want it retried", n)
	}
	t0 = time.Now()
	_, err = c.AppendBatch(ctx, "s", [][]byte{[]byte("b"), []byte("c")})
	checkTimeout(t, "batch", err, "not on enough copies", time.Since(t0), timeout, bound)

	a := c.NewAppender(ctx, "s")
	t0 = time.Now()
	p, err := a.Append([]byte("d"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Wait(ctx)
	checkTimeout(t, "Appender", err, "not on enough copies", time.Since(t0), timeout, bound)
	if _, err := a.Append([]byte("e")); !errors.Is(err, client.ErrTimeout) {
		t.Fatalf("Append after the Appender timed out: %v, want its ErrTimeout", err)
	}
	if err := a.Close(); !errors.Is(err, client.ErrTimeout) {
		t.Fatalf("Close: %v, want ErrTimeout", err)
	}

	// A node that answers nothing (hung): the same bound.
	f.set(nil, true)
	t0 = time.Now()
	_, err = c.Append(ctx, "s", []byte("f"))
	checkTimeout(t, "unary append to a hung node", err, "no answer", time.Since(t0), timeout, bound)
	a = c.NewAppender(ctx, "s")
	t0 = time.Now()
	if p, err = a.Append([]byte("g")); err != nil {
		t.Fatal(err)
	}
	_, err = p.Wait(ctx)
	checkTimeout(t, "Appender to a hung node", err, "no answer", time.Since(t0), timeout, bound)
	a.Close()
}

// TestSeeds: a Client dialled to several addresses, the first dead, asks
// the next; it is told the leader and remembers it; when the leader dies
// and a seed names another, an Appender's unanswered append goes there
// with its producer id and sequence number unchanged; a leader that
// refuses without a hint (deposed) is asked of a seed again.
func TestSeeds(t *testing.T) {
	ctx := testCtx(t)
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()

	leaderA, leaderB, seed := newStreamsFake(), newStreamsFake(), newStreamsFake()
	addrA, stopA := serveStreams(t, leaderA)
	addrB, _ := serveStreams(t, leaderB)
	seedAddr, _ := serveStreams(t, seed)
	seed.set(hint("a", addrA), false)

	c := dial(t, deadAddr+","+seedAddr, client.Options{Timeout: 10 * time.Second, Backoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	if s := c.Seeds(); len(s) != 2 || s[0] != deadAddr || s[1] != seedAddr {
		t.Fatalf("seeds %v", s)
	}
	if pos, err := c.Append(ctx, "s", []byte("x")); err != nil || pos != 0 {
		t.Fatalf("append through a dead seed, then a live one: %d, %v", pos, err)
	}
	if c.Leader("s") != addrA {
		t.Fatalf("leader %q, want %s", c.Leader("s"), addrA)
	}

	// An Appender's append reaches A, which dies before answering; the
	// seed names B from then on.
	leaderA.set(nil, true)
	a := c.NewAppender(ctx, "s")
	p, err := a.Append([]byte("y"))
	if err != nil {
		t.Fatal(err)
	}
	<-leaderA.received // the first append's
	<-leaderA.received
	stopA()
	seed.set(hint("b", addrB), false)
	if _, err := p.Wait(ctx); err != nil {
		t.Fatalf("append across the leader's change: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	sentA, sentB := leaderA.requests(), leaderB.requests()
	last := sentA[len(sentA)-1]
	if len(sentB) != 1 || sentB[0].ProducerId != last.ProducerId || sentB[0].Sequence != last.Sequence || string(sentB[0].Data) != "y" {
		t.Fatalf("B received %v, want A's last %v again", sentB, last)
	}
	if c.Leader("s") != addrB {
		t.Fatalf("leader %q, want %s", c.Leader("s"), addrB)
	}
	if s := c.Seeds(); len(s) != 4 {
		t.Fatalf("seeds %v: want the two given and the leaders learned", s)
	}

	// B is deposed: it refuses appends without a hint (fenced), and the
	// seed names C.
	leaderC := newStreamsFake()
	addrC, _ := serveStreams(t, leaderC)
	leaderB.set(status.Error(codes.FailedPrecondition, "replicate: fenced by a newer epoch"), false)
	seed.set(hint("c", addrC), false)
	if _, err := c.Append(ctx, "s", []byte("z")); err != nil {
		t.Fatalf("append after the leader was deposed: %v", err)
	}
	if c.Leader("s") != addrC || len(leaderC.requests()) != 1 {
		t.Fatalf("leader %q, C received %d appends; want C, 1", c.Leader("s"), len(leaderC.requests()))
	}
}
