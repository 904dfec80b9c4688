package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/client"
)

// TestDockerCompose runs docker-compose.yml for real: three nodes and a
// backup in containers built FROM scratch, a stream with 3 replicas and
// quorum acks created through n1, concurrent appenders on its leader's
// published port while a node that does not lead it (n3, else n2) is cut
// off its network (docker network disconnect) for a few seconds and the
// backup is stopped (SIGTERM: it must drain and exit 0) and started again.
// Afterwards every acknowledged entry is where its acknowledgement said, a
// read from position 0 sees every entry once and each appender's entries
// in the order it made them, every copy (two replicas and the backup)
// catches up with every entry, every node lists every member alive again,
// and streamcli status still answers. Skipped where docker, its daemon or
// a compose command is missing, and in -short mode.
func TestDockerCompose(t *testing.T) {
	compose := dockerOrSkip(t)
	root := repoRoot(t)
	id := randomHex(t, 4)
	image := "rpstream:it-" + id
	bin := buildComposeImage(t, root, image)
	streamcli := filepath.Join(bin, "streamcli")
	c := startCompose(t, compose, root, image)
	t.Logf("project %s, network %s.0/24, ports %v, compose command %q", c.project, c.net, c.ports, compose)

	for _, s := range composeServices {
		waitMembers(t, c.addr(s.name), c.options(client.Options{}), 60*time.Second)
	}

	const stream = "it"
	out, err := dockerRun(context.Background(), 30*time.Second, c.env, streamcli, "--node", c.addr("n1"), "create", stream, "--replicas", "3", "--acks", "quorum")
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	t.Logf("%s", strings.TrimSpace(out))
	// Append to and read from the stream's leader (n1 while streamnode is
	// single-node); cut off a node that does not lead it, n3 if it can.
	leader := streamLeader(t, c.addr("n1"), c.options(client.Options{}), stream)
	cut := "n3"
	if leader == cut {
		cut = "n2"
	}
	t.Logf("leader %s, cutting off %s", leader, cut)

	// Appenders: each writes unique payloads "w<writer>-<seq>" in order,
	// one at a time, until stop, maxPerWriter or a minute.
	const writers, maxPerWriter = 4, 100000
	appendUntil := time.Now().Add(time.Minute)
	type ack struct {
		seq int
		pos uint64
	}
	acked := make([][]ack, writers)
	failed := make([]int, writers)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range writers {
		cl, err := client.Dial(c.addr(leader), c.options(client.Options{MaxAttempts: 20}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; seq < maxPerWriter && time.Now().Before(appendUntil); seq++ {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				pos, err := cl.Append(ctx, stream, fmt.Appendf(nil, "w%d-%06d", w, seq))
				cancel()
				if err != nil {
					failed[w]++
					time.Sleep(100 * time.Millisecond)
					continue
				}
				acked[w] = append(acked[w], ack{seq, pos})
			}
		}()
	}
	stopAppenders := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(stopAppenders)

	time.Sleep(time.Second)
	// Cut a node that does not lead the stream off the network for a few
	// seconds; it comes back with the same address.
	netName, cutID := c.network(cut), c.container(cut)
	if _, err := dockerRun(context.Background(), time.Minute, c.env, "docker", "network", "disconnect", netName, cutID); err != nil {
		t.Fatalf("disconnect %s: %v", cut, err)
	}
	t.Logf("%s disconnected from %s", cut, netName)
	time.Sleep(3 * time.Second)
	t.Logf("%s's view with %s cut off: %s", leader, cut, memberStates(c.addr(leader), c.options(client.Options{})))
	if _, err := dockerRun(context.Background(), time.Minute, c.env, "docker", "network", "connect", "--ip", c.ip(cut), "--alias", cut, netName, cutID); err != nil {
		t.Fatalf("reconnect %s: %v", cut, err)
	}
	t.Logf("%s reconnected", cut)
	// Stop the backup (SIGTERM: it drains) and start it again.
	if _, err := c.run(time.Minute, "stop", "-t", "15", "backup"); err != nil {
		t.Fatalf("stop backup: %v", err)
	}
	// SIGTERM drains: streamnode exits 0.
	if out, err := dockerRun(context.Background(), time.Minute, c.env, "docker", "inspect", "-f", "{{.State.ExitCode}}", c.container("backup")); err != nil || strings.TrimSpace(out) != "0" {
		t.Fatalf("backup stopped with exit code %q (%v), want 0 after a drain", strings.TrimSpace(out), err)
	}
	t.Logf("backup stopped (drained, exit 0)")
	if _, err := c.run(time.Minute, "start", "backup"); err != nil {
		t.Fatalf("start backup: %v", err)
	}
	t.Logf("backup started")
	time.Sleep(time.Second)
	stopAppenders()

	total, totalFailed := 0, 0
	for w := range writers {
		total += len(acked[w])
		totalFailed += failed[w]
	}
	t.Logf("%d appends acknowledged, %d failed, by %d appenders", total, totalFailed, writers)
	if total < writers {
		t.Fatalf("only %d appends acknowledged", total)
	}
	for _, s := range composeServices {
		waitMembers(t, c.addr(s.name), c.options(client.Options{}), 60*time.Second)
	}

	// Read everything from position 0.
	if now := streamLeader(t, c.addr(leader), c.options(client.Options{}), stream); now != leader {
		t.Logf("the stream's leader moved from %s to %s", leader, now)
		leader = now
	}
	cl, err := client.Dial(c.addr(leader), c.options(client.Options{}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	type seen struct {
		writer, seq int
	}
	at := map[uint64]seen{}
	where := map[seen]uint64{}
	lastSeq := make([]int, writers)
	for w := range lastSeq {
		lastSeq[w] = -1
	}
	var next uint64
	for range 100000 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		entries, n, err := cl.Read(ctx, stream, next, 0)
		cancel()
		if err != nil {
			t.Fatalf("read from %d: %v", next, err)
		}
		if len(entries) == 0 {
			break
		}
		for _, e := range entries {
			if e.Position != next {
				t.Fatalf("read an entry at %d, want %d: positions are not contiguous", e.Position, next)
			}
			next++
			var s seen
			if _, err := fmt.Sscanf(string(e.Data), "w%d-%06d", &s.writer, &s.seq); err != nil || s.writer < 0 || s.writer >= writers || fmt.Sprintf("w%d-%06d", s.writer, s.seq) != string(e.Data) {
				t.Fatalf("entry %d holds %q, which no appender wrote", e.Position, e.Data)
			}
			if p, dup := where[s]; dup {
				t.Fatalf("%q is stored twice, at %d and %d", e.Data, p, e.Position)
			}
			if s.seq <= lastSeq[s.writer] {
				t.Fatalf("entry %d (%q) comes after w%d-%06d: out of order", e.Position, e.Data, s.writer, lastSeq[s.writer])
			}
			lastSeq[s.writer] = s.seq
			at[e.Position], where[s] = s, e.Position
		}
		if n != next {
			t.Fatalf("read says next is %d after entries up to %d", n, next-1)
		}
	}
	for w := range writers {
		for _, a := range acked[w] {
			got, ok := at[a.pos]
			if !ok || got != (seen{w, a.seq}) {
				t.Fatalf("w%d-%06d was acknowledged at %d, which holds %v (present: %v)", w, a.seq, a.pos, got, ok)
			}
		}
	}
	t.Logf("read %d entries from 0: every acknowledged one once, in order", next)

	// The node that was cut off and the backup that was stopped catch up:
	// every copy holds every entry durably (bounded wait).
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		st, err := cl.Status(ctx, stream)
		cancel()
		if err != nil {
			t.Fatalf("status: %v", err)
		}
		caughtUp := 0
		for _, r := range st.ReplicaStatus {
			if r.Persisted == st.Committed {
				caughtUp++
			}
		}
		if len(st.ReplicaStatus) == 3 && caughtUp == 3 && st.Committed == next && !st.UnderReplicated {
			t.Logf("every copy (%d) holds all %d entries", len(st.ReplicaStatus), next)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("copies did not catch up within 30s: committed %d, copies %v, under-replicated %v", st.Committed, st.ReplicaStatus, st.UnderReplicated)
		}
		time.Sleep(200 * time.Millisecond)
	}

	out, err = dockerRun(context.Background(), 30*time.Second, c.env, streamcli, "--node", c.addr(leader), "status", stream)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	if !strings.Contains(out, "leader") {
		t.Fatalf("status does not name a leader:\n%s", out)
	}
	t.Logf("streamcli status:\n%s", out)
	if out, err = c.run(time.Minute, "exec", "-T", "n2", "/streamcli", "members"); err != nil {
		t.Fatalf("streamcli members in n2: %v", err)
	}
	t.Logf("streamcli members in n2:\n%s", out)
}

// streamLeader is the name of the service leading stream, as the node at
// addr reports it.
func streamLeader(t *testing.T, addr string, o client.Options, stream string) string {
	t.Helper()
	cl, err := client.Dial(addr, o)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := cl.Status(ctx, stream)
	if err != nil {
		t.Fatalf("status of %s at %s: %v", stream, addr, err)
	}
	for _, s := range composeServices {
		if s.name == st.Leader && s.name != "backup" {
			return s.name
		}
	}
	t.Fatalf("status of %s names leader %q, not one of n1, n2, n3", stream, st.Leader)
	return ""
}

// memberStates is the node at addr's view of its members, for the log.
func memberStates(addr string, o client.Options) string {
	o.MaxAttempts = 1
	cl, err := client.Dial(addr, o)
	if err != nil {
		return err.Error()
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ms, err := cl.Members(ctx)
	if err != nil {
		return err.Error()
	}
	var parts []string
	for _, m := range ms {
		parts = append(parts, m.Name+" "+strings.TrimPrefix(strings.ToLower(m.State.String()), "member_state_"))
	}
	return strings.Join(parts, ", ")
}

// waitMembers waits, at most limit, until the node at addr answers a
// Members call listing every service of the compose file alive.
func waitMembers(t *testing.T, addr string, o client.Options, limit time.Duration) {
	t.Helper()
	o.MaxAttempts = 1
	cl, err := client.Dial(addr, o)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	deadline := time.Now().Add(limit)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		ms, err := cl.Members(ctx)
		cancel()
		if err == nil {
			alive := map[string]bool{}
			for _, m := range ms {
				alive[m.Name] = m.State == api.MemberState_MEMBER_STATE_ALIVE
			}
			for _, s := range composeServices {
				if !alive[s.name] {
					err = fmt.Errorf("%s is not listed alive: %v", s.name, ms)
					break
				}
			}
			if err == nil {
				// And registered in the catalog: it serves streams.
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				var cs *api.ClusterStatusResponse
				cs, err = cl.API().ClusterStatus(ctx, &api.ClusterStatusRequest{})
				cancel()
				if err == nil && !cs.Registered {
					err = fmt.Errorf("%s is not registered in the catalog yet (controller %q)", cs.Node, cs.Controller)
				}
			}
			if err == nil {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("node at %s: not every member alive and registered within %v: %v", addr, limit, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
