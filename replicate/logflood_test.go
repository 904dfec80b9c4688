package replicate_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rpstream/rpstream/rdma"
	"github.com/rpstream/rpstream/rdma/tcp"
	"github.com/rpstream/rpstream/replicate"
	"github.com/rpstream/rpstream/replicate/quorum"
)

// recordHandler keeps every log record.
type recordHandler struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.recs = append(h.recs, r.Clone())
	h.mu.Unlock()
	return nil
}
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordHandler) WithGroup(string) slog.Handler      { return h }

func (h *recordHandler) lines() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, r := range h.recs {
		out = append(out, r.Level.String()+" "+r.Message)
	}
	return out
}

// TestReplicaDownLogsBounded: a replica that refuses many reconnect
// attempts in a row is logged when it goes down and when it comes back,
// not once or more per attempt (issue 12: a down replica wrote about
// 1,500 lines a minute).
func TestReplicaDownLogsBounded(t *testing.T) {
	c := newCluster(t, t.TempDir(), 2)
	down := c.replicas[1]
	down.stop()
	logs := &recordHandler{}
	var counts replicate.Counters
	cfg := replicate.LeaderConfig{
		Stream: c.stream, Writer: "leader", Epoch: 1,
		Replicator: replicate.Config{Policy: quorum.Majority, MaxRetryTicks: 2},
		Provider:   tcp.Provider{}, RDMA: rdma.LoopbackConfig(testSecret),
		Tick: 5 * time.Millisecond, Logger: slog.New(logs), Counters: &counts,
	}
	for _, r := range c.replicas {
		cfg.Replicas = append(cfg.Replicas, replicate.ReplicaAddr{ID: r.id, Addr: r.addr})
	}
	l, err := replicate.StartLeader(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	appendAll(t, l, 2, 50) // the live replica makes a majority

	const attempts = 100
	eventually(t, "100 failed reconnect attempts", func() bool { return counts.ConnectErrors.Load() >= attempts })
	if n := len(logs.lines()); n > 10 {
		t.Fatalf("%d log lines for %d failed connects, want at most 10:\n%s", n, counts.ConnectErrors.Load(), strings.Join(logs.lines(), "\n"))
	}
	if counts.Writes.Load() == 0 || counts.Flushes.Load() == 0 || counts.WriteBytes.Load() == 0 {
		t.Fatalf("rdma work not counted: %d writes, %d flushes, %d bytes", counts.Writes.Load(), counts.Flushes.Load(), counts.WriteBytes.Load())
	}

	// It comes back: one line says so, with the failures untold.
	startReplica(t, down)
	eventually(t, "the replica reconnected", func() bool {
		for _, s := range l.Status().Replicas {
			if s.ID == down.id && s.Lagging {
				return false
			}
		}
		return true
	})
	var back *slog.Record
	logs.mu.Lock()
	for i := range logs.recs {
		r := &logs.recs[i]
		if r.Message == "replicate: replica connected" {
			r.Attrs(func(a slog.Attr) bool {
				if a.Key == "replica" && a.Value.String() == string(down.id) {
					back = r
				}
				return true
			})
		}
	}
	logs.mu.Unlock()
	if back == nil {
		t.Fatalf("no line says %s reconnected:\n%s", down.id, strings.Join(logs.lines(), "\n"))
	}
	var repeats int64
	back.Attrs(func(a slog.Attr) bool {
		if a.Key == "repeats" {
			repeats = a.Value.Int64()
		}
		return true
	})
	if repeats < attempts-10 {
		t.Fatalf("reconnect line counts %d untold failures, want about %d or more", repeats, attempts)
	}
}
