package main

import (
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rpstream/rpstream/node"
)

// TestExpectAndSinceProcess runs the built streamcli against a node whose
// clock starts an hour back and moves a minute per append: append
// --expect appends a batch only at the expected position (exit 5
// otherwise), tail --since finds entries by an RFC 3339 time or a
// duration back from now, and tail's JSON shows each entry's time.
func TestExpectAndSinceProcess(t *testing.T) {
	start := time.Now().Add(-time.Hour).Truncate(time.Second)
	var mu sync.Mutex
	stamps := 0
	cfg := node.DefaultConfig(t.TempDir())
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.Clock = func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		stamps++
		return start.Add(time.Duration(stamps) * time.Minute)
	}
	addr := serveNode(t, cfg)

	ok(t, "", "--node", addr, "create", "s")
	// One batch at 0..2, stamped start+1m.
	if got := positions(t, ok(t, "", "--node", addr, "append", "s", "--expect", "0", "a", "b", "c")); len(got) != 3 || got[0] != 0 || got[2] != 2 {
		t.Fatalf("append --expect 0 printed %v", got)
	}
	fails(t, 5, "", []string{"--node", addr, "append", "s", "--expect", "0", "x"}, `stream "s": the next position is 3, not 0: nothing appended`)
	// Lines of standard input, as one batch at 3..4 (start+2m), then e
	// at 5 (start+3m).
	if got := positions(t, ok(t, "d1\nd2\n", "--node", addr, "append", "s", "--expect", "3")); len(got) != 2 || got[0] != 3 {
		t.Fatalf("append --expect 3 from stdin printed %v", got)
	}
	ok(t, "", "--node", addr, "append", "s", "e")

	since := start.Add(2 * time.Minute).UTC().Format(time.RFC3339)
	if out := ok(t, "", "--node", addr, "tail", "s", "--since", since); out != "d1\nd2\ne\n" {
		t.Fatalf("tail --since %s printed %q", since, out)
	}
	// start+3m is now-57m: 57m30s back finds e alone.
	if out := ok(t, "", "--node", addr, "tail", "s", "--since", "57m30s"); out != "e\n" {
		t.Fatalf("tail --since 57m30s printed %q", out)
	}
	if out := ok(t, "", "--node", addr, "tail", "s", "--since", "1m"); out != "" {
		t.Fatalf("tail --since 1m printed %q", out)
	}
	out := ok(t, "", "--node", addr, "tail", "s", "--output", "json", "--from", "2")
	var times []time.Time
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var e struct {
			Position uint64    `json:"position"`
			Time     time.Time `json:"time"`
		}
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		times = append(times, e.Time)
	}
	want := []time.Time{start.Add(time.Minute), start.Add(2 * time.Minute), start.Add(2 * time.Minute), start.Add(3 * time.Minute)}
	if len(times) != len(want) {
		t.Fatalf("tail --output json printed %d entries:\n%s", len(times), out)
	}
	for i := range want {
		if !times[i].Equal(want[i]) {
			t.Errorf("entry %d at %v, want %v", i+2, times[i], want[i])
		}
	}
}
