package bench

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rpstream/rpstream/internal/proccluster"
)

// checkFailover checks a run of kills kills: each timed, nothing lost or
// doubled, and every process the run killed gone.
func checkFailover(t *testing.T, r *FailoverResult, kills int) {
	t.Helper()
	t.Logf("%+v", *r)
	if len(r.Each) != kills || r.Kills != kills || r.Acknowledged == 0 || r.Read < r.Acknowledged {
		t.Fatalf("result %+v", r)
	}
	if r.Lost != 0 || r.Duplicates != 0 {
		t.Fatalf("%d acknowledged appends lost, %d duplicates: %+v", r.Lost, r.Duplicates, r)
	}
	if r.P50ms <= 0 || r.P99ms < r.P50ms || r.MaxMs < r.P99ms {
		t.Fatalf("percentiles %v %v %v", r.P50ms, r.P99ms, r.MaxMs)
	}
	for i, k := range r.Each {
		if k.KillToAckMs <= 0 || k.PID <= 0 || k.RestartedPID <= 0 || k.Leader == "" || k.NewLeader == "" {
			t.Fatalf("kill %d: %+v", i, k)
		}
		if !exited(k.PID) {
			t.Fatalf("kill %d: pid %d still runs", i, k.PID)
		}
	}
}

// TestFailoverBench runs bench failover briefly: first on a cluster it
// starts (every process of it ended by pid afterwards), then on a
// cluster given by address, whose leader's process it finds by its port,
// kills and starts again itself (the test ends the last one it started
// by pid).
func TestFailoverBench(t *testing.T) {
	ctx, bin := processTest(t, 4*time.Minute)

	dir := t.TempDir()
	cfg := Failover{Streamnode: bin, Dir: dir, Kills: 2, Producers: 3, InFlight: 2, Size: 64, Acks: "quorum", Replicas: 3,
		Interval: 300 * time.Millisecond, Wait: 30 * time.Second}
	r, err := cfg.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkFailover(t, r, 2)
	if r.Cluster != "started" || r.Nodes != 3 {
		t.Fatalf("result %+v", r)
	}
	if last := r.Each[len(r.Each)-1].RestartedPID; !exited(last) {
		t.Fatalf("the restarted leader, pid %d, still runs after the run", last)
	}
	if es, err := os.ReadDir(dir); err != nil || len(es) != 0 {
		t.Fatalf("left in %s: %v %v", dir, es, err)
	}

	// A given cluster.
	c, err := proccluster.Start(ctx, proccluster.Config{Binary: bin, Dir: t.TempDir(), Nodes: 3})
	if err != nil {
		t.Fatal(err)
	}
	pids := []int{c.PID(0), c.PID(1), c.PID(2)}
	var restarted []int
	defer func() {
		c.Close()
		for _, pid := range restarted {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		for _, pid := range append(pids, restarted...) {
			for deadline := time.Now().Add(10 * time.Second); !exited(pid) && time.Now().Before(deadline); {
				time.Sleep(10 * time.Millisecond)
			}
			if !exited(pid) {
				t.Errorf("pid %d still runs", pid)
			}
		}
	}()
	cfg = Failover{Node: strings.Join(c.ClientAddrs(), ","), Kills: 1, Producers: 2, Size: 32, Acks: "all", Replicas: 3,
		Interval: 300 * time.Millisecond, Wait: 30 * time.Second}
	r, err = cfg.Run(ctx)
	if r != nil {
		for _, k := range r.Each {
			restarted = append(restarted, k.RestartedPID)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	checkFailover(t, r, 1)
	if r.Cluster != "given" || r.Each[0].PID != pids[0] || r.Each[0].Leader != "n1" {
		t.Fatalf("result %+v (pids %v)", r, pids)
	}
	if exited(r.Each[0].RestartedPID) {
		t.Fatalf("the restarted n1 (pid %d) is not running", r.Each[0].RestartedPID)
	}
}

func TestFailoverPayload(t *testing.T) {
	for _, id := range []failoverID{{0, 0}, {7, 123456789}, {9999, 1<<53 + 1}} {
		p := failoverPayload(id, 40)
		if len(p) != 40 {
			t.Fatalf("payload of %d bytes", len(p))
		}
		if got, ok := parseFailoverPayload(p); !ok || got != id {
			t.Fatalf("%q parsed as %v, %v; want %v", p, got, ok, id)
		}
	}
	for _, bad := range []string{"", "rpfo", "xpfo 0001 0000000000000001 ", "rpfo 00x1 0000000000000001 "} {
		if _, ok := parseFailoverPayload([]byte(bad)); ok {
			t.Fatalf("%q parsed", bad)
		}
	}
}

func TestFailoverValidate(t *testing.T) {
	ok := Failover{Producers: 1, Size: 32, Kills: 1, Acks: "quorum", Replicas: 3}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []func(*Failover){
		func(f *Failover) { f.Producers = 0 },
		func(f *Failover) { f.Size = 31 },
		func(f *Failover) { f.Kills = 0 },
		func(f *Failover) { f.Acks = "most" },
		func(f *Failover) { f.Replicas = 4 },
		func(f *Failover) { f.Nodes = 3; f.Node = "127.0.0.1:1" },
		func(f *Failover) { f.Interval = -time.Second },
	} {
		f := ok
		bad(&f)
		if err := f.Validate(); err == nil {
			t.Errorf("%+v accepted", f)
		}
	}
}
