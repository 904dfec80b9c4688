package integration

import (
	"context"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/rpstream/rpstream/client"
	"github.com/rpstream/rpstream/internal/proccluster"
)

// BenchmarkCatalogCreate measures CreateStream through the catalog on
// three streamnode processes on loopback (the catalog's voters), one
// create at a time, sent to a node that is not the controller (one
// forwarding hop, one Raft commit for the create, one for its
// activation, off the create's path): ns/op and the p50/p99 latencies.
// Replicas 3. The data directories are in a temporary directory, or in
// RPSTREAM_BENCH_DIR (e.g. /dev/shm).
//
//	go test -run '^$' -bench CatalogCreate -benchtime 200x ./integration/
func BenchmarkCatalogCreate(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin, err := proccluster.BuildOnce()
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	if d := os.Getenv("RPSTREAM_BENCH_DIR"); d != "" {
		if dir, err = os.MkdirTemp(d, "catalog-bench-"); err != nil {
			b.Fatal(err)
		}
		defer os.RemoveAll(dir)
	}
	cl, err := proccluster.Start(ctx, proccluster.Config{Binary: bin, Dir: dir, Nodes: 3,
		Args: []string{"--region-size", "65536"}})
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	c0, err := client.Dial(cl.ClientAddrs()[0], client.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer c0.Close()
	cs, err := c0.ClusterStatus(ctx)
	if err != nil {
		b.Fatal(err)
	}
	at := 0
	for i := range 3 {
		if n, _ := cl.Node(i); n.Name != cs.Controller {
			at = i
			break
		}
	}
	c, err := client.Dial(cl.ClientAddrs()[at], client.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		t0 := time.Now()
		if _, err := c.Create(ctx, fmt.Sprintf("bench-%d", i), client.CreateOptions{Replicas: 3}); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-us")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-us")
}
