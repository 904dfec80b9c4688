package controller

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"

	pb "github.com/rpstream/rpstream/catalog/catalogpb"
)

// countingSink counts the Raft messages delivered to it.
type countingSink struct{ received atomic.Int64 }

func (s *countingSink) NameOf(uint64) (string, bool) { return "peer", true }
func (s *countingSink) Receive(_ context.Context, _ string, msgs []*raftpb.Message) error {
	s.received.Add(int64(len(msgs)))
	return nil
}
func (s *countingSink) ReportUnreachable(uint64)    {}
func (s *countingSink) ReportSnapshot(uint64, bool) {}
func (s *countingSink) Handle(context.Context, *pb.ControlRequest) (*pb.ControlResponse, error) {
	return nil, errors.New("countingSink: Handle")
}

// TestGRPCReconnectsSoon: a member that was down long (its address
// refusing connections while the leader kept sending to it) is reached
// again within about a second of coming back on the same address. gRPC's
// default reconnection backoff grows to two minutes: a restarted
// member would hear nothing from the leader (no entries, no answers to
// its read barriers) for as long as the leader's connection to it
// waited to try again.
func TestGRPCReconnectsSoon(t *testing.T) {
	if testing.Short() {
		t.Skip("waits 20 s of a member being down")
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // down: connections to addr are refused
	tr := NewGRPC("self", testSecret, func(string) (string, bool) { return addr, true })
	tr.Attach(&countingSink{})
	defer tr.Close()
	hb := func() []*raftpb.Message {
		return []*raftpb.Message{{Type: raftpb.MsgHeartbeat.Enum(), To: new(RaftID("peer")), From: new(RaftID("self")), Term: new(uint64(1))}}
	}
	// The leader heartbeats the dead member for 20 s: long enough for
	// gRPC's default backoff to wait several seconds between attempts.
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		tr.Send(hb())
	}
	lis, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("the member's address was taken meanwhile: %v", err)
	}
	peer := NewGRPC("peer", testSecret, func(string) (string, bool) { return "", false })
	got := &countingSink{}
	peer.Attach(got)
	srv := grpc.NewServer()
	pb.RegisterControlServer(srv, peer.Service())
	go srv.Serve(lis)
	defer srv.Stop()
	defer peer.Close()
	back := time.Now()
	for got.received.Load() == 0 && time.Since(back) < 10*time.Second {
		tr.Send(hb())
		time.Sleep(20 * time.Millisecond)
	}
	d := time.Since(back)
	t.Logf("reached %v after the member came back", d)
	if got.received.Load() == 0 || d > 3*time.Second {
		t.Fatalf("the member back on its address was reached after %v (received %d), want within 3 s", d, got.received.Load())
	}
}
