package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/client"
	"github.com/rpstream/rpstream/internal/proccluster"
)

// The catalog on real processes: three streamnodes on loopback, voters of
// the catalog's Raft group (internal/proccluster names them), checked as
// a user sees them, through the client service.

// controllerOf asks the node at addr who the controller is.
func controllerOf(ctx context.Context, t *testing.T, addr string) (*api.ClusterStatusResponse, error) {
	t.Helper()
	c := dial(t, addr, client.Options{MaxAttempts: 1})
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	return c.ClusterStatus(ctx)
}

// TestCatalogConcurrentCreates: 50 rounds of creates of one name sent to
// the three nodes at the same moment. Each round exactly one succeeds and
// the others get AlreadyExists; every node then names the same leader,
// lists the stream once, and appends sent to any node land in that one
// stream.
func TestCatalogConcurrentCreates(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := startFailureCluster(t, ctx, 3, false)
	clients := make([]*client.Client, 3)
	for i := range clients {
		clients[i] = dial(t, cl.ClientAddrs()[i], client.Options{})
	}
	const rounds = 50
	for r := range rounds {
		name := fmt.Sprintf("race-%02d", r)
		var wg sync.WaitGroup
		errs := make([]error, 3)
		leaders := make([]string, 3)
		start := make(chan struct{})
		for i, c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				st, err := c.Create(ctx, name, client.CreateOptions{Replicas: 2})
				errs[i] = err
				if err == nil {
					leaders[i] = st.Leader
				}
			}()
		}
		close(start)
		wg.Wait()
		won := 0
		for i, err := range errs {
			switch {
			case err == nil:
				won++
				if leaders[i] != mustNode(cl, i).Name {
					t.Errorf("round %d: n%d won the create but %s leads", r, i+1, leaders[i])
				}
			case status.Code(err) != codes.AlreadyExists:
				t.Fatalf("round %d: create at n%d: %v, want success or AlreadyExists", r, i+1, err)
			}
		}
		if won != 1 {
			t.Fatalf("round %d: %d creates of %s succeeded, want exactly 1 (%v)", r, won, name, errs)
		}
	}
	// Every node lists each stream once and names one leader for it.
	for i, c := range clients {
		names, err := c.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(names) != rounds || !slices.IsSorted(names) || len(slices.Compact(slices.Clone(names))) != rounds {
			t.Fatalf("n%d lists %d streams (%v), want %d distinct", i+1, len(names), names, rounds)
		}
	}
	// Appends through every node to one of them end in the one stream,
	// in order, and a read at its leader returns them all.
	const name = "race-07"
	var want []string
	for i := range 30 {
		d := fmt.Sprintf("via n%d #%d", i%3+1, i)
		if _, err := clients[i%3].Append(ctx, name, []byte(d)); err != nil {
			t.Fatalf("append via n%d: %v", i%3+1, err)
		}
		want = append(want, d)
	}
	st, err := clients[0].Status(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	lc := dial(t, cl.ClientAddrs()[indexOf(t, cl, st.Leader)], client.Options{})
	ents, _, err := lc.Read(ctx, name, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, string(e.Data))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("read %s at its leader %s: %q, want %q", name, st.Leader, got, want)
	}
}

// TestCatalogControllerKilled: the controller (the catalog's Raft leader)
// is SIGKILLed, three times, restarted each time. Each time the two others
// elect a new controller and a create through either of them works within
// 2 s of the kill; nothing of the catalog is lost.
func TestCatalogControllerKilled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := startFailureCluster(t, ctx, 3, false)
	var made []string
	for round := range 3 {
		cs, err := controllerOf(ctx, t, cl.ClientAddrs()[0])
		if err != nil || cs.Controller == "" {
			t.Fatalf("round %d: no controller before the kill: %v, %v", round, cs, err)
		}
		victim := indexOf(t, cl, cs.Controller)
		killed := time.Now()
		if err := cl.Kill(victim); err != nil {
			t.Fatal(err)
		}
		other := (victim + 1) % 3
		c := dial(t, cl.ClientAddrs()[other], client.Options{})
		name := fmt.Sprintf("after-kill-%d", round)
		var newController string
		for tried := false; ; tried = true {
			cctx, ccancel := context.WithTimeout(ctx, 500*time.Millisecond)
			_, err := c.Create(cctx, name, client.CreateOptions{})
			ccancel()
			// An attempt cut by its deadline may have committed: the
			// next finds the stream made.
			if err == nil || tried && status.Code(err) == codes.AlreadyExists {
				break
			}
			if time.Since(killed) > 2*time.Second {
				t.Fatalf("round %d: no create through %s within 2 s of SIGKILL of the controller %s: %v", round, mustNode(cl, other).Name, cs.Controller, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		made = append(made, name)
		if cs2, err := controllerOf(ctx, t, cl.ClientAddrs()[other]); err == nil {
			newController = cs2.Controller
		}
		t.Logf("round %d: controller %s killed; %s controls, a create worked %v after the kill", round, cs.Controller, newController, time.Since(killed).Round(time.Millisecond))
		if newController == cs.Controller {
			t.Fatalf("round %d: the killed %s is still named controller", round, cs.Controller)
		}
		if err := cl.Start(ctx, victim); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		names, err := dial(t, cl.ClientAddrs()[i], client.Options{}).List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(names, made) {
			t.Fatalf("n%d lists %v, want %v", i+1, names, made)
		}
	}
}

// TestCatalogWholeClusterRestart: every node SIGKILLed at once and
// restarted: the whole catalog is back (streams, a deleted one's absence,
// leaders and copies), and the streams take appends again with nothing
// acknowledged lost.
func TestCatalogWholeClusterRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := startFailureCluster(t, ctx, 3, false)
	var want []string
	leaders := map[string]string{}
	acked := map[string][]string{}
	for i := range 6 {
		name := fmt.Sprintf("keep-%d", i)
		c := dial(t, cl.ClientAddrs()[i%3], client.Options{})
		st, err := c.Create(ctx, name, client.CreateOptions{Replicas: 3})
		if err != nil {
			t.Fatal(err)
		}
		leaders[name] = st.Leader
		for j := range 5 {
			d := fmt.Sprintf("%s/%d", name, j)
			if _, err := c.Append(ctx, name, []byte(d)); err != nil {
				t.Fatal(err)
			}
			acked[name] = append(acked[name], d)
		}
		want = append(want, name)
	}
	first := dial(t, cl.ClientAddrs()[0], client.Options{})
	if _, err := first.Create(ctx, "gone", client.CreateOptions{Replicas: 2}); err != nil {
		t.Fatal(err)
	}
	if err := first.Delete(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := cl.Kill(i); err != nil {
			t.Fatal(err)
		}
	}
	// Start them all, then wait for each (the catalog needs two voters).
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range 3 {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = cl.Start(ctx, i) }()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("restart n%d: %v", i+1, err)
		}
	}
	for i := range 3 {
		c := dial(t, cl.ClientAddrs()[i], client.Options{})
		names, err := c.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(names, want) {
			t.Fatalf("n%d lists %v after the restart, want %v", i+1, names, want)
		}
		for _, name := range want {
			st, err := c.Status(ctx, name)
			if err != nil {
				t.Fatalf("status of %s at n%d: %v", name, i+1, err)
			}
			if st.Leader != leaders[name] {
				t.Fatalf("%s is led by %s after the restart, by %s before", name, st.Leader, leaders[name])
			}
		}
	}
	for _, name := range want {
		c := dial(t, cl.ClientAddrs()[indexOf(t, cl, leaders[name])], client.Options{})
		if _, err := c.Append(ctx, name, []byte(name+"/after")); err != nil {
			t.Fatalf("append to %s after the restart: %v", name, err)
		}
		ents, _, err := c.Read(ctx, name, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range ents {
			got = append(got, string(e.Data))
		}
		if w := append(slices.Clone(acked[name]), name+"/after"); !slices.Equal(got, w) {
			t.Fatalf("%s after the restart: %q, want %q", name, got, w)
		}
	}
}

// TestCatalogDuplicateName: a second process started with the name of a
// live node (its own data directory and ports) is refused: it exits 1
// saying the name is held by a live node, and the cluster goes on as it
// was, the original n2 included.
func TestCatalogDuplicateName(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := startFailureCluster(t, ctx, 3, false)
	bin, err := proccluster.BuildOnce()
	if err != nil {
		t.Fatal(err)
	}
	ports := freePorts(t, 3)
	var join []string
	for i := range 3 {
		join = append(join, mustNode(cl, i).GossipAddr)
	}
	dir := t.TempDir()
	cmd := exec.Command(bin, "--name", "n2", "--data", filepath.Join(dir, "dup"),
		"--client-addr", fmt.Sprintf("127.0.0.1:%d", ports[0]), "--peer-addr", fmt.Sprintf("127.0.0.1:%d", ports[1]),
		"--gossip-addr", fmt.Sprintf("127.0.0.1:%d", ports[2]), "--join", strings.Join(join, ","),
		"--voters", "n1,n2,n3", "--catalog-timing", "loopback", "--log-format", "json")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill() // by PID; a no-op once it exited
		<-done
	})
	select {
	case <-done:
		err := waitErr
		if cmd.ProcessState.ExitCode() != 1 {
			t.Fatalf("the duplicate n2 exited with %v, want exit code 1; stderr:\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the duplicate n2 still runs 30 s after its start; stderr:\n%s", stderr.String())
	}
	if !strings.Contains(stderr.String(), "held by a live node") {
		t.Fatalf("the duplicate's error does not say the name is held by a live node:\n%s", stderr.String())
	}
	// The original n2 still serves, as a member and in the catalog.
	c := dial(t, cl.ClientAddrs()[1], client.Options{})
	if _, err := c.Create(ctx, "after-dup", client.CreateOptions{Replicas: 3}); err != nil {
		t.Fatalf("create at the original n2 after the duplicate: %v", err)
	}
	cs, err := controllerOf(ctx, t, cl.ClientAddrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range cs.Nodes {
		if n.Name == "n2" && n.State != api.MemberState_MEMBER_STATE_ALIVE {
			t.Fatalf("n2 is %v in n1's view after the duplicate left", n.State)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "dup", "streams")); err != nil {
		t.Logf("the duplicate left no streams directory: %v", err)
	}
}

// TestCatalogLeaderDown: with the leader of a stream that acknowledges
// on the leader alone SIGKILLed (such a stream is never failed over: its
// acknowledged entries may exist on the leader only), every other node
// answers from its catalog: the stream is listed, appends and status are
// Unavailable naming the last known leader (never NotFound), and a node
// holding a copy still serves reads from it. The leader back, appends go
// on.
func TestCatalogLeaderDown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := startFailureCluster(t, ctx, 3, false)
	lead := dial(t, cl.ClientAddrs()[0], client.Options{})
	if _, err := lead.Create(ctx, "down", client.CreateOptions{Replicas: 3, Acks: api.AckPolicy_ACK_POLICY_LEADER}); err != nil {
		t.Fatal(err)
	}
	var acked []string
	for i := range 20 {
		d := fmt.Sprintf("e%02d", i)
		if _, err := lead.Append(ctx, "down", []byte(d)); err != nil {
			t.Fatal(err)
		}
		acked = append(acked, d)
	}
	n2 := dial(t, cl.ClientAddrs()[1], client.Options{MaxAttempts: 1})
	// With acks=leader the copies' commit words follow the leader's
	// acknowledgements lazily: wait until n2's copy shows some.
	if !waitFor(ctx, 10*time.Second, func() bool {
		ents, _, err := n2.Read(ctx, "down", 0, 100)
		return err == nil && len(ents) > 0
	}) {
		t.Fatal("n2's copy shows no committed entry")
	}
	if err := cl.Kill(0); err != nil {
		t.Fatal(err)
	}
	names, err := n2.List(ctx)
	if err != nil || !slices.Equal(names, []string{"down"}) {
		t.Fatalf("ls at n2 with the leader down: %v, %v", names, err)
	}
	// memberlist notices the death within its suspicion time: until then
	// n2 may still send the client to n1.
	var aerr error
	for range 100 {
		actx, acancel := context.WithTimeout(ctx, 2*time.Second)
		_, aerr = n2.API().Append(actx, &api.AppendRequest{Stream: "down", Data: []byte("x")})
		acancel()
		if status.Code(aerr) == codes.Unavailable {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	st, _ := status.FromError(aerr)
	if st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "n1") {
		t.Fatalf("append at n2 with the leader down: %v, want Unavailable naming n1", aerr)
	}
	var hint *api.NotLeader
	for _, d := range st.Details() {
		if nl, ok := d.(*api.NotLeader); ok {
			hint = nl
		}
	}
	if hint == nil || hint.Leader != "n1" {
		t.Fatalf("append at n2 with the leader down: details %v, want NotLeader naming n1", st.Details())
	}
	if _, err := n2.API().StreamStatus(ctx, &api.StreamStatusRequest{Stream: "down"}); status.Code(err) != codes.Unavailable {
		t.Fatalf("status at n2 with the leader down: %v, want Unavailable", err)
	}
	// n2 holds a copy: reads are served from it, up to its commit point,
	// which lags the leader's by at most its last commit word.
	ents, _, err := n2.Read(ctx, "down", 0, 100)
	if err != nil {
		t.Fatalf("read at n2 with the leader down: %v", err)
	}
	if len(ents) == 0 || len(ents) > len(acked) {
		t.Fatalf("read at n2 with the leader down: %d entries, want 1..%d", len(ents), len(acked))
	}
	for i, e := range ents {
		if string(e.Data) != acked[i] {
			t.Fatalf("entry %d at n2: %q, want %q", i, e.Data, acked[i])
		}
	}
	if err := cl.Start(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := lead.Append(ctx, "down", []byte("back")); err != nil {
		t.Fatalf("append once the leader is back: %v", err)
	}
}
