package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rpstream/rpstream/client"
	"github.com/rpstream/rpstream/internal/proccluster"
)

// Streams is "bench streams": Count replicated streams created on a
// loopback cluster of Nodes streamnode processes that the run starts and
// stops, Clients creates at a time; then, once the streams are idle, the
// memory the cluster holds for them: every node's anonymous resident
// memory and page tables (/proc/PID/status) plus the blocks of its data
// directory (tmpfs: memory), compared with the same cluster before the
// creates.
type Streams struct {
	Count    int
	Replicas int
	Clients  int
	// Append appends one entry to every stream after the creates (so
	// that each has been written, not only made).
	Append bool
	// RegionSize of the streams; 0: the nodes' default.
	RegionSize int
	// Nodes started (0 means 3); Streamnode, Dir as for Cluster; Args
	// are extra streamnode flags (such as --max-open-streams 500).
	Nodes      int
	Streamnode string
	Dir        string
	Args       []string
	// Settle is how long the run waits after the creates (and appends)
	// before it measures memory: the streams go idle. 0 means 3s.
	Settle time.Duration
	// MadeWait bounds the wait, after the creates, for every stream's
	// files and copies to be made on the nodes (StreamsResult.Made). 0
	// means 5 minutes.
	MadeWait time.Duration
	// Profile, if set, is a file to write a CPU profile of the first
	// node to, taken over the creates (the nodes then run with their
	// admin listener and pprof).
	Profile string
	// Keep leaves the cluster's data directory and logs in place.
	Keep     bool
	Progress io.Writer
}

// StreamsResult is the outcome of "bench streams"; fields are only ever
// added.
type StreamsResult struct {
	Kind       string  `json:"kind"` // "streams"
	Count      int     `json:"count"`
	Created    int     `json:"created"`
	Replicas   int     `json:"replicas"`
	Nodes      int     `json:"nodes"`
	Clients    int     `json:"clients"`
	RegionSize int     `json:"region_size,omitempty"`
	Appended   bool    `json:"appended"`
	Seconds    float64 `json:"seconds"`
	CreatesPS  float64 `json:"creates_per_sec"`
	P50ms      float64 `json:"create_p50_ms"`
	P99ms      float64 `json:"create_p99_ms"`
	MaxMs      float64 `json:"create_max_ms"`
	// LastP50ms is the p50 of the last tenth of the creates: whether
	// creates slow down as streams accumulate.
	LastP50ms float64 `json:"create_last_tenth_p50_ms"`
	// Before and After are the cluster's memory before the creates and
	// once the streams are idle; PerCopyKiB is the growth divided by the
	// copies the nodes hold (Made + Copies; Created x Replicas once every
	// one is made).
	Before     Memory  `json:"before"`
	After      Memory  `json:"after"`
	PerCopyKiB float64 `json:"per_copy_kib"`
	// Err is the first create that failed, if one did (the run stops
	// creating there).
	Err string `json:"error,omitempty"`
	// A create returns once the catalog holds the stream; its leader
	// makes the files and its copies' holders theirs after (the node's
	// reconcile). Made and Copies count the streams' files and copy
	// files on the nodes' disks when the run stopped waiting for them
	// (every one made, or MadeWait passed); MadeSeconds is from the
	// first create until then, and MadePS the streams made per second
	// over it: the rate the cluster really makes streams at.
	Made        int     `json:"made"`
	Copies      int     `json:"copies"`
	MadeSeconds float64 `json:"made_seconds"`
	MadePS      float64 `json:"made_per_sec"`
}

// Memory is what a cluster's nodes hold (proccluster.Memory).
type Memory = proccluster.Memory

// Validate reports whether the config can run.
func (s Streams) Validate() error {
	nodes := s.Nodes
	if nodes == 0 {
		nodes = 3
	}
	switch {
	case s.Count < 1 || s.Count > 1000000:
		return fmt.Errorf("count must be from 1 to 1000000, not %d", s.Count)
	case s.Replicas < 1 || s.Replicas > nodes:
		return fmt.Errorf("replicas must be from 1 to the nodes started (%d), not %d", nodes, s.Replicas)
	case s.Clients < 1 || s.Clients > 256:
		return fmt.Errorf("clients must be from 1 to 256, not %d", s.Clients)
	case s.Nodes < 0 || s.Nodes > 9:
		return fmt.Errorf("nodes must be from 1 to 9, not %d", s.Nodes)
	case s.Settle < 0 || s.Settle > time.Hour:
		return fmt.Errorf("settle must be from 0 to 1h, not %v", s.Settle)
	case s.MadeWait < 0 || s.MadeWait > time.Hour:
		return fmt.Errorf("made-wait must be from 0 to 1h, not %v", s.MadeWait)
	}
	return nil
}

func (s Streams) say(format string, args ...any) {
	if s.Progress != nil {
		fmt.Fprintf(s.Progress, format+"\n", args...)
	}
}

// Run starts the cluster, creates the streams, measures, and stops the
// cluster (removing its data).
func (s Streams) Run(ctx context.Context) (*StreamsResult, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	if s.Nodes == 0 {
		s.Nodes = 3
	}
	if s.Settle == 0 {
		s.Settle = 3 * time.Second
	}
	if s.MadeWait == 0 {
		s.MadeWait = 5 * time.Minute
	}
	bin, err := proccluster.FindBinary(s.Streamnode)
	if err != nil {
		return nil, fmt.Errorf("%w (--streamnode PATH)", err)
	}
	parent := s.Dir
	if parent == "" {
		parent, _ = DefaultDir()
	}
	dir, err := os.MkdirTemp(parent, "rpstream-bench-streams-")
	if err != nil {
		return nil, err
	}
	if s.Keep {
		defer s.say("bench streams: data and logs kept in %s", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	s.say("bench streams: starting %d streamnode process(es) (%s) in %s", s.Nodes, bin, dir)
	args := s.Args
	if s.Profile != "" {
		args = append(slices.Clone(args), "--pprof")
	}
	cl, err := proccluster.Start(ctx, proccluster.Config{Binary: bin, Dir: dir, Nodes: s.Nodes, Args: args, Admin: s.Profile != ""})
	if err != nil {
		return nil, err
	}
	defer func() {
		for i := range cl.Len() {
			cl.Stop(i)
		}
		cl.Close()
	}()
	r := &StreamsResult{Kind: "streams", Count: s.Count, Replicas: s.Replicas, Nodes: s.Nodes, Clients: s.Clients, RegionSize: s.RegionSize, Appended: s.Append}
	time.Sleep(time.Second) // the nodes' start-up work done
	if r.Before, err = cl.Memory(); err != nil {
		return nil, err
	}
	addrs := cl.ClientAddrs()
	conns := make([]*client.Client, len(addrs))
	for i, a := range addrs {
		c, err := client.Dial(a, client.Options{})
		if err != nil {
			return nil, err
		}
		defer c.Close()
		conns[i] = c
	}

	lat := make([]time.Duration, s.Count)
	var next, failed atomic.Int64
	var firstErr atomic.Pointer[error]
	start := time.Now()
	var wg sync.WaitGroup
	profiled := make(chan error, 1)
	if s.Profile != "" {
		n, err := cl.Node(0)
		if err != nil {
			return nil, err
		}
		// Long enough for the creates at 100/s; cut short by the end of
		// the run otherwise.
		secs := max(2, s.Count/100)
		go func() { profiled <- fetchProfile(ctx, n.AdminAddr, secs, s.Profile) }()
	}
	for w := range s.Clients {
		wg.Go(func() {
			c := conns[w%len(conns)]
			for {
				i := int(next.Add(1)) - 1
				if i >= s.Count || failed.Load() > 0 || ctx.Err() != nil {
					return
				}
				t := time.Now()
				cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				_, err := c.Create(cctx, StreamName(i), client.CreateOptions{Replicas: s.Replicas, RegionSize: s.RegionSize})
				cancel()
				if err != nil {
					e := fmt.Errorf("create %s (after %d): %w", StreamName(i), i, err)
					firstErr.CompareAndSwap(nil, &e)
					failed.Add(1)
					lat[i] = -1
					return
				}
				lat[i] = time.Since(t)
				if i > 0 && i%1000 == 0 {
					s.say("bench streams: %d created (%.0f/s)", i, float64(i)/time.Since(start).Seconds())
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	var done []time.Duration
	for _, l := range lat {
		if l > 0 {
			done = append(done, l)
		}
	}
	r.Created = len(done)
	r.Seconds = math.Round(elapsed.Seconds()*1000) / 1000
	if e := firstErr.Load(); e != nil {
		r.Err = (*e).Error()
	}
	if r.Created > 0 {
		r.CreatesPS = math.Round(float64(r.Created) / elapsed.Seconds())
		tail := slices.Clone(done[len(done)-max(1, len(done)/10):])
		slices.Sort(done)
		slices.Sort(tail)
		ms := func(d time.Duration) float64 { return math.Round(float64(d.Microseconds())) / 1000 }
		r.P50ms, r.P99ms, r.MaxMs = ms(done[len(done)/2]), ms(done[min(len(done)-1, len(done)*99/100)]), ms(done[len(done)-1])
		r.LastP50ms = ms(tail[len(tail)/2])
	}
	s.say("bench streams: %d streams created in %.1fs; %s", r.Created, r.Seconds, r.Err)
	if r.Created > 0 {
		want := r.Created * (s.Replicas - 1)
		deadline := time.Now().Add(s.MadeWait)
		for {
			r.Made, r.Copies = countMade(dir, s.Nodes)
			if r.Made >= r.Created && r.Copies >= want || time.Now().After(deadline) || ctx.Err() != nil {
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
		made := time.Since(start)
		r.MadeSeconds = math.Round(made.Seconds()*1000) / 1000
		r.MadePS = math.Round(float64(r.Made) / made.Seconds())
		s.say("bench streams: %d streams and %d copies made on the nodes after %.1fs", r.Made, r.Copies, r.MadeSeconds)
	}
	if s.Profile != "" {
		// After the made wait: the profile covers the making too, and
		// waiting for it first delayed the count (a run then reported
		// 100 streams made per second, the profile's length).
		if err := <-profiled; err != nil {
			return r, fmt.Errorf("profile: %w", err)
		}
		s.say("bench streams: CPU profile of %s written to %s", "n1", s.Profile)
	}
	if s.Append && r.Created > 0 {
		if err := appendEach(ctx, conns, r.Created, s.Clients); err != nil {
			return r, err
		}
		s.say("bench streams: one entry appended to each")
	}
	select {
	case <-time.After(s.Settle):
	case <-ctx.Done():
		return r, ctx.Err()
	}
	if r.After, err = cl.Memory(); err != nil {
		return r, err
	}
	if s.Profile != "" {
		n, err := cl.Node(0)
		if err != nil {
			return r, err
		}
		if err := fetchPprof(ctx, "http://"+n.AdminAddr+"/debug/pprof/heap", s.Profile+".heap"); err != nil {
			return r, fmt.Errorf("heap profile: %w", err)
		}
	}
	if n := r.Made + r.Copies; n > 0 {
		r.PerCopyKiB = math.Round(float64(r.After.TotalKiB-r.Before.TotalKiB)/float64(n)*10) / 10
	}
	return r, nil
}

// countMade counts the streams the run made (StreamName's) whose files
// exist on the nodes of the cluster in dir: leaders' streams and copies,
// by the node's data layout (node/doc.go: DIR/streams/NAME,
// DIR/replicas/NAME; a stream is made under a hidden name and renamed).
func countMade(dir string, nodes int) (streams, copies int) {
	count := func(d string) int {
		// Unsorted names, no stat: the run polls this while the nodes
		// make streams, and must not take their CPU.
		f, err := os.Open(d)
		if err != nil {
			return 0
		}
		defer f.Close()
		names, _ := f.Readdirnames(-1)
		n := 0
		for _, name := range names {
			if strings.HasPrefix(name, streamPrefix) {
				n++
			}
		}
		return n
	}
	for i := 1; i <= nodes; i++ {
		node := filepath.Join(dir, fmt.Sprintf("n%d", i))
		streams += count(filepath.Join(node, "streams"))
		copies += count(filepath.Join(node, "replicas"))
	}
	return streams, copies
}

// fetchProfile writes a CPU profile of secs seconds from the node whose
// admin listener is at addr to path.
func fetchProfile(ctx context.Context, addr string, secs int, path string) error {
	return fetchPprof(ctx, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, secs), path)
}

// fetchPprof writes what url answers to path.
func fetchPprof(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// StreamName is the name of the bench's i-th stream.
func StreamName(i int) string { return fmt.Sprintf(streamPrefix+"%06d", i) }

const streamPrefix = "many-"

// appendEach appends one entry to each of the first n streams.
func appendEach(ctx context.Context, conns []*client.Client, n, clients int) error {
	var next atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	for w := range clients {
		wg.Go(func() {
			c := conns[w%len(conns)]
			for {
				i := int(next.Add(1)) - 1
				if i >= n || firstErr.Load() != nil {
					return
				}
				actx, cancel := context.WithTimeout(ctx, 30*time.Second)
				_, err := c.Append(actx, StreamName(i), []byte("entry"))
				cancel()
				if err != nil {
					e := fmt.Errorf("append to %s: %w", StreamName(i), err)
					firstErr.CompareAndSwap(nil, &e)
					return
				}
			}
		})
	}
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		return *e
	}
	return nil
}

// Print writes the result for a person to read.
func (r *StreamsResult) Print(w io.Writer) {
	fmt.Fprintf(w, "bench streams: %d of %d streams created (replicas %d, %d nodes, %d clients)\n", r.Created, r.Count, r.Replicas, r.Nodes, r.Clients)
	if r.Err != "" {
		fmt.Fprintf(w, "  stopped at  %s\n", r.Err)
	}
	fmt.Fprintf(w, "  creates     %.0f/s over %.1fs; p50 %.1f ms, p99 %.1f ms, max %.1f ms; last tenth p50 %.1f ms\n", r.CreatesPS, r.Seconds, r.P50ms, r.P99ms, r.MaxMs, r.LastP50ms)
	fmt.Fprintf(w, "  made        %d streams and %d copies on the nodes' disks after %.1fs: %.0f streams/s\n", r.Made, r.Copies, r.MadeSeconds, r.MadePS)
	fmt.Fprintf(w, "  memory      before %d KiB, after %d KiB (anon %d, page tables %d, data %d; file/shmem rss %d not added)\n",
		r.Before.TotalKiB, r.After.TotalKiB, r.After.RssAnonKiB, r.After.PTEKiB, r.After.DataKiB, r.After.FileRssKiB)
	fmt.Fprintf(w, "  per copy    %.1f KiB (growth / (streams + copies made)); open file descriptors %d before, %d after\n", r.PerCopyKiB, r.Before.FDs, r.After.FDs)
}
