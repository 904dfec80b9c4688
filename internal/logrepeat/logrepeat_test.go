package logrepeat

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// records is a slog.Handler keeping every record.
type records struct {
	mu  sync.Mutex
	got []slog.Record
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	r.got = append(r.got, rec.Clone())
	r.mu.Unlock()
	return nil
}
func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }

func attr(rec slog.Record, key string) (slog.Value, bool) {
	var v slog.Value
	found := false
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v, found = a.Value, true
			return false
		}
		return true
	})
	return v, found
}

func TestRepeatsAreCountedAndSummarised(t *testing.T) {
	rec := &records{}
	log := slog.New(rec)
	l := New(time.Minute)
	now := time.Unix(1000, 0)
	l.SetClock(func() time.Time { return now })

	// 1000 failures, one a second apart (16 minutes and more): the first
	// line, then one summary a minute.
	for i := 0; i < 1000; i++ {
		l.Log(log, slog.LevelWarn, "r1", "down", "replica failed", "err", "refused")
		now = now.Add(time.Second)
	}
	if n := len(rec.got); n < 16 || n > 18 {
		t.Fatalf("%d lines for 1000 repeats over 1000 s, want one a minute (16 to 18)", n)
	}
	if _, ok := attr(rec.got[0], "repeats"); ok {
		t.Fatalf("first line carries repeats: %v", rec.got[0])
	}
	v, ok := attr(rec.got[1], "repeats")
	if !ok || v.Int64() != 60 {
		t.Fatalf("second line: repeats %v (present %v), want 60", v, ok)
	}
	// The change back is logged at once, with the untold repeats.
	before := len(rec.got)
	if !l.Log(log, slog.LevelInfo, "r1", "up", "replica connected") {
		t.Fatal("a change of state was not logged")
	}
	last := rec.got[before]
	if v, ok := attr(last, "repeats"); !ok || v.Int64() <= 0 || v.Int64() >= 60 {
		t.Fatalf("change line: repeats %v (present %v), want the repeats since the last summary", v, ok)
	}
	if v, _ := attr(last, "previous"); v.String() != "down" {
		t.Fatalf("change line: previous %q, want down", v.String())
	}
	// Another key is independent.
	if !l.Log(log, slog.LevelWarn, "r2", "down", "replica failed") {
		t.Fatal("a new key was not logged")
	}
	if l.Log(log, slog.LevelWarn, "r2", "down", "replica failed") {
		t.Fatal("an immediate repeat was logged")
	}
	n := len(rec.got)
	l.Forget(log, slog.LevelInfo, "r2", "replica removed")
	if len(rec.got) != n+1 {
		t.Fatal("Forget did not tell the untold repeat")
	}
	l.Forget(log, slog.LevelInfo, "r2", "replica removed")
	if len(rec.got) != n+1 {
		t.Fatal("Forget of an unknown key logged")
	}
}

func TestDisabledLevelWritesNothing(t *testing.T) {
	log := slog.New(slog.NewTextHandler(discard{}, &slog.HandlerOptions{Level: slog.LevelError}))
	l := New(0)
	if l.Log(log, slog.LevelWarn, "k", "down", "x") {
		t.Fatal("wrote below the handler's level")
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
