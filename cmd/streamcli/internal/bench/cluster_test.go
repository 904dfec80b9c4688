package bench

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rpstream/rpstream/client"
	"github.com/rpstream/rpstream/internal/proccluster"
	"github.com/rpstream/rpstream/node"
)

// serveNode serves a node in this process on loopback and returns its
// client address.
func serveNode(t *testing.T) string {
	t.Helper()
	cfg := node.DefaultConfig(t.TempDir())
	cfg.RegionSize = 1 << 20
	cfg.Logger = slog.New(slog.DiscardHandler)
	srv, err := node.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-served
	})
	return lis.Addr().String()
}

func checkResult(t *testing.T, r *ClusterResult, count int) {
	t.Helper()
	if r.Count != count || r.EntriesPerSec <= 0 || (r.MBPerSec <= 0) != (r.Size == 0) || r.P50us <= 0 || r.P99us < r.P50us || r.P999us < r.P99us || r.MaxUs < r.P999us {
		t.Fatalf("result %+v", r)
	}
}

func TestClusterGivenNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	addr := serveNode(t)
	for _, cfg := range []Cluster{
		{Clients: 4, Size: 128, Count: 1000, Acks: "quorum", Replicas: 1, InFlight: 8, Conns: 2},
		{Clients: 8, Size: 128, Count: 1000, Acks: "quorum", Replicas: 1, InFlight: 2, Calls: 3},
		{Clients: 3, Size: 0, Count: 301, Acks: "leader", Replicas: 1},
		{Clients: 2, Size: 4096, Count: 200, Acks: "all", Replicas: 1, Unary: true},
	} {
		cfg.Node = addr
		r, err := cfg.Run(ctx)
		if err != nil {
			t.Fatalf("%+v: %v", cfg, err)
		}
		checkResult(t, r, cfg.Count)
		if r.Cluster != "given" || r.Nodes != 1 || r.Node != addr || r.Warmup == 0 {
			t.Fatalf("result %+v", r)
		}
	}
	// Each run deleted its stream.
	cl, err := client.Dial(addr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if names, err := cl.List(ctx); err != nil || len(names) != 0 {
		t.Fatalf("streams left: %v %v", names, err)
	}
}

func TestClusterDuration(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := Cluster{Node: serveNode(t), Clients: 2, Size: 64, Count: 10_000_000, Acks: "quorum", Replicas: 1, Duration: 300 * time.Millisecond, InFlight: 4}
	r, err := cfg.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.Count <= 0 || r.Count >= cfg.Count || r.Seconds > 20 {
		t.Fatalf("a 300ms run: %+v", r)
	}
}

// processTest skips under -short, else builds streamnode once (removed
// at the test's end) and returns it with a context bounded by d.
func processTest(t *testing.T, d time.Duration) (context.Context, string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs streamnode processes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	bin, err := proccluster.BuildOnce()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proccluster.RemoveBuilt)
	return ctx, bin
}

func TestClusterStarted(t *testing.T) {
	ctx, bin := processTest(t, 2*time.Minute)
	dir := t.TempDir()
	cfg := Cluster{Streamnode: bin, Dir: dir, Nodes: 2, Clients: 4, Size: 128, Count: 800, Acks: "quorum", Replicas: 2}
	r, err := cfg.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkResult(t, r, cfg.Count)
	// Without --rdma the members chose (auto); on this machine's kernel,
	// with no RDMA device, tcp.
	if r.Cluster != "started" || r.Nodes < 1 || r.RDMA == "" || !strings.HasPrefix(r.RDMAWhy, "auto") {
		t.Fatalf("result %+v", r)
	}
	// The cluster's processes and data are gone.
	if es, err := os.ReadDir(dir); err != nil || len(es) != 0 {
		t.Fatalf("left in %s: %v %v", dir, es, err)
	}
}

// TestClusterHostsArgs: --hosts puts the members on the addresses given
// (127.0.0.2 and .3 are loopback too), --node-args reaches every member
// (each logs the provider --rdma named, and why), and --keep leaves the
// members' data and logs.
func TestClusterHostsArgs(t *testing.T) {
	ctx, bin := processTest(t, 2*time.Minute)
	dir := t.TempDir()
	cfg := Cluster{Streamnode: bin, Dir: dir, Nodes: 2, Clients: 2, Size: 64, Count: 200, Acks: "all", Replicas: 2,
		Hosts: []string{"127.0.0.2", "127.0.0.3"}, Args: []string{"--rdma", "tcp", "--lease-ttl", "7s"}, Keep: true}
	r, err := cfg.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkResult(t, r, cfg.Count)
	if host, _, err := net.SplitHostPort(r.Node); err != nil || host != "127.0.0.2" {
		t.Fatalf("clients used %q, want the first host 127.0.0.2", r.Node)
	}
	if r.RDMA != "tcp" || r.RDMAWhy != "--rdma tcp" {
		t.Fatalf("provider %q (%q), want tcp (--rdma tcp)", r.RDMA, r.RDMAWhy)
	}
	// Kept: one cluster directory, with both members' logs, each member
	// on its host and started with every extra flag.
	runs, err := filepath.Glob(filepath.Join(dir, "rpstream-bench-cluster-*"))
	if err != nil || len(runs) != 1 || r.Kept != runs[0] {
		t.Fatalf("kept %q: %v %v", r.Kept, runs, err)
	}
	for i, host := range cfg.Hosts {
		b, err := os.ReadFile(filepath.Join(runs[0], fmt.Sprintf("n%d.log", i+1)))
		if err != nil {
			t.Fatal(err)
		}
		log := string(b)
		if !strings.Contains(log, `"client_addr":"`+host+`:`) || !strings.Contains(log, "--lease-ttl 7s") {
			t.Fatalf("n%d's log does not show %s and --lease-ttl 7s:\n%s", i+1, host, log)
		}
	}
}

// TestClusterProfile: --conns C gives every client a connection and a call
// of its own, and --profile saves a CPU profile of the leader (gzipped
// pprof) taken during the run.
func TestClusterProfile(t *testing.T) {
	ctx, bin := processTest(t, 2*time.Minute)
	prof := filepath.Join(t.TempDir(), "leader.pprof")
	cfg := Cluster{Streamnode: bin, Dir: t.TempDir(), Nodes: 2, Clients: 4, Conns: 4, Size: 128, Count: 1 << 30,
		Duration: time.Second, Acks: "quorum", Replicas: 2, Profile: prof}
	r, err := cfg.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.Conns != 4 || r.Calls != 4 || r.Count == 0 {
		t.Fatalf("result %+v, want 4 connections, 4 calls", r)
	}
	b, err := os.ReadFile(prof)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
		t.Fatalf("%s is not a gzipped profile: %d bytes starting %q", prof, len(b), b[:min(len(b), 16)])
	}
}

func TestClusterValidate(t *testing.T) {
	ok := Cluster{Clients: 1, Count: 1, Acks: "quorum", Replicas: 3}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	good := ok
	good.Hosts, good.Args = []string{"10.77.0.1", "10.77.0.2", "::1"}, []string{"--rdma", "verbs", "--voters", "n1"}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []func(*Cluster){
		func(c *Cluster) { c.Clients = 0 },
		func(c *Cluster) { c.Size = -1 },
		func(c *Cluster) { c.Size = MaxClusterSize + 1 },
		func(c *Cluster) { c.Count = 0 },
		func(c *Cluster) { c.Acks = "" },
		func(c *Cluster) { c.Replicas = 0 },
		func(c *Cluster) { c.Replicas = 4 },
		func(c *Cluster) { c.Nodes = 2 },
		func(c *Cluster) { c.Nodes = 3; c.Node = "127.0.0.1:1" },
		func(c *Cluster) { c.Node = "127.0.0.1:1"; c.Profile = "p" },
		func(c *Cluster) { c.Duration = -time.Second },
		func(c *Cluster) { c.InFlight = client.MaxInFlight + 1 },
		func(c *Cluster) { c.Unary = true; c.InFlight = 2 },
		func(c *Cluster) { c.Conns = 2 },
		func(c *Cluster) { c.Calls = 2 },
		func(c *Cluster) { c.Calls = -1 },
		func(c *Cluster) { c.Clients = 2; c.Count = 2; c.Unary = true; c.Calls = 1 },
		func(c *Cluster) { c.Hosts = []string{"127.0.0.2", "localhost"} },
		func(c *Cluster) { c.Hosts = []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"} },
		func(c *Cluster) { c.Node = "127.0.0.1:1"; c.Hosts = []string{"127.0.0.2"} },
		func(c *Cluster) { c.Node = "127.0.0.1:1"; c.Args = []string{"--rdma", "tcp"} },
		func(c *Cluster) { c.Node = "127.0.0.1:1"; c.Keep = true },
		func(c *Cluster) { c.Args = []string{"--data", "/tmp/x"} },
		func(c *Cluster) { c.Args = []string{"--client-addr=127.0.0.1:1"} },
	} {
		c := ok
		bad(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

func TestDefaultCalls(t *testing.T) {
	for _, c := range []struct{ clients, inflight, want int }{
		{1, 1, 1}, {1, 0, 1}, {64, 1, 1}, {65, 1, 2}, {128, 1, 2}, {4, 64, 4}, {64, 4, 4}, {3, 64, 3},
	} {
		if got := DefaultCalls(c.clients, c.inflight); got != c.want {
			t.Errorf("DefaultCalls(%d, %d) = %d, want %d", c.clients, c.inflight, got, c.want)
		}
	}
}
