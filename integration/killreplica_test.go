package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/client"
	"github.com/rpstream/rpstream/internal/proccluster"
)

// TestKillReplica runs three streamnode processes and a backup on
// loopback, appends from several clients to a stream with three replicas
// and quorum acknowledgements while a node that does not lead the stream
// is killed (SIGKILL) and restarted and the backup is stopped (SIGTERM)
// and started, and then checks that every acknowledged entry is there,
// exactly once and in each client's order, read back with a tail from
// position 0; and that the other members' replica files hold the leader's
// committed entries byte for byte.
func TestKillReplica(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs streamnode processes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	bin, err := proccluster.Build(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	killReplica(ctx, t, killReplicaConfig{binary: bin, provider: "tcp", each: 2000})
}

// softroceEnv lists the IP addresses of a SoftRoCE device's interface
// (comma or space separated); streamnodeEnv is a streamnode built with
// -tags verbs. make test-softroce sets both inside the VM.
const (
	softroceEnv   = "RPSTREAM_TEST_SOFTROCE_HOSTS"
	streamnodeEnv = "RPSTREAM_STREAMNODE"
)

// TestKillReplicaSoftRoCE is TestKillReplica with every member on its own
// address of a SoftRoCE device and --rdma verbs: the leader writes and
// flushes into its copies with real RDMA WRITEs and READs (rxe). Under
// QEMU's TCG the appends are fewer and the bound longer.
func TestKillReplicaSoftRoCE(t *testing.T) {
	hosts := strings.FieldsFunc(os.Getenv(softroceEnv), func(r rune) bool { return r == ',' || r == ' ' })
	if len(hosts) == 0 {
		t.Skip(softroceEnv + " is not set: make test-softroce runs this inside a VM with SoftRoCE")
	}
	bin := os.Getenv(streamnodeEnv)
	if bin == "" {
		t.Fatal(softroceEnv + " is set but " + streamnodeEnv + " (a streamnode built with -tags verbs) is not")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	killReplica(ctx, t, killReplicaConfig{binary: bin, provider: "verbs", hosts: hosts, each: 300,
		args: strings.Fields(os.Getenv(nodeArgsEnv))})
}

// nodeArgsEnv adds streamnode flags to TestKillReplicaSoftRoCE's members
// (after the harness's), such as "--catalog-timing default" for
// race-detector builds under TCG, too slow for the loopback timing.
const nodeArgsEnv = "RPSTREAM_TEST_NODE_ARGS"

// logDirEnv names a directory that keeps the members' logs of a failed
// run (t.TempDir is removed): make test-softroce sets it to a directory
// the host sees.
const logDirEnv = "RPSTREAM_TEST_LOG_DIR"

type killReplicaConfig struct {
	binary   string
	provider string   // --rdma
	hosts    []string // proccluster.Config.Hosts
	each     int      // appends per client
	args     []string // more streamnode flags
}

func killReplica(ctx context.Context, t *testing.T, kc killReplicaConfig) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	dir := t.TempDir()
	cl, err := proccluster.Start(ctx, proccluster.Config{Binary: kc.binary, Dir: dir, Nodes: 3, Backup: true,
		Hosts: kc.hosts, StartTimeout: time.Until(deadlineOf(ctx)),
		Args: append([]string{"--region-size", "262144", "--rdma", kc.provider}, kc.args...)})
	if err != nil {
		t.Fatal(err)
	}
	// Each member says which provider it runs (a verbs member that
	// cannot open the device exits, but check what it says it uses).
	for i := range cl.Len() {
		n, _ := cl.Node(i)
		b, err := os.ReadFile(n.Log)
		said := false
		for _, l := range strings.Split(string(b), "\n") {
			said = said || strings.Contains(l, `"msg":"rdma provider"`) && strings.Contains(l, `"provider":"`+kc.provider+`"`)
		}
		if !said {
			t.Fatalf("%s's log does not say it uses rdma provider %s: %v\n%s", n.Name, kc.provider, err, proccluster.LogTail(n.Log, 20))
		}
	}
	t.Cleanup(func() { cl.Close() }) // kills every member by PID
	const backup = 3
	defer func() {
		if t.Failed() {
			keep := os.Getenv(logDirEnv)
			for i := range cl.Len() {
				n, _ := cl.Node(i)
				t.Logf("log of %s:\n%s", n.Name, proccluster.LogTail(n.Log, 30))
				if keep != "" {
					if b, err := os.ReadFile(n.Log); err == nil {
						os.WriteFile(filepath.Join(keep, t.Name()+"-"+n.Name+".log"), b, 0o644)
					}
				}
			}
			if keep != "" {
				t.Logf("the members' whole logs are in %s", keep)
			}
		}
	}()

	admin, err := client.Dial(cl.ClientAddrs()[0], client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	const stream = "killed"
	if _, err := admin.Create(ctx, stream, client.CreateOptions{Replicas: 3, Acks: api.AckPolicy_ACK_POLICY_QUORUM}); err != nil {
		t.Fatal(err)
	}
	st, err := admin.Status(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	leader, victim := -1, -1
	for i := range 3 {
		n, _ := cl.Node(i)
		if n.Name == st.Leader {
			leader = i
		} else if victim < 0 || i != 0 && victim == 0 {
			victim = i // a node that does not lead, other than n1 if possible
		}
	}
	if leader < 0 {
		t.Fatalf("leader %q is none of the nodes", st.Leader)
	}
	leaderNode, _ := cl.Node(leader)
	t.Logf("stream %s led by %s (%s); killing %s; stopping the backup", stream, st.Leader, leaderNode.ClientAddr, mustNode(cl, victim).Name)

	// Appenders: unique payloads "cC-NNNNNN", each client's numbered in
	// the order it appends them.
	const clients, window = 4, 16
	each := kc.each
	var mu sync.Mutex
	acked := map[uint64]string{}
	progress := make(chan int, clients*each)
	var wg sync.WaitGroup
	// On a failure below, the appenders end before the test does.
	defer func() {
		cancel()
		wg.Wait()
	}()
	for c := range clients {
		cli, err := client.Dial(leaderNode.ClientAddr, client.Options{MaxAttempts: 50})
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
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
				progress <- 1
				return true
			}
			for i := range each {
				if len(inflight) == window && !ack() {
					break
				}
				data := fmt.Sprintf("c%d-%06d", c, i)
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

	// Faults, each once the appends have got so far.
	done := 0
	waitFor := func(n int) {
		for done < n {
			select {
			case <-progress:
				done++
			case <-ctx.Done():
				t.Fatalf("only %d appends acknowledged: %v", done, ctx.Err())
			}
		}
	}
	waitFor(clients * each / 5)
	pid := cl.PID(victim)
	if err := cl.Kill(victim); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed %s (pid %d) after %d appends", mustNode(cl, victim).Name, pid, done)
	waitFor(clients * each * 2 / 5)
	if err := cl.Start(ctx, victim); err != nil {
		t.Fatal(err)
	}
	t.Logf("restarted %s (pid %d) after %d appends", mustNode(cl, victim).Name, cl.PID(victim), done)
	if err := cl.Stop(backup); err != nil {
		t.Fatalf("backup: %v", err)
	}
	t.Logf("stopped the backup after %d appends", done)
	waitFor(clients * each * 3 / 5)
	if err := cl.Start(ctx, backup); err != nil {
		t.Fatal(err)
	}
	t.Logf("started the backup after %d appends", done)
	wg.Wait()
	if t.Failed() {
		return
	}
	if len(acked) != clients*each {
		t.Fatalf("%d appends acknowledged, want %d", len(acked), clients*each)
	}

	// A tail from position 0 sees every acknowledged entry at its
	// position, each payload once, each client's in order.
	reader, err := client.Dial(leaderNode.ClientAddr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	st, err = reader.Status(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	if st.Committed < uint64(len(acked)) {
		t.Fatalf("committed %d, but %d appends were acknowledged", st.Committed, len(acked))
	}
	seen := map[string]uint64{}
	last := make([]int, clients)
	for c := range last {
		last[c] = -1
	}
	next := uint64(0)
	for e, err := range reader.Tail(ctx, stream, 0) {
		if err != nil {
			t.Fatalf("tail at %d: %v", next, err)
		}
		if e.Position != next {
			t.Fatalf("tail gave position %d, want %d", e.Position, next)
		}
		next++
		data := string(e.Data)
		if want, ok := acked[e.Position]; ok && want != data {
			t.Fatalf("position %d holds %q, %q was acknowledged there", e.Position, data, want)
		}
		if p, dup := seen[data]; dup {
			t.Fatalf("%q at positions %d and %d", data, p, e.Position)
		}
		seen[data] = e.Position
		c, i, ok := parsePayload(data)
		if !ok || c >= clients {
			t.Fatalf("position %d holds %q, which no client appended", e.Position, data)
		}
		if i <= last[c] {
			t.Fatalf("client %d's entry %d at position %d, after its entry %d", c, i, e.Position, last[c])
		}
		last[c] = i
		if next == st.Committed {
			break
		}
	}
	for pos, data := range acked {
		if seen[data] != pos {
			t.Fatalf("acknowledged %q at %d, tail saw it at %d", data, pos, seen[data])
		}
	}

	// Every copy catches up before the members stop: a copy that is not
	// in the quorum (the restarted backup) may still be behind when the
	// last append is acknowledged, and over verbs under QEMU's TCG it
	// was, by 158 entries.
	for {
		st, err := reader.Status(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		behind := []string{}
		for _, r := range st.ReplicaStatus {
			if r.Persisted < st.Committed {
				behind = append(behind, fmt.Sprintf("%s at %d", r.Member, r.Persisted))
			}
		}
		if len(behind) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("copies still behind the leader's %d committed entries: %v", st.Committed, behind)
		case <-time.After(100 * time.Millisecond):
		}
	}

	// The replica files, once every member has stopped.
	for i := range cl.Len() {
		if err := cl.Stop(i); err != nil {
			t.Error(err)
		}
	}
	var replicas []string
	for i := range cl.Len() {
		if p := proccluster.ReplicaFile(mustNode(cl, i).Data, stream); i != leader && exists(p) {
			replicas = append(replicas, p)
		}
	}
	// Replicas 3: the leader's copy and at least two followers' (the
	// backup target, when placed, holds one more).
	if len(replicas) < 2 {
		t.Fatalf("%d replica files (DATA/replicas/%s/data.stream) besides the leader's, want at least 2: %v", len(replicas), stream, replicas)
	}
	committed, err := proccluster.CompareReplicas(proccluster.LeaderFile(leaderNode.Data, stream), replicas)
	if err != nil {
		t.Fatal(err)
	}
	if committed < uint64(len(acked)) {
		t.Fatalf("the leader's file has %d committed entries, %d were acknowledged", committed, len(acked))
	}
	t.Logf("%d replica file(s) hold the leader's %d committed entries", len(replicas), committed)
}

// deadlineOf is ctx's deadline, or a minute from now.
func deadlineOf(ctx context.Context) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	return time.Now().Add(time.Minute)
}

func mustNode(cl *proccluster.Cluster, i int) proccluster.Node {
	n, err := cl.Node(i)
	if err != nil {
		panic(err) // indexes here come from the test itself
	}
	return n
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// parsePayload splits "cC-NNNNNN".
func parsePayload(s string) (c, i int, ok bool) {
	a, b, found := strings.Cut(s, "-")
	if !found || !strings.HasPrefix(a, "c") {
		return 0, 0, false
	}
	c, err1 := strconv.Atoi(a[1:])
	i, err2 := strconv.Atoi(b)
	return c, i, err1 == nil && err2 == nil && c >= 0
}
