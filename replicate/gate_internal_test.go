package replicate

import (
	"context"
	"testing"
	"time"
)

// TestGate: wait returns at once with nothing in progress, waits for
// every request, allows a request to start while someone waits (a
// sync.WaitGroup panics or misses it), and is bounded by its context.
func TestGate(t *testing.T) {
	var g gate
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := g.wait(ctx); err != nil {
		t.Fatal(err)
	}
	g.add()
	waited := make(chan error, 1)
	go func() { waited <- g.wait(ctx) }()
	time.Sleep(10 * time.Millisecond)
	g.add() // a second request starts while the wait is under way
	g.done()
	select {
	case err := <-waited:
		t.Fatalf("wait returned (%v) with a request still in progress", err)
	case <-time.After(20 * time.Millisecond):
	}
	g.done()
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	g.add()
	short, stop := context.WithTimeout(ctx, 20*time.Millisecond)
	defer stop()
	if err := g.wait(short); err == nil {
		t.Fatal("wait returned nil with a request in progress and its context over")
	}
}
