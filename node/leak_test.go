package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/client"
	"github.com/rpstream/rpstream/mover"
)

// checkNoLeaks registers, to run after every cleanup registered later
// (cleanups run last first), a check that no goroutine is left running
// code of this module: it polls, boundedly, for them to end, then fails
// the test with their stacks.
func checkNoLeaks(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		var left []string
		deadline := time.Now().Add(15 * time.Second)
		for {
			left = ourGoroutines()
			if len(left) == 0 {
				return
			}
			if time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Errorf("%d goroutines of rpstream left running after shutdown:\n%s", len(left), strings.Join(left, "\n\n"))
	})
}

// ourGoroutines are the stacks of the goroutines, other than the calling
// one and the test runner's, with a frame in a package of this module.
func ourGoroutines() []string {
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
	for i, g := range strings.Split(string(buf), "\n\n") {
		if i == 0 { // the calling goroutine comes first
			continue
		}
		if !strings.Contains(g, "github.com/rpstream/rpstream/") {
			continue
		}
		if strings.Contains(g, "testing.tRunner") || strings.Contains(g, "testing.(*T).Run") {
			continue
		}
		out = append(out, g)
	}
	return out
}

// TestShutdownReplicatedLeavesNothing: Shutdown of a leader with appends in
// flight on a replicated stream whose quorum is lost, while copy deletes
// are being retried, and of a follower with a tail on its copy, returns
// within its drain timeout, answers every call, and leaves no goroutine
// of the module running (leaders' I/O loops and helpers, hub connections,
// background retries).
func TestShutdownReplicatedLeavesNothing(t *testing.T) {
	checkNoLeaks(t)
	ctx := testCtx(t)
	nodes := startClusterNodes(t, 3, 0)
	c, err := client.Dial(nodes[0].addr, client.Options{MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, name := range []string{"q", "d"} {
		if _, err := c.Create(ctx, name, client.CreateOptions{Replicas: 3}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Append(ctx, name, []byte("a")); err != nil {
			t.Fatal(err)
		}
	}

	// A tail on n2's copy of q, served until n2 stops.
	c2, err := client.Dial(nodes[1].addr, client.Options{MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	tail, err := c2.API().Tail(ctx, &api.TailRequest{Stream: "q"})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := tail.Recv(); err != nil || len(r.Entries) == 0 {
		t.Fatalf("tail on a copy: %v, %v", r, err)
	}

	// Appenders keep q busy throughout.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := range 4 {
		wg.Go(func() {
			for i := 0; i < 100000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				req := &api.AppendRequest{Stream: "q", Data: fmt.Appendf(nil, "%d-%d", g, i), ProducerId: fmt.Sprint("p", g), Sequence: uint64(i)}
				_, err := c.API().Append(ctx, req)
				switch status.Code(err) {
				case codes.OK:
				case codes.Unavailable:
					// Quorum lost, or the server stopping: the entry
					// may be stored; the producer retries it.
					i--
					if ctx.Err() != nil {
						return
					}
				default:
					t.Errorf("append: %v", err)
					return
				}
			}
		})
	}

	// n3 stops: q keeps its majority; d's copy on n3 cannot be deleted,
	// and the delete is retried in the background.
	nodes[2].stop(t)
	if err := c.Delete(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	// n2 stops with its tail open: the tail ends, q loses its quorum.
	nodes[1].stop(t)
	if _, err := tail.Recv(); err == nil {
		for {
			if _, err = tail.Recv(); err != nil {
				break
			}
		}
	}

	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	err = nodes[0].srv.Shutdown(sctx)
	took := time.Since(start)
	if err != nil && err != context.DeadlineExceeded {
		t.Errorf("Shutdown: %v", err)
	}
	// QuorumWait is 300ms: appends in flight end long before the drain
	// timeout; the bound here is the timeout plus room for closing.
	if took > 5*time.Second+lookupTimeout+2*time.Second {
		t.Errorf("Shutdown took %v, drain timeout 5s", took)
	}
	close(stop)
	wg.Wait()
	nodes[0].stop(t)
}

func TestAppendStreamShutdownWhileWaitingForCopies(t *testing.T) {
	ctx := testCtx(t)
	nodes := startClusterNodes(t, 3, 0)
	c, err := client.Dial(nodes[0].addr, client.Options{MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Create(ctx, "q", client.CreateOptions{Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	// Appends wait for their copies longer than this test runs.
	srv := nodes[0].srv
	st, err := srv.acquire("q") // opened after the create answered, if not yet
	if err != nil {
		t.Fatal(err)
	}
	st.release()
	srv.mu.Lock()
	st.quorumWait = time.Minute
	srv.mu.Unlock()
	call, err := c.API().AppendStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := call.Send(&api.AppendRequest{Stream: "q", Data: []byte("a"), ProducerId: "p", Sequence: 1}); err != nil {
		t.Fatal(err)
	}
	if r, err := call.Recv(); err != nil || r.Position != 0 {
		t.Fatalf("first answer: %v, %v", r, err)
	}
	nodes[1].stop(t)
	nodes[2].stop(t)
	if err := call.Send(&api.AppendRequest{Stream: "q", Data: []byte("b"), ProducerId: "p", Sequence: 2}); err != nil {
		t.Fatal(err)
	}
	// Stored here, waiting for copies that are gone.
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := c.Status(ctx, "q")
		if err != nil {
			t.Fatal(err)
		}
		if st.Persisted == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("entry b not stored: persisted %d", st.Persisted)
		}
		time.Sleep(10 * time.Millisecond)
	}
	nodes[0].stop(t)
	_, err = call.Recv()
	wantCode(t, err, codes.Unavailable)
}

// TestStartAfterStopIsNotCanceled: an append that reaches the stream's
// mover appender after Shutdown or DeleteStream began (its context
// cancelled) fails with ErrClosing or ErrNoStream, which clients see as
// Unavailable or NotFound, not with context.Canceled, which they take as
// final. (TestShutdownReplicatedLeavesNothing saw Canceled under load.)
func TestStartAfterStopIsNotCanceled(t *testing.T) {
	for _, how := range []string{"delete", "shutdown"} {
		t.Run(how, func(t *testing.T) {
			cfg := DefaultConfig(t.TempDir())
			cfg.RegionSize = 64 << 10
			cfg.MaxStreamSize = 64 << 20
			cfg.Logger = slog.New(slog.DiscardHandler)
			mcfg := mover.DefaultConfig()
			mcfg.Engine = mover.EngineCPU
			mv, err := mover.New(mcfg)
			if err != nil {
				t.Fatal(err)
			}
			defer mv.Close()
			cfg.Mover = mv
			srv, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Shutdown(context.Background())
			if _, err := srv.CreateStream(context.Background(), &api.CreateStreamRequest{Stream: "s"}); err != nil {
				t.Fatal(err)
			}
			st, err := srv.acquire("s")
			if err != nil {
				t.Fatal(err)
			}
			defer st.release()
			if st.app == nil {
				t.Fatal("no mover appender")
			}
			want, code := ErrNoStream, codes.NotFound
			if how == "delete" {
				st.cancel(fmt.Errorf("%w: s deleted", ErrNoStream))
			} else {
				want, code = ErrClosing, codes.Unavailable
				srv.stopFunc(ErrClosing)
			}
			_, err = st.start([]byte("x"))
			if !errors.Is(err, want) || status.Code(statusOf(err)) != code {
				t.Fatalf("start after %s: %v, want %v (%v)", how, err, want, code)
			}
		})
	}
}
