package integration

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/client"
	"github.com/rpstream/rpstream/internal/proccluster"
	"github.com/rpstream/rpstream/internal/testutil"
	"github.com/rpstream/rpstream/local"
)

// The failure scenarios below run real streamnode processes on loopback
// (internal/proccluster), each bounded by its own context; every process
// is killed by PID in cleanup (Cluster.Close).

func TestMain(m *testing.M) {
	code := m.Run()
	proccluster.RemoveBuilt()
	os.Exit(code)
}

// startFailureCluster builds streamnode (once per test binary) and starts
// nodes stream nodes (and a backup) with small regions; on a failure the
// members' logs are printed, and at the end every log is checked for a
// panic.
func startFailureCluster(t *testing.T, ctx context.Context, nodes int, backup bool) *proccluster.Cluster {
	t.Helper()
	return startFailureClusterArgs(t, ctx, nodes, backup)
}

// startFailureClusterArgs is startFailureCluster with more streamnode
// flags.
func startFailureClusterArgs(t *testing.T, ctx context.Context, nodes int, backup bool, args ...string) *proccluster.Cluster {
	t.Helper()
	return startClusterConfig(t, ctx, proccluster.Config{Nodes: nodes, Backup: backup, Args: args})
}

// startClusterConfig starts a cluster of cfg with small regions and the
// failure tests' checks (see startFailureCluster); Binary and Dir are
// filled in: the streamnode named by RPSTREAM_TEST_STREAMNODE (a test
// re-run in a network namespace gets the one its parent built) or one
// built once.
func startClusterConfig(t *testing.T, ctx context.Context, cfg proccluster.Config) *proccluster.Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs streamnode processes")
	}
	bin := os.Getenv("RPSTREAM_TEST_STREAMNODE")
	if bin == "" {
		var err error
		if bin, err = proccluster.BuildOnce(); err != nil {
			t.Fatal(err)
		}
	}
	cfg.Binary, cfg.Dir, cfg.StopTimeout = bin, t.TempDir(), 10*time.Second
	cfg.Args = append([]string{"--region-size", "262144"}, cfg.Args...)
	cl, err := proccluster.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cl.Close() // kills every member by PID
		for i := range cl.Len() {
			n := mustNode(cl, i)
			if b, err := os.ReadFile(n.Log); err == nil && hasPanic(string(b)) {
				t.Errorf("%s's log shows a panic:\n%s", n.Name, proccluster.LogTail(n.Log, 60))
			} else if t.Failed() {
				t.Logf("log of %s:\n%s", n.Name, proccluster.LogTail(n.Log, 30))
			}
		}
	})
	return cl
}

// hang stops member i (SIGSTOP: alive to TCP, answering nothing) and
// returns what continues it; that runs once, at the latest when the test
// ends, before the cluster is stopped.
func hang(t *testing.T, cl *proccluster.Cluster, i int) (cont func()) {
	t.Helper()
	pid := cl.PID(i)
	if pid <= 0 {
		t.Fatalf("no process for member %d", i)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	cont = func() { once.Do(func() { syscall.Kill(pid, syscall.SIGCONT) }) }
	t.Cleanup(cont)
	return cont
}

func hasPanic(log string) bool {
	return strings.Contains(log, "panic:") || strings.Contains(log, "fatal error:") || strings.Contains(log, "DATA RACE")
}

func dial(t *testing.T, addr string, o client.Options) *client.Client {
	t.Helper()
	c, err := client.Dial(addr, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func indexOf(t *testing.T, cl *proccluster.Cluster, name string) int {
	t.Helper()
	i, err := memberIndex(cl, name)
	if err != nil {
		t.Fatal(err)
	}
	return i
}

// memberIndex is indexOf for goroutines other than the test's.
func memberIndex(cl *proccluster.Cluster, name string) (int, error) {
	for i := range cl.Len() {
		if mustNode(cl, i).Name == name {
			return i, nil
		}
	}
	return -1, fmt.Errorf("no member %q", name)
}

// load appends each payload "cC-NNNNNN" (first <= C < first+clients, N < each) through
// an Appender per client with window appends in flight, calling progress
// after each acknowledgement. It returns the acknowledged positions.
func load(t *testing.T, ctx context.Context, addr, stream string, first, clients, each, window int, progress func()) map[uint64]string {
	return loadPadded(t, ctx, addr, stream, first, clients, each, window, 0, progress)
}

// midPayload is the file offset of a byte of data of the entry at the
// middle of region r in the stream image b: a byte its checksum covers.
// The middle byte itself may be padding after an entry, which nothing
// checks (and, with coalesced appends stored as batch slots and records,
// which entry lies there depends on timing).
func midPayload(t *testing.T, b []byte, r local.ScanRegion) int64 {
	t.Helper()
	off, mid := r.Offset+local.RegionHeaderSize, r.Offset+r.End/2
	for off < r.Offset+r.End {
		n := int(binary.LittleEndian.Uint32(b[off:]))
		size := local.EntryHeaderSize + (n+local.EntryAlign-1)&^(local.EntryAlign-1)
		if off+size > mid && n > 0 {
			return int64(off + local.EntryHeaderSize + n/2)
		}
		off += size
	}
	t.Fatalf("region %+v: no entry at or after its middle", r)
	return 0
}

// loadPadded is load with pad bytes after a '/' in each payload.
func loadPadded(t *testing.T, ctx context.Context, addr, stream string, first, clients, each, window, pad int, progress func()) map[uint64]string {
	t.Helper()
	var mu sync.Mutex
	acked := map[uint64]string{}
	var wg sync.WaitGroup
	for c := first; c < first+clients; c++ {
		cli := dial(t, addr, client.Options{MaxAttempts: 200, Backoff: 20 * time.Millisecond})
		wg.Go(func() {
			a := cli.NewAppender(ctx, stream)
			type sent struct {
				p    *client.Pending
				data string
			}
			var inflight []sent
			ack := func() bool {
				s := inflight[0]
				inflight = inflight[1:]
				pos, err := s.p.Wait(ctx)
				if err != nil {
					t.Errorf("client %d: %s: %v", c, s.data, err)
					return false
				}
				mu.Lock()
				if old, dup := acked[pos]; dup {
					t.Errorf("position %d acknowledged for %s and %s", pos, old, s.data)
				}
				acked[pos] = s.data
				mu.Unlock()
				if progress != nil {
					progress()
				}
				return true
			}
			for i := range each {
				if len(inflight) == window && !ack() {
					break
				}
				data := fmt.Sprintf("c%d-%06d", c, i)
				if pad > 0 {
					data += "/" + strings.Repeat("p", pad)
				}
				p, err := a.Append([]byte(data))
				if err != nil {
					t.Errorf("client %d: append %s: %v", c, data, err)
					break
				}
				inflight = append(inflight, sent{p, data})
			}
			for len(inflight) > 0 && ack() {
			}
			if err := a.Close(); err != nil {
				t.Errorf("client %d: close: %v", c, err)
			}
		})
	}
	wg.Wait()
	return acked
}

// checkTail reads stream from position 0 up to its committed index with a
// tail at addr and checks every acknowledged payload is at its position
// and each client's acknowledged entries are in order. Entries at other
// positions must repeat an acknowledged payload (an append stored before
// a leader's restart and stored again by the client's retry); it returns
// how many there are.
func checkTail(t *testing.T, ctx context.Context, addr, stream string, acked map[uint64]string, clients int) (dups int) {
	t.Helper()
	return checkTailMaybe(t, ctx, addr, stream, acked, clients, nil)
}

// checkTailMaybe is checkTail where the payloads in maybe, appended but
// never acknowledged, may be stored (once each) or not.
func checkTailMaybe(t *testing.T, ctx context.Context, addr, stream string, acked map[uint64]string, clients int, maybe map[string]bool) (dups int) {
	t.Helper()
	stored := map[string]bool{}
	reader := dial(t, addr, client.Options{})
	st, err := reader.Status(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	if st.Committed < uint64(len(acked)) {
		t.Fatalf("committed %d, but %d appends were acknowledged", st.Committed, len(acked))
	}
	byData := map[string]uint64{}
	for pos, d := range acked {
		if p, dup := byData[d]; dup {
			t.Fatalf("%q acknowledged at %d and %d", d, p, pos)
		}
		byData[d] = pos
	}
	next := uint64(0)
	seen := map[uint64]bool{}
	if st.Committed > 0 {
		// Reads in batches up to the committed index (a tail would wait
		// past an epoch marker at the end, which reads skip).
		for from := uint64(0); from < st.Committed; {
			ents, nx, err := reader.Read(ctx, stream, from, 1000)
			if err != nil {
				t.Fatalf("read at %d: %v", from, err)
			}
			if nx <= from {
				t.Fatalf("read at %d made no progress (next %d, committed %d)", from, nx, st.Committed)
			}
			from = nx
			for _, e := range ents {
				// Positions rise; a gap is an epoch marker a new leader
				// appended (reads skip it).
				if e.Position < next {
					t.Fatalf("read gave position %d after %d", e.Position, next-1)
				}
				next = e.Position
				data := string(e.Data)
				if want, ok := acked[next]; ok {
					if want != data {
						t.Fatalf("position %d holds %q, %q was acknowledged there", next, data, want)
					}
					seen[next] = true
				} else if maybe[data] && !stored[data] {
					stored[data] = true
				} else if _, ok := byData[data]; !ok {
					t.Fatalf("position %d holds %q, which was never acknowledged anywhere", next, data)
				} else {
					dups++
				}
				next++
			}
		}
	}
	if len(seen) != len(acked) {
		t.Fatalf("read saw %d of %d acknowledged entries", len(seen), len(acked))
	}
	// Each client's acknowledged entries in its order.
	positions := make([]uint64, 0, len(acked))
	for p := range acked {
		positions = append(positions, p)
	}
	sort.Slice(positions, func(i, j int) bool { return positions[i] < positions[j] })
	last := make([]int, clients)
	for c := range last {
		last[c] = -1
	}
	for _, p := range positions {
		label, _, _ := strings.Cut(acked[p], "/")
		c, i, ok := parsePayload(label)
		if !ok || c >= clients {
			t.Fatalf("position %d holds %q, which no client appended", p, acked[p])
		}
		if i <= last[c] {
			t.Fatalf("client %d's entry %d acknowledged at %d, after its entry %d", c, i, p, last[c])
		}
		last[c] = i
	}
	return dups
}

// compareCopies stops every member and checks that each copy of stream
// holds the leader's committed entries byte for byte; it returns the
// number of copies compared.
func compareCopies(t *testing.T, cl *proccluster.Cluster, leader int, stream string, acked int) int {
	t.Helper()
	// A copy whose node came back late may still be catching up: wait
	// (bounded) until the leader reports every copy holding its end.
	c, err := client.Dial(mustNode(cl, leader).ClientAddr, client.Options{})
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		waitFor(ctx, 15*time.Second, func() bool {
			st, err := c.Status(ctx, stream)
			if err != nil {
				return false
			}
			for _, r := range st.ReplicaStatus {
				if r.Persisted < st.Committed {
					return false
				}
			}
			return true
		})
		cancel()
		c.Close()
	}
	for i := range cl.Len() {
		if err := cl.Stop(i); err != nil {
			t.Error(err)
		}
	}
	var copies []string
	for i := range cl.Len() {
		if p := proccluster.ReplicaFile(mustNode(cl, i).Data, stream); i != leader && exists(p) {
			copies = append(copies, p)
		}
	}
	committed, err := proccluster.CompareReplicas(proccluster.LeaderFile(mustNode(cl, leader).Data, stream), copies)
	if err != nil {
		t.Fatal(err)
	}
	if committed < uint64(acked) {
		t.Fatalf("the leader's file has %d committed entries, %d were acknowledged", committed, acked)
	}
	return len(copies)
}

// TestFailureLeaderKilled: the leader of a stream with three replicas is
// SIGKILLed under load and restarted on the same data directory. The
// clients' Appenders retry what was unanswered; the restarted leader takes
// a higher epoch, its copies accept it, every acknowledged entry is read
// back once at its position, and the copies end byte-identical.
//
// An append the killed leader stored but did not answer is not stored
// again by the retry after the restart: the restarted leader remembers the
// producers' sequence numbers from the entries' envelopes (node's
// envelope.go), so nothing is stored twice.
func TestFailureLeaderKilled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 28*time.Second)
	defer cancel()
	cl := startFailureCluster(t, ctx, 3, false)
	const stream = "leaderkill"
	admin := dial(t, cl.ClientAddrs()[0], client.Options{})
	st, err := admin.Create(ctx, stream, client.CreateOptions{Replicas: 3, Acks: api.AckPolicy_ACK_POLICY_QUORUM})
	if err != nil {
		t.Fatal(err)
	}
	leader := indexOf(t, cl, st.Leader)
	epoch := st.Epoch

	const clients, each, window = 3, 1500, 16
	var n int
	var nmu sync.Mutex
	killAt := make(chan struct{})
	progress := func() {
		nmu.Lock()
		n++
		if n == clients*each/3 {
			close(killAt)
		}
		nmu.Unlock()
	}
	faultErr := make(chan error, 1)
	go func() {
		select {
		case <-killAt:
		case <-ctx.Done():
			faultErr <- ctx.Err()
			return
		}
		pid := cl.PID(leader)
		if err := cl.Kill(leader); err != nil {
			faultErr <- err
			return
		}
		t.Logf("killed the leader %s (pid %d)", st.Leader, pid)
		faultErr <- cl.Start(ctx, leader)
	}()
	acked := load(t, ctx, mustNode(cl, leader).ClientAddr, stream, 0, clients, each, window, progress)
	if err := <-faultErr; err != nil {
		t.Fatal(err)
	}
	if t.Failed() {
		return
	}
	if len(acked) != clients*each {
		t.Fatalf("%d appends acknowledged, want %d", len(acked), clients*each)
	}
	after, err := admin.Status(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	if after.Epoch <= epoch {
		t.Errorf("epoch %d after the leader's restart, %d before: not bumped", after.Epoch, epoch)
	}
	dups := checkTail(t, ctx, mustNode(cl, leader).ClientAddr, stream, acked, clients)
	if dups != 0 {
		t.Errorf("%d entries stored twice across the leader's restart", dups)
	}
	copies := compareCopies(t, cl, leader, stream, len(acked))
	if copies != 2 {
		t.Errorf("%d copies compared, want 2", copies)
	}
	t.Logf("epoch %d -> %d; %d acknowledged, %d stored twice across the restart; %d copies identical", epoch, after.Epoch, len(acked), dups, copies)
}

// TestFailureFollowerWiped: a follower's data directory is removed while
// it is down; once it restarts its leader rebuilds its copy from the
// start, and it ends byte-identical.
func TestFailureFollowerWiped(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 28*time.Second)
	defer cancel()
	cl := startFailureCluster(t, ctx, 3, false)
	const stream = "wiped"
	admin := dial(t, cl.ClientAddrs()[0], client.Options{})
	st, err := admin.Create(ctx, stream, client.CreateOptions{Replicas: 3, Acks: api.AckPolicy_ACK_POLICY_ALL})
	if err != nil {
		t.Fatal(err)
	}
	leader := indexOf(t, cl, st.Leader)
	victim := (leader + 1) % 3
	addr := mustNode(cl, leader).ClientAddr
	acked := load(t, ctx, addr, stream, 0, 2, 500, 8, nil)
	if err := cl.Kill(victim); err != nil {
		t.Fatal(err)
	}
	data := mustNode(cl, victim).Data
	if err := os.RemoveAll(data); err != nil {
		t.Fatal(err)
	}
	if err := cl.Start(ctx, victim); err != nil {
		t.Fatal(err)
	}
	// Acks "all": the next appends are answered only once the rebuilt
	// copy holds them, after everything before them.
	for p, d := range load(t, ctx, addr, stream, 2, 1, 200, 8, nil) {
		acked[p] = d
	}
	if t.Failed() {
		return
	}
	checkTail(t, ctx, addr, stream, acked, 3)
	if !exists(proccluster.ReplicaFile(data, stream)) {
		t.Fatalf("the wiped follower has no copy of %s again", stream)
	}
	if copies := compareCopies(t, cl, leader, stream, len(acked)); copies != 2 {
		t.Errorf("%d copies compared, want 2", copies)
	}
}

// TestFailureDeletedWhileDown: a stream is deleted while a follower is
// down, so that follower keeps an orphan copy. Once back, the follower
// learns from the leader that the stream is gone and removes its copy (a
// read there is NotFound, not the deleted entries). A new stream of the
// same name is then created, with that follower among its replicas, on
// another node ("other leader") or on the same one ("same leader"), and
// is replicated to all its copies (acks "all").
func TestFailureDeletedWhileDown(t *testing.T) {
	for _, tc := range []struct {
		name      string
		newLeader int
	}{{"other leader", 2}, {"same leader", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Second)
			defer cancel()
			cl := startFailureCluster(t, ctx, 3, false)
			const stream = "reborn"
			first := dial(t, cl.ClientAddrs()[0], client.Options{})
			createOld(t, ctx, first, stream, api.AckPolicy_ACK_POLICY_ALL, 50)
			// n1 leads; n2 goes down, the stream is deleted, n2 comes
			// back with its orphan copy.
			if err := cl.Kill(1); err != nil {
				t.Fatal(err)
			}
			if err := first.Delete(ctx, stream); err != nil {
				t.Fatal(err)
			}
			if err := cl.Start(ctx, 1); err != nil {
				t.Fatal(err)
			}
			// Back, n2's catalog shows the tombstone: it removes its copy
			// and records so; no read at n2 serves the deleted stream.
			n2 := dial(t, cl.ClientAddrs()[1], client.Options{})
			var rerr error
			for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline) && ctx.Err() == nil; time.Sleep(100 * time.Millisecond) {
				rctx, rcancel := context.WithTimeout(ctx, 3*time.Second)
				_, _, rerr = n2.Read(rctx, stream, 0, 0)
				rcancel()
				if status.Code(rerr) == codes.NotFound {
					break
				}
			}
			if status.Code(rerr) != codes.NotFound {
				t.Fatalf("a read at n2 of the stream deleted while it was down: %v, want NotFound within 20 s", rerr)
			}
			for i := 0; exists(proccluster.ReplicaFile(mustNode(cl, 1).Data, stream)); i++ {
				if i == 100 {
					t.Fatal("n2 still holds its copy of the deleted stream 10 s after it came back")
				}
				time.Sleep(100 * time.Millisecond)
			}
			// The same name again: replicas 3 places the two others,
			// n2 among them.
			// The tombstone holds the name until every holder's drop is
			// recorded, n2's just after its file went. (A leader's drop
			// once went unrecorded for good in about one run of five:
			// its two reconcile passes raced and one cached the removed
			// stream's id, node TestStoreRemoveRacesReads.)
			c := dial(t, cl.ClientAddrs()[tc.newLeader], client.Options{})
			var st *api.StreamStatusResponse
			var err error
			waitFor(ctx, 20*time.Second, func() bool {
				st, err = c.Create(ctx, stream, client.CreateOptions{Replicas: 3, Acks: api.AckPolicy_ACK_POLICY_ALL})
				return status.Code(err) != codes.AlreadyExists || !strings.Contains(err.Error(), "deleting")
			})
			if err != nil {
				t.Fatal(err)
			}
			if want := mustNode(cl, tc.newLeader).Name; st.Leader != want {
				t.Fatalf("leader %s, want %s", st.Leader, want)
			}
			actx, acancel := context.WithTimeout(ctx, 10*time.Second)
			defer acancel()
			acked := map[uint64]string{}
			for i := range 20 {
				data := fmt.Sprintf("c0-%06d", i)
				p, err := c.Append(actx, stream, []byte(data))
				if err != nil {
					t.Fatalf("append %d to the new stream (acks all; n2 held the old copy): %v", i, err)
				}
				acked[p] = data
			}
			checkTail(t, ctx, cl.ClientAddrs()[tc.newLeader], stream, acked, 1)
			if copies := compareCopies(t, cl, tc.newLeader, stream, len(acked)); copies != 2 {
				t.Errorf("%d copies compared, want 2", copies)
			}
			if b, _ := os.ReadFile(mustNode(cl, 1).Log); !strings.Contains(string(b), "copy of a deleted stream removed") {
				t.Error("n2's log does not say it removed its copy of the deleted stream")
			}
		})
	}
}

// TestFailureGarbage sends random bytes to every member's peer port (TCP),
// gossip port (TCP and UDP) and client port (TCP) and checks that the cluster still creates,
// replicates and serves a stream, and no member died.
func TestFailureGarbage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 28*time.Second)
	defer cancel()
	cl := startFailureCluster(t, ctx, 3, false)
	garbage := func() {
		for i := range cl.Len() {
			n := mustNode(cl, i)
			for range 5 {
				b := make([]byte, 1+int(randByte())*16)
				rand.Read(b)
				for _, a := range []struct{ net, addr string }{{"tcp", n.PeerAddr}, {"tcp", n.GossipAddr}, {"udp", n.GossipAddr}, {"tcp", n.ClientAddr}} {
					c, err := net.DialTimeout(a.net, a.addr, time.Second)
					if err != nil {
						if a.net == "tcp" {
							t.Errorf("%s %s of %s: %v", a.net, a.addr, n.Name, err)
						}
						continue
					}
					c.SetDeadline(time.Now().Add(time.Second))
					c.Write(b)
					if a.net == "tcp" {
						c.Read(make([]byte, 64)) // whatever it answers, until it hangs up or the deadline
					}
					c.Close()
				}
			}
		}
	}
	garbage()
	const stream = "garbled"
	admin := dial(t, cl.ClientAddrs()[0], client.Options{})
	if _, err := admin.Create(ctx, stream, client.CreateOptions{Replicas: 3, Acks: api.AckPolicy_ACK_POLICY_ALL}); err != nil {
		t.Fatal(err)
	}
	acked := load(t, ctx, cl.ClientAddrs()[0], stream, 0, 2, 200, 8, nil)
	garbage() // while copies are being written
	for p, d := range load(t, ctx, cl.ClientAddrs()[0], stream, 2, 1, 100, 8, nil) {
		acked[p] = d
	}
	for i := range cl.Len() {
		if !cl.Running(i) {
			t.Fatalf("%s died", mustNode(cl, i).Name)
		}
		c := dial(t, cl.ClientAddrs()[i], client.Options{})
		ms, err := c.Members(ctx)
		if err != nil {
			t.Fatalf("%s: %v", mustNode(cl, i).Name, err)
		}
		for _, m := range ms {
			if m.State != api.MemberState_MEMBER_STATE_ALIVE {
				t.Errorf("%s sees %s %v after the garbage", mustNode(cl, i).Name, m.Name, m.State)
			}
		}
	}
	if t.Failed() {
		return
	}
	checkTail(t, ctx, cl.ClientAddrs()[0], stream, acked, 3)
	if copies := compareCopies(t, cl, 0, stream, len(acked)); copies != 2 {
		t.Errorf("%d copies compared, want 2", copies)
	}
}

func randByte() byte {
	var b [1]byte
	rand.Read(b[:])
	return b[0]
}

// TestFailureFollowerDiskFull puts one follower's data directory on a
// tiny file system (a 1 MiB tmpfs: needs root, else skipped) and appends
// more than it can hold to a stream with three replicas and quorum
// acknowledgements. Every append is still acknowledged (the leader and the
// other follower are a quorum), the full follower keeps running and
// serving, and once its file system has room again (remounted larger)
// the leader catches it up by itself; both copies end byte-identical to
// the leader's.
func TestFailureFollowerDiskFull(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs streamnode processes")
	}
	small := testutil.SmallFS(t, "1m")
	ctx, cancel := context.WithTimeout(context.Background(), 28*time.Second)
	defer cancel()
	bin, err := proccluster.BuildOnce()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Symlink(small, filepath.Join(dir, "n2")); err != nil {
		t.Fatal(err)
	}
	cl, err := proccluster.Start(ctx, proccluster.Config{Binary: bin, Dir: dir, Nodes: 3,
		Args: []string{"--region-size", "262144"}, StopTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cl.Close() // kills every member by PID, before the tmpfs is unmounted
		for i := range cl.Len() {
			n := mustNode(cl, i)
			if b, err := os.ReadFile(n.Log); err == nil && hasPanic(string(b)) {
				t.Errorf("%s's log shows a panic:\n%s", n.Name, proccluster.LogTail(n.Log, 60))
			} else if t.Failed() {
				t.Logf("log of %s:\n%s", n.Name, proccluster.LogTail(n.Log, 30))
			}
		}
	})
	const stream = "full"
	admin := dial(t, cl.ClientAddrs()[0], client.Options{})
	if _, err := admin.Create(ctx, stream, client.CreateOptions{Replicas: 3, Acks: api.AckPolicy_ACK_POLICY_QUORUM}); err != nil {
		t.Fatal(err)
	}
	// 3000 entries of about 1 KiB: some 3 MiB, three times what n2 holds.
	w := dial(t, cl.ClientAddrs()[0], client.Options{})
	a := w.NewAppender(ctx, stream)
	pad := strings.Repeat("x", 1000)
	var pending []*client.Pending
	acked := map[uint64]string{}
	for i := range 3000 {
		p, err := a.Append([]byte(fmt.Sprintf("c0-%06d", i) + pad))
		if err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		pending = append(pending, p)
		if len(pending) == 32 || i == 2999 {
			for j, p := range pending {
				pos, err := p.Wait(ctx)
				if err != nil {
					t.Fatalf("append %d: %v", i-len(pending)+1+j, err)
				}
				acked[pos] = fmt.Sprintf("c0-%06d", i-len(pending)+1+j) + pad
			}
			pending = pending[:0]
		}
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := admin.Status(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range st.ReplicaStatus {
		t.Logf("replica %s: persisted %d, lag %d", r.Member, r.Persisted, r.Lag)
	}
	if !st.UnderReplicated {
		t.Errorf("status does not say the stream is under-replicated with n2's disk full: %v", st)
	}
	if !cl.Running(1) {
		t.Fatal("n2 died of its full disk")
	}
	if _, err := dial(t, cl.ClientAddrs()[1], client.Options{}).Members(ctx); err != nil {
		t.Fatalf("n2 does not answer: %v", err)
	}
	// The leader says why n2 is behind.
	b, _ := os.ReadFile(mustNode(cl, 0).Log)
	if !strings.Contains(string(b), "no space left on device") {
		t.Errorf("the leader's log does not name n2's full disk:\n%s", proccluster.LogTail(mustNode(cl, 0).Log, 20))
	}
	t.Logf("the leader logged %d failed connections to n2", strings.Count(string(b), "replica connect failed"))
	// Room again (the tmpfs grown to 8 MiB): the leader catches n2 up
	// by itself, within a bounded wait.
	if out, err := exec.Command("mount", "-o", "remount,size=8m", small).CombinedOutput(); err != nil {
		t.Fatalf("remount: %v: %s", err, out)
	}
	caughtUp := false
	for range 100 {
		st, err := admin.Status(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range st.ReplicaStatus {
			if r.Member == "n2" && r.Persisted >= uint64(len(acked)) {
				caughtUp = true
			}
		}
		if caughtUp || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !caughtUp {
		t.Errorf("n2 was not caught up within 10 s of its disk having room again")
	}
	for i := range cl.Len() {
		if err := cl.Stop(i); err != nil {
			t.Error(err)
		}
	}
	copies := []string{proccluster.ReplicaFile(mustNode(cl, 2).Data, stream)}
	if caughtUp {
		copies = append(copies, proccluster.ReplicaFile(small, stream))
	}
	committed, err := proccluster.CompareReplicas(proccluster.LeaderFile(mustNode(cl, 0).Data, stream), copies)
	if err != nil {
		t.Fatal(err)
	}
	if committed < uint64(len(acked)) {
		t.Fatalf("the leader's file has %d committed entries, %d were acknowledged", committed, len(acked))
	}
}

// TestFailureLeaderRestartsWhileFollowerDown: a follower is down while
// the leader is SIGKILLed and restarted (a new epoch); the follower, back
// with a copy granted only the older epoch and short of entries, accepts
// the new epoch, is caught up, and ends byte-identical.
func TestFailureLeaderRestartsWhileFollowerDown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 28*time.Second)
	defer cancel()
	cl := startFailureCluster(t, ctx, 3, false)
	const stream = "twofaults"
	admin := dial(t, cl.ClientAddrs()[0], client.Options{})
	st, err := admin.Create(ctx, stream, client.CreateOptions{Replicas: 3, Acks: api.AckPolicy_ACK_POLICY_QUORUM})
	if err != nil {
		t.Fatal(err)
	}
	leader := indexOf(t, cl, st.Leader)
	follower := (leader + 1) % 3
	addr := mustNode(cl, leader).ClientAddr
	acked := load(t, ctx, addr, stream, 0, 1, 300, 8, nil)
	if err := cl.Kill(follower); err != nil {
		t.Fatal(err)
	}
	for p, d := range load(t, ctx, addr, stream, 1, 1, 300, 8, nil) {
		acked[p] = d
	}
	if err := cl.Kill(leader); err != nil {
		t.Fatal(err)
	}
	if err := cl.Start(ctx, leader); err != nil {
		t.Fatal(err)
	}
	for p, d := range load(t, ctx, addr, stream, 2, 1, 300, 8, nil) {
		acked[p] = d
	}
	if err := cl.Start(ctx, follower); err != nil {
		t.Fatal(err)
	}
	// Acks "quorum" does not wait for the follower: wait, bounded, until
	// the leader says it holds everything.
	caughtUp := false
	for range 100 {
		s, err := admin.Status(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		caughtUp = !s.UnderReplicated && s.Committed >= uint64(len(acked))
		for _, r := range s.ReplicaStatus {
			if r.Persisted < uint64(len(acked)) {
				caughtUp = false
			}
		}
		if caughtUp || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !caughtUp {
		t.Fatal("the returning follower was not caught up within 10 s")
	}
	if t.Failed() {
		return
	}
	checkTail(t, ctx, addr, stream, acked, 3)
	if copies := compareCopies(t, cl, leader, stream, len(acked)); copies != 2 {
		t.Errorf("%d copies compared, want 2", copies)
	}
}

// TestFailureFollowerHangs: a follower is stopped (SIGSTOP: alive to TCP,
// answering nothing) under load with quorum acknowledgements. Appends go
// on being acknowledged by the leader and the other follower; once the
// follower is continued (SIGCONT) it is caught up and all copies end
// byte-identical.
func TestFailureFollowerHangs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 28*time.Second)
	defer cancel()
	cl := startFailureCluster(t, ctx, 3, false)
	const stream = "hung"
	admin := dial(t, cl.ClientAddrs()[0], client.Options{})
	st, err := admin.Create(ctx, stream, client.CreateOptions{Replicas: 3, Acks: api.AckPolicy_ACK_POLICY_QUORUM})
	if err != nil {
		t.Fatal(err)
	}
	leader := indexOf(t, cl, st.Leader)
	follower := (leader + 1) % 3
	addr := mustNode(cl, leader).ClientAddr
	acked := load(t, ctx, addr, stream, 0, 1, 200, 8, nil)
	cont := hang(t, cl, follower)
	// With the follower hung: 2 clients, 1500 appends of 4 KiB each,
	// some 12 MiB: more than the hung connection's socket buffers hold.
	lctx, lcancel := context.WithTimeout(ctx, 12*time.Second)
	hung := loadPadded(t, lctx, addr, stream, 1, 2, 1500, 16, 4096, nil)
	lcancel()
	if t.Failed() {
		t.Fatalf("appends with a follower hung (SIGSTOP): %d acknowledged", len(hung))
	}
	for p, d := range hung {
		acked[p] = d
	}
	cont()
	caughtUp := false
	for range 100 {
		s, err := admin.Status(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		caughtUp = !s.UnderReplicated
		for _, r := range s.ReplicaStatus {
			if r.Persisted < uint64(len(acked)) {
				caughtUp = false
			}
		}
		if caughtUp || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !caughtUp {
		t.Fatal("the continued follower was not caught up within 10 s")
	}
	checkTail(t, ctx, addr, stream, acked, 3)
	if copies := compareCopies(t, cl, leader, stream, len(acked)); copies != 2 {
		t.Errorf("%d copies compared, want 2", copies)
	}
}

// TestFailureDeletedWhileDownLeaderAway: as TestFailureDeletedWhileDown,
// but the leader is down too when the follower returns: the catalog, not
// the leader, says the stream is gone, so the follower removes its copy
// at once.
func TestFailureDeletedWhileDownLeaderAway(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := startFailureCluster(t, ctx, 3, false)
	const stream = "away"
	first := dial(t, cl.ClientAddrs()[0], client.Options{})
	createOld(t, ctx, first, stream, api.AckPolicy_ACK_POLICY_ALL, 20)
	if err := cl.Kill(1); err != nil {
		t.Fatal(err)
	}
	if err := first.Delete(ctx, stream); err != nil {
		t.Fatal(err)
	}
	if err := cl.Kill(0); err != nil {
		t.Fatal(err)
	}
	if err := cl.Start(ctx, 1); err != nil {
		t.Fatal(err)
	}
	copyFile := proccluster.ReplicaFile(mustNode(cl, 1).Data, stream)
	n2 := dial(t, cl.ClientAddrs()[1], client.Options{})
	// n1 is away, but the catalog (n2 and n3 vote) says the stream is
	// deleted: n2 removes its copy without asking n1.
	// Each read is bounded, so that one waiting for a catalog that is
	// electing its controller (the old leader was a voter) does not use
	// up the test's time.
	var rerr error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && ctx.Err() == nil; time.Sleep(100 * time.Millisecond) {
		rctx, rcancel := context.WithTimeout(ctx, 3*time.Second)
		_, _, rerr = n2.Read(rctx, stream, 0, 0)
		rcancel()
		if status.Code(rerr) == codes.NotFound && !exists(copyFile) {
			break
		}
	}
	if status.Code(rerr) != codes.NotFound {
		t.Fatalf("a read at n2 with the old leader away: %v, want NotFound within 30 s", rerr)
	}
	if exists(copyFile) {
		t.Fatal("n2 still holds its copy of the deleted stream")
	}
	if err := cl.Start(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := first.Read(ctx, stream, 0, 0); status.Code(err) != codes.NotFound {
		t.Fatalf("a read at n1 back: %v, want NotFound", err)
	}
}

// TestFailureFollowerCopyDamaged: bytes of a follower's copy are flipped
// while it is down, in its entries ("entries") or in its superblock
// ("superblock"). Once it is back, the leader finds where the copy's
// valid prefix ends and rewrites the rest; appends with acks "all" go on
// and every copy ends byte-identical to the leader's.
func TestFailureFollowerCopyDamaged(t *testing.T) {
	for _, where := range []string{"entries", "superblock"} {
		t.Run(where, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
			defer cancel()
			cl := startFailureCluster(t, ctx, 3, false)
			const stream = "damaged"
			admin := dial(t, cl.ClientAddrs()[0], client.Options{})
			st, err := admin.Create(ctx, stream, client.CreateOptions{Replicas: 3, Acks: api.AckPolicy_ACK_POLICY_ALL})
			if err != nil {
				t.Fatal(err)
			}
			leader := indexOf(t, cl, st.Leader)
			follower := (leader + 1) % 3
			addr := mustNode(cl, leader).ClientAddr
			acked := load(t, ctx, addr, stream, 0, 1, 500, 8, nil)
			if err := cl.Kill(follower); err != nil {
				t.Fatal(err)
			}
			path := proccluster.ReplicaFile(mustNode(cl, follower).Data, stream)
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(f)
			if err != nil {
				t.Fatal(err)
			}
			off := int64(8)
			if where == "entries" {
				sc, err := local.Scan(b)
				if err != nil || len(sc.Regions) == 0 {
					t.Fatalf("scan of the copy before damage: %v, %v", sc, err)
				}
				off = midPayload(t, b, sc.Regions[len(sc.Regions)-1])
			}
			if _, err := f.WriteAt([]byte{b[off] ^ 0xff, b[off+1] ^ 0x55}, off); err != nil {
				t.Fatal(err)
			}
			f.Close()
			if err := cl.Start(ctx, follower); err != nil {
				t.Fatal(err)
			}
			actx, acancel := context.WithTimeout(ctx, 12*time.Second)
			defer acancel()
			for p, d := range load(t, actx, addr, stream, 1, 1, 300, 8, nil) {
				acked[p] = d
			}
			if t.Failed() {
				t.Fatalf("appends with acks all after the follower's copy was damaged (%s) failed", where)
			}
			checkTail(t, ctx, addr, stream, acked, 2)
			if copies := compareCopies(t, cl, leader, stream, len(acked)); copies != 2 {
				t.Errorf("%d copies compared, want 2", copies)
			}
		})
	}
}

// TestFailureLeaderWiped: the leader's data directory is removed while it
// is down. Back as a new incarnation (it rejoins the catalog's group
// anew: it was a voter), it holds nothing of the stream, and the lease
// of the incarnation the catalog named as leader is gone: the controller
// elects a follower, whose copy holds every acknowledged entry (acks
// all); appends go on there, the wiped node gets a new copy, and every
// copy ends identical.
func TestFailureLeaderWiped(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	cl := startFailureCluster(t, ctx, 3, false)
	const stream = "lost"
	admin := dial(t, cl.ClientAddrs()[0], client.Options{})
	if _, err := admin.Create(ctx, stream, client.CreateOptions{Replicas: 3, Acks: api.AckPolicy_ACK_POLICY_ALL}); err != nil {
		t.Fatal(err)
	}
	acked := load(t, ctx, cl.ClientAddrs()[0], stream, 0, 1, 300, 8, nil)
	if t.Failed() {
		return
	}
	if err := cl.Kill(0); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(mustNode(cl, 0).Data); err != nil {
		t.Fatal(err)
	}
	if err := cl.Start(ctx, 0); err != nil {
		t.Fatal(err)
	}
	next, epoch := leaderOf(t, ctx, cl, stream, mustNode(cl, 0).Name)
	t.Logf("%s leads under epoch %d after the leader was wiped", next, epoch)
	li := indexOf(t, cl, next)
	more := load(t, ctx, mustNode(cl, li).ClientAddr, stream, 1, 1, 200, 8, nil)
	if t.Failed() {
		return
	}
	for p, d := range more {
		acked[p] = d
	}
	if dups := checkTail(t, ctx, mustNode(cl, li).ClientAddr, stream, acked, 2); dups != 0 {
		t.Errorf("%d entries stored twice", dups)
	}
	if copies := compareCopies(t, cl, li, stream, len(acked)); copies != 2 {
		t.Errorf("%d copies compared, want 2 (the wiped node's rebuilt)", copies)
	}
}

// TestFailureLeaderLosesUnacknowledged: a copy holds entries its leader
// then loses, as in a power failure before the leader persisted them:
// with acks "all" and one follower stopped (SIGSTOP), 50 appends are
// written to the leader and the other follower but never committed; the
// leader is SIGKILLed and those entries are zeroed in its file (what a
// power failure leaves of unpersisted bytes), and their client gives up.
// Restarted, the leader has the 200 acknowledged entries, or the holder
// of the unacknowledged ones took the stream over meanwhile (they are
// then kept, once each, as Raft keeps a new leader's uncommitted
// entries); other appends follow; a copy holding what the chosen log
// does not is cut back when it reconnects and rewritten, and every copy
// ends byte-identical.
func TestFailureLeaderLosesUnacknowledged(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 28*time.Second)
	defer cancel()
	cl := startFailureCluster(t, ctx, 3, false)
	const stream = "cutback"
	admin := dial(t, cl.ClientAddrs()[0], client.Options{})
	st, err := admin.Create(ctx, stream, client.CreateOptions{Replicas: 3, Acks: api.AckPolicy_ACK_POLICY_ALL})
	if err != nil {
		t.Fatal(err)
	}
	leader := indexOf(t, cl, st.Leader)
	stopped, holder := (leader+1)%3, (leader+2)%3
	addr := mustNode(cl, leader).ClientAddr
	// Payloads "cC-NNNNNN" of 9 bytes, stored one by one or in batches
	// (slots and records: node/batchenv.go).
	const first, extra = 200, 50
	acked := load(t, ctx, addr, stream, 0, 1, first, 8, nil)
	if t.Failed() {
		return
	}
	cont := hang(t, cl, stopped)
	// The appends to be lost ("c9-..."), from a client that gives up.
	lctx, lcancel := context.WithCancel(ctx)
	defer lcancel()
	a := dial(t, addr, client.Options{MaxAttempts: 1}).NewAppender(lctx, stream)
	for i := range extra {
		if _, err := a.Append(fmt.Appendf(nil, "c9-%06d", i)); err != nil {
			t.Fatal(err)
		}
	}
	holderName := mustNode(cl, holder).Name
	held := false
	for range 100 {
		s, err := admin.Status(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		if s.Committed != first {
			t.Fatalf("committed %d with %s stopped and acks all, want %d", s.Committed, mustNode(cl, stopped).Name, first)
		}
		for _, r := range s.ReplicaStatus {
			if r.Member == holderName && r.Persisted >= first+extra {
				held = true
			}
		}
		if held || ctx.Err() != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !held {
		t.Fatalf("%s does not hold the %d unacknowledged entries", holderName, extra)
	}
	if err := cl.Kill(leader); err != nil {
		t.Fatal(err)
	}
	lcancel()
	a.Close() // fails: its appends were never answered
	// The power failure: the leader's entries after the 200th are gone.
	lf := proccluster.LeaderFile(mustNode(cl, leader).Data, stream)
	f, err := os.OpenFile(lf, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := local.Scan(b)
	if err != nil || len(sc.Regions) != 1 || sc.Next != first+extra {
		t.Fatalf("leader's file before the loss: %+v, %v; want one region of %d entries", sc, err, first+extra)
	}
	r := sc.Regions[0]
	// Entry first starts after first entries, each a length word, a
	// checksum and the payload padded to local.EntryAlign.
	from, to := r.Offset+local.RegionHeaderSize, r.Offset+r.End
	for range first {
		n := int(binary.LittleEndian.Uint32(b[from:]))
		from += local.EntryHeaderSize + (n+local.EntryAlign-1)&^(local.EntryAlign-1)
	}
	if _, err := f.WriteAt(make([]byte, to-from), int64(from)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	cont()
	if err := cl.Start(ctx, leader); err != nil {
		t.Fatal(err)
	}
	// The restarted leader, or the holder if the controller elected it
	// first (its lease ran out while the leader was down), leads.
	final, _ := leaderOf(t, ctx, cl, stream, "")
	li := indexOf(t, cl, final)
	t.Logf("%s leads after the restart", final)
	for p, d := range load(t, ctx, mustNode(cl, li).ClientAddr, stream, 1, 1, extra, 8, nil) {
		acked[p] = d
	}
	if t.Failed() {
		return
	}
	// The "c9-" entries were never acknowledged: the holder's log keeps
	// them if it took over, the restarted leader's does not; either way
	// each is there at most once, never a part of them.
	maybe := map[string]bool{}
	for i := range extra {
		maybe[fmt.Sprintf("c9-%06d", i)] = true
	}
	final, _ = leaderOf(t, ctx, cl, stream, "")
	li = indexOf(t, cl, final)
	if dups := checkTailMaybe(t, ctx, mustNode(cl, li).ClientAddr, stream, acked, 2, maybe); dups != 0 {
		t.Errorf("%d entries stored twice", dups)
	}
	if copies := compareCopies(t, cl, li, stream, len(acked)); copies != 2 {
		t.Errorf("%d copies compared, want 2", copies)
	}
}

// TestFailureDeletedWhileHung: a stream is deleted while a follower is
// hung (SIGSTOP: a live member that answers nothing). The delete is
// answered anyway (after the lookup timeout), and once the follower
// runs again the leader's background retry deletes its copy: reads there
// are NotFound, not the deleted stream.
func TestFailureDeletedWhileHung(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 28*time.Second)
	defer cancel()
	cl := startFailureCluster(t, ctx, 3, false)
	const stream = "hungdel"
	first := dial(t, cl.ClientAddrs()[0], client.Options{})
	createOld(t, ctx, first, stream, api.AckPolicy_ACK_POLICY_QUORUM, 20)
	pid := cl.PID(1)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	defer func() {
		if stopped {
			syscall.Kill(pid, syscall.SIGCONT)
		}
	}()
	dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
	err := first.Delete(dctx, stream)
	dcancel()
	if err != nil {
		t.Fatalf("delete with n2 hung: %v", err)
	}
	time.Sleep(time.Second)
	syscall.Kill(pid, syscall.SIGCONT)
	stopped = false
	n2 := dial(t, cl.ClientAddrs()[1], client.Options{})
	var rerr error
	for range 150 {
		_, _, rerr = n2.Read(ctx, stream, 0, 0)
		if status.Code(rerr) == codes.NotFound || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if status.Code(rerr) != codes.NotFound {
		t.Fatalf("a read at n2 of the stream deleted while it was hung: %v, want NotFound within 15 s", rerr)
	}
	if exists(proccluster.ReplicaFile(mustNode(cl, 1).Data, stream)) {
		t.Fatal("n2 still holds its copy")
	}
}

// createOld creates stream with three replicas and the acks given through
// c and appends n entries "old-I" to it.
func createOld(t *testing.T, ctx context.Context, c *client.Client, stream string, acks api.AckPolicy, n int) {
	t.Helper()
	if _, err := c.Create(ctx, stream, client.CreateOptions{Replicas: 3, Acks: acks}); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := c.Append(ctx, stream, fmt.Appendf(nil, "old-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
}
