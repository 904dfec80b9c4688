package replicate_test

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rpstream/rpstream/replicate"
	"github.com/rpstream/rpstream/replicate/quorum"
)

// replicateGoroutines are the stacks of goroutines running code of
// package replicate (not its tests).
func replicateGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "github.com/rpstream/rpstream/replicate.") {
			out = append(out, g)
		}
	}
	return out
}

// TestLeaderCloseWhileHelpersRun: Close at any moment of a Leader's life
// (connects, grants, region allocations and writes in flight, appends
// waiting) returns, fails the waiting appends with ErrClosed, and leaves
// none of its goroutines running; a later Leader on the stream takes over.
func TestLeaderCloseWhileHelpersRun(t *testing.T) {
	c := newCluster(t, t.TempDir(), 3)
	for round := range 12 {
		l := c.leader(quorum.Majority, uint64(round+1), c.stream, "leader")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var wg sync.WaitGroup
		for w := range 3 {
			wg.Go(func() {
				for k := 0; k < 200; k++ {
					_, err := l.Append(ctx, payload(round*1000+w*200+k))
					if errors.Is(err, replicate.ErrClosed) {
						return
					}
					if err != nil {
						t.Errorf("round %d: append: %v", round, err)
						return
					}
				}
			})
		}
		// From right away (connects in flight) to well into the round.
		time.Sleep(time.Duration(round%4) * 5 * time.Millisecond)
		if err := l.Close(); err != nil {
			t.Fatalf("round %d: Close: %v", round, err)
		}
		wg.Wait()
		cancel()
		deadline := time.Now().Add(10 * time.Second)
		for left := replicateGoroutines(); len(left) > 0; left = replicateGoroutines() {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: %d goroutines of package replicate left after Close:\n%s", round, len(left), strings.Join(left, "\n\n"))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	l := c.leader(quorum.Majority, 100, c.stream, "leader")
	appendAll(t, l, 2, 50)
	eventually(t, "caught up", func() bool { return caughtUp(l, c.stream) })
}

// TestLeaderWaitCommittedLeavesNoWaiter: a WaitCommitted whose context
// ends takes its waiter out (callers retrying while quorum is lost used
// to pile them up until the next commit), and the waiters left are still
// woken in order once the commit point passes them.
func TestLeaderWaitCommittedLeavesNoWaiter(t *testing.T) {
	c := newCluster(t, t.TempDir(), 3)
	l := c.leader(quorum.Majority, 1, c.stream, "leader")
	appendAll(t, l, 1, 5)
	c.replicas[1].stop()
	c.replicas[2].stop()
	var idx []uint64
	for k := range 20 {
		i, err := l.Start(payload(100 + k))
		if err != nil {
			t.Fatal(err)
		}
		idx = append(idx, i)
	}
	// Waiters that stay, on every other entry, among many that give up.
	long, cancelLong := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancelLong()
	done := make(chan error, len(idx))
	for k := 0; k < len(idx); k += 2 {
		go func() { done <- l.WaitCommitted(long, idx[k]) }()
	}
	for n := range 500 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(n%3)*time.Millisecond)
		err := l.WaitCommitted(ctx, idx[n%len(idx)])
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("wait without a quorum: %v", err)
		}
	}
	eventually(t, "only the staying waiters left", func() bool { return replicate.Waiters(l) == len(idx)/2 })
	startReplica(t, c.replicas[1])
	for range len(idx) / 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if n := replicate.Waiters(l); n != 0 {
		t.Fatalf("%d waiters left after the commit", n)
	}
}
