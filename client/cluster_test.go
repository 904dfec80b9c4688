package client_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/client"
)

// controllerFake answers ClusterStatus and ChangeVoter as a node of a
// catalog would, and records what it was asked.
type controllerFake struct {
	api.UnimplementedStreamsServer
	mu sync.Mutex
	// statusFailures is how many ClusterStatus calls fail with
	// Unavailable before one is answered.
	statusFailures int
	statusCalls    int
	// voterErr is ChangeVoter's answer.
	voterErr error
	changes  []*api.ChangeVoterRequest
}

var fakeStatus = &api.ClusterStatusResponse{
	Node: "n1", Registered: true, Controller: "n1", Term: 3, Commit: 9, Applied: 9, RaftState: "leader",
	Voters: []string{"n1"}, Followers: []string{"n2"}, Streams: 2,
	Nodes: []*api.CatalogNode{
		{Name: "n1", Incarnation: "00000000000000aa", Role: api.Role_ROLE_NODE, State: api.MemberState_MEMBER_STATE_ALIVE, Voter: true, ClientAddr: "127.0.0.1:1"},
		{Name: "n2", Incarnation: "00000000000000bb", Role: api.Role_ROLE_NODE, State: api.MemberState_MEMBER_STATE_ALIVE, Follower: true, ClientAddr: "127.0.0.1:2"},
	},
}

func (f *controllerFake) ClusterStatus(ctx context.Context, req *api.ClusterStatusRequest) (*api.ClusterStatusResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.statusCalls++
	if f.statusCalls <= f.statusFailures {
		return nil, status.Error(codes.Unavailable, "test: node restarting")
	}
	return fakeStatus, nil
}

func (f *controllerFake) ChangeVoter(ctx context.Context, req *api.ChangeVoterRequest) (*api.ChangeVoterResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.changes = append(f.changes, proto.Clone(req).(*api.ChangeVoterRequest))
	if f.voterErr != nil {
		return nil, f.voterErr
	}
	return &api.ChangeVoterResponse{}, nil
}

func (f *controllerFake) setVoterErr(err error) {
	f.mu.Lock()
	f.voterErr = err
	f.mu.Unlock()
}

// serveFake serves f on a loopback port for the test's duration.
func serveFake(t *testing.T, f *controllerFake) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	api.RegisterStreamsServer(srv, f)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return lis.Addr().String()
}

// TestClusterStatus: the answer is the node's, retried while the node is
// Unavailable.
func TestClusterStatus(t *testing.T) {
	ctx := testCtx(t)
	f := &controllerFake{statusFailures: 2}
	c := dial(t, serveFake(t, f), client.Options{Backoff: time.Millisecond})
	st, err := c.ClusterStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(st, fakeStatus) {
		t.Fatalf("ClusterStatus answered %v, want %v", st, fakeStatus)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.statusCalls != 3 {
		t.Fatalf("%d calls, want 3 (two Unavailable, retried)", f.statusCalls)
	}
}

// TestChangeVoter: AddVoter and RemoveVoter send the node's name and the
// direction, pass the node's error through as a status, and are not
// retried when Unavailable.
func TestChangeVoter(t *testing.T) {
	ctx := testCtx(t)
	f := &controllerFake{}
	c := dial(t, serveFake(t, f), client.Options{Backoff: time.Millisecond})
	if err := c.AddVoter(ctx, "n2"); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveVoter(ctx, "n3"); err != nil {
		t.Fatal(err)
	}
	if err := c.AddVoter(ctx, ""); err == nil {
		t.Fatal("AddVoter of an empty name: no error")
	}
	f.setVoterErr(status.Error(codes.FailedPrecondition, "controller: n9 is not a follower of the catalog"))
	if err := c.AddVoter(ctx, "n9"); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("AddVoter of an unknown node: %v, want FailedPrecondition", err)
	}
	f.setVoterErr(status.Error(codes.Unavailable, "controller: no controller reachable"))
	if err := c.RemoveVoter(ctx, "n1"); status.Code(err) != codes.Unavailable {
		t.Fatalf("RemoveVoter without a controller: %v, want Unavailable", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	want := []*api.ChangeVoterRequest{{Node: "n2"}, {Node: "n3", Remove: true}, {Node: "n9"}, {Node: "n1", Remove: true}}
	if len(f.changes) != len(want) {
		t.Fatalf("the node was asked %v, want %v", f.changes, want)
	}
	for i := range want {
		if !proto.Equal(f.changes[i], want[i]) {
			t.Fatalf("change %d: %v, want %v", i, f.changes[i], want[i])
		}
	}
}

// TestClusterStatusAlone: a node without a catalog says so.
func TestClusterStatusAlone(t *testing.T) {
	ctx := testCtx(t)
	_, addr := startNode(t, t.TempDir(), "127.0.0.1:0")
	c := dial(t, addr, client.Options{})
	if _, err := c.ClusterStatus(ctx); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("ClusterStatus of a node running alone: %v, want FailedPrecondition", err)
	}
	if err := c.AddVoter(ctx, "n2"); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("AddVoter on a node running alone: %v, want FailedPrecondition", err)
	}
}
