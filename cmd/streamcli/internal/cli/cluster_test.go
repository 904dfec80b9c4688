package cli

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/rpstream/rpstream/api"
)

// leaderless is a node of a catalog that knows no controller: two of its
// three voters are down.
type leaderless struct {
	api.UnimplementedStreamsServer
}

func (leaderless) ClusterStatus(ctx context.Context, req *api.ClusterStatusRequest) (*api.ClusterStatusResponse, error) {
	return &api.ClusterStatusResponse{
		Node: "n1", Registered: true, Term: 7, Commit: 40, Applied: 40, RaftState: "pre-candidate",
		Voters: []string{"n1", "n2", "n3"},
		Nodes: []*api.CatalogNode{
			{Name: "n1", Incarnation: "00000000000000a1", Role: api.Role_ROLE_NODE, State: api.MemberState_MEMBER_STATE_ALIVE, Voter: true, ClientAddr: "127.0.0.1:7420"},
			{Name: "n2", Incarnation: "00000000000000a2", Role: api.Role_ROLE_NODE, State: api.MemberState_MEMBER_STATE_DEAD, Voter: true, ClientAddr: "127.0.0.1:7430"},
			{Name: "n3", Incarnation: "00000000000000a3", Role: api.Role_ROLE_NODE, State: api.MemberState_MEMBER_STATE_SUSPECT, Voter: true},
			{Name: "b1", Incarnation: "00000000000000b1", Role: api.Role_ROLE_BACKUP, State: api.MemberState_MEMBER_STATE_ALIVE, ClientAddr: "127.0.0.1:7440"},
		},
	}, nil
}

// serveLeaderless serves a leaderless node on a loopback port for the
// test's duration.
func serveLeaderless(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	api.RegisterStreamsServer(srv, leaderless{})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-served; err != nil {
			t.Error(err)
		}
	})
	return lis.Addr().String()
}

// TestClusterNoController: a node without a controller is shown as it
// sees itself, in text and in JSON, and cluster exits 1 saying why.
func TestClusterNoController(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	addr := serveLeaderless(t)
	const why = "streamcli cluster: no controller: the catalog has no Raft leader as node n1 sees it (too few voters up, or an election under way; voters: n1, n2, n3)\n"

	code, out, errs := streamcli(ctx, "", nil, "--node", addr, "cluster")
	want := `node        n1
controller  -
term        7
raft state  pre-candidate
commit      40
applied     40
voters      n1, n2, n3
followers   -
streams     0
scrub       0 copies and led streams read through (0 bytes), 0 damaged entries found, 0 repaired, 0 beyond repair

NAME  ROLE    STATE    VOTER  INCARNATION       ADDRESS
n1    node    alive    yes    00000000000000a1  127.0.0.1:7420
n2    node    dead     yes    00000000000000a2  127.0.0.1:7430
n3    node    suspect  yes    00000000000000a3  -
b1    backup  alive    -      00000000000000b1  127.0.0.1:7440
`
	if code != 1 || out != want || errs != why {
		t.Fatalf("cluster without a controller: exit %d\nstdout:\n%s\nstderr: %s\nwant exit 1, stdout:\n%s\nstderr: %s", code, out, errs, want, why)
	}

	code, out, errs = streamcli(ctx, "", nil, "--node", addr, "cluster", "--output", "json")
	if code != 1 || errs != why {
		t.Fatalf("cluster --output json without a controller: exit %d, stderr %q", code, errs)
	}
	var st map[string]any
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("cluster --output json printed %q: %v", out, err)
	}
	if st["controller"] != "" || st["raft_state"] != "pre-candidate" || st["term"] != 7.0 || len(st["nodes"].([]any)) != 4 {
		t.Fatalf("cluster --output json: %s", out)
	}
	if fl, ok := st["followers"].([]any); !ok || len(fl) != 0 {
		t.Fatalf("followers is %v, want []: %s", st["followers"], out)
	}
	b1 := st["nodes"].([]any)[3].(map[string]any)
	if b1["name"] != "b1" || b1["role"] != "backup" || b1["state"] != "alive" || b1["voter"] != false || b1["follower"] != false || b1["client_addr"] != "127.0.0.1:7440" {
		t.Fatalf("cluster --output json, node b1: %v", b1)
	}
}

// TestClusterAlone: a node without a catalog has no controller group to
// show or change.
func TestClusterAlone(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	addr := startNode(t)
	code, out, errs := streamcli(ctx, "", nil, "--node", addr, "cluster")
	if code != 1 || out != "" || !strings.HasPrefix(errs, "streamcli cluster: node "+addr+": ") || !strings.Contains(errs, "without a catalog") {
		t.Fatalf("cluster of a node alone: exit %d\nstdout: %s\nstderr: %s", code, out, errs)
	}
	code, _, errs = streamcli(ctx, "", nil, "--node", addr, "cluster", "add-voter", "n2")
	if code != 1 || !strings.HasPrefix(errs, "streamcli cluster add-voter: cannot promote n2 to a controller voter: ") {
		t.Fatalf("add-voter on a node alone: exit %d, stderr %s", code, errs)
	}
	code, _, errs = streamcli(ctx, "", nil, "--node", "127.0.0.1:1", "cluster", "remove-voter", "n2")
	if code != 1 || errs != "streamcli cluster remove-voter: no rpstream node at 127.0.0.1:1: connection refused (nothing listens on that port)\n" {
		t.Fatalf("remove-voter on no node: exit %d, stderr %s", code, errs)
	}
}

// TestHealthNoController: health of a node that knows no controller
// exits 4 and names what is down; the streams are not asked.
func TestHealthNoController(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	addr := serveLeaderless(t)
	code, out, errs := streamcli(ctx, "", nil, "--node", addr, "health")
	want := `healthy     no (no-controller)
controller  - (none)
voters      n1, n2, n3 (1 of 3 alive)
nodes       4
nodes down  n2, n3
streams     not asked (no controller)
`
	if code != 4 || out != want || errs != "streamcli health: unhealthy: no controller: 1 of 3 voters alive as node n1 sees it, 2 node(s) down\n" {
		t.Fatalf("health without a controller: exit %d\nstdout:\n%s\nstderr: %s", code, out, errs)
	}
	code, out, _ = streamcli(ctx, "", nil, "--node", addr, "health", "--output", "json")
	var h map[string]any
	if code != 4 || json.Unmarshal([]byte(out), &h) != nil || h["status"] != "no-controller" || h["healthy"] != false || h["voters_alive"] != 1.0 {
		t.Fatalf("health --output json without a controller: exit %d, %s", code, out)
	}
}
