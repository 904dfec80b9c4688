//go:build linux

package integration

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/client"
	"github.com/rpstream/rpstream/internal/netlab"
	"github.com/rpstream/rpstream/internal/proccluster"
)

// startLabCluster re-runs the calling test inside a network namespace of
// its own (internal/netlab) with hosts for nodes members, each member in
// its host's namespace; it returns nil in the original process, which has
// nothing left to do.
func startLabCluster(t *testing.T, nodes int, timeout time.Duration) (*proccluster.Cluster, *netlab.Lab, context.Context) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs streamnode processes")
	}
	var env []string
	if !netlab.InHub() {
		if err := netlab.Available(); err != nil {
			t.Skip(err)
		}
		bin, err := proccluster.BuildOnce()
		if err != nil {
			t.Fatal(err)
		}
		env = append(env, "RPSTREAM_TEST_STREAMNODE="+bin)
	}
	if !netlab.Reexec(t, timeout+30*time.Second, env...) {
		return nil, nil, nil
	}
	lab, err := netlab.New(nodes)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lab.Close) // after the cluster's cleanup, which runs first
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	cl := startClusterConfig(t, ctx, proccluster.Config{Nodes: nodes, Hosts: lab.Hosts(), Wrap: lab.Wrap})
	return cl, lab, ctx
}

// TestFailoverLeaderPartitioned: the leader of a stream with three
// replicas (quorum) is cut off from the other nodes, while clients still
// reach it, under load from clients that know every node. The others
// elect a new leader; the cut-off one acknowledges nothing (it cannot
// reach a quorum of copies), and clients move to the new leader. Healed,
// the old leader learns of its successor and turns its files into a copy.
// Every acknowledged append is read back once at its position, each
// client's in order, and every copy ends identical to the new leader's.
func TestFailoverLeaderPartitioned(t *testing.T) {
	cl, lab, ctx := startLabCluster(t, 3, 90*time.Second)
	if cl == nil {
		return
	}
	const stream = "partitioned"
	admin := dial(t, cl.ClientAddrs()[0], client.Options{})
	st, err := admin.Create(ctx, stream, client.CreateOptions{Replicas: 3, Acks: api.AckPolicy_ACK_POLICY_QUORUM})
	if err != nil {
		t.Fatal(err)
	}
	old := indexOf(t, cl, st.Leader)
	seeds := strings.Join(cl.ClientAddrs(), ",")
	const clients, each, window = 3, 1500, 8
	var mu sync.Mutex
	n := 0
	cutAt, healAt := clients*each/4, clients*each/2
	cut, heal := make(chan struct{}), make(chan struct{})
	progress := func() {
		mu.Lock()
		n++
		switch n {
		case cutAt:
			close(cut)
		case healAt:
			close(heal)
		}
		mu.Unlock()
	}
	faultErr := make(chan error, 1)
	var stale error
	var next string
	go func() {
		select {
		case <-cut:
		case <-ctx.Done():
			faultErr <- ctx.Err()
			return
		}
		if err := lab.Isolate(old); err != nil {
			faultErr <- err
			return
		}
		isolated := time.Now()
		var err error
		var epoch uint64
		next, epoch, err = findLeader(ctx, cl, stream, st.Leader)
		if err != nil {
			faultErr <- err
			return
		}
		t.Logf("%s cut off; %s leads under epoch %d after %v", st.Leader, next, epoch, time.Since(isolated).Round(time.Millisecond))
		// An append sent to the cut-off leader itself must not be
		// acknowledged: it cannot reach a quorum of copies. It is
		// answered Unavailable within about a lease (loopback: 1 s) of
		// rdma silence plus as much of quorum wait.
		oc, err := client.Dial(mustNode(cl, old).ClientAddr, client.Options{MaxAttempts: 1, Timeout: 10 * time.Second})
		if err != nil {
			faultErr <- err
			return
		}
		actx, acancel := context.WithTimeout(ctx, 10*time.Second)
		_, stale = oc.API().Append(actx, &api.AppendRequest{Stream: stream, Data: []byte("stale")})
		acancel()
		oc.Close()
		select {
		case <-heal:
		case <-ctx.Done():
			faultErr <- ctx.Err()
			return
		}
		faultErr <- lab.Heal()
	}()
	acked := load(t, ctx, seeds, stream, 0, clients, each, window, progress)
	if err := <-faultErr; err != nil {
		t.Fatal(err)
	}
	if t.Failed() {
		return
	}
	if stale == nil {
		t.Error("the cut-off leader acknowledged an append")
	} else if status.Code(stale) != codes.Unavailable {
		t.Errorf("append at the cut-off leader: %v, want Unavailable", stale)
	} else {
		t.Logf("append at the cut-off leader: %v", stale)
	}
	// Healed, the old leader names its successor.
	oc := dial(t, mustNode(cl, old).ClientAddr, client.Options{})
	var named string
	if !waitFor(ctx, 20*time.Second, func() bool {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		s, err := oc.Status(sctx, stream)
		if err == nil {
			named = s.Leader
		}
		return err == nil && s.Leader != st.Leader
	}) {
		t.Fatalf("healed, %s still names %q as the leader", st.Leader, named)
	}
	final, _ := leaderOf(t, ctx, cl, stream, "")
	li := indexOf(t, cl, final)
	checkHistory(t, ctx, cl, li, stream, acked, clients, 2)
	t.Logf("%d acknowledged; %s led after the cut, %s at the end; copies identical", len(acked), next, final)
}

// TestFailoverFollowerPartitioned: a follower of a stream with three
// replicas (quorum) is cut off from the other nodes under load: the
// leader keeps acknowledging with the other copy, and after the heal the
// cut-off copy catches up. Nothing acknowledged is lost or doubled, and
// every copy ends identical to the leader's.
func TestFailoverFollowerPartitioned(t *testing.T) {
	cl, lab, ctx := startLabCluster(t, 3, 90*time.Second)
	if cl == nil {
		return
	}
	const stream = "cutcopy"
	admin := dial(t, cl.ClientAddrs()[0], client.Options{})
	st, err := admin.Create(ctx, stream, client.CreateOptions{Replicas: 3, Acks: api.AckPolicy_ACK_POLICY_QUORUM})
	if err != nil {
		t.Fatal(err)
	}
	victim := (indexOf(t, cl, st.Leader) + 1) % 3
	lc := dial(t, mustNode(cl, indexOf(t, cl, st.Leader)).ClientAddr, client.Options{})
	seeds := strings.Join(cl.ClientAddrs(), ",")
	const clients, each, window = 2, 3000, 8
	var mu sync.Mutex
	n := 0
	cut, heal := make(chan struct{}), make(chan struct{})
	progress := func() {
		mu.Lock()
		n++
		switch n {
		case clients * each / 4:
			close(cut)
		case clients * each * 3 / 4:
			close(heal)
		}
		mu.Unlock()
	}
	faultErr := make(chan error, 1)
	go func() {
		var cutAt time.Time
		for _, step := range []struct {
			at <-chan struct{}
			do func() error
		}{{cut, func() error { cutAt = time.Now(); return lab.Isolate(victim) }}, {heal, func() error {
			// Cut for longer than a lease (1 s): the leader's rdma
			// connections to the copy are declared lost, and the
			// controller counts its node dead.
			time.Sleep(time.Until(cutAt.Add(3 * time.Second)))
			// The leader says so meanwhile.
			sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			s, err := lc.Status(sctx, stream)
			if err != nil {
				return fmt.Errorf("status during the cut: %w", err)
			}
			if !s.UnderReplicated {
				return fmt.Errorf("%s cut off for 3 s, and the leader's status says the stream is not under-replicated: %+v", mustNode(cl, victim).Name, s)
			}
			return lab.Heal()
		}}} {
			select {
			case <-step.at:
			case <-ctx.Done():
				faultErr <- ctx.Err()
				return
			}
			if err := step.do(); err != nil {
				faultErr <- err
				return
			}
		}
		faultErr <- nil
	}()
	acked := load(t, ctx, seeds, stream, 0, clients, each, window, progress)
	if err := <-faultErr; err != nil {
		t.Fatal(err)
	}
	if t.Failed() {
		return
	}
	final, epoch := leaderOf(t, ctx, cl, stream, "")
	li := indexOf(t, cl, final)
	checkHistory(t, ctx, cl, li, stream, acked, clients, 2)
	t.Logf("%d acknowledged with %s cut off for 3 s; %s leads (epoch %d); copies identical", len(acked), mustNode(cl, victim).Name, final, epoch)
}
