package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestConsumersProcess runs trim, retention and the consumer commands,
// and tail --consumer with automatic and explicit acknowledgement,
// against a cluster of streamnode processes.
func TestConsumersProcess(t *testing.T) {
	c := startCluster(t, 3)
	addr := c.ClientAddrs()[0]
	node := func(args ...string) []string { return append([]string{"--node", addr}, args...) }

	ok(t, "", node("create", "s", "--replicas", "3")...)
	if out := ok(t, "", node("create", "aged", "--max-age", "10m")...); !strings.Contains(out, "aged") {
		t.Fatalf("create with a max age printed %q", out)
	}
	ok(t, "", node("append", "s", "a", "b", "c", "d")...)
	if out := ok(t, "", node("consumer", "add", "s", "c1", "--hold")...); !strings.Contains(out, `consumer "c1" of stream "s" starts at 0, holding retention`) {
		t.Fatalf("consumer add printed %q", out)
	}
	fails(t, 1, "", node("consumer", "add", "s", "c1"), "consumer exists")

	// Automatic acknowledgement: a second tail resumes after the first.
	if out := ok(t, "", node("tail", "s", "--consumer", "c1")...); out != "a\nb\nc\nd\n" {
		t.Fatalf("first tail --consumer printed %q", out)
	}
	ok(t, "", node("append", "s", "e", "f")...)
	if out := ok(t, "", node("tail", "s", "--consumer", "c1")...); out != "e\nf\n" {
		t.Fatalf("second tail --consumer printed %q, want e and f only", out)
	}
	var ls struct {
		Committed uint64 `json:"committed"`
		Consumers []struct {
			Name  string `json:"name"`
			Acked uint64 `json:"acked"`
			Lag   uint64 `json:"lag"`
			Hold  bool   `json:"hold"`
		} `json:"consumers"`
	}
	if err := json.Unmarshal([]byte(ok(t, "", node("consumer", "ls", "s", "--output", "json")...)), &ls); err != nil {
		t.Fatal(err)
	}
	if ls.Committed != 6 || len(ls.Consumers) != 1 || ls.Consumers[0].Acked != 6 || ls.Consumers[0].Lag != 0 || !ls.Consumers[0].Hold {
		t.Fatalf("consumer ls: %+v", ls)
	}

	// Explicit acknowledgement: delivered again until acknowledged.
	ok(t, "", node("append", "s", "g")...)
	for range 2 {
		if out := ok(t, "", node("tail", "s", "--consumer", "c1", "--ack", "explicit")...); out != "g\n" {
			t.Fatalf("tail --ack explicit printed %q, want g (again)", out)
		}
	}
	if out := ok(t, "", node("consumer", "ack", "s", "c1", "7")...); !strings.Contains(out, "acknowledged before 7") {
		t.Fatalf("consumer ack printed %q", out)
	}
	if out := ok(t, "", node("tail", "s", "--consumer", "c1", "--ack", "explicit")...); out != "" {
		t.Fatalf("tail after the ack printed %q", out)
	}

	// A holding consumer refuses a trim past its position; status
	// reports the consumers and their lag.
	ok(t, "", node("consumer", "add", "s", "c2", "--hold", "--start", "2")...)
	fails(t, 1, "", node("trim", "s", "--before", "5"), "held by a consumer", "consumer c2 holds it at 2")
	fails(t, 1, "", node("trim", "s", "--before", "99"), "committed end is 7")
	if out := ok(t, "", node("trim", "s", "--before", "2")...); !strings.Contains(out, `stream "s" trimmed before 2`) {
		t.Fatalf("trim printed %q", out)
	}
	st := run(t, "", node("status", "s")...)
	var words []string
	for _, l := range lines(st.stdout) {
		words = append(words, strings.Join(strings.Fields(l), " "))
	}
	for _, want := range []string{"trimmed to 2", "c1 7 0 true", "c2 2 5 true"} {
		found := false
		for _, w := range words {
			found = found || w == want
		}
		if !found {
			t.Errorf("status does not show %q:\n%s", want, st.stdout)
		}
	}
	ok(t, "", node("consumer", "rm", "s", "c2")...)
	fails(t, 1, "", node("consumer", "rm", "s", "c2"), "no such consumer")

	if out := ok(t, "", node("retention", "s", "--max-entries", "3")...); !strings.Contains(out, "retention max entries 3") {
		t.Fatalf("retention printed %q", out)
	}
	if out := ok(t, "", node("retention", "s")...); !strings.Contains(out, "retention max entries 3; trimmed to 2") {
		t.Fatalf("retention printed %q", out)
	}
}
