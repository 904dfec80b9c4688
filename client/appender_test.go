package client_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
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

// TestAppenderResendsAfterBrokenCall breaks the append call every 5
// answers (each may answer a batch): the Appender sends the unanswered appends again on a new call,
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
		return &breakingStream{ClientStream: s, left: 5}, nil
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
	// An answer covers a batch of appends: fewer calls than one per 5
	// appends, but several.
	if breaks < 2 {
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

// countingStream counts the append requests and entries sent on a call,
// breaks it after left answers (like breakingStream; -1: never), and
// holds its first Send until gate is closed.
type countingStream struct {
	grpc.ClientStream
	left          int
	gate          chan struct{}
	reqs, entries *atomic.Int64
	batches       *atomic.Int64
	first         bool
}

func (s *countingStream) SendMsg(m any) error {
	if s.first && s.gate != nil {
		<-s.gate
	}
	s.first = false
	r := m.(*api.AppendRequest)
	s.reqs.Add(1)
	if len(r.Batch) > 0 {
		s.batches.Add(1)
		s.entries.Add(int64(len(r.Batch)))
	} else {
		s.entries.Add(1)
	}
	return s.ClientStream.SendMsg(m)
}

func (s *countingStream) RecvMsg(m any) error {
	if s.left == 0 {
		return status.Error(codes.Unavailable, "test: call broken")
	}
	if s.left > 0 {
		s.left--
	}
	return s.ClientStream.RecvMsg(m)
}

// TestAppenderCoalesces: appends made while a Send is in progress go out
// as one batch request; many goroutines share the Appender while its
// call breaks every few answers (batches answered or not), and every
// append is stored once, at the position its Pending reports.
func TestAppenderCoalesces(t *testing.T) {
	for _, breakEvery := range []int{-1, 3} {
		t.Run(fmt.Sprintf("break%d", breakEvery), func(t *testing.T) {
			ctx := testCtx(t)
			_, addr := startNode(t, t.TempDir(), "127.0.0.1:0")
			var reqs, entries, batches atomic.Int64
			gate := make(chan struct{})
			var calls atomic.Int64
			interceptor := func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
				s, err := streamer(ctx, desc, cc, method, opts...)
				if err != nil || method != api.Streams_AppendStream_FullMethodName {
					return s, err
				}
				// Only the first call's first Send waits for the gate.
				return &countingStream{ClientStream: s, left: breakEvery, gate: gate, first: calls.Add(1) == 1,
					reqs: &reqs, entries: &entries, batches: &batches}, nil
			}
			c := dial(t, addr, client.Options{Backoff: time.Millisecond, MaxAttempts: 1000,
				DialOptions: []grpc.DialOption{grpc.WithStreamInterceptor(interceptor)}})
			if _, err := c.Create(ctx, "s", client.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			a := c.NewAppender(ctx, "s")
			// The first append's Send is held: the next ones queue
			// behind it and go out as one batch.
			first := make(chan *client.Pending, 1)
			go func() {
				p, err := a.Append([]byte("first"))
				if err != nil {
					t.Error(err)
				}
				first <- p
			}()
			const goroutines, each = 32, 40
			var mu sync.Mutex
			byData := map[string]*client.Pending{}
			var wg sync.WaitGroup
			var started sync.WaitGroup
			started.Add(goroutines)
			for g := range goroutines {
				wg.Go(func() {
					started.Done()
					for i := range each {
						data := fmt.Appendf(nil, "%d-%d", g, i)
						p, err := a.Append(data)
						if err == nil {
							_, err = p.Wait(ctx)
						}
						if err != nil {
							t.Errorf("goroutine %d, append %d: %v", g, i, err)
							return
						}
						mu.Lock()
						byData[string(data)] = p
						mu.Unlock()
					}
				})
			}
			started.Wait()
			time.Sleep(50 * time.Millisecond) // let the others queue (not needed for correctness)
			close(gate)
			wg.Wait()
			fp := <-first
			if fp == nil {
				t.FailNow()
			}
			byData["first"] = fp
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			if batches.Load() == 0 || reqs.Load() >= entries.Load() {
				t.Errorf("no coalescing: %d requests, %d batches, %d entries sent", reqs.Load(), batches.Load(), entries.Load())
			}
			// Every append stored once, where its Pending says.
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
			if len(all) != goroutines*each+1 {
				t.Fatalf("%d entries stored, want %d", len(all), goroutines*each+1)
			}
			for data, p := range byData {
				pos, err := p.Wait(ctx)
				if err != nil || string(all[pos].Data) != data {
					t.Fatalf("append %q answered at %d (%v), which holds %q", data, pos, err, all[pos].Data)
				}
			}
			if breakEvery > 0 && calls.Load() < 3 {
				t.Errorf("only %d calls", calls.Load())
			}
			t.Logf("%d calls, %d requests (%d batches) for %d entries sent", calls.Load(), reqs.Load(), batches.Load(), entries.Load())
		})
	}
}

func TestAppendBatch(t *testing.T) {
	ctx := testCtx(t)
	_, addr := startNode(t, t.TempDir(), "127.0.0.1:0")
	c := dial(t, addr, client.Options{})
	if _, err := c.Create(ctx, "s", client.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Append(ctx, "s", []byte("one")); err != nil {
		t.Fatal(err)
	}
	pos, err := c.AppendBatch(ctx, "s", [][]byte{[]byte("a"), []byte("b"), []byte("c")})
	if err != nil || len(pos) != 3 || pos[0] != 1 || pos[1] != 2 || pos[2] != 3 {
		t.Fatalf("positions %v, %v", pos, err)
	}
	if _, err := c.AppendBatch(ctx, "s", nil); err == nil {
		t.Fatal("an empty batch was accepted")
	}
	if _, err := c.AppendBatch(ctx, "s", make([][]byte, 4097)); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a batch over the limit: %v", err)
	}
	// Sequence numbers continue after the batch: a later single append
	// is not taken for a duplicate.
	if p, err := c.Append(ctx, "s", []byte("d")); err != nil || p != 4 {
		t.Fatalf("append after the batch: %d, %v", p, err)
	}
	es, _, err := c.Read(ctx, "s", 0, 10)
	if err != nil || len(es) != 5 || string(es[1].Data) != "a" || string(es[4].Data) != "d" {
		t.Fatalf("read %v, %v", es, err)
	}
}
