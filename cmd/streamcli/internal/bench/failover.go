package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/client"
	"github.com/rpstream/rpstream/internal/proccluster"
)

// Failover is "bench failover": Producers clients append to a fresh
// stream while its leader's process is killed (SIGKILL) Kills times and
// restarted each time with its flags and data directory; each kill is
// timed from the signal to the first append acknowledged after the
// process exited. At the end the stream is read back and every
// acknowledged append is looked for at the position it was acknowledged
// with (each payload names its producer and sequence number): missing
// ones are lost, payloads stored more than once duplicates.
//
// The time measured is the failover's (another copy's holder elected
// when the killed leader's lease expired) or the restart's (the killed
// node back and reopening the stream before that), whichever came first.
type Failover struct {
	Producers int
	Size      int
	Kills     int
	Acks      string // leader, quorum or all
	Replicas  int
	// Node is the client address of a running cluster's node, or
	// several, comma-separated; its processes must run on this machine
	// (found by the port they listen on). Empty starts a cluster of
	// Nodes streamnode processes (0 means 3).
	Node  string
	Nodes int
	// InFlight is how many appends each producer keeps in flight on its
	// client.Appender; 0 means 1.
	InFlight int
	// Interval is the load before the first kill and after each
	// recovery (0 means 2 s); RestartDelay is the wait after a kill
	// before the killed leader is started again (0: at once).
	Interval     time.Duration
	RestartDelay time.Duration
	// LeaseTTL, if set, is the started cluster's node lease at the
	// controller (streamnode --lease-ttl): how soon a silent leader is
	// replaced. 0: the loopback preset's (1 s).
	LeaseTTL time.Duration
	// Wait bounds the wait for the first acknowledgement after a kill
	// and for a restarted node to answer; 0 means 60 s. The producers'
	// client.Options.Timeout is Wait too.
	Wait time.Duration
	// Streamnode is the binary to start without Node (see
	// proccluster.FindBinary); Dir is where its data goes (default
	// DefaultDir).
	Streamnode string
	Dir        string
	// Progress, if not nil, gets a line per phase.
	Progress io.Writer
}

// FailoverResult is the outcome of "bench failover"; its JSON form is
// what --json prints. Fields are only ever added.
type FailoverResult struct {
	Kind      string `json:"kind"` // "failover"
	Producers int    `json:"producers"`
	InFlight  int    `json:"inflight"`
	Size      int    `json:"size"`
	Acks      string `json:"acks"`
	Replicas  int    `json:"replicas"`
	Nodes     int    `json:"nodes"`
	Cluster   string `json:"cluster"` // "started" or "given"
	Node      string `json:"node"`
	Stream    string `json:"stream"`
	Kills     int    `json:"kills"`
	// Kill to the first acknowledged append, over the kills.
	P50ms float64 `json:"p50_ms"`
	P99ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms"`
	// Each kill.
	Each []FailoverKill `json:"each"`
	// Appends acknowledged, and failed (not acknowledged within Wait:
	// their fate is unknown, and they are not counted as lost).
	Acknowledged int `json:"acknowledged"`
	Failed       int `json:"failed"`
	// What reading the stream back found: entries read, acknowledged
	// appends not at their position (lost), payloads stored more than
	// once (duplicates, beyond the first).
	Read       int     `json:"read"`
	Lost       int     `json:"lost"`
	Duplicates int     `json:"duplicates"`
	Seconds    float64 `json:"seconds"`
}

// FailoverKill is one kill of a leader.
type FailoverKill struct {
	Leader string `json:"leader"` // the killed leader's name
	PID    int    `json:"pid"`    // its process, killed
	// KillToAckMs runs from SIGKILL to the first append acknowledged
	// after the process exited; RestartMs from SIGKILL to the restarted
	// node answering.
	KillToAckMs float64 `json:"kill_to_ack_ms"`
	RestartMs   float64 `json:"restart_ms"`
	// NewLeader leads the stream once appends are acknowledged again;
	// RestartedPID is the restarted process.
	NewLeader    string `json:"new_leader"`
	RestartedPID int    `json:"restarted_pid"`
}

// Validate reports whether the config can run.
func (f Failover) Validate() error {
	switch {
	case f.Producers < 1 || f.Producers > 256:
		return fmt.Errorf("producers must be from 1 to 256, not %d", f.Producers)
	case f.Size < minFailoverSize || f.Size > MaxClusterSize:
		return fmt.Errorf("size must be from %d to 16MiB, not %d", minFailoverSize, f.Size)
	case f.Kills < 1 || f.Kills > 1000:
		return fmt.Errorf("kills must be from 1 to 1000, not %d", f.Kills)
	case f.Acks != "leader" && f.Acks != "quorum" && f.Acks != "all":
		return fmt.Errorf("acks must be leader, quorum or all, not %q", f.Acks)
	case f.Replicas < 1 || f.Replicas > 16:
		return fmt.Errorf("replicas must be from 1 to 16, not %d", f.Replicas)
	case f.Nodes < 0 || f.Nodes > 16:
		return fmt.Errorf("nodes must be from 1 to 16, not %d", f.Nodes)
	case f.Node != "" && f.Nodes != 0:
		return errors.New("--nodes starts a cluster; it cannot go with --node")
	case f.Node == "" && f.Replicas > f.nodes():
		return fmt.Errorf("replicas (%d) must not exceed the nodes started (%d; see --nodes)", f.Replicas, f.nodes())
	case f.InFlight < 0 || f.InFlight > client.MaxInFlight:
		return fmt.Errorf("inflight must be from 1 to %d, not %d", client.MaxInFlight, f.InFlight)
	case f.Interval < 0 || f.RestartDelay < 0 || f.Wait < 0 || f.LeaseTTL < 0:
		return errors.New("interval, restart delay and wait must not be negative")
	}
	return nil
}

// minFailoverSize holds a payload's producer and sequence number.
const minFailoverSize = 32

func (f Failover) nodes() int {
	if f.Nodes == 0 {
		return 3
	}
	return f.Nodes
}

func (f Failover) say(format string, args ...any) {
	if f.Progress != nil {
		fmt.Fprintf(f.Progress, format+"\n", args...)
	}
}

// procs kills and restarts the members of a cluster.
type procs interface {
	// kill sends SIGKILL to the process serving client address addr
	// and waits for it to exit; it returns its pid.
	kill(addr string) (int, error)
	// restart starts it again as it was and waits until it answers;
	// it returns the new pid.
	restart(ctx context.Context, addr string) (int, error)
}

// Run runs the benchmark.
func (f Failover) Run(ctx context.Context) (*FailoverResult, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	f.InFlight = max(f.InFlight, 1)
	if f.Interval == 0 {
		f.Interval = 2 * time.Second
	}
	if f.Wait == 0 {
		f.Wait = time.Minute
	}
	r := &FailoverResult{Kind: "failover", Producers: f.Producers, InFlight: f.InFlight, Size: f.Size, Acks: f.Acks, Replicas: f.Replicas,
		Node: f.Node, Cluster: "given", Kills: f.Kills}
	var ps procs
	if f.Node == "" {
		c, stop, err := f.startCluster(ctx)
		if err != nil {
			return nil, err
		}
		defer stop()
		r.Node, r.Cluster = strings.Join(c.ClientAddrs(), ","), "started"
		ps = &ownProcs{c: c}
	} else {
		ps = newHostProcs(f.Wait)
	}
	var b [6]byte
	rand.Read(b[:])
	r.Stream = "failover-" + time.Now().UTC().Format("20060102T150405") + "-" + hex.EncodeToString(b[:])

	admin, err := client.Dial(r.Node, client.Options{Timeout: f.Wait, Backoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	if err != nil {
		return nil, err
	}
	defer admin.Close()
	ms, err := admin.Members(ctx)
	if err != nil {
		return nil, fmt.Errorf("members of %s: %w", r.Node, err)
	}
	r.Nodes = len(ms)
	acks := map[string]api.AckPolicy{"leader": api.AckPolicy_ACK_POLICY_LEADER, "quorum": api.AckPolicy_ACK_POLICY_QUORUM, "all": api.AckPolicy_ACK_POLICY_ALL}[f.Acks]
	if _, err := admin.Create(ctx, r.Stream, client.CreateOptions{Replicas: f.Replicas, Acks: acks}); err != nil {
		return nil, fmt.Errorf("create %s: %w", r.Stream, err)
	}
	f.say("bench failover: stream %s (replicas %d, acks %s) on %s, %d member(s)", r.Stream, f.Replicas, f.Acks, r.Node, r.Nodes)

	start := time.Now()
	load := newFailoverLoad(f, r.Node, r.Stream)
	lctx, stopLoad := context.WithCancel(ctx)
	loaded := make(chan struct{})
	go func() {
		defer close(loaded)
		load.run(lctx)
	}()
	err = f.kills(ctx, admin, ps, load, r)
	stopLoad()
	<-loaded
	load.close()
	if err != nil {
		return nil, err
	}
	r.Seconds = time.Since(start).Seconds()
	r.Acknowledged, r.Failed = len(load.acked), load.failed
	if err := f.check(ctx, admin, load, r); err != nil {
		return nil, err
	}
	var ms2 []float64
	for _, k := range r.Each {
		ms2 = append(ms2, k.KillToAckMs)
	}
	slices.Sort(ms2)
	pct := func(p float64) float64 { return ms2[min(int(p*float64(len(ms2))), len(ms2)-1)] }
	r.P50ms, r.P99ms, r.MaxMs = pct(0.5), pct(0.99), ms2[len(ms2)-1]
	if r.Cluster == "given" {
		dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		admin.Delete(dctx, r.Stream)
	}
	return r, nil
}

// kills runs the kills under load.
func (f Failover) kills(ctx context.Context, admin *client.Client, ps procs, load *failoverLoad, r *FailoverResult) error {
	if err := sleepCtx(ctx, f.Interval); err != nil {
		return err
	}
	if err := load.err(); err != nil {
		return err
	}
	for k := range f.Kills {
		st, err := admin.Status(ctx, r.Stream)
		if err != nil {
			return fmt.Errorf("status of %s before kill %d: %w", r.Stream, k+1, err)
		}
		kill := FailoverKill{Leader: st.Leader}
		t0 := time.Now()
		if kill.PID, err = ps.kill(st.LeaderAddr); err != nil {
			return fmt.Errorf("kill %d of %s (%s): %w", k+1, st.Leader, st.LeaderAddr, err)
		}
		first := load.firstAckAfter(time.Now())
		restarted := make(chan error, 1)
		go func() {
			if err := sleepCtx(ctx, f.RestartDelay); err != nil {
				restarted <- err
				return
			}
			pid, err := ps.restart(ctx, st.LeaderAddr)
			kill.RestartedPID = pid
			kill.RestartMs = ms(time.Since(t0))
			restarted <- err
		}()
		var ackErr error
		select {
		case at := <-first:
			kill.KillToAckMs = ms(at.Sub(t0))
		case <-time.After(f.Wait):
			ackErr = fmt.Errorf("kill %d of %s: no append acknowledged within %v", k+1, st.Leader, f.Wait)
		case <-ctx.Done():
			ackErr = ctx.Err()
		}
		if err := <-restarted; err != nil {
			return fmt.Errorf("restart of %s after kill %d: %w", st.Leader, k+1, err)
		}
		if ackErr != nil {
			return ackErr
		}
		if st, err := admin.Status(ctx, r.Stream); err == nil {
			kill.NewLeader = st.Leader
		}
		r.Each = append(r.Each, kill)
		f.say("bench failover: kill %d of %d: %s (pid %d): first acknowledgement after %.0f ms, restarted in %.0f ms, leader now %s",
			k+1, f.Kills, kill.Leader, kill.PID, kill.KillToAckMs, kill.RestartMs, kill.NewLeader)
		if err := sleepCtx(ctx, f.Interval); err != nil {
			return err
		}
		if err := load.err(); err != nil {
			return err
		}
	}
	return nil
}

// check reads the stream back and counts lost and duplicate appends.
func (f Failover) check(ctx context.Context, admin *client.Client, load *failoverLoad, r *FailoverResult) error {
	st, err := admin.Status(ctx, r.Stream)
	if err != nil {
		return fmt.Errorf("status of %s: %w", r.Stream, err)
	}
	at := map[uint64]failoverID{}
	seen := map[failoverID]int{}
	for from := st.Head; from < st.Committed; {
		es, next, err := admin.Read(ctx, r.Stream, from, 10000)
		if err != nil {
			return fmt.Errorf("read %s from %d: %w", r.Stream, from, err)
		}
		for _, e := range es {
			id, ok := parseFailoverPayload(e.Data)
			if !ok {
				return fmt.Errorf("entry %d of %s is not a payload of this run: %.40q", e.Position, r.Stream, e.Data)
			}
			at[e.Position] = id
			seen[id]++
			r.Read++
		}
		if next == from {
			break
		}
		from = next
	}
	for id, pos := range load.acked {
		if got, ok := at[pos]; !ok || got != id {
			r.Lost++
		}
	}
	for _, n := range seen {
		r.Duplicates += n - 1
	}
	return nil
}

// failoverID names a payload: its producer and sequence number.
type failoverID struct {
	producer int
	seq      uint64
}

func failoverPayload(id failoverID, size int) []byte {
	p := fmt.Appendf(nil, "rpfo %04d %016d ", id.producer, id.seq)
	for len(p) < size {
		p = append(p, 'f')
	}
	return p
}

func parseFailoverPayload(p []byte) (failoverID, bool) {
	var id failoverID
	if len(p) < 27 || string(p[:5]) != "rpfo " {
		return id, false
	}
	_, err := fmt.Sscanf(string(p[5:27]), "%04d %016d", &id.producer, &id.seq)
	return id, err == nil
}

// failoverLoad is the producers: each a client of its own (its own
// producer id) appending on a client.Appender, InFlight in flight.
type failoverLoad struct {
	f       Failover
	addrs   string
	stream  string
	clients []*client.Client

	mu     sync.Mutex
	acked  map[failoverID]uint64 // position acknowledged
	failed int
	fatal  error
	// watch, when set, receives the time of the first acknowledgement
	// after watchFrom.
	watch     chan time.Time
	watchFrom time.Time
}

func newFailoverLoad(f Failover, addrs, stream string) *failoverLoad {
	return &failoverLoad{f: f, addrs: addrs, stream: stream, acked: map[failoverID]uint64{}}
}

// firstAckAfter returns a channel that receives the time of the first
// acknowledgement after t.
func (l *failoverLoad) firstAckAfter(t time.Time) <-chan time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.watch, l.watchFrom = make(chan time.Time, 1), t
	return l.watch
}

func (l *failoverLoad) ack(id failoverID, pos uint64) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.acked[id] = pos
	if l.watch != nil && now.After(l.watchFrom) {
		l.watch <- now
		l.watch = nil
	}
}

func (l *failoverLoad) err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fatal
}

// run appends until ctx ends.
func (l *failoverLoad) run(ctx context.Context) {
	var wg sync.WaitGroup
	for p := range l.f.Producers {
		cl, err := client.Dial(l.addrs, client.Options{Timeout: l.f.Wait, Backoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
		if err != nil {
			l.mu.Lock()
			l.fatal = err
			l.mu.Unlock()
			break
		}
		l.clients = append(l.clients, cl)
		wg.Go(func() { l.produce(ctx, cl, p) })
	}
	wg.Wait()
}

// produce is producer p's loop: an Appender that fails (not answered
// within Wait) is replaced, and its unanswered appends counted failed.
func (l *failoverLoad) produce(ctx context.Context, cl *client.Client, p int) {
	type sent struct {
		pd *client.Pending
		id failoverID
	}
	var seq uint64
	for ctx.Err() == nil {
		a := cl.NewAppender(context.Background(), l.stream)
		var window []sent
		broken := false
		wait := func() {
			s := window[0]
			window = window[1:]
			pos, err := s.pd.Wait(context.Background())
			if err != nil {
				l.mu.Lock()
				l.failed++
				l.mu.Unlock()
				broken = true
				return
			}
			l.ack(s.id, pos)
		}
		for ctx.Err() == nil && !broken {
			if len(window) == l.f.InFlight {
				wait()
				continue
			}
			id := failoverID{p, seq}
			seq++
			pd, err := a.Append(failoverPayload(id, l.f.Size))
			if err != nil {
				broken = true
				break
			}
			window = append(window, sent{pd, id})
		}
		for len(window) > 0 {
			wait()
		}
		a.Close()
		if broken && ctx.Err() == nil {
			sleepCtx(ctx, 10*time.Millisecond)
		}
	}
}

func (l *failoverLoad) close() {
	for _, cl := range l.clients {
		cl.Close()
	}
}

func ms(d time.Duration) float64 { return math.Round(float64(d.Microseconds())) / 1e3 }

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// startCluster starts the loopback cluster and returns it and how to stop
// it and remove its data.
func (f Failover) startCluster(ctx context.Context) (*proccluster.Cluster, func(), error) {
	bin, err := proccluster.FindBinary(f.Streamnode)
	if err != nil {
		return nil, nil, fmt.Errorf("%w (--streamnode PATH)", err)
	}
	parent := f.Dir
	if parent == "" {
		parent, _ = DefaultDir()
	}
	dir, err := os.MkdirTemp(parent, "rpstream-bench-failover-")
	if err != nil {
		return nil, nil, err
	}
	f.say("bench failover: starting %d streamnode process(es) (%s) in %s", f.nodes(), bin, dir)
	var args []string
	if f.LeaseTTL > 0 {
		args = append(args, "--lease-ttl", f.LeaseTTL.String())
	}
	c, err := proccluster.Start(ctx, proccluster.Config{Binary: bin, Dir: dir, Nodes: f.nodes(), StartTimeout: f.Wait, Args: args})
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	return c, func() {
		c.Close()
		os.RemoveAll(dir)
	}, nil
}

// ownProcs are the members of a cluster the run started.
type ownProcs struct{ c *proccluster.Cluster }

func (o *ownProcs) index(addr string) (int, error) {
	for i, a := range o.c.ClientAddrs() {
		if a == addr {
			return i, nil
		}
	}
	return 0, fmt.Errorf("no member of the started cluster has client address %q", addr)
}

func (o *ownProcs) kill(addr string) (int, error) {
	i, err := o.index(addr)
	if err != nil {
		return 0, err
	}
	pid := o.c.PID(i)
	if pid == 0 {
		return 0, fmt.Errorf("member %d is not running", i)
	}
	return pid, o.c.Kill(i)
}

func (o *ownProcs) restart(ctx context.Context, addr string) (int, error) {
	i, err := o.index(addr)
	if err != nil {
		return 0, err
	}
	if err := o.c.Start(ctx, i); err != nil {
		return 0, err
	}
	return o.c.PID(i), nil
}

// Print writes the result for a person to read.
func (r *FailoverResult) Print(w io.Writer) {
	fmt.Fprintf(w, "bench failover: %d kill(s) of the leader of %s (replicas %d, acks %s), %d producer(s) of %d-byte entries, %d in flight each\n",
		r.Kills, r.Stream, r.Replicas, r.Acks, r.Producers, r.Size, r.InFlight)
	how := "given by --node"
	if r.Cluster == "started" {
		how = "started on loopback for this run"
	}
	fmt.Fprintf(w, "  cluster     %s, %d member(s), %s\n", r.Node, r.Nodes, how)
	fmt.Fprintf(w, "  recovery    p50 %.1f ms, p99 %.1f ms, max %.1f ms (SIGKILL to the first acknowledged append)\n", r.P50ms, r.P99ms, r.MaxMs)
	for i, k := range r.Each {
		fmt.Fprintf(w, "  kill %-6d %s (pid %d): %.1f ms; restarted in %.1f ms (pid %d); leader then %s\n", i+1, k.Leader, k.PID, k.KillToAckMs, k.RestartMs, k.RestartedPID, k.NewLeader)
	}
	fmt.Fprintf(w, "  appends     %d acknowledged, %d failed (not acknowledged in time) in %.1f s\n", r.Acknowledged, r.Failed, r.Seconds)
	fmt.Fprintf(w, "  read back   %d entries: %d acknowledged lost, %d duplicate(s)\n", r.Read, r.Lost, r.Duplicates)
}
