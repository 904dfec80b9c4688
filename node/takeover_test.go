package node

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rpstream/rpstream/client"
	"github.com/rpstream/rpstream/internal/scenario"
	"github.com/rpstream/rpstream/local"
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

// TestRetriedTakeoverReusesEpochAndRegion: a takeover that wrote its
// epoch marker and then could not serve (its Leader did not start), tried
// again ten times by the same process, takes one epoch from the catalog
// and one region for its markers, on the leader and on each copy; before,
// every attempt took a new epoch and so a new region (4 MiB by default)
// on the leader and then on every copy.
func TestRetriedTakeoverReusesEpochAndRegion(t *testing.T) {
	ctx := testCtx(t)
	nodes := startClusterNodes(t, 3, 0)
	c, err := client.Dial(nodes[0].addr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Create(ctx, "t", client.CreateOptions{Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Append(ctx, "t", []byte("a")); err != nil {
		t.Fatal(err)
	}
	s := nodes[0].srv
	rec, _ := s.cfg.Catalog.Stream("t")
	before := rec.Epoch

	// Closed as a demoted leader's stream is: its next opening is a
	// takeover (a new epoch, the copies fenced and surveyed, a marker).
	// Each opening's Leader then fails to start.
	failed := errors.New("test: the Leader cannot start")
	var attempts atomic.Int32
	fail := func(string) error { attempts.Add(1); return failed }
	s.beforeLeader.Store(&fail)
	s.closeLed("t", errors.New("test: closed for a takeover"))
	for i := range 10 {
		if _, err := s.acquire("t"); !errors.Is(err, failed) {
			t.Fatalf("opening %d: %v, want the Leader's failure", i, err)
		}
	}
	s.beforeLeader.Store(nil)
	st, err := s.acquire("t")
	if err != nil {
		t.Fatal(err)
	}
	st.release()
	if _, err := c.Append(ctx, "t", []byte("b")); err != nil {
		t.Fatal(err)
	}
	rec, _ = s.cfg.Catalog.Stream("t")
	if rec.Epoch != before+1 {
		t.Errorf("epoch %d after %d failed takeovers from %d, want %d (one taken, then reused)", rec.Epoch, attempts.Load(), before, before+1)
	}
	// Region 1 holds "a"; region 2, of the new epoch, every attempt's
	// marker and "b".
	if rs := st.ls.Regions(); len(rs) != 2 {
		t.Errorf("the leader holds %d regions after %d failed takeovers, want 2: %+v", len(rs), attempts.Load(), rs)
	}
	want := st.ls.Committed()
	for _, n := range nodes[1:] {
		path, _, err := n.srv.replicas.copyFile("t")
		if err != nil {
			t.Fatal(err)
		}
		var sc local.ScanResult
		deadline := time.Now().Add(10 * time.Second)
		for {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			sc, err = local.ScanCopy(b)
			if err == nil && sc.Next >= want {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s's copy: %d entries (%v), the leader's %d", n.srv.cfg.Name, sc.Next, err, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if len(sc.Regions) != 2 {
			t.Errorf("%s's copy holds %d regions, want 2", n.srv.cfg.Name, len(sc.Regions))
		}
	}
}
