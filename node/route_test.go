package node

import (
	"fmt"
	"log/slog"
	"net"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/client"
	"github.com/rpstream/rpstream/cluster"
)

// startClusterNodes starts n Servers, each a member of one real
// memberlist cluster on loopback, and waits until each sees them all.
func startClusterNodes(t *testing.T, n int) []*testNode {
	t.Helper()
	var nodes []*testNode
	var members []*cluster.Cluster
	for i := range n {
		name := fmt.Sprintf("n%d", i+1)
		cfg := DefaultConfig(t.TempDir())
		cfg.Name = name
		cfg.RegionSize = 64 << 10
		cfg.MaxStreamSize = 64 << 20
		cfg.Logger = slog.New(slog.DiscardHandler)
		srv, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ccfg := cluster.LoopbackConfig(name)
		ccfg.ClientAddr = lis.Addr().String()
		c, err := cluster.New(ccfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Shutdown() })
		if i > 0 {
			if _, err := c.Join(members[0].GossipAddr()); err != nil {
				t.Fatal(err)
			}
		}
		members = append(members, c)
		srv.SetCluster(c)
		tn := &testNode{srv: srv, addr: lis.Addr().String(), served: make(chan error, 1)}
		go func() { tn.served <- srv.Serve(lis) }()
		t.Cleanup(func() { tn.stop(t) })
		nodes = append(nodes, tn)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, c := range members {
		for len(c.Members()) < n {
			if time.Now().After(deadline) {
				t.Fatalf("%s sees %d members, want %d", c.Name(), len(c.Members()), n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nodes
}

func TestLeaderHints(t *testing.T) {
	ctx := testCtx(t)
	nodes := startClusterNodes(t, 3)
	leader, other := nodes[1], nodes[2]

	lc, err := client.Dial(leader.addr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	if _, err := lc.Create(ctx, "s", client.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// A raw call to a node that does not lead the stream gets a hint.
	oc, err := client.Dial(other.addr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer oc.Close()
	_, err = oc.API().Append(ctx, &api.AppendRequest{Stream: "s", Data: []byte("x")})
	st, _ := status.FromError(err)
	if st.Code() != codes.FailedPrecondition {
		t.Fatalf("append at a non-leader: %v, want FailedPrecondition", err)
	}
	var hint *api.NotLeader
	for _, d := range st.Details() {
		if nl, ok := d.(*api.NotLeader); ok {
			hint = nl
		}
	}
	if hint == nil || hint.Leader != "n2" || hint.LeaderAddr != leader.addr || hint.Epoch != 1 {
		t.Fatalf("hint %v, want n2 at %s epoch 1", hint, leader.addr)
	}
	// Nothing was stored by the refused call.
	if s, err := lc.Status(ctx, "s"); err != nil || s.Committed != 0 {
		t.Fatalf("status after a refused append: %v, %v", s, err)
	}

	// The client follows the hint, for unary appends, pipelined appends,
	// reads and tails.
	for i := range 3 {
		if pos, err := oc.Append(ctx, "s", []byte{byte(i)}); err != nil || pos != uint64(i) {
			t.Fatalf("append %d via a non-leader: %d, %v", i, pos, err)
		}
	}
	if oc.Leader("s") != leader.addr {
		t.Fatalf("client remembers leader %q, want %s", oc.Leader("s"), leader.addr)
	}
	pc, err := client.Dial(nodes[0].addr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	app := pc.NewAppender(ctx, "s")
	p, err := app.Append([]byte{3})
	if err != nil {
		t.Fatal(err)
	}
	if pos, err := p.Wait(ctx); err != nil || pos != 3 {
		t.Fatalf("pipelined append via a non-leader: %d, %v", pos, err)
	}
	app.Close()
	ents, next, err := pc.Read(ctx, "s", 0, 0)
	if err != nil || len(ents) != 4 || next != 4 {
		t.Fatalf("read via a non-leader: %d entries, next %d, %v", len(ents), next, err)
	}
	n := 0
	for e, err := range oc.Tail(ctx, "s", 0) {
		if err != nil {
			t.Fatal(err)
		}
		if e.Position != uint64(n) {
			t.Fatalf("tail: position %d, want %d", e.Position, n)
		}
		if n++; n == 4 {
			break
		}
	}

	// Every node lists the stream; an unknown stream is NotFound everywhere.
	for _, tn := range nodes {
		c, err := client.Dial(tn.addr, client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		names, err := c.List(ctx)
		c.Close()
		if err != nil || !slices.Equal(names, []string{"s"}) {
			t.Fatalf("list at %s: %v, %v", tn.addr, names, err)
		}
	}
	if _, err := oc.Append(ctx, "nope", []byte("x")); status.Code(err) != codes.NotFound {
		t.Fatalf("append to an unknown stream: %v", err)
	}

	// Members lists the three.
	ms, err := oc.Members(ctx)
	if err != nil || len(ms) != 3 {
		t.Fatalf("members: %v, %v", ms, err)
	}
	for _, m := range ms {
		if m.Self != (m.Name == "n3") || m.State != api.MemberState_MEMBER_STATE_ALIVE || m.ClientAddr == "" {
			t.Errorf("member %v", m)
		}
	}

	// A deleted stream's hint goes away.
	if err := oc.Delete(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	if _, err := oc.Append(ctx, "s", []byte("x")); status.Code(err) != codes.NotFound {
		t.Fatalf("append after delete: %v", err)
	}
}
