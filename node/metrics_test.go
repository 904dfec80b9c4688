package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/rpstream/rpstream/admin"
	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/client"
)

// metricValue is the value of the series of name whose labels include
// labels (name=value pairs) in reg, summed over the series that match;
// false if none does.
func metricValue(t *testing.T, reg prometheus.Gatherer, name string, labels ...string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum, found := 0.0, false
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				if !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetName() == labels[i] && l.GetValue() == labels[i+1] }) {
					continue series
				}
			}
			found = true
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return sum, found
}

// TestMetricsHealthAndReflection: a node of a three-node cluster counts
// the appends it leads, reports its copies' lag, the catalog and its rdma
// work, answers /readyz and grpc.health.v1 once registered, lists its
// services by reflection, and turns not ready when it drains.
func TestMetricsHealthAndReflection(t *testing.T) {
	ctx := testCtx(t)
	nodes := startClusterNodes(t, 3, 0)
	for _, n := range nodes {
		deadline := time.Now().Add(10 * time.Second)
		for n.srv.Ready() != nil {
			if time.Now().After(deadline) {
				t.Fatalf("%s not ready: %v", n.ctl.Name(), n.srv.Ready())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	c, err := client.Dial(nodes[0].addr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Create(ctx, "m", client.CreateOptions{Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	n1 := nodes[0]
	if v, _ := metricValue(t, n1.reg, "rpstream_appends_total"); v != 0 {
		t.Fatalf("appends_total %v before any append", v)
	}
	const unary, streamed = 20, 200
	for i := range unary {
		if _, err := c.Append(ctx, "m", []byte(fmt.Sprintf("unary %d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if v, _ := metricValue(t, n1.reg, "rpstream_appends_total"); v != unary {
		t.Fatalf("appends_total %v after %d unary appends", v, unary)
	}
	app := c.NewAppender(ctx, "m")
	var pend []*client.Pending
	for i := range streamed {
		p, err := app.Append([]byte(fmt.Sprintf("streamed %04d", i)))
		if err != nil {
			t.Fatal(err)
		}
		pend = append(pend, p)
	}
	for _, p := range pend {
		if _, err := p.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	app.Close()
	want := map[string]float64{
		"rpstream_appends_total":          unary + streamed,
		"rpstream_streams_led":            1,
		"rpstream_catalog_has_controller": 1,
		"rpstream_catalog_voters":         3,
		"rpstream_ready":                  1,
	}
	// unary 0..9 are 7 bytes, unary 10..19 8.
	want["rpstream_append_bytes_total"] = 10*7 + 10*8 + streamed*13
	for name, w := range want {
		if v, ok := metricValue(t, n1.reg, name); !ok || v != w {
			t.Errorf("%s = %v (present %v), want %v", name, v, ok, w)
		}
	}
	if v, _ := metricValue(t, n1.reg, "rpstream_append_latency_seconds"); v < unary {
		t.Errorf("append latency histogram holds %v samples, want at least %d", v, unary)
	}
	for _, op := range []string{"write", "flush"} {
		if v, _ := metricValue(t, n1.reg, "rpstream_rdma_ops_total", "op", op); v == 0 {
			t.Errorf("no rdma %s counted", op)
		}
	}
	for _, r := range []string{"n2", "n3"} {
		if _, ok := metricValue(t, n1.reg, "rpstream_replica_commit_lag_entries", "stream", "m", "replica", r); !ok {
			t.Errorf("no commit lag of m's copy on %s", r)
		}
	}
	controllers := 0.0
	for _, n := range nodes {
		v, _ := metricValue(t, n.reg, "rpstream_catalog_is_controller")
		controllers += v
	}
	if controllers != 1 {
		t.Errorf("%v nodes say they are the controller", controllers)
	}
	if v, _ := metricValue(t, nodes[1].reg, "rpstream_copies_held"); v != 1 {
		t.Errorf("n2 holds %v copies, want 1", v)
	}

	// The admin listener's handler over n1.
	h := httptest.NewServer(admin.Handler(admin.Config{Gatherer: n1.reg, Ready: n1.srv.Ready}))
	defer h.Close()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(h.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("/metrics")
	if code != 200 || !strings.Contains(body, "\nrpstream_appends_total 220\n") {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}
	checkDashboard(t, "../deploy/grafana/rpstream.json", body)
	if code, body := get("/readyz"); code != 200 {
		t.Fatalf("/readyz: %d %s", code, body)
	}
	if code, _ := get("/debug/pprof/"); code != 404 {
		t.Fatalf("/debug/pprof/ without Pprof: %d", code)
	}

	// grpc.health.v1 and reflection on the client port.
	conn, err := grpc.NewClient(n1.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	deadline := time.Now().Add(5 * time.Second)
	for {
		r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: api.Streams_ServiceDesc.ServiceName})
		if err == nil && r.Status == healthpb.HealthCheckResponse_SERVING {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("health check: %v %v", r, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	rc, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{ListServices: "*"}}); err != nil {
		t.Fatal(err)
	}
	rr, err := rc.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var services []string
	for _, s := range rr.GetListServicesResponse().GetService() {
		services = append(services, s.GetName())
	}
	if !slices.Contains(services, api.Streams_ServiceDesc.ServiceName) || !slices.Contains(services, "grpc.health.v1.Health") {
		t.Fatalf("reflection lists %v", services)
	}
	rc.CloseSend()

	// Draining: not ready, and says why.
	srv := n1.srv
	n1.stop(t)
	if err := srv.Ready(); !errors.Is(err, ErrClosing) {
		t.Fatalf("after Shutdown Ready is %v", err)
	}
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, "shutting down") {
		t.Fatalf("/readyz while drained: %d %s", code, body)
	}
	if v, _ := metricValue(t, n1.reg, "rpstream_ready"); v != 0 {
		t.Fatalf("rpstream_ready %v after Shutdown", v)
	}
}

// checkDashboard fails t unless every metric the Grafana dashboard at
// path names in its queries is in metrics, a node's /metrics output.
func checkDashboard(t *testing.T, path, metrics string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var dash any
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var queries []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && (k == "expr" || k == "query") {
					queries = append(queries, s)
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(dash)
	if len(queries) < 20 {
		t.Fatalf("%s: %d queries found, want the dashboard's 20 and more", path, len(queries))
	}
	present := map[string]bool{}
	for _, line := range strings.Split(metrics, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			present[line[:i]] = true
		}
	}
	names := regexp.MustCompile(`\b(?:rpstream|go|process)_[a-zA-Z0-9_]+`)
	checked := 0
	for _, q := range queries {
		for _, name := range names.FindAllString(q, -1) {
			checked++
			if !present[name] {
				t.Errorf("%s: query %q names %s, which the node does not export", path, q, name)
			}
		}
	}
	if checked == 0 {
		t.Fatalf("%s: no metric names found in its queries", path)
	}
}
