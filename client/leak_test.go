package client_test

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rpstream/rpstream/client"
)

// clientGoroutines are the stacks of goroutines running code of package
// client (not its tests).
func clientGoroutines() []string {
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
		if strings.Contains(g, "github.com/rpstream/rpstream/client.") {
			out = append(out, g)
		}
	}
	return out
}

// TestAppenderCloseWhileBusy: Close while goroutines append as fast as
// they can (the sender and direct sends busy) answers every append it let
// in, refuses the later ones with ErrAppenderClosed, and leaves neither
// the sender nor a receiver running.
func TestAppenderCloseWhileBusy(t *testing.T) {
	ctx := testCtx(t)
	_, addr := startNode(t, t.TempDir(), "127.0.0.1:0")
	c, err := client.Dial(addr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(ctx, "s", client.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for round := range 5 {
		a := c.NewAppender(ctx, "s")
		var (
			mu      sync.Mutex
			pending []*client.Pending
			wg      sync.WaitGroup
		)
		started := make(chan struct{}, 8)
		for g := range 8 {
			wg.Go(func() {
				for i := range 2000 {
					p, err := a.Append(fmt.Appendf(nil, "%d-%d-%d", round, g, i))
					if errors.Is(err, client.ErrAppenderClosed) {
						return
					}
					if err != nil {
						t.Errorf("append: %v", err)
						return
					}
					mu.Lock()
					pending = append(pending, p)
					mu.Unlock()
					if i == 10 {
						started <- struct{}{}
					}
				}
			})
		}
		for range 8 {
			<-started
		}
		if err := a.Close(); err != nil {
			t.Fatalf("round %d: Close: %v", round, err)
		}
		wg.Wait()
		mu.Lock()
		for i, p := range pending {
			select {
			case <-p.Done():
			default:
				t.Fatalf("round %d: append %d of %d not answered when Close returned", round, i, len(pending))
			}
			if _, err := p.Wait(ctx); err != nil {
				t.Fatalf("round %d: append %d: %v", round, i, err)
			}
		}
		mu.Unlock()
	}
	c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for left := clientGoroutines(); len(left) > 0; left = clientGoroutines() {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines of package client left:\n%s", len(left), strings.Join(left, "\n\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
