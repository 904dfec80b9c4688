package replicate_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rpstream/rpstream/local"
	"github.com/rpstream/rpstream/rdma"
	"github.com/rpstream/rpstream/rdma/rdmabench"
	"github.com/rpstream/rpstream/rdma/tcp"
	"github.com/rpstream/rpstream/remote"
	"github.com/rpstream/rpstream/remote/remotepb"
	"github.com/rpstream/rpstream/replicate"
	"github.com/rpstream/rpstream/replicate/quorum"
)

const (
	testSecret     = "replicate leader test secret"
	testRegionSize = 64 << 10
	testMaxRegions = 256
)

// testReplica is a remote.Target over a FileStore, which the test may
// stop (as if killed) and start again on the same file and address.
type testReplica struct {
	id     replicate.ID
	path   string
	addr   string
	size   int // region size
	max    int // regions
	store  *remote.FileStore
	target *remote.Target
	served chan error
	cancel context.CancelFunc
}

func startReplica(t testing.TB, r *testReplica) {
	t.Helper()
	store, err := remote.OpenFileStore(r.path, r.size, r.max)
	if err != nil {
		t.Fatal(err)
	}
	addr := r.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ctx, cancel := context.WithCancel(context.Background())
	var target *remote.Target
	for try := 0; ; try++ { // the old listener's port may take a moment to free
		target, err = remote.NewTarget(ctx, store, remote.Config{Provider: tcp.Provider{}, RDMA: rdma.LoopbackConfig(testSecret), Addr: addr})
		if err == nil || try == 50 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		cancel()
		store.Close()
		t.Fatal(err)
	}
	r.store, r.target, r.addr, r.cancel = store, target, target.Addr(), cancel
	r.served = make(chan error, 1)
	go func() { r.served <- target.Serve(ctx) }()
}

func (r *testReplica) stop() {
	if r.target == nil {
		return
	}
	r.target.Close()
	r.cancel()
	<-r.served
	r.store.Close()
	r.target, r.store = nil, nil
}

type testCluster struct {
	t        testing.TB
	dir      string
	stream   *local.Stream
	replicas []*testReplica
}

func newCluster(t testing.TB, dir string, n int) *testCluster {
	return newClusterSized(t, dir, n, testRegionSize, testMaxRegions)
}

func newClusterSized(t testing.TB, dir string, n, regionSize, maxRegions int) *testCluster {
	t.Helper()
	s, err := local.Create(filepath.Join(dir, "leader.stream"), local.Options{RegionSize: regionSize, Epoch: 1})
	if err != nil {
		t.Fatal(err)
	}
	c := &testCluster{t: t, dir: dir, stream: s}
	t.Cleanup(func() {
		for _, r := range c.replicas {
			r.stop()
		}
		s.Close()
	})
	for k := 0; k < n; k++ {
		r := &testReplica{id: replicate.ID(fmt.Sprintf("r%d", k)), path: filepath.Join(dir, fmt.Sprintf("r%d.stream", k)), size: regionSize, max: maxRegions}
		startReplica(t, r)
		c.replicas = append(c.replicas, r)
	}
	return c
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func (c *testCluster) leader(policy quorum.Policy, epoch uint64, s *local.Stream, writer string) *replicate.Leader {
	c.t.Helper()
	cfg := replicate.LeaderConfig{
		Stream: s, Writer: writer, Epoch: epoch,
		Replicator: replicate.Config{Policy: policy, MaxRetryTicks: 8},
		Provider:   tcp.Provider{}, RDMA: rdma.LoopbackConfig(testSecret),
		Tick: 5 * time.Millisecond, Logger: quietLogger(),
	}
	for _, r := range c.replicas {
		cfg.Replicas = append(cfg.Replicas, replicate.ReplicaAddr{ID: r.id, Addr: r.addr})
	}
	l, err := replicate.StartLeader(context.Background(), cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { l.Close() })
	return l
}

// payload is entry i's bytes: its size and contents follow from i.
func payload(i int) []byte {
	rng := rand.New(rand.NewPCG(uint64(i), 7))
	p := make([]byte, 1+rng.IntN(1500))
	for k := range p {
		p[k] = byte(rng.Uint32())
	}
	return p
}

// appendAll runs n appends from workers goroutines and fails the test on
// any error. It returns the entries by index.
func appendAll(t testing.TB, l *replicate.Leader, workers, n int) map[uint64][]byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var mu sync.Mutex
	got := map[uint64][]byte{}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := w; k < n; k += workers {
				p := payload(k)
				i, err := l.Append(ctx, p)
				if err != nil {
					errs <- fmt.Errorf("append %d: %w", k, err)
					return
				}
				if l.Committed() <= i {
					errs <- fmt.Errorf("append %d acknowledged at index %d, commit point %d", k, i, l.Committed())
					return
				}
				mu.Lock()
				got[i] = p
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return got
}

// eventually polls cond for up to 30s.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// caughtUp reports whether every replica holds every appended entry
// durably and is keeping up.
func caughtUp(l *replicate.Leader, s *local.Stream) bool {
	want := s.Committed()
	if l.Committed() != want {
		return false
	}
	for _, p := range l.Progress() {
		if p.AckedIdx != want || p.State != replicate.StateReplicate || p.Inflight != 0 {
			return false
		}
	}
	return true
}

// checkReplicas stops every replica and checks its file: the leader's
// replicated bytes (the superblock's persistent part, and each region's
// line 0 and entries) are byte-identical, and the file opens as the
// leader's stream with the same entries.
func (c *testCluster) checkReplicas(want map[uint64][]byte) {
	t := c.t
	t.Helper()
	lb := c.stream.Memory().Bytes()
	regs := c.stream.Regions()
	for _, r := range c.replicas {
		r.stop()
		b, err := os.ReadFile(r.path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b[:2048], lb[:2048]) {
			t.Fatalf("%s: superblock differs", r.id)
		}
		for _, ri := range regs {
			base := ri.Offset
			if len(b) < base+ri.Used {
				t.Fatalf("%s: file of %d bytes lacks region %d (slot %d)", r.id, len(b), ri.Seq, ri.Slot)
			}
			if !bytes.Equal(b[base:base+64], lb[base:base+64]) {
				t.Fatalf("%s: region %d: line 0 differs", r.id, ri.Seq)
			}
			if !bytes.Equal(b[base+local.RegionHeaderSize:base+ri.Used], lb[base+local.RegionHeaderSize:base+ri.Used]) {
				t.Fatalf("%s: region %d: entries differ", r.id, ri.Seq)
			}
		}
		rs, err := local.Open(r.path, local.Options{})
		if err != nil {
			t.Fatalf("%s: does not open as a stream: %v", r.id, err)
		}
		if rs.StreamID() != c.stream.StreamID() || rs.Committed() != c.stream.Committed() || rs.Head() != c.stream.Head() {
			rs.Close()
			t.Fatalf("%s: id %x head %d next %d; leader id %x head %d next %d", r.id,
				rs.StreamID(), rs.Head(), rs.Committed(), c.stream.StreamID(), c.stream.Head(), c.stream.Committed())
		}
		it := rs.Iterator(rs.Head())
		n := 0
		for it.Next() {
			e := it.Entry()
			if w, ok := want[e.Index]; ok && !bytes.Equal(e.Data, w) {
				rs.Close()
				t.Fatalf("%s: entry %d differs", r.id, e.Index)
			}
			n++
		}
		err = it.Err()
		rs.Close()
		if err != nil || uint64(n) != c.stream.Committed()-c.stream.Head() {
			t.Fatalf("%s: read %d entries (%v), want %d", r.id, n, err, c.stream.Committed()-c.stream.Head())
		}
	}
}

func TestLeaderReplicatesConcurrentAppends(t *testing.T) {
	c := newCluster(t, t.TempDir(), 3)
	l := c.leader(quorum.Majority, 1, c.stream, "leader")
	want := appendAll(t, l, 8, 1200)
	if got := len(c.stream.Regions()); got < 3 {
		t.Fatalf("only %d regions: the test does not cross regions", got)
	}
	eventually(t, "every replica caught up", func() bool { return caughtUp(l, c.stream) })
	if s := l.Status(); s.UnderReplicated || s.QuorumLost || s.Fenced {
		t.Fatalf("status %+v", s)
	}
	l.Close()
	c.checkReplicas(want)
}

func TestLeaderSurvivesAReplicaRestart(t *testing.T) {
	c := newCluster(t, t.TempDir(), 3)
	l := c.leader(quorum.Majority, 1, c.stream, "leader")
	want := appendAll(t, l, 4, 200)

	c.replicas[0].stop()
	// Appends keep being acknowledged by the other two.
	for k, p := range appendAll(t, l, 4, 300) {
		want[k] = p
	}
	eventually(t, "under-replicated status", func() bool {
		s := l.Status()
		return s.UnderReplicated && !s.QuorumLost
	})
	for k, p := range appendAll(t, l, 4, 100) {
		want[k] = p
	}

	// Back on the same file: it catches up in the background.
	startReplica(t, c.replicas[0])
	eventually(t, "the restarted replica caught up", func() bool { return caughtUp(l, c.stream) })
	eventually(t, "healthy status", func() bool {
		s := l.Status()
		return !s.UnderReplicated && !s.QuorumLost
	})
	l.Close()
	c.checkReplicas(want)
}

func TestLeaderWaitsWhileQuorumIsLost(t *testing.T) {
	c := newCluster(t, t.TempDir(), 3)
	l := c.leader(quorum.Majority, 1, c.stream, "leader")
	want := appendAll(t, l, 2, 50)
	eventually(t, "caught up", func() bool { return caughtUp(l, c.stream) })
	time.Sleep(100 * time.Millisecond) // lazy commit words go out: the stream is idle

	c.replicas[1].stop()
	c.replicas[2].stop()
	// Seen without an append: the connections' loss is watched.
	eventually(t, "quorum lost while idle", func() bool { return l.Status().QuorumLost })
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	_, err := l.Append(ctx, []byte("not acknowledged yet"))
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("append with two of three replicas down: %v, want the deadline", err)
	}
	eventually(t, "quorum lost", func() bool { return l.Status().QuorumLost })

	// Pipelined appends wait...
	var idx []uint64
	for k := 0; k < 20; k++ {
		i, err := l.Start([]byte(fmt.Sprintf("waiting %d", k)))
		if err != nil {
			t.Fatal(err)
		}
		idx = append(idx, i)
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		done <- l.WaitCommitted(ctx, idx[len(idx)-1])
	}()
	select {
	case err := <-done:
		t.Fatalf("acknowledged without a quorum: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	// ...until one replica comes back.
	startReplica(t, c.replicas[1])
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if l.Committed() <= idx[len(idx)-1] {
		t.Fatalf("commit point %d", l.Committed())
	}
	eventually(t, "quorum regained", func() bool { return !l.Status().QuorumLost })
	_ = want
}

func TestLeaderFencedByANewerEpoch(t *testing.T) {
	c := newCluster(t, t.TempDir(), 3)
	l1 := c.leader(quorum.Majority, 1, c.stream, "leader-1")
	appendAll(t, l1, 2, 50)

	// A second leader, elected under epoch 2, takes the replicas over.
	s2, err := local.Create(filepath.Join(c.dir, "leader2.stream"), local.Options{RegionSize: testRegionSize, Epoch: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	l2 := c.leader(quorum.Majority, 2, s2, "leader-2")
	appendAll(t, l2, 2, 20)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for k := 0; k < 5; k++ {
		i, err := l1.Append(ctx, []byte("from the deposed leader"))
		if !errors.Is(err, replicate.ErrFenced) {
			t.Fatalf("deposed leader's append %d: %v (commit %d), want ErrFenced", i, err, l1.Committed())
		}
	}
	if !l1.Status().Fenced {
		t.Fatalf("status %+v", l1.Status())
	}
	// The new leader goes on.
	appendAll(t, l2, 2, 20)
}

func TestLeaderPolicies(t *testing.T) {
	t.Run("leader", func(t *testing.T) {
		c := newCluster(t, t.TempDir(), 2)
		l := c.leader(quorum.LeaderOnly, 1, c.stream, "leader")
		appendAll(t, l, 2, 50)
		for _, r := range c.replicas {
			r.stop()
		}
		// The leader's own persist is enough.
		appendAll(t, l, 2, 50)
	})
	t.Run("all", func(t *testing.T) {
		c := newCluster(t, t.TempDir(), 2)
		l := c.leader(quorum.All, 1, c.stream, "leader")
		appendAll(t, l, 2, 50)
		c.replicas[1].stop()
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		_, err := l.Append(ctx, []byte("needs every replica"))
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("append with a replica down under policy all: %v", err)
		}
		startReplica(t, c.replicas[1])
		want := appendAll(t, l, 2, 50)
		eventually(t, "every replica caught up", func() bool { return caughtUp(l, c.stream) })
		l.Close()
		_ = want
		c.checkReplicas(nil)
	})
}

// A backup target is written like a replica but does not vote: with both
// voters down nothing is acknowledged though the backup keeps up, and
// with the backup down appends go on.
func TestLeaderBackupDoesNotVote(t *testing.T) {
	c := newCluster(t, t.TempDir(), 3)
	cfg := replicate.LeaderConfig{
		Stream: c.stream, Writer: "leader", Epoch: 1,
		Replicator: replicate.Config{Policy: quorum.Majority, MaxRetryTicks: 8},
		Provider:   tcp.Provider{}, RDMA: rdma.LoopbackConfig(testSecret),
		Tick: 5 * time.Millisecond, Logger: quietLogger(),
		Replicas: []replicate.ReplicaAddr{
			{ID: c.replicas[0].id, Addr: c.replicas[0].addr},
			{ID: c.replicas[1].id, Addr: c.replicas[1].addr},
			{ID: c.replicas[2].id, Addr: c.replicas[2].addr, Backup: true},
		},
	}
	l, err := replicate.StartLeader(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	appendAll(t, l, 2, 50)
	c.replicas[2].stop()
	appendAll(t, l, 2, 50) // the backup's absence holds nothing back
	eventually(t, "under-replicated", func() bool { s := l.Status(); return s.UnderReplicated && !s.QuorumLost })
	startReplica(t, c.replicas[2])
	eventually(t, "caught up", func() bool { return caughtUp(l, c.stream) })

	c.replicas[0].stop()
	c.replicas[1].stop()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	_, err = l.Append(ctx, []byte("the backup alone is no quorum"))
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("append with only the backup up: %v", err)
	}
	if s := l.Status(); !s.QuorumLost {
		t.Fatalf("status %+v", s)
	}
}

func TestLeaderConfigErrors(t *testing.T) {
	if _, err := replicate.StartLeader(context.Background(), replicate.LeaderConfig{}); !errors.Is(err, replicate.ErrConfig) {
		t.Fatalf("empty config: %v", err)
	}
	c := newCluster(t, t.TempDir(), 0)
	_, err := replicate.StartLeader(context.Background(), replicate.LeaderConfig{
		Stream: c.stream, Provider: tcp.Provider{}, RDMA: rdma.LoopbackConfig(testSecret),
		Replicas: []replicate.ReplicaAddr{{ID: "a", Addr: "127.0.0.1:1"}, {ID: "a", Addr: "127.0.0.1:2"}},
	})
	if !errors.Is(err, replicate.ErrConfig) {
		t.Fatalf("repeated replica: %v", err)
	}
	l := c.leader(quorum.Majority, 1, c.stream, "leader")
	if err := l.RemoveReplica("nobody"); !errors.Is(err, replicate.ErrReplica) {
		t.Fatalf("remove unknown: %v", err)
	}
	l.Close()
	if _, err := l.Append(context.Background(), []byte("x")); !errors.Is(err, replicate.ErrClosed) {
		t.Fatalf("append after close: %v", err)
	}
}

// BenchmarkLeader: 128-byte appends acknowledged by a quorum of three
// copies (the leader and two of three replicas), over in-process tcp
// rdma, on /dev/shm files.
func BenchmarkLeader(b *testing.B) {
	for _, appenders := range []int{1, 64} {
		b.Run(fmt.Sprintf("appenders=%d", appenders), func(b *testing.B) {
			dir := b.TempDir()
			if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
				d, err := os.MkdirTemp("/dev/shm", "rpstream-bench-")
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { os.RemoveAll(d) })
				dir = d
			}
			// 1 MiB regions, room for 2 GiB per replica (address space
			// only: the files grow with the appends).
			c := newClusterSized(b, dir, 3, 1<<20, 2048)
			l := c.leader(quorum.Majority, 1, c.stream, "leader")
			p := make([]byte, 128)
			// Appends wait while quorum is lost: bound the wait, so that
			// a broken replica fails the benchmark instead of hanging it.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			b.SetBytes(128)
			b.ResetTimer()
			if appenders == 1 {
				for b.Loop() {
					if _, err := l.Append(ctx, p); err != nil {
						b.Fatal(err)
					}
				}
			} else {
				b.SetParallelism((appenders + 1) / 2)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := l.Append(ctx, p); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
		})
	}
}

// Membership changes and the connect hooks: a replica restarted with
// nothing appended meanwhile resumes from the durable position ConnectPos
// gives (no rewrite), a replica added later is caught up, a removed one is
// forgotten.
func TestLeaderMembershipAndHooks(t *testing.T) {
	c := newCluster(t, t.TempDir(), 4)
	extra := c.replicas[3]
	c.replicas = c.replicas[:3]
	var mu sync.Mutex
	onConnect := map[replicate.ID]int{}
	var resume atomic.Bool
	var resumedAt replicate.Pos
	cfg := replicate.LeaderConfig{
		Stream: c.stream, Writer: "leader", Epoch: 1,
		Replicator: replicate.Config{Policy: quorum.Majority, MaxRetryTicks: 8},
		Provider:   tcp.Provider{}, RDMA: rdma.LoopbackConfig(testSecret),
		Tick: 5 * time.Millisecond, Logger: quietLogger(),
		OnConnect: func(ctx context.Context, id replicate.ID, cl *remote.Client) error {
			if _, err := cl.Info(ctx); err != nil { // the client works before Grant
				return err
			}
			mu.Lock()
			onConnect[id]++
			mu.Unlock()
			return nil
		},
		ConnectPos: func(ctx context.Context, id replicate.ID, cl *remote.Client, epoch uint64, end replicate.Pos, index uint64, _ []replicate.EpochRun) (replicate.Pos, error) {
			if id == "r0" && resume.Load() {
				mu.Lock()
				resumedAt = end
				mu.Unlock()
				return end, nil
			}
			return replicate.Pos{}, nil
		},
	}
	for _, r := range c.replicas {
		cfg.Replicas = append(cfg.Replicas, replicate.ReplicaAddr{ID: r.id, Addr: r.addr})
	}
	l, err := replicate.StartLeader(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	want := appendAll(t, l, 4, 300)
	eventually(t, "caught up", func() bool { return caughtUp(l, c.stream) })

	// r0 restarts; nothing is appended until it is back.
	c.replicas[0].stop()
	startReplica(t, c.replicas[0])
	resume.Store(true)
	if err := l.Restarted("r0"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "r0 resumed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return resumedAt != (replicate.Pos{})
	})
	eventually(t, "r0 replicating", func() bool { return caughtUp(l, c.stream) })
	if resumedAt.Seq == 0 || resumedAt.Off <= replicate.RegionHeaderSize {
		t.Fatalf("resumed at %v", resumedAt)
	}
	for k, p := range appendAll(t, l, 4, 300) {
		want[k] = p
	}

	// A fourth replica joins and is caught up; r2 leaves.
	if err := l.AddReplica(replicate.ReplicaAddr{ID: extra.id, Addr: extra.addr}); err != nil {
		t.Fatal(err)
	}
	if err := l.AddReplica(replicate.ReplicaAddr{ID: extra.id, Addr: extra.addr}); !errors.Is(err, replicate.ErrReplica) {
		t.Fatalf("added twice: %v", err)
	}
	if err := l.RemoveReplica("r2"); err != nil {
		t.Fatal(err)
	}
	for k, p := range appendAll(t, l, 4, 100) {
		want[k] = p
	}
	eventually(t, "the new replica caught up", func() bool { return caughtUp(l, c.stream) })
	ids := []replicate.ID{}
	for _, p := range l.Progress() {
		ids = append(ids, p.ID)
	}
	if fmt.Sprint(ids) != "[r0 r1 r3]" {
		t.Fatalf("replicas %v", ids)
	}
	mu.Lock()
	if onConnect["r0"] < 2 || onConnect["r3"] < 1 {
		t.Fatalf("OnConnect calls %v", onConnect)
	}
	mu.Unlock()
	l.Close()
	c.replicas[2].stop() // removed: it stopped at an older point
	c.replicas = []*testReplica{c.replicas[0], c.replicas[1], extra}
	c.checkReplicas(want)
}

// copyFile copies a closed stream file.
func copyFile(t testing.TB, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// A replica that holds more of the stream than the leader (entries a
// crashed leader wrote to it but never persisted itself) is cut back to
// the leader's end before it is written: afterwards it holds exactly the
// leader's entries, not the leader's followed by stale ones.
func TestLeaderCutsBackAReplicaAhead(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "leader.stream")
	s, err := local.Create(path, local.Options{RegionSize: testRegionSize, Epoch: 1})
	if err != nil {
		t.Fatal(err)
	}
	for k := 0; k < 100; k++ {
		if _, err := s.Append(payload(k)); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	copyFile(t, path, filepath.Join(dir, "short"))
	if s, err = local.Open(path, local.Options{}); err != nil {
		t.Fatal(err)
	}
	for k := 100; k < 300; k++ {
		if _, err := s.Append(payload(k)); err != nil {
			t.Fatal(err)
		}
	}
	longRegions := len(s.Regions())
	s.Close()
	// The replicas hold 300 entries; the leader restarts with 100.
	c := &testCluster{t: t, dir: dir}
	for k := 0; k < 3; k++ {
		r := &testReplica{id: replicate.ID(fmt.Sprintf("r%d", k)), path: filepath.Join(dir, fmt.Sprintf("r%d.stream", k)), size: testRegionSize, max: testMaxRegions}
		copyFile(t, path, r.path)
		startReplica(t, r)
		c.replicas = append(c.replicas, r)
	}
	if c.stream, err = local.Open(filepath.Join(dir, "short"), local.Options{Epoch: 2}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, r := range c.replicas {
			r.stop()
		}
		c.stream.Close()
	})
	if c.stream.Committed() != 100 || len(c.stream.Regions()) >= longRegions {
		t.Fatalf("leader has %d entries in %d regions; replicas %d regions", c.stream.Committed(), len(c.stream.Regions()), longRegions)
	}
	l := c.leader(quorum.Majority, 2, c.stream, "leader")
	want := map[uint64][]byte{}
	for k := 0; k < 100; k++ {
		want[uint64(k)] = payload(k)
	}
	// Different entries from index 100 on, of the same sizes as the
	// replicas' (so that their stale entries right after line up and
	// would pass the replica's recovery).
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for k := 100; k < 120; k++ {
		p := payload(k)
		for j := range p {
			p[j] ^= 0xff
		}
		i, err := l.Append(ctx, p)
		if err != nil || i != uint64(k) {
			t.Fatalf("append %d: index %d, %v", k, i, err)
		}
		want[i] = p
	}
	eventually(t, "caught up", func() bool { return caughtUp(l, c.stream) })
	l.Close()
	c.checkReplicas(want)
}

// TestLeaderTrustsAReplicaOnlyUpToItsStart: replicas hold entries a
// crashed leader lost (as TestLeaderCutsBackAReplicaAhead), and the
// restarted leader appends others of the same sizes before it reaches
// them (they are down). Their durable end, read with remote's Tail as a
// node does, must not cover the lost entries: the leader's appends since
// it started are not theirs, so they are cut back to where the stream
// ended when the Leader started, and rewritten from there.
func TestLeaderTrustsAReplicaOnlyUpToItsStart(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "leader.stream")
	s, err := local.Create(path, local.Options{RegionSize: testRegionSize, Epoch: 1})
	if err != nil {
		t.Fatal(err)
	}
	for k := 0; k < 100; k++ {
		if _, err := s.Append(payload(k)); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	copyFile(t, path, filepath.Join(dir, "short"))
	if s, err = local.Open(path, local.Options{}); err != nil {
		t.Fatal(err)
	}
	for k := 100; k < 300; k++ {
		if _, err := s.Append(payload(k)); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	c := &testCluster{t: t, dir: dir}
	for k := 0; k < 2; k++ {
		r := &testReplica{id: replicate.ID(fmt.Sprintf("r%d", k)), path: filepath.Join(dir, fmt.Sprintf("r%d.stream", k)), size: testRegionSize, max: testMaxRegions}
		copyFile(t, path, r.path)
		startReplica(t, r)
		r.stop() // down when the leader starts; its address is kept
		c.replicas = append(c.replicas, r)
	}
	if c.stream, err = local.Open(filepath.Join(dir, "short"), local.Options{Epoch: 2}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, r := range c.replicas {
			r.stop()
		}
		c.stream.Close()
	})
	cfg := replicate.LeaderConfig{
		Stream: c.stream, Writer: "leader", Epoch: 2,
		Replicator: replicate.Config{Policy: quorum.LeaderOnly, MaxRetryTicks: 8},
		Provider:   tcp.Provider{}, RDMA: rdma.LoopbackConfig(testSecret),
		Tick: 5 * time.Millisecond, Logger: quietLogger(),
		ConnectPos: func(ctx context.Context, id replicate.ID, c *remote.Client, epoch uint64, end replicate.Pos, index uint64, _ []replicate.EpochRun) (replicate.Pos, error) {
			r, err := c.Tail(ctx, &remotepb.TailRequest{Epoch: epoch, LeaderSeq: end.Seq, LeaderOff: uint64(end.Off), LeaderIndex: &index})
			if err != nil {
				return replicate.Pos{}, err
			}
			return replicate.Pos{Seq: r.Seq, Off: int(r.Off)}, nil
		},
	}
	for _, r := range c.replicas {
		cfg.Replicas = append(cfg.Replicas, replicate.ReplicaAddr{ID: r.id, Addr: r.addr})
	}
	l, err := replicate.StartLeader(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	want := map[uint64][]byte{}
	for k := 0; k < 100; k++ {
		want[uint64(k)] = payload(k)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for k := 100; k < 120; k++ {
		p := payload(k)
		for j := range p {
			p[j] ^= 0xff
		}
		i, err := l.Append(ctx, p)
		if err != nil || i != uint64(k) {
			t.Fatalf("append %d: index %d, %v", k, i, err)
		}
		want[i] = p
	}
	for _, r := range c.replicas {
		startReplica(t, r)
	}
	eventually(t, "caught up", func() bool { return caughtUp(l, c.stream) })
	l.Close()
	c.checkReplicas(want)
}

// BenchmarkCompletionDelivery compares the two ways the loop could learn
// of rdma completions: one CQ drained by a forwarder goroutine (what
// Leader does), or a goroutine per Op waiting on its Done channel. 64-byte
// Write+Flush pairs over in-process tcp rdma, 16 in flight.
func BenchmarkCompletionDelivery(b *testing.B) {
	const size, inflight = 64, 16
	for _, mode := range []string{"cq", "done"} {
		b.Run(mode, func(b *testing.B) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			p, err := rdmabench.NewPair(ctx, size*inflight, size*inflight, inflight, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			ch := make(chan *rdma.Op, inflight)
			cq := rdma.NewCQ()
			var wg sync.WaitGroup
			if mode == "cq" {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						c, err := cq.Wait(ctx)
						if err != nil {
							return
						}
						ch <- c.Op
					}
				}()
			}
			post := func(slot int) {
				op := p.WriteFlush(slot, size, rdma.Persistence)
				if mode == "cq" {
					op.Notify(cq, slot)
					return
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-op.Done()
					ch <- op
				}()
			}
			b.ResetTimer()
			n := 0
			for ; n < min(inflight, b.N); n++ {
				post(n % inflight)
			}
			for done := 0; done < b.N; done++ {
				op := <-ch
				if err := op.Err(); err != nil {
					b.Fatal(err)
				}
				if n < b.N {
					post(n % inflight)
					n++
				}
			}
			b.StopTimer()
			cancel()
			wg.Wait()
		})
	}
}

// A leader replicating its local stream to three targets, acknowledging
// appends once the leader and two of the three hold them durably.
func ExampleStartLeader() {
	ctx := context.Background()
	s, err := local.Open("/var/lib/rpstream/orders.stream", local.Options{Epoch: 7})
	if err != nil {
		panic(err)
	}
	defer s.Close()
	l, err := replicate.StartLeader(ctx, replicate.LeaderConfig{
		Stream: s, Writer: "node-a", Epoch: 7,
		Replicator: replicate.DefaultConfig(), // quorum
		Provider:   tcp.Provider{}, RDMA: rdma.LoopbackConfig("a shared secret of 16+ bytes"),
		Replicas: []replicate.ReplicaAddr{
			{ID: "node-b", Addr: "10.0.0.2:7300"},
			{ID: "node-c", Addr: "10.0.0.3:7300"},
			{ID: "node-d", Addr: "10.0.0.4:7300"},
		},
		// A hub serving many streams would be told which one here.
		OnConnect: func(ctx context.Context, id replicate.ID, c *remote.Client) error { return nil },
	})
	if err != nil {
		panic(err)
	}
	defer l.Close()
	i, err := l.Append(ctx, []byte("order 1"))
	if errors.Is(err, replicate.ErrFenced) {
		return // another leader took over: step down
	}
	fmt.Println("acknowledged", i, l.Status().UnderReplicated)
}

// A Leader closed and started again on the same open stream, under a newer
// epoch (re-elected), starts from the stream's committed state and brings
// the replicas to it.
func TestLeaderRestartsOnTheSameStream(t *testing.T) {
	c := newCluster(t, t.TempDir(), 3)
	l1 := c.leader(quorum.Majority, 1, c.stream, "leader")
	want := appendAll(t, l1, 4, 200)
	l1.Close()
	// Appended while no Leader runs: replicated by the next one.
	for k := 200; k < 220; k++ {
		i, err := c.stream.AppendNoSync(payload(k))
		if err != nil {
			t.Fatal(err)
		}
		want[i] = payload(k)
	}
	l2 := c.leader(quorum.Majority, 2, c.stream, "leader")
	if l2.Committed() > c.stream.Persisted() {
		t.Fatalf("commit point %d beyond the leader's persisted %d", l2.Committed(), c.stream.Persisted())
	}
	for k, p := range appendAll(t, l2, 4, 200) {
		want[k] = p
	}
	eventually(t, "caught up", func() bool { return caughtUp(l2, c.stream) })
	for _, r := range c.replicas {
		if e := r.target.Epoch(); e != 2 {
			t.Fatalf("%s at epoch %d", r.id, e)
		}
	}
	l2.Close()
	c.checkReplicas(want)
}

// A Grant refused at the leader's own epoch (the target still has another
// writer of that epoch) is not a fence: the leader keeps retrying and
// waiting, and the holder is undisturbed.
func TestLeaderSameEpochRefusalIsNotAFence(t *testing.T) {
	c := newCluster(t, t.TempDir(), 3)
	l1 := c.leader(quorum.Majority, 1, c.stream, "leader-1")
	appendAll(t, l1, 2, 20)
	eventually(t, "caught up", func() bool { return caughtUp(l1, c.stream) })

	s2, err := local.Create(filepath.Join(c.dir, "leader2.stream"), local.Options{RegionSize: testRegionSize, Epoch: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	l2 := c.leader(quorum.Majority, 1, s2, "leader-2")
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_, err = l2.Append(ctx, []byte("no grant"))
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second writer of epoch 1: %v, want the deadline", err)
	}
	eventually(t, "refusals reported", func() bool {
		for _, p := range l2.Progress() {
			if !strings.Contains(p.LastErr, "still held") {
				return false
			}
		}
		return true
	})
	if s := l2.Status(); s.Fenced || !s.QuorumLost {
		t.Fatalf("second writer's status %+v", s)
	}
	appendAll(t, l1, 2, 20) // the holder goes on
}

// A stream with no region yet (nothing appended: its first region is
// allocated by the first append): the replicas connect holding nothing,
// allocate region 1 when the leader's first append makes it, and end up
// with every entry.
func TestLeaderStartsOnAStreamWithoutARegion(t *testing.T) {
	c := newCluster(t, t.TempDir(), 3)
	if rs := c.stream.Regions(); len(rs) != 0 {
		t.Fatalf("a new stream has regions %+v", rs)
	}
	l := c.leader(quorum.Majority, 1, c.stream, "leader")
	eventually(t, "the replicas connected", func() bool {
		s := l.Status()
		return !s.UnderReplicated && !s.QuorumLost
	})
	want := appendAll(t, l, 2, 50)
	eventually(t, "every replica caught up", func() bool { return caughtUp(l, c.stream) })
	l.Close()
	c.checkReplicas(want)
}
