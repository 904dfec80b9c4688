package node

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/replicate"
)

// metrics are a Server's Prometheus metrics (Config.Metrics). The append
// path only adds to pre-made counters and a histogram; everything else is
// read from the state the server keeps anyway when the registry is
// gathered (collector). Every name is listed in README's Observability
// section and checked against deploy/grafana by a test.
type metrics struct {
	appends       prometheus.Counter
	appendBytes   prometheus.Counter
	appendErrors  prometheus.Counter
	appendLatency prometheus.Histogram
	rdma          replicate.Counters // shared by the node's Leaders
}

// latencyBuckets are the append latency histogram's bounds, seconds:
// 25 µs to about 1.6 s, doubling.
var latencyBuckets = prometheus.ExponentialBuckets(25e-6, 2, 17)

func newMetrics(s *Server, reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		appends: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rpstream_appends_total", Help: "Entries appended to streams led here and acknowledged (batch entries counted one by one; duplicates included).",
		}),
		appendBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rpstream_append_bytes_total", Help: "Payload bytes of the entries counted by rpstream_appends_total.",
		}),
		appendErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rpstream_append_errors_total", Help: "Append requests answered with an error.",
		}),
		appendLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "rpstream_append_latency_seconds", Help: "From an append request's arrival to its answer, acknowledged under the stream's policy.",
			Buckets: latencyBuckets,
		}),
	}
	for _, c := range []prometheus.Collector{m.appends, m.appendBytes, m.appendErrors, m.appendLatency, (*collector)(s)} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// appended counts one answered append request of req's entries; started
// is when it arrived.
func (m *metrics) appended(entries, bytes int, started time.Time, err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.appendErrors.Inc()
		return
	}
	m.appends.Add(float64(entries))
	m.appendBytes.Add(float64(bytes))
	m.appendLatency.Observe(time.Since(started).Seconds())
}

// collector reads the server's state when the registry is gathered.
type collector Server

var (
	descReady           = prometheus.NewDesc("rpstream_ready", "1 when the node is ready to serve (what /readyz and grpc.health.v1 answer), else 0.", nil, nil)
	descStreamsLed      = prometheus.NewDesc("rpstream_streams_led", "Streams open here as their leader.", nil, nil)
	descCopiesHeld      = prometheus.NewDesc("rpstream_copies_held", "Copies held here of streams other members lead.", nil, nil)
	descUnderReplicated = prometheus.NewDesc("rpstream_streams_under_replicated", "Streams led here with fewer copies connected and keeping up than they are created with.", nil, nil)
	descStreamUnder     = prometheus.NewDesc("rpstream_stream_under_replicated", "1 when the stream led here is under-replicated (a copy missing, not connected or catching up), else 0.", []string{"stream"}, nil)
	descQuorumLost      = prometheus.NewDesc("rpstream_stream_quorum_lost", "1 when too few copies of the stream are connected for its policy: appends wait.", []string{"stream"}, nil)
	descCommitted       = prometheus.NewDesc("rpstream_stream_committed_entries", "Entries of the stream acknowledged (the commit point).", []string{"stream"}, nil)
	descCommitLag       = prometheus.NewDesc("rpstream_replica_commit_lag_entries", "Entries the leader has committed locally that the copy has not made durable.", []string{"stream", "replica"}, nil)
	descRDMAOps         = prometheus.NewDesc("rpstream_rdma_ops_total", "rdma operations posted to copies by leaders here, by operation.", []string{"op"}, nil)
	descRDMABytes       = prometheus.NewDesc("rpstream_rdma_write_bytes_total", "Bytes written to copies by rdma Writes.", nil, nil)
	descRDMAErrors      = prometheus.NewDesc("rpstream_rdma_op_errors_total", "rdma operations that completed with an error.", nil, nil)
	descConnects        = prometheus.NewDesc("rpstream_replica_connects_total", "Connection attempts from leaders here to copies.", nil, nil)
	descConnectErrors   = prometheus.NewDesc("rpstream_replica_connect_errors_total", "Connection attempts to copies that failed.", nil, nil)
	descReplicaFailures = prometheus.NewDesc("rpstream_replica_failures_total", "Copies lost by leaders here (failed attempts and lost connections).", nil, nil)
	descScrubPasses     = prometheus.NewDesc("rpstream_scrub_passes_total", "Scrubber passes over the copies held here.", nil, nil)
	descScrubBytes      = prometheus.NewDesc("rpstream_scrub_bytes_total", "Bytes the scrubber read.", nil, nil)
	descScrubDamaged    = prometheus.NewDesc("rpstream_scrub_damaged_total", "Damaged copies the scrubber found.", nil, nil)
	descScrubRepaired   = prometheus.NewDesc("rpstream_scrub_repaired_total", "Damaged copies cut back for their leader to rewrite.", nil, nil)
	descCatalogTerm     = prometheus.NewDesc("rpstream_catalog_term", "The catalog's Raft term as this node sees it.", nil, nil)
	descCatalogCommit   = prometheus.NewDesc("rpstream_catalog_commit_index", "The catalog's Raft commit index known here.", nil, nil)
	descCatalogApplied  = prometheus.NewDesc("rpstream_catalog_applied_index", "The catalog's Raft index applied here.", nil, nil)
	descIsController    = prometheus.NewDesc("rpstream_catalog_is_controller", "1 when this node is the catalog's controller (Raft leader).", nil, nil)
	descHasController   = prometheus.NewDesc("rpstream_catalog_has_controller", "1 when this node knows a controller.", nil, nil)
	descIsVoter         = prometheus.NewDesc("rpstream_catalog_is_voter", "1 when this node votes in the catalog's Raft group.", nil, nil)
	descVoters          = prometheus.NewDesc("rpstream_catalog_voters", "Voters of the catalog's Raft group.", nil, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descReady, descStreamsLed, descCopiesHeld, descUnderReplicated, descStreamUnder, descQuorumLost,
		descCommitted, descCommitLag, descRDMAOps, descRDMABytes, descRDMAErrors, descConnects, descConnectErrors, descReplicaFailures,
		descScrubPasses, descScrubBytes, descScrubDamaged, descScrubRepaired} {
		ch <- d
	}
	if c.cfg.Catalog != nil {
		for _, d := range []*prometheus.Desc{descCatalogTerm, descCatalogCommit, descCatalogApplied, descIsController, descHasController, descIsVoter, descVoters} {
			ch <- d
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := (*Server)(c)
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(descReady, b2f(s.Ready() == nil))

	// The open streams, each held by a reference while it is read.
	s.mu.Lock()
	var open []*stream
	for _, st := range s.streams {
		if !st.gone {
			st.hold()
			open = append(open, st)
		}
	}
	s.mu.Unlock()
	under := 0
	for _, st := range open {
		u, lost := st.underReplicated()
		if u {
			under++
		}
		gauge(descStreamUnder, b2f(u), st.name)
		gauge(descQuorumLost, b2f(lost), st.name)
		gauge(descCommitted, float64(st.committed()), st.name)
		if st.leader != nil {
			local := st.ls.Committed()
			for _, p := range st.leader.Progress() {
				gauge(descCommitLag, float64(local-min(local, p.AckedIdx)), st.name, string(p.ID))
			}
		}
		st.unhold()
	}
	gauge(descStreamsLed, float64(len(open)))
	gauge(descUnderReplicated, float64(under))
	gauge(descCopiesHeld, float64(len(s.replicas.list())))

	r := &s.metrics.rdma
	counter(descRDMAOps, r.Writes.Load(), "write")
	counter(descRDMAOps, r.AtomicWrites.Load(), "atomic_write")
	counter(descRDMAOps, r.Flushes.Load(), "flush")
	counter(descRDMABytes, r.WriteBytes.Load())
	counter(descRDMAErrors, r.OpErrors.Load())
	counter(descConnects, r.Connects.Load())
	counter(descConnectErrors, r.ConnectErrors.Load())
	counter(descReplicaFailures, r.ReplicaFailures.Load())

	sc := s.ScrubStats()
	counter(descScrubPasses, sc.Passes)
	counter(descScrubBytes, sc.Bytes)
	counter(descScrubDamaged, sc.Damaged)
	counter(descScrubRepaired, sc.Repaired)

	if s.cfg.Catalog != nil {
		cs := s.cfg.Catalog.Status()
		gauge(descCatalogTerm, float64(cs.Term))
		gauge(descCatalogCommit, float64(cs.Commit))
		gauge(descCatalogApplied, float64(cs.Applied))
		gauge(descIsController, b2f(cs.State == "leader"))
		gauge(descHasController, b2f(cs.Controller != ""))
		gauge(descIsVoter, b2f(cs.Voter))
		gauge(descVoters, float64(len(cs.Voters)))
	}
}

// underReplicated says whether the stream has fewer copies connected and
// keeping up than it was created with, and whether too few for its
// policy are (quorum lost).
func (st *stream) underReplicated() (under, quorumLost bool) {
	if st.leader == nil {
		return st.meta.Replicas > 1, false
	}
	rs := st.leader.Status()
	return rs.UnderReplicated || rs.QuorumLost || rs.Fenced || len(st.meta.Followers)+1 < int(st.meta.Replicas), rs.QuorumLost
}

// Ready says whether the node is ready to serve clients (nil), or why it
// is not: it is draining, not serving yet, or (with a catalog) knows no
// controller or is not registered in the catalog under its incarnation.
// /readyz and the grpc.health.v1 service answer by it.
func (s *Server) Ready() error {
	s.mu.Lock()
	closing, addr := s.closing, s.addr
	s.mu.Unlock()
	switch {
	case closing:
		return ErrClosing
	case addr == "":
		return errNotServing
	}
	if ctl := s.cfg.Catalog; ctl != nil {
		if ctl.ControllerName() == "" {
			return errNoController
		}
		if n, ok := ctl.Node(s.cfg.Name); !ok || n.Incarnation != ctl.Incarnation() {
			return errNotRegistered
		}
	}
	return nil
}

// Reasons Ready gives besides ErrClosing.
var (
	errNotServing    = errors.New("node: not serving clients yet")
	errNoController  = errors.New("node: the catalog knows no controller")
	errNotRegistered = errors.New("node: not registered in the catalog (yet)")
)

// healthLoop keeps the grpc.health.v1 status of the client port in step
// with Ready until Shutdown (which sets NOT_SERVING for good).
func (s *Server) healthLoop() {
	defer s.leave()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	serving := false
	for {
		ready := s.Ready() == nil
		if ready != serving {
			st := healthpb.HealthCheckResponse_NOT_SERVING
			if ready {
				st = healthpb.HealthCheckResponse_SERVING
			}
			s.health.SetServingStatus("", st)
			s.health.SetServingStatus(api.Streams_ServiceDesc.ServiceName, st)
			serving = ready
		}
		select {
		case <-s.stopCtx.Done():
			return
		case <-t.C:
		}
	}
}
