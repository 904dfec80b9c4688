package node

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/admin"
	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/catalog/catalogpb"
	"github.com/rpstream/rpstream/catalog/controller"
	"github.com/rpstream/rpstream/client"
	"github.com/rpstream/rpstream/cluster"
	"github.com/rpstream/rpstream/local"
	"github.com/rpstream/rpstream/mover"
	"github.com/rpstream/rpstream/rdma"
	"github.com/rpstream/rpstream/rdma/tcp"
)

// startClusterNodes starts n Servers, each a member of one real
// memberlist cluster on loopback and of the catalog's Raft group (the
// first three voters), registered, and waits until each sees them all.
// Each serves copies for other leaders on a loopback peer address (rdma
// over the tcp provider); the last backups of them are backup targets.
func startClusterNodes(t *testing.T, n, backups int, opts ...func(*Config)) []*testNode {
	t.Helper()
	var nodes []*testNode
	var members []*cluster.Cluster
	var voters []string
	for i := range min(n, 3) {
		voters = append(voters, fmt.Sprintf("n%d", i+1))
	}
	for i := range n {
		name := fmt.Sprintf("n%d", i+1)
		dir := t.TempDir()
		cfg := DefaultConfig(dir)
		cfg.Name = name
		cfg.RegionSize = 64 << 10
		cfg.MaxStreamSize = 64 << 20
		cfg.Logger = testLogger(name)
		cfg.PeerAddr = "127.0.0.1:0"
		cfg.Provider = tcp.Provider{}
		cfg.RDMA = rdma.LoopbackConfig("node tests' cluster secret")
		cfg.Backup = i >= n-backups
		cfg.QuorumWait = 300 * time.Millisecond
		for _, o := range opts {
			o(&cfg)
		}
		// Appends in the cluster tests go through a local.Appender on
		// the cpu mover (the single-node tests copy directly).
		mcfg := mover.DefaultConfig()
		mcfg.Engine = mover.EngineCPU
		mv, err := mover.New(mcfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { mv.Close() })
		cfg.Mover = mv
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		tn := &testNode{addr: lis.Addr().String(), served: make(chan error, 1), reg: admin.NewRegistry()}
		cfg.Metrics = tn.reg
		ctl, transport := startCatalog(t, name, dir, voters, cfg.Backup, tn)
		cfg.Catalog, cfg.Control = ctl, transport.Service()
		srv, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		tn.srv = srv
		ccfg := cluster.LoopbackConfig(name)
		ccfg.ClientAddr = lis.Addr().String()
		ccfg.PeerAddr = srv.PeerAddr()
		if cfg.Backup {
			ccfg.Role = cluster.RoleBackup
		}
		ccfg.OnChange = srv.MemberChanged
		c, err := cluster.New(ccfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Shutdown() })
		tn.members.Store(c)
		if i > 0 {
			if _, err := c.Join(members[0].GossipAddr()); err != nil {
				t.Fatal(err)
			}
		}
		members = append(members, c)
		srv.SetCluster(c)
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
	// The group's first election and registrations: each attempt is
	// bounded by the catalog's request timeout (10 s); under the race
	// detector beside other packages' tests one did not do in 10 s, so
	// up to 30 s in all.
	for _, tn := range nodes {
		for start := time.Now(); ; {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := tn.ctl.Register(ctx)
			cancel()
			if err == nil {
				break
			}
			if !controller.IsNoController(err) || time.Since(start) > 30*time.Second {
				t.Fatalf("register %s: %v", tn.ctl.Name(), err)
			}
		}
	}
	return nodes
}

// testLogger discards, unless RPSTREAM_TEST_LOGS is set.
func testLogger(name string) *slog.Logger {
	if os.Getenv("RPSTREAM_TEST_LOGS") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", name)
}

// startCatalog starts node name's member of the catalog group (data in
// dir/catalog), reaching the others through tn's membership; it is
// stopped after tn's server.
func startCatalog(t *testing.T, name, dir string, voters []string, backup bool, tn *testNode) (*controller.Controller, *controller.GRPC) {
	t.Helper()
	inc, err := Incarnation(dir)
	if err != nil {
		t.Fatal(err)
	}
	listMembers := func() []cluster.Member {
		if c := tn.members.Load(); c != nil {
			return c.Members()
		}
		return nil
	}
	transport := controller.NewGRPC(name, []byte("node tests' cluster secret"), func(member string) (string, bool) {
		if member == name {
			return tn.addr, true
		}
		for _, m := range listMembers() {
			if m.Name == member && m.ClientAddr != "" {
				return m.ClientAddr, true
			}
		}
		return "", false
	})
	ccfg := controller.LoopbackConfig(name)
	ccfg.Incarnation = inc
	if backup {
		ccfg.Role = catalogpb.Role_ROLE_BACKUP
	}
	ccfg.Dir = filepath.Join(dir, "catalog")
	ccfg.Voters = voters
	ccfg.Transport = transport
	ccfg.Members = listMembers
	ccfg.Logger = testLogger(name)
	ctl, err := controller.Start(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	tn.ctl = ctl
	t.Cleanup(func() { ctl.Stop() })
	return ctl, transport
}

func TestLeaderHints(t *testing.T) {
	ctx := testCtx(t)
	nodes := startClusterNodes(t, 3, 0)
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

	// Members lists the three, the node asked marked as itself. Asked of
	// n3 itself: the Client asks whichever seed it uses now, and moves on
	// from n3 when n3 answers a call Unavailable (as it may while the
	// catalog's controller is re-elected on a loaded machine).
	mr, err := oc.API().Members(ctx, &api.MembersRequest{})
	if err != nil || len(mr.GetMembers()) != 3 {
		t.Fatalf("members at n3: %v, %v", mr, err)
	}
	for _, m := range mr.Members {
		if m.Self != (m.Name == "n3") || m.State != api.MemberState_MEMBER_STATE_ALIVE || m.ClientAddr == "" {
			t.Errorf("member %v", m)
		}
	}
	ms, err := oc.Members(ctx)
	if err != nil || len(ms) != 3 {
		t.Fatalf("members: %v, %v", ms, err)
	}
	if selves := slices.IndexFunc(ms, func(m *api.Member) bool { return m.Self }); selves < 0 ||
		slices.ContainsFunc(ms[selves+1:], func(m *api.Member) bool { return m.Self }) {
		t.Errorf("members through the Client: %v, want exactly one marked as the node asked", ms)
	}

	// A deleted stream's hint goes away.
	if err := oc.Delete(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	if _, err := oc.Append(ctx, "s", []byte("x")); status.Code(err) != codes.NotFound {
		t.Fatalf("append after delete: %v", err)
	}
}

// TestReplicatedStream: a stream created with three replicas on a cluster
// of three stream nodes and a backup target is written to the other two
// nodes and the backup; appends are answered once a quorum holds them; the
// copies hold the same entries; deleting the stream deletes the copies.
func TestReplicatedStream(t *testing.T) {
	ctx := testCtx(t)
	nodes := startClusterNodes(t, 4, 1)
	c, err := client.Dial(nodes[0].addr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// A backup target leads nothing; more replicas than stream nodes is
	// refused.
	bc, err := client.Dial(nodes[3].addr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	if _, err := bc.Create(ctx, "x", client.CreateOptions{Replicas: 1}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("create on a backup target: %v", err)
	}
	if _, err := c.Create(ctx, "x", client.CreateOptions{Replicas: 4}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("create with 4 replicas on 3 stream nodes: %v", err)
	}

	st, err := c.Create(ctx, "r", client.CreateOptions{Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	if st.Leader != "n1" || st.Replicas != 3 {
		t.Fatalf("created %v", st)
	}
	const n = 300
	var want [][]byte
	app := c.NewAppender(ctx, "r")
	var pend []*client.Pending
	for i := range n {
		p := []byte(fmt.Sprintf("entry %d %s", i, bytes.Repeat([]byte{'x'}, i%700)))
		want = append(want, p)
		pp, err := app.Append(p)
		if err != nil {
			t.Fatal(err)
		}
		pend = append(pend, pp)
	}
	for i, pp := range pend {
		if pos, err := pp.Wait(ctx); err != nil || pos != uint64(i) {
			t.Fatalf("append %d: %d, %v", i, pos, err)
		}
	}
	app.Close()

	// The quorum holds every entry: at least one of the two followers
	// reports all of them; all three copies do shortly after.
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err = c.Status(ctx, "r")
		if err != nil {
			t.Fatal(err)
		}
		full := 0
		for _, r := range st.ReplicaStatus {
			if r.Persisted == n {
				full++
			}
		}
		if st.Committed != n {
			t.Fatalf("committed %d after every append was answered, want %d", st.Committed, n)
		}
		if full == 3 && !st.UnderReplicated {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("copies did not catch up: %v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	names := map[string]bool{}
	for _, r := range st.ReplicaStatus {
		names[r.Member] = true
		if r.Backup != (r.Member == "n4") {
			t.Errorf("replica %v: backup flag", r)
		}
	}
	if !names["n2"] || !names["n3"] || !names["n4"] {
		t.Fatalf("replicas %v, want n2, n3 and the backup n4", st.ReplicaStatus)
	}

	// Each copy's file, read as a stream, holds the same entries, each in
	// its envelope naming the Appender's producer and sequence number.
	for _, tn := range nodes[1:] {
		path := filepath.Join(tn.srv.cfg.Dir, replicasDir, "r", streamFile)
		rs, err := local.OpenReader(path, local.Options{})
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		it := rs.Iterator(0)
		i := 0
		for it.Next() {
			// The Appender's batches are batch records (and slots).
			d, err := decodeStored(it.Entry().Data)
			if err != nil {
				t.Fatalf("%s: entry %d: %v", path, it.Entry().Index, err)
			}
			if d.kind == envMarker || d.kind == envBatchSlot {
				continue
			}
			d.eachEntry(func(_ int, seq uint64, data []byte) error {
				if !d.producer || d.key != producerKey(c.ProducerID()) || i >= n || !bytes.Equal(data, want[i]) || d.time == 0 {
					t.Fatalf("%s: entry %d differs (producer %v %x, seq %d, time %d)", path, i, d.producer, d.key, seq, d.time)
				}
				i++
				return nil
			})
		}
		rs.Close()
		if it.Err() != nil || i != n {
			t.Fatalf("%s: %d entries, %v; want %d", path, i, it.Err(), n)
		}
	}

	// Reads from a node holding a copy are served by its copy, which
	// catches up with the commit point (its commit words are lazy).
	oc, err := client.Dial(nodes[2].addr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer oc.Close()
	for deadline := time.Now().Add(10 * time.Second); ; {
		ents, _, err := oc.Read(ctx, "r", 0, n)
		if err != nil {
			t.Fatalf("read via n3: %v", err)
		}
		if len(ents) == n && bytes.Equal(ents[n-1].Data, want[n-1]) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("read via n3: %d entries, want %d", len(ents), n)
		}
		time.Sleep(20 * time.Millisecond)
	}

	if err := oc.Delete(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	// Every holder removes its copy once its catalog shows the tombstone.
	for _, tn := range nodes[1:] {
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			_, err := os.Stat(filepath.Join(tn.srv.cfg.Dir, replicasDir, "r"))
			if os.IsNotExist(err) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("copy on %s 10 s after delete: %v", tn.srv.cfg.Name, err)
			}
		}
	}
}

// TestQuorumLost: with both followers of a quorum stream gone, an append
// fails with Unavailable after QuorumWait (the entry is kept: a retry with
// the same sequence number is the same entry), and the status says the
// stream is under-replicated.
func TestQuorumLost(t *testing.T) {
	ctx := testCtx(t)
	nodes := startClusterNodes(t, 3, 0)
	c, err := client.Dial(nodes[0].addr, client.Options{MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Create(ctx, "q", client.CreateOptions{Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	if pos, err := c.Append(ctx, "q", []byte("a")); err != nil || pos != 0 {
		t.Fatalf("append: %d, %v", pos, err)
	}
	nodes[1].stop(t)
	nodes[2].stop(t)
	req := &api.AppendRequest{Stream: "q", Data: []byte("b"), ProducerId: "p", Sequence: 1}
	if _, err := c.API().Append(ctx, req); status.Code(err) != codes.Unavailable {
		t.Fatalf("append without a quorum: %v, want Unavailable", err)
	}
	st, err := c.Status(ctx, "q")
	if err != nil || !st.UnderReplicated || st.Committed != 1 {
		t.Fatalf("status without a quorum: %v, %v", st, err)
	}
	r, err := c.API().Append(ctx, req)
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("retry without a quorum: %v, %v", r, err)
	}
	// The retry was not stored again: the leader holds "a" and one "b".
	if st, err := c.Status(ctx, "q"); err != nil || st.Persisted != 2 {
		t.Fatalf("after a retry: persisted %d, %v; want 2", st.GetPersisted(), err)
	}

	// AppendStream ends the call with the same Unavailable, saying why,
	// while the client's side is still open (it once only drained, and
	// the call waited for the client to close its side).
	call, err := c.API().AppendStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := call.Send(&api.AppendRequest{Stream: "q", Data: []byte("c"), ProducerId: "p", Sequence: 2}); err != nil {
		t.Fatal(err)
	}
	r2, err := call.Recv()
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "not on enough copies") {
		t.Fatalf("AppendStream without a quorum: %v, %v; want Unavailable saying why", r2, err)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Fatalf("AppendStream without a quorum answered after %v (QuorumWait 300ms)", d)
	}
}

// TestReadFromCopy: a follower holding a copy of a stream answers reads
// and tails itself, from its copy, with the leader's entries up to the
// commit point its copy knows, and catches up with every entry; a node
// holding no copy still sends the client to the leader, and so does
// StreamStatus.
func TestReadFromCopy(t *testing.T) {
	ctx := testCtx(t)
	nodes := startClusterNodes(t, 3, 0)
	lc, err := client.Dial(nodes[0].addr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	if _, err := lc.Create(ctx, "c", client.CreateOptions{Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := lc.Create(ctx, "solo", client.CreateOptions{Replicas: 1}); err != nil {
		t.Fatal(err)
	}
	var want [][]byte
	appendN := func(n int) {
		for range n {
			p := []byte(fmt.Sprintf("entry %d %s", len(want), bytes.Repeat([]byte{'y'}, len(want)%900)))
			if pos, err := lc.Append(ctx, "c", p); err != nil || pos != uint64(len(want)) {
				t.Fatalf("append %d: %d, %v", len(want), pos, err)
			}
			want = append(want, p)
		}
	}
	appendN(150)

	// Raw calls (no hint following) to a follower.
	oc, err := client.Dial(nodes[1].addr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer oc.Close()
	raw := oc.API()
	check := func(what string, ents []*api.Entry, from uint64) {
		t.Helper()
		for i, e := range ents {
			if e.Position != from+uint64(i) || e.Position >= uint64(len(want)) || !bytes.Equal(e.Data, want[e.Position]) {
				t.Fatalf("%s: entry %d (position %d) differs from what was appended", what, i, e.Position)
			}
		}
	}
	readAll := func(n int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			r, err := raw.Read(ctx, &api.ReadRequest{Stream: "c", From: 0, MaxEntries: 10000})
			if err != nil {
				t.Fatalf("read at the follower: %v (want entries from its copy, not a hint)", err)
			}
			check("read at the follower", r.Entries, 0)
			if r.Next != uint64(len(r.Entries)) || r.Committed < r.Next || r.Committed > uint64(len(want)) {
				t.Fatalf("read at the follower: %d entries, next %d, committed %d", len(r.Entries), r.Next, r.Committed)
			}
			if len(r.Entries) == n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the follower's copy shows %d entries after 10 s, want %d", len(r.Entries), n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	readAll(150)
	// From the middle, and beyond the end.
	r, err := raw.Read(ctx, &api.ReadRequest{Stream: "c", From: 100, MaxEntries: 20})
	if err != nil || len(r.Entries) != 20 || r.Next != 120 {
		t.Fatalf("read from 100: %v, %v", r, err)
	}
	check("read from 100", r.Entries, 100)
	if r, err := raw.Read(ctx, &api.ReadRequest{Stream: "c", From: 1000}); err != nil || len(r.Entries) != 0 || r.Next != 1000 {
		t.Fatalf("read beyond the end: %v, %v", r, err)
	}

	// A tail at the follower follows the copy as the leader appends.
	tctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	tc, err := raw.Tail(tctx, &api.TailRequest{Stream: "c", From: 0})
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	recv := func(n int) {
		t.Helper()
		for got < n {
			resp, err := tc.Recv()
			if err != nil {
				t.Fatalf("tail at the follower after %d entries: %v", got, err)
			}
			check("tail at the follower", resp.Entries, uint64(got))
			got += len(resp.Entries)
		}
		if got != n {
			t.Fatalf("tail: %d entries, want %d", got, n)
		}
	}
	recv(150)
	appendN(60)
	recv(210)
	readAll(210)
	cancel()

	// The other follower serves reads too.
	c3, err := client.Dial(nodes[2].addr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	if r, err := c3.API().Read(ctx, &api.ReadRequest{Stream: "c", From: 200}); err != nil || r.Committed > 210 {
		t.Fatalf("read at n3: %v, %v", r, err)
	} else {
		check("read at n3", r.Entries, 200)
	}

	// A damaged entry before the copy's commit point is DataLoss, not a
	// silent stop: flip a payload byte of entry 0 in n3's copy.
	f, err := os.OpenFile(filepath.Join(nodes[2].srv.cfg.Dir, replicasDir, "c", streamFile), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	at := int64(local.SuperblockSize + local.RegionHeaderSize + local.EntryHeaderSize)
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, at); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, at); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := c3.API().Read(ctx, &api.ReadRequest{Stream: "c", From: 0}); status.Code(err) != codes.DataLoss {
		t.Fatalf("read of a damaged copy: %v, want DataLoss", err)
	}

	// No copy of "solo" here: a hint. StreamStatus stays a hint.
	for _, call := range []func() error{
		func() error { _, err := raw.Read(ctx, &api.ReadRequest{Stream: "solo"}); return err },
		func() error { _, err := raw.StreamStatus(ctx, &api.StreamStatusRequest{Stream: "c"}); return err },
	} {
		err := call()
		st, _ := status.FromError(err)
		hinted := false
		for _, d := range st.Details() {
			if nl, ok := d.(*api.NotLeader); ok && nl.Leader == "n1" {
				hinted = true
			}
		}
		if st.Code() != codes.FailedPrecondition || !hinted {
			t.Fatalf("%v, want a hint to n1", err)
		}
	}

	// A tail of a copy ends when the stream (and so the copy) is deleted.
	tctx, cancel = context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	tc, err = raw.Tail(tctx, &api.TailRequest{Stream: "c", From: 200})
	if err != nil {
		t.Fatal(err)
	}
	got = 200
	recv(210) // the tail is being served by n2 now
	if err := lc.Delete(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if resp, err := tc.Recv(); status.Code(err) != codes.NotFound {
		t.Fatalf("tail of a deleted copy: %v, %v; want NotFound", resp, err)
	}
}

// TestIdempotenceSurvivesRestart: a retry of an append stored before the
// node restarted (a crash included: the state is rebuilt from the
// entries' envelopes) is answered with the original position, not stored
// again; numbers beyond what was stored are stored; reads see the data
// without envelopes.
func TestIdempotenceSurvivesRestart(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	n := startNode(t, dir)
	if _, err := n.c.CreateStream(ctx, &api.CreateStreamRequest{Stream: "s"}); err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		req := &api.AppendRequest{Stream: "s", Data: []byte(fmt.Sprintf("p%d", i)), ProducerId: "prod", Sequence: uint64(i + 1)}
		if r, err := n.c.Append(ctx, req); err != nil || r.Position != uint64(i) {
			t.Fatalf("append %d: %v, %v", i, r, err)
		}
	}
	if _, err := n.c.Append(ctx, &api.AppendRequest{Stream: "s", Data: []byte("anonymous")}); err != nil {
		t.Fatal(err)
	}
	n.stop(t)

	n = startNode(t, dir)
	// The last IdempotenceWindow (64) numbers are remembered: a retry of
	// one is the same entry.
	for _, seq := range []uint64{200, 170, 137} {
		r, err := n.c.Append(ctx, &api.AppendRequest{Stream: "s", Data: []byte("again"), ProducerId: "prod", Sequence: seq})
		if err != nil || !r.Duplicate || r.Position != seq-1 {
			t.Fatalf("retry of %d after a restart: %v, %v; want a duplicate at %d", seq, r, err, seq-1)
		}
	}
	// An older one may have been stored: refused, not stored twice.
	if _, err := n.c.Append(ctx, &api.AppendRequest{Stream: "s", Data: []byte("old"), ProducerId: "prod", Sequence: 5}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("retry of 5 after a restart: %v, want FailedPrecondition", err)
	}
	r, err := n.c.Append(ctx, &api.AppendRequest{Stream: "s", Data: []byte("p200"), ProducerId: "prod", Sequence: 201})
	if err != nil || r.Duplicate || r.Position != 201 {
		t.Fatalf("a new number after a restart: %v, %v", r, err)
	}
	rr, err := n.c.Read(ctx, &api.ReadRequest{Stream: "s", From: 0, MaxEntries: 1000})
	if err != nil || len(rr.Entries) != 202 {
		t.Fatalf("read: %d entries, %v", len(rr.GetEntries()), err)
	}
	for i, e := range rr.Entries {
		want := fmt.Sprintf("p%d", i)
		if i == 200 {
			want = "anonymous"
		} else if i == 201 {
			want = "p200"
		}
		if string(e.Data) != want {
			t.Fatalf("entry %d: %q, want %q", i, e.Data, want)
		}
	}
}

// TestStreamWithoutEnvelopes: a stream made before envelopes (meta.json
// without "envelope") is read and appended to with bare data.
func TestStreamWithoutEnvelopes(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	n := startNode(t, dir)
	if _, err := n.c.CreateStream(ctx, &api.CreateStreamRequest{Stream: "old"}); err != nil {
		t.Fatal(err)
	}
	n.stop(t)
	st := &store{dir: filepath.Join(dir, "streams"), ids: map[string]uint64{}}
	m, err := st.readMeta("old")
	if err != nil {
		t.Fatal(err)
	}
	m.Envelope = false
	if err := st.writeMeta("old", m); err != nil {
		t.Fatal(err)
	}
	n = startNode(t, dir)
	if _, err := n.c.Append(ctx, &api.AppendRequest{Stream: "old", Data: []byte("bare"), ProducerId: "x", Sequence: 1}); err != nil {
		t.Fatal(err)
	}
	n.stop(t)
	ls, err := local.OpenReader(filepath.Join(dir, "streams", "old", streamFile), local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	it := ls.Iterator(0)
	if !it.Next() || string(it.Entry().Data) != "bare" {
		t.Fatalf("a stream without envelopes holds %q, %v", it.Entry().Data, it.Err())
	}
}
