package node

import (
	"flag"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/rpstream/rpstream/internal/scenario"
	"github.com/rpstream/rpstream/replicate/quorum"
)

var rewrite = flag.Bool("rewrite", false, "rewrite testdata/*.txt with the actual output")

// TestTakeoverChoice runs testdata/takeover.txt: the choice of a
// takeover's log as data. Command:
//
//	choose own=TAIL others=TAIL,... floor=N need=N
//
// where TAIL is NODE:EPOCH:SEQ:OFF:INDEX[:COMMITTED].
func TestTakeoverChoice(t *testing.T) {
	scenario.Run(t, "testdata/takeover.txt", *rewrite, func(cmd string) string {
		kv := map[string]string{}
		for _, a := range strings.Fields(cmd)[1:] {
			k, v, _ := strings.Cut(a, "=")
			kv[k] = v
		}
		num := func(s string) uint64 {
			n, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				t.Fatalf("%q: %v", cmd, err)
			}
			return n
		}
		tail := func(s string) copyTail {
			p := strings.Split(s, ":")
			if len(p) < 5 {
				t.Fatalf("%q: tail %q", cmd, s)
			}
			c := copyTail{node: p[0], epoch: num(p[1]), seq: num(p[2]), off: num(p[3]), index: num(p[4])}
			if len(p) > 5 {
				c.committed = num(p[5])
			}
			return c
		}
		var others []copyTail
		if kv["others"] != "" {
			for _, s := range strings.Split(kv["others"], ",") {
				others = append(others, tail(s))
			}
		}
		best, known, err := chooseLog(tail(kv["own"]), others, num(kv["floor"]), int(num(kv["need"])))
		if err != nil {
			return "error: " + err.Error()
		}
		return fmt.Sprintf("%s's log (index %d); known committed below %d", best.node, best.index, known)
	})
}

// TestFenceNeed: the copies a takeover must reach so that one holds
// every acknowledged entry.
func TestFenceNeed(t *testing.T) {
	for _, c := range []struct {
		p       quorum.Policy
		n, want int
	}{
		{quorum.Majority, 3, 2}, {quorum.Majority, 5, 3}, {quorum.Majority, 2, 1}, {quorum.Majority, 4, 2},
		{quorum.All, 3, 1}, {quorum.All, 5, 1},
		{quorum.LeaderOnly, 3, 3},
	} {
		if got := fenceNeed(c.p, c.n); got != c.want {
			t.Errorf("fenceNeed(%v, %d) = %d, want %d", c.p, c.n, got, c.want)
		}
	}
}
