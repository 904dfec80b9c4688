package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rpstream/rpstream/acl"
	"github.com/rpstream/rpstream/internal/proccluster"
	"github.com/rpstream/rpstream/node"
	"github.com/rpstream/rpstream/pki"
)

// TestNodeCommandsProcess runs the built streamcli against a real node in
// network mode: commands that do not watch their context must still have
// a live one for their calls (main once cancelled it before running them).
func TestNodeCommandsProcess(t *testing.T) {
	addr := serveNode(t, node.DefaultConfig(t.TempDir()))

	ok(t, "", "--node", addr, "create", "s1", "--replicas", "3", "--acks", "quorum")
	if got := positions(t, ok(t, "", "--node", addr, "append", "s1", "a", "b")); len(got) != 2 || got[0] != 0 || got[1] != 1 {
		t.Fatalf("append printed positions %v, want [0 1]", got)
	}
	if out := ok(t, "", "--node", addr, "tail", "s1"); out != "a\nb\n" {
		t.Fatalf("tail printed %q, want \"a\\nb\\n\"", out)
	}
	if out := ok(t, "", "--node", addr, "ls"); !strings.Contains(out, "s1") {
		t.Fatalf("ls does not list s1:\n%s", out)
	}
	// A node without a catalog keeps one copy of the three asked for:
	// status prints it and exits 3, under-replicated.
	fails(t, 3, "", []string{"--node", addr, "status", "s1"}, `streamcli status: stream "s1" is under-replicated`)
	ok(t, "", "--node", addr, "members")
}

// startCluster starts nodes streamnode processes on loopback
// (internal/proccluster: n1 to nN, the first three vote in the catalog)
// and kills every one of them, by PID, when the test ends.
func startCluster(t *testing.T, nodes int) *proccluster.Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs streamnode processes")
	}
	bin, err := proccluster.BuildOnce()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := proccluster.Start(ctx, proccluster.Config{Binary: bin, Dir: t.TempDir(), Nodes: nodes})
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for i := range c.Len() {
		pids = append(pids, c.PID(i))
	}
	t.Cleanup(func() {
		c.Close()
		for _, pid := range pids {
			if syscall.Kill(pid, 0) == nil {
				t.Errorf("streamnode pid %d still runs after Close", pid)
			}
		}
	})
	return c
}

// clusterStatus is what a script reads of cluster --output json.
type clusterStatus struct {
	Node       string   `json:"node"`
	Registered bool     `json:"registered"`
	Controller string   `json:"controller"`
	Term       uint64   `json:"term"`
	Commit     uint64   `json:"commit"`
	Applied    uint64   `json:"applied"`
	RaftState  string   `json:"raft_state"`
	Voters     []string `json:"voters"`
	Followers  []string `json:"followers"`
	Streams    uint32   `json:"streams"`
	Nodes      []struct {
		Name        string `json:"name"`
		Incarnation string `json:"incarnation"`
		Role        string `json:"role"`
		State       string `json:"state"`
		Voter       bool   `json:"voter"`
		Follower    bool   `json:"follower"`
		ClientAddr  string `json:"client_addr"`
	} `json:"nodes"`
}

// clusterJSON runs cluster --output json against addr and parses it,
// checking that every field a script reads is there.
func clusterJSON(t *testing.T, addr string) clusterStatus {
	t.Helper()
	out := ok(t, "", "--node", addr, "cluster", "--output", "json")
	if strings.Count(out, "\n") != 1 {
		t.Fatalf("cluster --output json printed more than one line:\n%s", out)
	}
	var fields map[string]any
	if err := json.Unmarshal([]byte(out), &fields); err != nil {
		t.Fatalf("cluster --output json printed %q: %v", out, err)
	}
	for _, k := range []string{"node", "registered", "controller", "term", "commit", "applied", "raft_state", "voters", "followers", "streams", "nodes"} {
		if _, ok := fields[k]; !ok {
			t.Errorf("cluster --output json has no %q: %s", k, out)
		}
	}
	var st clusterStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("cluster --output json printed %q: %v", out, err)
	}
	return st
}

// waitCluster polls cluster --output json at addr until cond holds, for at
// most 10 s, and returns the status it holds of.
func waitCluster(t *testing.T, addr string, cond func(clusterStatus) bool) clusterStatus {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := run(t, "", "--node", addr, "cluster", "--output", "json")
		var st clusterStatus
		if json.Unmarshal([]byte(r.stdout), &st) == nil && cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster at %s did not come to the state awaited within 10 s; last: exit %d\n%s%s", addr, r.code, r.stdout, r.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestClusterProcess runs streamcli against one streamnode process, which
// votes alone in its catalog (no --join): cluster shows it as the
// controller and the only voter, in text and in JSON; a deleted stream is
// gone from ls; changing the voters fails clearly where it cannot be done.
func TestClusterProcess(t *testing.T) {
	c := startCluster(t, 1)
	addr := c.ClientAddrs()[0]

	out := ok(t, "", "--node", addr, "cluster")
	for _, want := range []string{"node        n1\n", "controller  n1\n", "raft state  leader\n", "voters      n1\n", "followers   -\n",
		"NAME  ROLE  STATE  VOTER  INCARNATION       ADDRESS\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("cluster does not print %q:\n%s", want, out)
		}
	}
	if row := strings.Fields(lines(out)[len(lines(out))-1]); len(row) != 6 || row[0] != "n1" || row[1] != "node" || row[2] != "alive" || row[3] != "yes" || len(row[4]) != 16 || row[5] != addr {
		t.Errorf("cluster's row of n1: %q", row)
	}

	st := clusterJSON(t, addr)
	if st.Node != "n1" || !st.Registered || st.Controller != "n1" || st.RaftState != "leader" || st.Term == 0 ||
		st.Applied == 0 || st.Applied > st.Commit || fmt.Sprint(st.Voters) != "[n1]" || st.Followers == nil || len(st.Followers) != 0 || st.Streams != 0 {
		t.Errorf("cluster --output json: %+v", st)
	}
	if len(st.Nodes) != 1 {
		t.Fatalf("cluster --output json lists %d nodes, want n1 alone: %+v", len(st.Nodes), st.Nodes)
	}
	if n := st.Nodes[0]; n.Name != "n1" || n.Role != "node" || n.State != "alive" || !n.Voter || n.Follower || n.ClientAddr != addr || len(n.Incarnation) != 16 {
		t.Errorf("cluster --output json, node n1: %+v", n)
	}

	// delete, then ls: the stream is gone, and the catalog counts it no more.
	ok(t, "", "--node", addr, "create", "s1")
	ok(t, "", "--node", addr, "create", "s2")
	ok(t, "", "--node", addr, "append", "s1", "a", "b")
	if st := clusterJSON(t, addr); st.Streams != 2 {
		t.Errorf("cluster counts %d streams after two creates", st.Streams)
	}
	if out := ok(t, "", "--node", addr, "delete", "s1"); out != `deleted stream "s1" on node `+addr+"\n" {
		t.Errorf("delete printed %q", out)
	}
	out = ok(t, "", "--node", addr, "ls")
	if ls := lines(out); len(ls) != 2 || !strings.HasPrefix(ls[1], "s2 ") {
		t.Errorf("ls after deleting s1 lists:\n%s", out)
	}
	fails(t, 1, "", []string{"--node", addr, "tail", "s1"}, `stream "s1" does not exist on node `+addr)
	fails(t, 1, "", []string{"--node", addr, "delete", "s1"}, `stream "s1" does not exist on node `+addr)
	if st := clusterJSON(t, addr); st.Streams != 1 {
		t.Errorf("cluster counts %d streams after a delete, want 1", st.Streams)
	}

	// A node the catalog does not know cannot vote; the only voter cannot
	// stop voting; the group is as it was.
	r := fails(t, 1, "", []string{"--node", addr, "cluster", "add-voter", "nosuch"},
		"streamcli cluster add-voter: cannot promote nosuch to a controller voter: nosuch ")
	if r.stdout != "" || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("add-voter of an unknown node printed %q, %q", r.stdout, r.stderr)
	}
	fails(t, 1, "", []string{"--node", addr, "cluster", "add-voter", "n1"}, "cannot promote n1 to a controller voter: ")
	fails(t, 1, "", []string{"--node", addr, "cluster", "remove-voter", "n1"}, "cannot demote n1: ")
	if st := clusterJSON(t, addr); st.Controller != "n1" || fmt.Sprint(st.Voters) != "[n1]" || len(st.Followers) != 0 {
		t.Errorf("the group after refused changes: %+v", st)
	}
}

// TestChangeVoterProcess demotes a voter of two streamnode processes and
// promotes it again: cluster shows it as a follower between.
func TestChangeVoterProcess(t *testing.T) {
	c := startCluster(t, 2)
	addr := c.ClientAddrs()[0]
	if st := clusterJSON(t, addr); fmt.Sprint(st.Voters) != "[n1 n2]" {
		t.Fatalf("voters %v, want [n1 n2]", st.Voters)
	}
	if out := ok(t, "", "--node", addr, "cluster", "remove-voter", "n2"); out != "demoted n2 to a follower of the catalog without a vote\n" {
		t.Errorf("remove-voter printed %q", out)
	}
	// If n2 was the controller it steps down, and n1 takes over once its
	// election timeout passes without word from n2.
	st := waitCluster(t, addr, func(st clusterStatus) bool { return st.Controller == "n1" })
	if fmt.Sprint(st.Voters) != "[n1]" || fmt.Sprint(st.Followers) != "[n2]" {
		t.Errorf("after remove-voter n2: %+v", st)
	}
	out := ok(t, "", "--node", addr, "cluster")
	if !strings.Contains(out, "followers   n2\n") || !regexp.MustCompile(`\nn2 +node +alive +no +`).MatchString(out) {
		t.Errorf("cluster after remove-voter n2:\n%s", out)
	}
	// Asked through the follower: it passes the change to the controller.
	if out := ok(t, "", "--node", c.ClientAddrs()[1], "cluster", "add-voter", "n2"); out != "promoted n2 to a controller voter\n" {
		t.Errorf("add-voter printed %q", out)
	}
	if st := clusterJSON(t, addr); fmt.Sprint(st.Voters) != "[n1 n2]" || len(st.Followers) != 0 {
		t.Errorf("after add-voter n2: %+v", st)
	}
}

// healthReport is what a script reads of health --output json.
type healthReport struct {
	Healthy         bool     `json:"healthy"`
	Status          string   `json:"status"`
	Controller      string   `json:"controller"`
	VotersAlive     int      `json:"voters_alive"`
	NodesDown       []string `json:"nodes_down"`
	Streams         int      `json:"streams"`
	UnderReplicated []string `json:"under_replicated"`
}

// waitHealth runs health --output json at addr until it exits with code
// and cond holds, for at most 20 s.
func waitHealth(t *testing.T, addr string, code int, cond func(healthReport) bool) healthReport {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := run(t, "", "--node", addr, "health", "--output", "json", "--timeout", "2s")
		var h healthReport
		if r.code == code && json.Unmarshal([]byte(r.stdout), &h) == nil && cond(h) {
			return h
		}
		if time.Now().After(deadline) {
			t.Fatalf("health at %s did not exit %d as awaited within 20 s; last: exit %d\n%s%s", addr, code, r.code, r.stdout, r.stderr)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestHealthProcess: health exits 0 on a whole cluster of three
// streamnode processes, 3 once a node is killed (its stream copies
// missing), 4 once a second voter is killed (no quorum, no controller).
func TestHealthProcess(t *testing.T) {
	c := startCluster(t, 3)
	addr := c.ClientAddrs()[0]
	ok(t, "", "--node", addr, "create", "s", "--replicas", "3")
	h := waitHealth(t, addr, 0, func(h healthReport) bool { return h.Healthy })
	if h.Status != "healthy" || h.Controller == "" || h.VotersAlive != 3 || h.Streams != 1 || len(h.NodesDown) != 0 {
		t.Errorf("health of a whole cluster: %+v", h)
	}
	if out := ok(t, "", "--node", addr, "health"); !strings.HasPrefix(out, "healthy           yes\n") {
		t.Errorf("health printed:\n%s", out)
	}

	if err := c.Kill(2); err != nil {
		t.Fatal(err)
	}
	h = waitHealth(t, addr, 3, func(h healthReport) bool { return fmt.Sprint(h.NodesDown) == "[n3]" })
	if h.Healthy || h.Status != "degraded" {
		t.Errorf("health with n3 killed: %+v", h)
	}
	r := run(t, "", "--node", addr, "health")
	if r.code != 3 || !strings.Contains(r.stderr, "streamcli health: unhealthy: 1 node(s) down") {
		t.Errorf("health with n3 killed: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	if err := c.Kill(1); err != nil {
		t.Fatal(err)
	}
	h = waitHealth(t, addr, 4, func(h healthReport) bool { return h.Status == "no-controller" })
	if h.Healthy || h.Controller != "" {
		t.Errorf("health with two voters killed: %+v", h)
	}
}

// TestTLSNodeProcess runs the built streamcli against a node serving TLS
// under an ACL: with the CA and a client certificate every command works
// (the probe of each --node address speaks TLS too: it once probed in
// plaintext and called the node not a node); without --tls-ca, or with
// another CA, the command fails at once saying why; with the CA but no
// credentials the node refuses it.
func TestTLSNodeProcess(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f, err := ca.WriteFiles(dir, pki.Request{Name: "n1", Node: true, Hosts: []string{"127.0.0.1"}, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.WriteFiles(dir, pki.Request{Name: "admin", Validity: time.Hour}); err != nil {
		t.Fatal(err)
	}
	otherDir := t.TempDir()
	other, err := pki.NewCA("another CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	of, err := other.WriteFiles(otherDir, pki.Request{Name: "x", Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := pki.Load(f)
	if err != nil {
		t.Fatal(err)
	}
	rules, err := acl.Parse([]byte(`{"grants": [{"identity": "admin", "streams": ["*"], "permissions": ["read", "append", "admin"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	cfg := node.DefaultConfig(t.TempDir())
	cfg.TLS = keys.ServerConfig()
	cfg.ACL = func() *acl.ACL { return rules }
	addr := serveNode(t, cfg)
	admin := []string{"--node", addr, "--tls-ca", f.CA,
		"--tls-cert", filepath.Join(dir, "admin.crt"), "--tls-key", filepath.Join(dir, "admin.key")}

	ok(t, "", append(admin, "create", "s1")...)
	if got := positions(t, ok(t, "", append(admin, "append", "s1", "a", "b")...)); len(got) != 2 || got[1] != 1 {
		t.Fatalf("append printed positions %v, want [0 1]", got)
	}
	if out := ok(t, "", append(admin, "tail", "s1")...); out != "a\nb\n" {
		t.Fatalf("tail printed %q", out)
	}
	ok(t, "", append(admin, "members")...)

	start := time.Now()
	fails(t, 1, "", []string{"--node", addr, "ls"}, "does not speak the rpstream protocol", "wants TLS")
	fails(t, 1, "", []string{"--node", addr, "--tls-ca", of.CA, "ls"}, "TLS handshake with "+addr+" failed", "certificate")
	if took := time.Since(start); took > 4*time.Second {
		t.Fatalf("the refused commands took %v: they waited for --timeout instead of failing at once", took)
	}
	fails(t, 1, "", []string{"--node", addr, "--tls-ca", f.CA, "ls"}, "no credentials")
}

// serveNode serves a node of cfg on a free loopback port until the test
// ends (then shuts it down, bounded) and returns its address.
func serveNode(t *testing.T, cfg node.Config) string {
	t.Helper()
	srv, err := node.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		<-served
	})
	return lis.Addr().String()
}
