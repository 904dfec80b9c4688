package cluster

import (
	"context"
	"log"
	"log/slog"
	"sync"
	"testing"

	"github.com/rpstream/rpstream/internal/logrepeat"
)

type levelRecords struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *levelRecords) Enabled(context.Context, slog.Level) bool { return true }
func (h *levelRecords) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.recs = append(h.recs, r.Clone())
	h.mu.Unlock()
	return nil
}
func (h *levelRecords) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *levelRecords) WithGroup(string) slog.Handler      { return h }

// TestMemberlistLinesGetLevels: memberlist's lines, written through the
// *log.Logger it is given, come out of slog at the level their prefix
// names, without the prefix, and a repeated warning once.
func TestMemberlistLinesGetLevels(t *testing.T) {
	h := &levelRecords{}
	c := &Cluster{log: slog.New(h), repeats: logrepeat.New(0), view: map[string]Member{}, suspect: map[string]bool{}}
	ml := log.New((*logWriter)(c), "", 0)
	ml.Printf("[DEBUG] memberlist: Stream connection from=127.0.0.1:5000")
	ml.Printf("[INFO] memberlist: Marking n2 as failed")
	for i := 0; i < 100; i++ {
		ml.Printf("[WARN] memberlist: Was able to connect to n2 over TCP but UDP probes failed")
	}
	ml.Printf("[ERR] memberlist: Failed to send ping: write: connection refused")
	ml.Printf("no prefix at all")

	want := []struct {
		level slog.Level
		msg   string
	}{
		{slog.LevelDebug, "memberlist: Stream connection from=127.0.0.1:5000"},
		{slog.LevelInfo, "memberlist: Marking n2 as failed"},
		{slog.LevelWarn, "memberlist: Was able to connect to n2 over TCP but UDP probes failed"},
		{slog.LevelError, "memberlist: Failed to send ping: write: connection refused"},
		{slog.LevelDebug, "memberlist: no prefix at all"},
	}
	if len(h.recs) != len(want) {
		for _, r := range h.recs {
			t.Log(r.Level, r.Message)
		}
		t.Fatalf("%d records, want %d (a repeated warning once)", len(h.recs), len(want))
	}
	for i, w := range want {
		if h.recs[i].Level != w.level || h.recs[i].Message != w.msg {
			t.Errorf("record %d: %v %q, want %v %q", i, h.recs[i].Level, h.recs[i].Message, w.level, w.msg)
		}
	}
}
