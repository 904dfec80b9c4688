package node

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/mover"
)

// conditionOf returns the AppendConditionFailed details of err, failing
// the test if err is not a conditional append's refusal.
func conditionOf(t *testing.T, err error) *api.AppendConditionFailed {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != codes.FailedPrecondition {
		t.Fatalf("got %v, want FailedPrecondition", err)
	}
	for _, d := range st.Details() {
		if cf, ok := d.(*api.AppendConditionFailed); ok {
			return cf
		}
	}
	t.Fatalf("%v: no AppendConditionFailed in the details", err)
	return nil
}

func expect(n uint64) *uint64 { return &n }

func TestConditionalAppend(t *testing.T) {
	ctx := testCtx(t)
	n := startNode(t, t.TempDir())
	if _, err := n.c.CreateStream(ctx, &api.CreateStreamRequest{Stream: "s"}); err != nil {
		t.Fatal(err)
	}
	r, err := n.c.Append(ctx, &api.AppendRequest{Stream: "s", Data: []byte("a"), ExpectedNext: expect(0)})
	if err != nil || r.Position != 0 {
		t.Fatalf("first conditional append: %v, %v", r, err)
	}
	_, err = n.c.Append(ctx, &api.AppendRequest{Stream: "s", Data: []byte("b"), ExpectedNext: expect(0)})
	if cf := conditionOf(t, err); cf.ExpectedNext != 0 || cf.ActualNext != 1 {
		t.Fatalf("details %v, want expected 0, actual 1", cf)
	}
	// A batch: all or nothing, at consecutive positions.
	_, err = n.c.Append(ctx, &api.AppendRequest{Stream: "s", Batch: batchOf("x", 0, 3), ExpectedNext: expect(5)})
	if cf := conditionOf(t, err); cf.ActualNext != 1 {
		t.Fatalf("details %v, want actual 1", cf)
	}
	r, err = n.c.Append(ctx, &api.AppendRequest{Stream: "s", Batch: batchOf("x", 0, 3), ExpectedNext: expect(1), ProducerId: "p", Sequence: 10})
	if err != nil || r.Positions[0] != 1 || r.Position != 3 {
		t.Fatalf("conditional batch: %v, %v", r, err)
	}
	// The retry of a stored conditional append (its answer was lost) is
	// answered with its positions, though the condition no longer holds.
	r, err = n.c.Append(ctx, &api.AppendRequest{Stream: "s", Batch: batchOf("x", 0, 3), ExpectedNext: expect(1), ProducerId: "p", Sequence: 10})
	if err != nil || r.Positions[0] != 1 || !r.Duplicates[0] || !r.Duplicate {
		t.Fatalf("retry of a stored conditional batch: %v, %v", r, err)
	}
	r, err = n.c.Append(ctx, &api.AppendRequest{Stream: "s", Data: []byte("y"), ExpectedNext: expect(4), ProducerId: "p", Sequence: 13})
	if err != nil || r.Position != 4 {
		t.Fatalf("conditional append at 4: %v, %v", r, err)
	}
	r, err = n.c.Append(ctx, &api.AppendRequest{Stream: "s", Data: []byte("y"), ExpectedNext: expect(4), ProducerId: "p", Sequence: 13})
	if err != nil || r.Position != 4 || !r.Duplicate {
		t.Fatalf("retry of a stored conditional append: %v, %v", r, err)
	}
	// A new number with a stale expectation is refused.
	_, err = n.c.Append(ctx, &api.AppendRequest{Stream: "s", Data: []byte("z"), ExpectedNext: expect(4), ProducerId: "p", Sequence: 14})
	if cf := conditionOf(t, err); cf.ActualNext != 5 {
		t.Fatalf("details %v, want actual 5", cf)
	}
	if got, want := fmt.Sprint(readAll(t, n, "s")), "[a x-0 x-1 x-2 y]"; got != want {
		t.Fatalf("stream holds %s, want %s", got, want)
	}
	// On AppendStream the refusal ends the call with the same status.
	call, err := n.c.AppendStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	call.Send(&api.AppendRequest{Stream: "s", Data: []byte("w"), ExpectedNext: expect(5)})
	call.Send(&api.AppendRequest{Stream: "s", Data: []byte("v"), ExpectedNext: expect(5)})
	if a, err := call.Recv(); err != nil || a.Position != 5 {
		t.Fatalf("AppendStream, first: %v, %v", a, err)
	}
	_, err = call.Recv()
	if cf := conditionOf(t, err); cf.ActualNext != 6 {
		t.Fatalf("AppendStream: details %v, want actual 6", cf)
	}
}

// TestConditionalAppendCompeting: clients on connections of their own
// append with the same expected position in each round, at once; exactly
// one wins each round, and every loser is told the position the winner
// left next, which is where the next round expects. Entries are copied
// on the appending goroutine, or by the cpu mover (local.Appender).
func TestConditionalAppendCompeting(t *testing.T) {
	t.Run("direct", func(t *testing.T) { conditionalCompeting(t) })
	t.Run("mover", func(t *testing.T) {
		mcfg := mover.DefaultConfig()
		mcfg.Engine = mover.EngineCPU
		mv, err := mover.New(mcfg)
		if err != nil {
			t.Fatal(err)
		}
		defer mv.Close()
		conditionalCompeting(t, func(c *Config) { c.Mover = mv })
	})
}

func conditionalCompeting(t *testing.T, opts ...func(*Config)) {
	ctx := testCtx(t)
	n := startNode(t, t.TempDir(), opts...)
	defer n.stop(t)
	if _, err := n.c.CreateStream(ctx, &api.CreateStreamRequest{Stream: "s"}); err != nil {
		t.Fatal(err)
	}
	const clients, rounds = 6, 40
	conns := make([]api.StreamsClient, clients)
	for k := range conns {
		cc, err := grpc.NewClient(n.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		conns[k] = api.NewStreamsClient(cc)
	}
	var want []string
	next := uint64(0)
	for round := range rounds {
		type result struct {
			k      int
			resp   *api.AppendResponse
			err    error
			sizeOf int
		}
		results := make([]result, clients)
		var start sync.WaitGroup
		start.Add(1)
		var wg sync.WaitGroup
		for k := range clients {
			size := 1 + (k+round)%3 // batches of 1 to 3 entries
			wg.Go(func() {
				start.Wait()
				req := &api.AppendRequest{Stream: "s", Batch: batchOf(fmt.Sprintf("r%d-c%d", round, k), 0, size), ExpectedNext: expect(next),
					ProducerId: fmt.Sprintf("c%d", k), Sequence: uint64(round * 10)}
				r, err := conns[k].Append(ctx, req)
				results[k] = result{k, r, err, size}
			})
		}
		start.Done()
		wg.Wait()
		winners := 0
		var after uint64
		for _, r := range results {
			if r.err == nil {
				winners++
				if r.resp.Positions[0] != next {
					t.Fatalf("round %d: client %d won at %d, expected %d", round, r.k, r.resp.Positions[0], next)
				}
				after = next + uint64(r.sizeOf)
				for _, e := range batchOf(fmt.Sprintf("r%d-c%d", round, r.k), 0, r.sizeOf) {
					want = append(want, string(e))
				}
			}
		}
		if winners != 1 {
			t.Fatalf("round %d: %d winners, want exactly 1", round, winners)
		}
		for _, r := range results {
			if r.err != nil {
				if cf := conditionOf(t, r.err); cf.ActualNext != after || cf.ExpectedNext != next {
					t.Fatalf("round %d: client %d told %v, want expected %d, actual %d", round, r.k, cf, next, after)
				}
			}
		}
		next = after
	}
	if got := readAll(t, n, "s"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("stream holds %q,\nwant the winners' %q", got, want)
	}
}

// steppingClock returns the times of a clock that goes forward and steps
// back, in turn.
type steppingClock struct {
	mu    sync.Mutex
	times []time.Time
	calls atomic.Int64
}

func (c *steppingClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls.Add(1)
	t := c.times[0]
	if len(c.times) > 1 {
		c.times = c.times[1:]
	}
	return t
}

// TestEntryTimesMonotonic: every entry carries the leader's time,
// increasing with positions when the clock steps back, also after a
// restart whose clock is behind the stream's last time.
func TestEntryTimesMonotonic(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(s int) time.Time { return base.Add(time.Duration(s) * time.Second) }
	clk := &steppingClock{times: []time.Time{at(10), at(5), at(5), at(20), at(19), at(30)}}
	n := startNode(t, dir, func(c *Config) { c.Clock = clk.now })
	if _, err := n.c.CreateStream(ctx, &api.CreateStreamRequest{Stream: "s"}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := n.c.Append(ctx, &api.AppendRequest{Stream: "s", Data: fmt.Appendf(nil, "e%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	// A batch takes one time (its entries were appended at once).
	if _, err := n.c.Append(ctx, &api.AppendRequest{Stream: "s", Batch: batchOf("b", 0, 3)}); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if _, err := n.c.Append(ctx, &api.AppendRequest{Stream: "s", Data: fmt.Appendf(nil, "f%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	want := []time.Time{at(10), at(10).Add(1), at(10).Add(2), at(20), at(20), at(20), at(20).Add(1), at(30)}
	r, err := n.c.Read(ctx, &api.ReadRequest{Stream: "s"})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Entries) != len(want) {
		t.Fatalf("%d entries, want %d", len(r.Entries), len(want))
	}
	for i, e := range r.Entries {
		if got := time.Unix(0, e.TimeUnixNano); !got.Equal(want[i]) {
			t.Errorf("entry %d at %v, want %v", i, got.UTC(), want[i])
		}
	}
	// Restarted with a clock an hour behind: the next time follows the
	// stream's last.
	n.stop(t)
	n = startNode(t, dir, func(c *Config) { c.Clock = func() time.Time { return at(-3600) } })
	a, err := n.c.Append(ctx, &api.AppendRequest{Stream: "s", Data: []byte("late")})
	if err != nil {
		t.Fatal(err)
	}
	r, err = n.c.Read(ctx, &api.ReadRequest{Stream: "s", From: a.Position})
	if err != nil || len(r.Entries) != 1 {
		t.Fatalf("read: %v, %v", r, err)
	}
	if got := time.Unix(0, r.Entries[0].TimeUnixNano); !got.Equal(at(30).Add(1)) {
		t.Fatalf("after the restart: %v, want %v", got.UTC(), at(30).Add(1))
	}
}
