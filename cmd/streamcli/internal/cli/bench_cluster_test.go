package cli

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestBenchClusterNode: bench cluster --node against a node in this
// process prints one JSON object with the fields scripts rely on, or the
// text form.
func TestBenchClusterNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	addr := startNode(t)
	code, out, errs := streamcli(ctx, "", nil, "--node", addr, "bench", "cluster", "--clients", "4", "--count", "400", "--replicas", "1", "--acks", "leader", "--inflight", "2", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var r map[string]any
	if err := json.Unmarshal([]byte(out), &r); err != nil || strings.Count(out, "\n") != 1 {
		t.Fatalf("not one JSON object: %v\n%s", err, out)
	}
	for _, k := range []string{"entries_per_sec", "mb_per_sec", "p50_us", "p99_us", "p999_us", "clients", "size", "count", "acks", "replicas", "nodes"} {
		if _, ok := r[k]; !ok {
			t.Errorf("no %q in %s", k, out)
		}
	}
	if r["clients"] != 4.0 || r["count"] != 400.0 || r["acks"] != "leader" || r["replicas"] != 1.0 || r["size"] != 128.0 || r["cluster"] != "given" {
		t.Fatalf("%s", out)
	}
	code, out, errs = streamcli(ctx, "", nil, "--node", addr, "bench", "cluster", "--count", "50", "--replicas", "1")
	if code != 0 || !strings.Contains(out, "entries/s") || !strings.Contains(errs, "bench cluster: stream bench-") {
		t.Fatalf("text form: exit %d\n%s\n%s", code, out, errs)
	}
}
