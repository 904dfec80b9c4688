package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/client"
	"github.com/rpstream/rpstream/internal/proccluster"
)

// Cluster is "bench cluster": Count entries of Size bytes appended by
// Clients concurrent clients through the client service to a fresh stream
// with Replicas replicas and the Acks policy, on the cluster at Node or,
// without Node, on a cluster of Nodes streamnode processes (on loopback,
// or on Hosts, with Args) that the run starts and stops (package
// proccluster).
type Cluster struct {
	Clients  int
	Size     int
	Count    int
	Acks     string // leader, quorum or all
	Replicas int
	// Node is the client address of a running node; empty starts a
	// cluster of Nodes members (0 means 3).
	Node  string
	Nodes int
	// Duration, when not zero, ends the run once it has passed even if
	// fewer than Count entries were appended; the result counts those
	// that were.
	Duration time.Duration
	// InFlight is how many appends each client keeps in flight on its
	// AppendStream call (client.Appender); 0 means 1.
	InFlight int
	// Conns is how many gRPC connections the clients share, round robin,
	// each client with its own producer (client.NewProducer); 0 means 1.
	// One shared connection does best here: gRPC then writes the frames
	// of many calls with one system call, where a connection per client
	// costs a write and a wake-up per append on both sides (64 clients on
	// 2 cores: about 4x the throughput, a fifth of the p50).
	Conns int
	// Calls is how many AppendStream calls (client.Appender) the clients
	// share, round robin; 0 means DefaultCalls, or Conns if more (a call
	// per connection at least). Clients sharing a call
	// share its producer id and its MaxInFlight window, and their appends
	// queued behind the call's requests in flight go out as one batch
	// request: with many clients a few shared calls do best.
	Calls int
	// Unary sends each append as its own Append call instead of on an
	// AppendStream call (InFlight must be 1).
	Unary bool
	// Streamnode is the binary to start without Node (see
	// proccluster.FindBinary); Dir is where its data goes (default
	// DefaultDir).
	Streamnode string
	Dir        string
	// Hosts, if set, are the IP addresses the started cluster's members
	// listen on, member i on Hosts[i%len(Hosts)] (proccluster.Config.Hosts:
	// for instance SoftRoCE's addresses inside the VM); empty means
	// 127.0.0.1.
	Hosts []string
	// Args are extra streamnode flags for every member of the started
	// cluster (such as --rdma verbs); not the ones the harness sets
	// itself (proccluster.OwnFlag).
	Args []string
	// Keep leaves the started cluster's data directory and the members'
	// logs in place (the run says where).
	Keep bool
	// TLS starts the cluster with TLS on (proccluster.Config.TLS: a
	// development CA made for the run), its clients connecting over TLS
	// with a client certificate.
	TLS bool
	// ClientOptions are the clients' TLS and credentials for a cluster
	// given by Node (the timeouts are the benchmark's own).
	ClientOptions client.Options
	// Admin starts the cluster's nodes with their admin listener, so
	// with metrics counted, and scrapes every node's /metrics once a
	// second during the run: what metrics cost.
	Admin bool
	// Profile, if not empty, is the file that gets a CPU profile (pprof
	// format) of the stream's leader during the timed run: the started
	// cluster's nodes run with their admin listener and --pprof, and the
	// leader is asked for /debug/pprof/profile for the run's Duration
	// (rounded up to seconds), or DefaultProfileSeconds without one.
	Profile string
	// Progress, if not nil, gets a line per phase.
	Progress io.Writer
}

// ClusterResult is the outcome of "bench cluster"; its JSON form is what
// --json prints. Fields are only ever added.
type ClusterResult struct {
	Kind          string  `json:"kind"` // "cluster"
	Clients       int     `json:"clients"`
	Size          int     `json:"size"`
	Count         int     `json:"count"` // appended in the timed run
	Acks          string  `json:"acks"`
	Replicas      int     `json:"replicas"`
	Nodes         int     `json:"nodes"`   // members the node reported
	Cluster       string  `json:"cluster"` // "started" (own cluster) or "given" (--node)
	Node          string  `json:"node"`    // address the clients used
	Stream        string  `json:"stream"`
	InFlight      int     `json:"inflight"`
	Conns         int     `json:"conns"`
	Calls         int     `json:"calls"` // AppendStream calls; 0 with api unary
	API           string  `json:"api"`   // append_stream or unary
	Warmup        int     `json:"warmup"`
	TLS           bool    `json:"tls"` // the started cluster ran with TLS
	Seconds       float64 `json:"seconds"`
	EntriesPerSec float64 `json:"entries_per_sec"`
	MBPerSec      float64 `json:"mb_per_sec"` // payload bytes, 10^6 per MB
	P50us         float64 `json:"p50_us"`
	P99us         float64 `json:"p99_us"`
	P999us        float64 `json:"p999_us"`
	MaxUs         float64 `json:"max_us"`
	// CPU used during the timed run, in seconds and in microseconds per
	// appended entry: by the started cluster's nodes (all of them, from
	// /proc; 0 with a given cluster) and by this process (its clients).
	// On a saturated machine what a change costs shows here more steadily
	// than in the throughput.
	NodesCPUSeconds     float64 `json:"nodes_cpu_s"`
	NodesCPUUsPerEntry  float64 `json:"nodes_cpu_us_per_entry"`
	ClientCPUSeconds    float64 `json:"client_cpu_s"`
	ClientCPUUsPerEntry float64 `json:"client_cpu_us_per_entry"`

	// RDMA is the rdma provider the started cluster's members logged
	// that they use ("tcp", "verbs"; members that differ are listed
	// "n1=tcp,n2=verbs,..."), and RDMAWhy why, as the first member logged
	// it (such as "--rdma verbs"); empty with a given cluster.
	RDMA    string `json:"rdma,omitempty"`
	RDMAWhy string `json:"rdma_why,omitempty"`
	// Kept is the directory of the started cluster's data and logs,
	// left in place with Keep.
	Kept string `json:"kept,omitempty"`
}

// MaxClusterSize is the largest --size: well below the gRPC message limit.
const MaxClusterSize = 16 << 20

// Validate reports whether the config can run.
func (c Cluster) Validate() error {
	switch {
	case c.Clients < 1 || c.Clients > 4096:
		return fmt.Errorf("clients must be from 1 to 4096, not %d", c.Clients)
	case c.Size < 0 || c.Size > MaxClusterSize:
		return fmt.Errorf("size must be from 0 to 16MiB, not %d", c.Size)
	case c.Count < c.Clients:
		return fmt.Errorf("count must be at least the number of clients (%d), not %d", c.Clients, c.Count)
	case c.Acks != "leader" && c.Acks != "quorum" && c.Acks != "all":
		return fmt.Errorf("acks must be leader, quorum or all, not %q", c.Acks)
	case c.Replicas < 1 || c.Replicas > 16:
		return fmt.Errorf("replicas must be from 1 to 16, not %d", c.Replicas)
	case c.Nodes < 0 || c.Nodes > 16:
		return fmt.Errorf("nodes must be from 1 to 16, not %d", c.Nodes)
	case c.Node != "" && c.TLS:
		return errors.New("--tls starts a cluster with TLS; with --node give --tls-ca (and --tls-cert or --token-file) instead")
	case c.Node != "" && c.Nodes != 0:
		return errors.New("--nodes starts a cluster; it cannot go with --node")
	case c.Node != "" && c.Admin:
		return errors.New("--admin starts a cluster's nodes with their admin listener; it cannot go with --node")
	case c.Node != "" && c.Profile != "":
		return errors.New("--profile starts a cluster's nodes with their admin listener and pprof; it cannot go with --node")
	case c.Node != "" && len(c.Hosts) > 0:
		return errors.New("--hosts places the members of the cluster it starts; it cannot go with --node")
	case c.Node != "" && c.Keep:
		return errors.New("--keep keeps the data of the cluster it starts; it cannot go with --node")
	case c.Node != "" && len(c.Args) > 0:
		return errors.New("--node-args passes flags to the streamnodes it starts; it cannot go with --node")
	case len(c.Hosts) > c.nodes():
		return fmt.Errorf("%d hosts for %d nodes: give at most one per node", len(c.Hosts), c.nodes())
	case c.Node == "" && c.Replicas > c.nodes():
		return fmt.Errorf("replicas (%d) must not exceed the nodes started (%d; see --nodes)", c.Replicas, c.nodes())
	case c.Duration < 0 || c.Duration > time.Hour:
		return fmt.Errorf("duration must be from 0 (none) to 1h, not %v", c.Duration)
	case c.InFlight < 0 || c.InFlight > client.MaxInFlight:
		return fmt.Errorf("inflight must be from 1 to %d, not %d", client.MaxInFlight, c.InFlight)
	case c.Unary && c.InFlight > 1:
		return errors.New("--unary sends one append at a time: it cannot go with --inflight above 1")
	case c.Calls < 0 || c.Calls > c.Clients:
		return fmt.Errorf("calls must be from 1 to the number of clients (%d), not %d", c.Clients, c.Calls)
	case c.Unary && c.Calls > 0:
		return errors.New("--unary makes no AppendStream calls: it cannot go with --calls")
	case c.Conns < 0 || c.Conns > c.Clients:
		return fmt.Errorf("conns must be from 1 to the number of clients (%d), not %d", c.Clients, c.Conns)
	}
	for _, h := range c.Hosts {
		if net.ParseIP(h) == nil {
			return fmt.Errorf("host %q is not an IP address", h)
		}
	}
	for _, a := range c.Args {
		if proccluster.OwnFlag(a) {
			return fmt.Errorf("node argument %q: bench cluster sets that streamnode flag itself", a)
		}
	}
	return nil
}

// DefaultCalls is the number of AppendStream calls when Calls is 0: as
// few as hold every append in flight (Clients x InFlight) within
// client.MaxInFlight each, and at most one per client. Measured here (64
// clients of 1 in flight, 3 replicas, quorum): 1, 2 or 4 shared calls gave
// 80-107k appends/s, 1 as good as any, where a call per client gave
// 35-47k (no batch forms on a call with a single append in flight).
func DefaultCalls(clients, inflight int) int {
	return min((clients*max(inflight, 1)+client.MaxInFlight-1)/client.MaxInFlight, clients)
}

// nodes is the size of the cluster to start.
func (c Cluster) nodes() int {
	if c.Nodes == 0 {
		return 3
	}
	return c.Nodes
}

func (c Cluster) say(format string, args ...any) {
	if c.Progress != nil {
		fmt.Fprintf(c.Progress, format+"\n", args...)
	}
}

// Run runs the benchmark: it starts a cluster if Node is empty (and stops
// it and removes its data afterwards), creates a fresh stream, warms up,
// and measures. The stream is deleted afterwards on a given cluster.
func (c Cluster) Run(ctx context.Context) (*ClusterResult, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	c.InFlight = max(c.InFlight, 1)
	if c.Conns == 0 {
		c.Conns = 1
	}
	if c.Calls == 0 {
		// At least a call per connection: --conns C alone measures C
		// independent clients, each with a connection and a call of its
		// own, as separate programs would have.
		c.Calls = max(DefaultCalls(c.Clients, c.InFlight), c.Conns)
	}
	r := &ClusterResult{Kind: "cluster", Clients: c.Clients, Size: c.Size, Acks: c.Acks, Replicas: c.Replicas,
		Node: c.Node, Cluster: "given", InFlight: c.InFlight, Conns: c.Conns, API: "append_stream"}
	if c.Unary {
		r.API = "unary"
	} else {
		r.Calls = c.Calls
	}
	var leaderAdmin string
	var nodesCPU func() (time.Duration, error)
	if c.Node == "" {
		st, err := c.startCluster(ctx)
		if err != nil {
			return nil, err
		}
		defer st.stop()
		nodesCPU = st.cpu
		r.Node, r.Cluster, r.TLS, leaderAdmin = st.addr, "started", c.TLS, st.admin
		r.RDMA, r.RDMAWhy = st.rdma, st.rdmaWhy
		if c.Keep {
			r.Kept = st.dir
		}
		c.ClientOptions = st.opts
	}
	var b [6]byte
	rand.Read(b[:])
	r.Stream = "bench-" + time.Now().UTC().Format("20060102T150405") + "-" + hex.EncodeToString(b[:])

	conns := make([]*client.Client, c.Conns)
	for i := range conns {
		o := c.ClientOptions
		o.Timeout, o.MaxAttempts, o.Backoff, o.MaxBackoff = 0, 0, 0, 0
		cl, err := client.Dial(r.Node, o)
		if err != nil {
			return nil, err
		}
		defer cl.Close()
		conns[i] = cl
	}
	admin := conns[0]
	ms, err := admin.Members(ctx)
	if err != nil {
		return nil, fmt.Errorf("members of %s: %w", r.Node, err)
	}
	r.Nodes = len(ms)
	acks := map[string]api.AckPolicy{"leader": api.AckPolicy_ACK_POLICY_LEADER, "quorum": api.AckPolicy_ACK_POLICY_QUORUM, "all": api.AckPolicy_ACK_POLICY_ALL}[c.Acks]
	if _, err := admin.Create(ctx, r.Stream, client.CreateOptions{Replicas: c.Replicas, Acks: acks}); err != nil {
		return nil, fmt.Errorf("create %s: %w", r.Stream, err)
	}
	if r.Cluster == "given" {
		defer func() {
			dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			admin.Delete(dctx, r.Stream)
		}()
	}
	c.say("bench cluster: stream %s (replicas %d, acks %s) on %s, %d member(s)", r.Stream, c.Replicas, c.Acks, r.Node, r.Nodes)

	clients := make([]*client.Client, c.Clients)
	for i := range clients {
		clients[i] = conns[i%len(conns)]
		if i >= len(conns) {
			clients[i] = clients[i].NewProducer()
		}
	}
	payload := make([]byte, c.Size)
	for i := range payload {
		payload[i] = byte('a' + i%26)
	}
	// Warm-up: connections open, the node's first regions allocated,
	// goroutines and buffers grown.
	r.Warmup = min(50, c.Count/c.Clients) * c.Clients
	if _, _, err := c.runClients(ctx, clients, payload, r.Stream, r.Warmup, 0); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	c.say("bench cluster: %d warm-up appends done; measuring %d appends from %d client(s)", r.Warmup, c.Count, c.Clients)

	var waitProfile func() error
	if c.Profile != "" {
		// The stream's leader is the node it was created on, the first.
		c.say("bench cluster: profiling the leader (%s) for %d s into %s", leaderAdmin, c.profileSeconds(), c.Profile)
		waitProfile = startProfile(ctx, leaderAdmin, c.profileSeconds(), c.Profile)
	}
	var nodes0 time.Duration
	if nodesCPU != nil {
		if nodes0, err = nodesCPU(); err != nil {
			return nil, err
		}
	}
	self0 := selfCPU()
	lat, elapsed, err := c.runClients(ctx, clients, payload, r.Stream, c.Count, c.Duration)
	self1 := selfCPU()
	var nodes1 time.Duration
	if nodesCPU != nil && err == nil {
		nodes1, err = nodesCPU()
	}
	if waitProfile != nil {
		if perr := waitProfile(); perr != nil && err == nil {
			err = perr
		}
	}
	if err != nil {
		return nil, err
	}
	var all []uint32
	for _, l := range lat {
		all = append(all, l...)
	}
	r.Count = len(all)
	r.Seconds = elapsed.Seconds()
	fillCluster(r, all)
	r.ClientCPUSeconds = round3((self1 - self0).Seconds())
	r.NodesCPUSeconds = round3((nodes1 - nodes0).Seconds())
	if r.Count > 0 {
		r.ClientCPUUsPerEntry = round3(float64((self1 - self0).Nanoseconds()) / 1e3 / float64(r.Count))
		r.NodesCPUUsPerEntry = round3(float64((nodes1 - nodes0).Nanoseconds()) / 1e3 / float64(r.Count))
	}
	return r, nil
}

// selfCPU is the CPU time this process has used (user and system).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// started is a cluster startCluster started.
type started struct {
	stop  func()         // stops it and removes its data
	addr  string         // client address of its first member
	admin string         // admin address of its first member, with Admin or Profile
	opts  client.Options // what its clients need (TLS)
	cpu   func() (time.Duration, error)
	dir   string // its data and logs
	// rdma and rdmaWhy are the provider its members logged (see
	// ClusterResult.RDMA).
	rdma, rdmaWhy string
}

// startCluster starts the cluster (on loopback, or on Hosts) and says
// how to use and stop it.
func (c Cluster) startCluster(ctx context.Context) (*started, error) {
	bin, err := proccluster.FindBinary(c.Streamnode)
	if err != nil {
		return nil, fmt.Errorf("%w (--streamnode PATH)", err)
	}
	parent := c.Dir
	if parent == "" {
		parent, _ = DefaultDir()
	}
	dir, err := os.MkdirTemp(parent, "rpstream-bench-cluster-")
	if err != nil {
		return nil, err
	}
	nodes := c.nodes()
	tlsNote := ""
	if c.TLS {
		tlsNote = ", TLS on"
	}
	where := "127.0.0.1"
	if len(c.Hosts) > 0 {
		where = strings.Join(c.Hosts, ",")
	}
	argsNote := ""
	if len(c.Args) > 0 {
		argsNote = ", with " + strings.Join(c.Args, " ")
	}
	c.say("bench cluster: starting %d streamnode process(es) (%s%s%s) on %s in %s", nodes, bin, tlsNote, argsNote, where, dir)
	pc := proccluster.Config{Binary: bin, Dir: dir, Nodes: nodes, TLS: c.TLS, Admin: c.Admin || c.Profile != "",
		Hosts: c.Hosts, Args: slices.Clone(c.Args)}
	if c.Profile != "" {
		pc.Args = append(pc.Args, "--pprof")
	}
	cl, err := proccluster.Start(ctx, pc)
	if err != nil {
		if c.Keep {
			c.say("bench cluster: data and logs kept in %s", dir)
		} else {
			os.RemoveAll(dir)
		}
		return nil, err
	}
	stopScraping := func() {}
	if c.Admin {
		stopScraping = c.scrape(cl)
	}
	st := &started{stop: func() {
		stopScraping()
		for i := range cl.Len() {
			cl.Stop(i)
		}
		cl.Close()
		if c.Keep {
			c.say("bench cluster: data and logs kept in %s", dir)
		} else {
			os.RemoveAll(dir)
		}
	}, opts: cl.ClientOptions(), cpu: cl.CPUTime, dir: dir}
	n0, err := cl.Node(0)
	if err != nil {
		st.stop()
		return nil, err
	}
	st.addr, st.admin = n0.ClientAddr, n0.AdminAddr
	// What the members say they use, so that a run meant for verbs
	// cannot quietly measure tcp.
	var each []string
	same := true
	for i := range cl.Len() {
		p, why, err := cl.RDMAProvider(i)
		if err != nil {
			st.stop()
			return nil, err
		}
		n, _ := cl.Node(i)
		each = append(each, n.Name+"="+p)
		if i == 0 {
			st.rdma, st.rdmaWhy = p, why
		}
		same = same && p == st.rdma
	}
	if !same {
		st.rdma = strings.Join(each, ",")
	}
	c.say("bench cluster: rdma provider %s (%s)", st.rdma, st.rdmaWhy)
	return st, nil
}

// scrape fetches every member's /metrics once a second, as Prometheus
// would (more often than its default 15 s), until the returned function
// is called.
func (c Cluster) scrape(cl *proccluster.Cluster) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	var scrapes, failures atomic.Int64
	hc := &http.Client{Timeout: 5 * time.Second}
	wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			for i := range cl.Len() {
				n, err := cl.Node(i)
				if err != nil || n.AdminAddr == "" {
					continue
				}
				resp, err := hc.Get("http://" + n.AdminAddr + "/metrics")
				if err != nil {
					failures.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				scrapes.Add(1)
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
		c.say("bench cluster: %d scrapes of /metrics, %d failed", scrapes.Load(), failures.Load())
	}
}

// runClients has every client append its share of count entries and
// returns the latencies in nanoseconds, per client, and the time from the
// start of the first append to the answer of the last. With limit above
// zero each client stops starting appends once it has passed.
func (c Cluster) runClients(ctx context.Context, clients []*client.Client, p []byte, stream string, count int, limit time.Duration) ([][]uint32, time.Duration, error) {
	lat := make([][]uint32, len(clients))
	var deadline int64 = math.MaxInt64
	start := make(chan struct{})
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	var apps []*client.Appender
	if !c.Unary {
		for i := range c.Calls {
			apps = append(apps, clients[i].NewAppender(ctx, stream))
		}
	}
	for i, cl := range clients {
		n := count / len(clients)
		if i < count%len(clients) {
			n++
		}
		lat[i] = make([]uint32, 0, n)
		wg.Go(func() {
			<-start
			var err error
			if c.Unary {
				lat[i], err = c.appendUnary(ctx, cl, stream, p, n, deadline, lat[i])
			} else {
				lat[i], err = c.appendStream(ctx, apps[i%len(apps)], p, n, deadline, lat[i])
			}
			if err != nil {
				failed.CompareAndSwap(nil, &err)
			}
		})
	}
	t0 := nanotime()
	if limit > 0 {
		deadline = t0 + limit.Nanoseconds()
	}
	close(start)
	wg.Wait()
	elapsed := time.Duration(nanotime() - t0)
	for _, a := range apps {
		if err := a.Close(); err != nil {
			failed.CompareAndSwap(nil, &err)
		}
	}
	if e := failed.Load(); e != nil {
		return nil, 0, *e
	}
	return lat, elapsed, nil
}

func record(lat []uint32, d int64) []uint32 {
	return append(lat, uint32(min(d, int64(math.MaxUint32))))
}

// appendUnary appends n entries one Append call at a time.
func (c Cluster) appendUnary(ctx context.Context, cl *client.Client, stream string, p []byte, n int, deadline int64, lat []uint32) ([]uint32, error) {
	for range n {
		t := nanotime()
		if t > deadline {
			break
		}
		if _, err := cl.Append(ctx, stream, p); err != nil {
			return lat, fmt.Errorf("append: %w", err)
		}
		lat = record(lat, nanotime()-t)
	}
	return lat, nil
}

// appendStream appends n entries on Appender a (perhaps shared with
// other clients) keeping InFlight in flight; an append's latency runs
// from its send to its answer (answers come in order, so each is read as
// the oldest completes).
func (c Cluster) appendStream(ctx context.Context, a *client.Appender, p []byte, n int, deadline int64, lat []uint32) ([]uint32, error) {
	type sent struct {
		p *client.Pending
		t int64
	}
	var window []sent
	wait := func() error {
		s := window[0]
		window = window[1:]
		if _, err := s.p.Wait(ctx); err != nil {
			return fmt.Errorf("append: %w", err)
		}
		lat = record(lat, nanotime()-s.t)
		return nil
	}
	var err error
	for range n {
		t := nanotime()
		if t > deadline {
			break
		}
		if len(window) == c.InFlight {
			if err = wait(); err != nil {
				break
			}
			t = nanotime()
		}
		var pd *client.Pending
		if pd, err = a.Append(p); err != nil {
			err = fmt.Errorf("append: %w", err)
			break
		}
		window = append(window, sent{pd, t})
	}
	for err == nil && len(window) > 0 {
		err = wait()
	}
	return lat, err
}

// fillCluster computes rates and percentiles from latencies in
// nanoseconds.
func fillCluster(r *ClusterResult, all []uint32) {
	slices.Sort(all)
	pct := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		k := min(int(p*float64(len(all))), len(all)-1)
		return round3(float64(all[k]) / 1e3)
	}
	r.P50us, r.P99us, r.P999us, r.MaxUs = pct(0.50), pct(0.99), pct(0.999), pct(1)
	if r.Seconds > 0 {
		r.EntriesPerSec = math.Round(float64(r.Count) / r.Seconds)
		r.MBPerSec = round3(float64(r.Count) * float64(r.Size) / r.Seconds / 1e6)
	}
}

// Print writes the result for a person to read.
func (r *ClusterResult) Print(w io.Writer) {
	calls := ""
	if r.API != "unary" {
		calls = fmt.Sprintf(", %d AppendStream call(s)", r.Calls)
	}
	fmt.Fprintf(w, "bench cluster: %d entries of %d bytes from %d client(s) on %d connection(s)%s, %d in flight each (%s)\n",
		r.Count, r.Size, r.Clients, r.Conns, calls, r.InFlight, r.API)
	how := "given by --node"
	if r.Cluster == "started" {
		how = "started for this run"
		if r.TLS {
			how += ", TLS on"
		}
		if r.RDMA != "" {
			how += fmt.Sprintf(", rdma provider %s (%s)", r.RDMA, r.RDMAWhy)
		}
	}
	fmt.Fprintf(w, "  cluster     %s, %d member(s), %s\n", r.Node, r.Nodes, how)
	fmt.Fprintf(w, "  stream      %s: replicas %d, acks %s (%d warm-up appends first)\n", r.Stream, r.Replicas, r.Acks, r.Warmup)
	fmt.Fprintf(w, "  time        %.3f s\n", r.Seconds)
	fmt.Fprintf(w, "  throughput  %.0f entries/s, %.1f MB/s\n", r.EntriesPerSec, r.MBPerSec)
	fmt.Fprintf(w, "  latency     p50 %.1f us, p99 %.1f us, p99.9 %.1f us, max %.0f us (send to acknowledgement)\n", r.P50us, r.P99us, r.P999us, r.MaxUs)
	if r.Cluster == "started" {
		fmt.Fprintf(w, "  cpu         nodes %.2f us/entry (%.2f s), clients %.2f us/entry (%.2f s)\n", r.NodesCPUUsPerEntry, r.NodesCPUSeconds, r.ClientCPUUsPerEntry, r.ClientCPUSeconds)
	} else {
		fmt.Fprintf(w, "  cpu         clients %.2f us/entry (%.2f s)\n", r.ClientCPUUsPerEntry, r.ClientCPUSeconds)
	}
}
