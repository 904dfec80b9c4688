package integration

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/client"
	"github.com/rpstream/rpstream/internal/proccluster"
)

// TestSharedConnectionFollowerHangs: the rdma connections of every
// stream one node replicates to another travel on one TCP connection.
// A node holding copies of many streams is stopped (SIGSTOP: alive to
// TCP, answering nothing) for longer than the rdma AckTimeout while every
// other stream is appended to under quorum: each goes on acknowledging
// with its other copy (the hung node's channels fail on their own, not
// the connection carrying the streams' other copies); once the node is
// continued, every stream's copies catch up and end byte-identical, and
// each stream holds exactly what was acknowledged, once, in each client's
// order.
func TestSharedConnectionFollowerHangs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cl := startFailureCluster(t, ctx, 3, false)
	const streams, hung = 24, 2 // n3 hangs
	type led struct {
		name   string
		leader int
	}
	var work []led
	for i := range streams {
		// Creates spread over the nodes, so that streams are led by
		// several of them and replicate both ways.
		admin := dial(t, cl.ClientAddrs()[i%3], client.Options{})
		name := fmt.Sprintf("shared-%02d", i)
		st, err := admin.Create(ctx, name, client.CreateOptions{Replicas: 3, Acks: api.AckPolicy_ACK_POLICY_QUORUM})
		if err != nil {
			t.Fatal(err)
		}
		if l := indexOf(t, cl, st.Leader); l != hung {
			work = append(work, led{name, l})
		}
	}
	if len(work) < streams/3 {
		t.Fatalf("only %d of %d streams led off the node to hang", len(work), streams)
	}
	acked := make([]map[uint64]string, len(work))
	for k, w := range work { // every stream replicating, all copies connected
		acked[k] = load(t, ctx, mustNode(cl, w.leader).ClientAddr, w.name, 0, 1, 20, 4, nil)
	}
	cont := hang(t, cl, hung)
	// Rounds of appends to every stream, a new client id each round,
	// until the node has been hung for 3 s: three times the nodes' rdma
	// AckTimeout (1 s with the loopback timing), so that every hung
	// channel's watchdog fires meanwhile.
	hungAt := time.Now()
	rounds := 0
	var mu sync.Mutex
	for rounds < 200 && (time.Since(hungAt) < 3*time.Second || rounds == 0) {
		rounds++
		lctx, lcancel := context.WithTimeout(ctx, 20*time.Second)
		var wg sync.WaitGroup
		for k, w := range work {
			wg.Go(func() {
				got := loadPadded(t, lctx, mustNode(cl, w.leader).ClientAddr, w.name, rounds, 1, 40, 8, 512, nil)
				mu.Lock()
				defer mu.Unlock()
				for p, d := range got {
					acked[k][p] = d
				}
			})
		}
		wg.Wait()
		lcancel()
		if t.Failed() {
			t.Fatalf("appends in round %d with a node hung (SIGSTOP) %v: failed", rounds, time.Since(hungAt).Round(time.Millisecond))
		}
	}
	hungFor := time.Since(hungAt)
	cont()
	for k, w := range work {
		if want := 20 + 40*rounds; len(acked[k]) != want {
			t.Fatalf("%s: %d appends acknowledged, want %d", w.name, len(acked[k]), want)
		}
	}
	t.Logf("%d streams, %d rounds of appends while n%d was hung for %v", len(work), rounds, hung+1, hungFor.Round(time.Millisecond))
	// A stream whose leader's lease lapsed meanwhile (the machine is
	// loaded) has been taken over: check it where it is led now.
	admin := dial(t, cl.ClientAddrs()[0], client.Options{})
	for k, w := range work {
		st, err := admin.Status(ctx, w.name)
		if err != nil {
			t.Fatal(err)
		}
		if l := indexOf(t, cl, st.Leader); l != w.leader {
			t.Logf("%s: led by n%d now (was n%d)", w.name, l+1, w.leader+1)
			work[k].leader = l
		}
	}
	for k, w := range work {
		addr := mustNode(cl, w.leader).ClientAddr
		if dups := checkTail(t, ctx, addr, w.name, acked[k], rounds+1); dups != 0 {
			t.Errorf("%s: %d duplicates", w.name, dups)
		}
	}
	// Every copy caught up (compareCopies waits for its stream; the
	// others first here, since it stops the nodes), then byte-identical.
	for _, w := range work[1:] {
		c := dial(t, mustNode(cl, w.leader).ClientAddr, client.Options{})
		if !waitFor(ctx, 15*time.Second, func() bool {
			st, err := c.Status(ctx, w.name)
			if err != nil {
				return false
			}
			for _, r := range st.ReplicaStatus {
				if r.Persisted < st.Committed {
					return false
				}
			}
			return !st.UnderReplicated
		}) {
			t.Fatalf("%s: copies not caught up within 15 s of the node's return", w.name)
		}
	}
	if n := compareCopies(t, cl, work[0].leader, work[0].name, len(acked[0])); n != 2 {
		t.Errorf("%s: %d copies compared, want 2", work[0].name, n)
	}
	for k, w := range work[1:] {
		var copies []string
		for i := range cl.Len() {
			if p := proccluster.ReplicaFile(mustNode(cl, i).Data, w.name); i != w.leader && exists(p) {
				copies = append(copies, p)
			}
		}
		if len(copies) != 2 {
			t.Errorf("%s: %d copies, want 2", w.name, len(copies))
		}
		committed, err := proccluster.CompareReplicas(proccluster.LeaderFile(mustNode(cl, w.leader).Data, w.name), copies)
		if err != nil {
			t.Fatalf("%s: %v", w.name, err)
		}
		if committed < uint64(len(acked[k+1])) {
			t.Fatalf("%s: the leader's file has %d committed entries, %d were acknowledged", w.name, committed, len(acked[k+1]))
		}
	}
}
