package client_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/client"
)

func TestAppender(t *testing.T) {
	ctx := testCtx(t)
	_, addr := startNode(t, t.TempDir(), "127.0.0.1:0")
	c := dial(t, addr, client.Options{})
	if _, err := c.Create(ctx, "s", client.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	a := c.NewAppender(ctx, "s")
	const count = 3000
	ps := make([]*client.Pending, count)
	for i := range count {
		p, err := a.Append(fmt.Append(nil, i))
		if err != nil {
			t.Fatal(err)
		}
		ps[i] = p
	}
	for i, p := range ps {
		if pos, err := p.Wait(ctx); err != nil || pos != uint64(i) {
			t.Fatalf("append %d: position %d, %v", i, pos, err)
		}
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Append([]byte("late")); err != client.ErrAppenderClosed {
		t.Fatalf("Append after Close: %v", err)
	}
	// An append to a missing stream fails, and so does the Appender.
	b := c.NewAppender(ctx, "missing")
	p, err := b.Append([]byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(ctx); status.Code(err) != codes.NotFound {
		t.Fatalf("append to a missing stream: %v", err)
	}
	if err := b.Close(); status.Code(err) != codes.NotFound {
		t.Fatalf("Close: %v", err)
	}
}

// breakingStream breaks every append call after it has passed a number
// of answers to the client, as a lost connection would.
type breakingStream struct {
	grpc.ClientStream
	left int
}

func (s *breakingStream) RecvMsg(m any) error {
	if s.left == 0 {
		return status.Error(codes.Unavailable, "test: call broken")
	}
	s.left--
	return s.ClientStream.RecvMsg(m)
}

// TestAppenderResendsAfterBrokenCall breaks the append call every 50
// answers: the Appender sends the unanswered appends again on a new call,
// and the node stores each once.
func TestAppenderResendsAfterBrokenCall(t *testing.T) {
	ctx := testCtx(t)
	_, addr := startNode(t, t.TempDir(), "127.0.0.1:0")
	var mu sync.Mutex
	breaks := 0
	breaker := func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		s, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil || method != api.Streams_AppendStream_FullMethodName {
			return s, err
		}
		mu.Lock()
		breaks++
		mu.Unlock()
		return &breakingStream{ClientStream: s, left: 50}, nil
	}
	c := dial(t, addr, client.Options{Backoff: time.Millisecond, DialOptions: []grpc.DialOption{grpc.WithStreamInterceptor(breaker)}})
	if _, err := c.Create(ctx, "s", client.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	a := c.NewAppender(ctx, "s")
	const count = 1000
	ps := make([]*client.Pending, count)
	for i := range count {
		p, err := a.Append(fmt.Append(nil, i))
		if err != nil {
			t.Fatal(err)
		}
		ps[i] = p
	}
	for i, p := range ps {
		pos, err := p.Wait(ctx)
		if err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		if i > 0 {
			if prev, _ := ps[i-1].Wait(ctx); pos <= prev {
				t.Fatalf("append %d at %d, after %d", i, pos, prev)
			}
		}
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if breaks < count/50 {
		t.Fatalf("only %d calls", breaks)
	}
	mu.Unlock()
	// Each entry stored once, in order.
	var all []client.Entry
	for from := uint64(0); ; {
		es, next, err := c.Read(ctx, "s", from, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) == 0 {
			break
		}
		all = append(all, es...)
		from = next
	}
	if len(all) != count {
		t.Fatalf("%d entries stored, want %d", len(all), count)
	}
	for i, e := range all {
		if string(e.Data) != fmt.Sprint(i) {
			t.Fatalf("entry %d is %q", i, e.Data)
		}
	}
}

// TestAppenderSharedByGoroutines: many goroutines append through one
// Appender, each waiting for its own appends. Sequence numbers must reach
// the node in the order they were taken, or one taken by a goroutine that
// is then descheduled can fall below the node's idempotence window while
// the others append, and be refused.
func TestAppenderSharedByGoroutines(t *testing.T) {
	ctx := testCtx(t)
	_, addr := startNode(t, t.TempDir(), "127.0.0.1:0")
	c := dial(t, addr, client.Options{})
	if _, err := c.Create(ctx, "s", client.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	a := c.NewAppender(ctx, "s")
	const goroutines, each = 128, 100
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				p, err := a.Append(fmt.Appendf(nil, "%d-%d", g, i))
				if err == nil {
					_, err = p.Wait(ctx)
				}
				if err != nil {
					t.Errorf("goroutine %d, append %d: %v", g, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if st, err := c.Status(ctx, "s"); err != nil || st.Committed != goroutines*each {
		t.Fatalf("status: %v %v", st, err)
	}
}
