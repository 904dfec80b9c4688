package controller

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/rpstream/rpstream/catalog"
	pb "github.com/rpstream/rpstream/catalog/catalogpb"
)

// BenchmarkCreate: CreateStream of a new name from a follower of three
// in-memory members (forwarded to the controller, committed by a
// quorum, applied on the follower before it returns), each log on the
// test's temporary directory. It reports the median (p50) and p99
// latency beside ns/op; the goal is a p50 under 10 ms on
// loopback.
func BenchmarkCreate(b *testing.B) {
	tc, lead, ctx := benchCluster(b, 1)
	var from *Controller
	for _, c := range tc.running() {
		if c != lead {
			from = c
			break
		}
	}
	var lat []time.Duration
	i := 0
	for b.Loop() {
		i++
		start := time.Now()
		if _, err := from.CreateStream(ctx, createReq(fmt.Sprintf("bench-%d", i), 3)); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	worst := slices.Index(lat, slices.Max(lat))
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
	b.ReportMetric(float64(lat[len(lat)-1].Nanoseconds()), "max-ns")
	b.ReportMetric(float64(worst+1), "max-at-create")
}

// benchCluster starts three in-memory voters with LoopbackConfig's Raft
// timing, logs on the benchmark's temporary directory, and registers
// them; it returns the cluster, its controller and a context for the run.
func benchCluster(b *testing.B, seed uint64) (*testCluster, *Controller, context.Context) {
	tc := newTestCluster(b, seed, 3, 0)
	tc.tune = func(c *Config) { *c = withTiming(*c, LoopbackConfig(c.Name)) }
	tc.startAll()
	lead := tc.leader(10 * time.Second)
	ctx := testCtx(b, 10*time.Minute)
	tc.registerAll(ctx)
	return tc, lead, ctx
}

// withTiming is c with the Raft timing of t.
func withTiming(c, t Config) Config {
	c.Tick, c.ElectionTicks, c.HeartbeatTicks, c.LeaseTTL, c.RequestTimeout = t.Tick, t.ElectionTicks, t.HeartbeatTicks, t.LeaseTTL, t.RequestTimeout
	return c
}

// bigCatalog is a catalog of n streams with three copies each, on 10
// nodes, as the controller makes them.
func bigCatalog(tb testing.TB, n int) *catalog.Catalog {
	tb.Helper()
	c := catalog.New()
	idx := uint64(0)
	apply := func(cmd *pb.Command) {
		idx++
		if r := c.Apply(idx, cmd); r.Err != nil {
			tb.Fatal(r.Err)
		}
	}
	const nodes = 10
	for i := range nodes {
		apply(&pb.Command{Time: 1, Op: &pb.Command_RegisterNode{RegisterNode: &pb.RegisterNode{
			Name: fmt.Sprintf("node-%d", i), Incarnation: uint64(1000 + i), Role: pb.Role_ROLE_NODE}}})
	}
	for i := range n {
		cs := &pb.CreateStream{Name: fmt.Sprintf("stream-%06d", i), Replicas: 3, Acks: pb.Acks_ACKS_QUORUM, RegionSize: 1 << 20,
			RequestId: []byte("0123456789abcdef")}
		for k := range 3 {
			node := (i + k) % nodes
			cs.Copies = append(cs.Copies, &pb.Copy{Node: fmt.Sprintf("node-%d", node), Incarnation: uint64(1000 + node)})
		}
		apply(&pb.Command{Time: int64(i), Op: &pb.Command_CreateStream{CreateStream: cs}})
	}
	return c
}

// BenchmarkSnapshot10k: the encoding of a catalog of 10,000 streams with
// three copies each (what the controller writes every SnapshotEvery
// entries and sends to a follower that lags). The goal: under
// 1 s.
func BenchmarkSnapshot10k(b *testing.B) {
	c := bigCatalog(b, 10_000)
	var size int
	for b.Loop() {
		data, err := c.Snapshot()
		if err != nil {
			b.Fatal(err)
		}
		size = len(data)
	}
	b.SetBytes(int64(size))
}

// BenchmarkRestore10k: loading that snapshot (a restart, or a follower
// that receives it). The goal: under 1 s.
func BenchmarkRestore10k(b *testing.B) {
	data, err := bigCatalog(b, 10_000).Snapshot()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		c := catalog.New()
		if err := c.Restore(20_000, data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGrantConcurrent: 32 goroutines ask the controller of three
// in-memory members (logs on the test's temporary directory) for new
// epochs of one stream, as a wave of takeovers does; it reports grants
// per second. The loop takes what is queued into one Ready, so that
// concurrent proposals share a sync of the log.
func BenchmarkGrantConcurrent(b *testing.B) {
	tc, lead, ctx := benchCluster(b, 2)
	s, err := lead.CreateStream(ctx, createReq("busy", 3))
	if err != nil {
		b.Fatal(err)
	}
	from := tc.ctl(s.Leader)
	const workers = 32
	b.ResetTimer()
	start := time.Now()
	b.SetParallelism((workers + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := from.GrantEpoch(ctx, "busy", s.Id); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "grants/s")
}
