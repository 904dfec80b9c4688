package controller

import (
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/rpstream/rpstream/catalog/catalogpb"
	"github.com/rpstream/rpstream/cluster"
)

// network is an in-process network of controllers that fails on
// purpose: it drops Raft messages and forwarded requests (or their
// answers) with a seeded probability, delays them, and cuts members off
// from each other (partitions, both directions, for Send and Forward).
// Each controller talks through its own memTransport, made by transport
// for one Start; the network finds a member's current transport by
// name.
//
// Messages and requests are copied (marshalled) on the way, as a real
// transport does, so that no two Raft nodes share an entry.
//
// Lock order: network.mu is never held while calling into a
// controller (a controller calls members while holding its own lock).
type network struct {
	mu       sync.Mutex
	rng      *rand.Rand                  // seeded: drops and delays
	ends     map[string]*memTransport    // the attached transport of each member that is up
	known    map[string]pb.Role          // every member ever attached, with its role
	group    map[string]int              // partition group; members of different groups are cut off
	held     map[[2]string]chan struct{} // links whose messages wait (closed on release)
	drop     float64                     // probability of losing a message, a request or an answer
	maxDelay time.Duration               // each delivery waits up to this long
	stats    netStats
}

// netStats counts what the network did (for logs).
type netStats struct {
	sent, dropped, cut, delivered, refused int
	forwarded, forwardCut, answersLost     int
}

func newNetwork(seed uint64) *network {
	return &network{
		rng:   rand.New(rand.NewPCG(seed, 0x6e6574)),
		ends:  map[string]*memTransport{},
		known: map[string]pb.Role{},
		group: map[string]int{},
		held:  map[[2]string]chan struct{}{},
	}
}

// hold makes Raft messages from a to b wait, in order, until release: a
// stalled connection (a peer that does not answer, a gRPC connection
// still connecting) that delivers its backlog late.
func (n *network) hold(a, b string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.held[[2]string{a, b}] == nil {
		n.held[[2]string{a, b}] = make(chan struct{})
	}
}

// release delivers what hold kept back.
func (n *network) release(a, b string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if ch := n.held[[2]string{a, b}]; ch != nil {
		close(ch)
		delete(n.held, [2]string{a, b})
	}
}

// heldCh is closed when the link from a to b is released; nil if it is
// not held.
func (n *network) heldCh(a, b string) chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.held[[2]string{a, b}]
}

// setFaults sets the drop probability and the largest delay.
func (n *network) setFaults(drop float64, maxDelay time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.drop, n.maxDelay = drop, maxDelay
}

// partition cuts the members of each set off from everyone outside it;
// members in no set stay together. It replaces any earlier partition.
func (n *network) partition(sets ...[]string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.group = map[string]int{}
	for i, s := range sets {
		for _, name := range s {
			n.group[name] = i + 1
		}
	}
}

// heal ends every partition.
func (n *network) heal() { n.partition() }

// reachableLocked says whether a message from a gets to b.
func (n *network) reachableLocked(a, b string) bool { return n.group[a] == n.group[b] }

// route decides the fate of one message or request from a to b: whether
// it is cut off by a partition, dropped, and how long it is delayed.
func (n *network) route(a, b string) (cut, dropped bool, delay time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.reachableLocked(a, b) {
		return true, false, 0
	}
	if n.drop > 0 && n.rng.Float64() < n.drop {
		return false, true, 0
	}
	if n.maxDelay > 0 {
		delay = time.Duration(n.rng.Int64N(int64(n.maxDelay) + 1))
	}
	return false, false, delay
}

// sinkOf is member name's controller if it is up.
func (n *network) sinkOf(name string) Sink {
	n.mu.Lock()
	defer n.mu.Unlock()
	if t := n.ends[name]; t != nil {
		t.mu.Lock()
		defer t.mu.Unlock()
		return t.sink
	}
	return nil
}

// members is the Members func of every controller on the network: each
// member ever attached, alive while its controller is up (as memberlist
// would see it after a while), a stream node or a backup target of
// capacity 1.
func (n *network) members() []cluster.Member {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]cluster.Member, 0, len(n.known))
	for name, role := range n.known {
		m := cluster.Member{Name: name, State: cluster.StateDead, Meta: cluster.Meta{Role: cluster.RoleNode, ClientAddr: "x", Capacity: 1}}
		if role == pb.Role_ROLE_BACKUP {
			m.Role = cluster.RoleBackup
		}
		if n.ends[name] != nil {
			m.State = cluster.StateAlive
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b cluster.Member) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out
}

func (n *network) count(f func(*netStats)) {
	n.mu.Lock()
	f(&n.stats)
	n.mu.Unlock()
}

func (n *network) statsNow() netStats {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stats
}

// transport makes the transport of one Start of member self.
func (n *network) transport(self string, role pb.Role) *memTransport {
	return &memTransport{net: n, self: self, role: role, queues: map[string]chan queued{}, stop: make(chan struct{})}
}

// memTransport is one controller's end of the network. Send queues each
// message for its destination; one goroutine per destination delivers
// them in order (a stream, like a gRPC connection), each after its
// delay, to the destination's Receive. Forward calls the destination's
// Handle in the caller's goroutine.
type memTransport struct {
	net  *network
	self string
	role pb.Role

	mu     sync.Mutex
	sink   Sink
	queues map[string]chan queued // by destination member
	closed bool

	stop chan struct{} // closed by Close
	wg   sync.WaitGroup
}

var _ Transport = (*memTransport)(nil)

// queued is a message on its way, with the time it may be delivered.
type queued struct {
	m  *raftpb.Message
	at time.Time
}

// queueLen bounds a destination's queue; a full queue loses the message
// (Raft sends again), as GRPC's does.
const queueLen = 1024

func (t *memTransport) Attach(s Sink) {
	t.mu.Lock()
	t.sink = s
	t.mu.Unlock()
	t.net.mu.Lock()
	t.net.ends[t.self] = t
	t.net.known[t.self] = t.role
	t.net.mu.Unlock()
}

// Send never blocks: it is called from the Raft loop.
func (t *memTransport) Send(msgs []*raftpb.Message) {
	t.mu.Lock()
	sink, closed := t.sink, t.closed
	t.mu.Unlock()
	if closed || sink == nil {
		return
	}
	for _, m := range msgs {
		name, ok := sink.NameOf(m.GetTo())
		if !ok {
			sink.ReportUnreachable(m.GetTo())
			continue
		}
		_, _, delay := t.net.route(t.self, name) // only the delay is decided now
		q := t.queue(name)
		if q == nil {
			return
		}
		select {
		case q <- queued{m: proto.Clone(m).(*raftpb.Message), at: time.Now().Add(delay)}:
			t.net.count(func(s *netStats) { s.sent++ })
		default:
			t.failed(sink, m)
		}
	}
}

// failed reports an undelivered message without blocking the caller
// (ReportSnapshot waits for the Raft loop, which may be the caller).
func (t *memTransport) failed(sink Sink, m *raftpb.Message) {
	sink.ReportUnreachable(m.GetTo())
	if m.GetType() != raftpb.MsgSnap {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		sink.ReportSnapshot(m.GetTo(), true)
	}()
}

func (t *memTransport) queue(name string) chan queued {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	if q := t.queues[name]; q != nil {
		return q
	}
	q := make(chan queued, queueLen)
	t.queues[name] = q
	t.wg.Add(1)
	go t.deliver(name, q)
	return q
}

// deliver hands the messages queued for member name to its controller,
// in order, each no earlier than its time; what the network cuts, drops
// or the destination refuses is reported unreachable.
func (t *memTransport) deliver(name string, q chan queued) {
	defer t.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		var e queued
		select {
		case <-t.stop:
			return
		case e = <-q:
		}
		if d := time.Until(e.at); d > 0 {
			timer.Reset(d)
			select {
			case <-t.stop:
				return
			case <-timer.C:
			}
		}
		if ch := t.net.heldCh(t.self, name); ch != nil {
			select {
			case <-t.stop:
				return
			case <-ch:
			}
		}
		t.mu.Lock()
		sink := t.sink
		t.mu.Unlock()
		cut, dropped, _ := t.net.route(t.self, name)
		var dst Sink
		if !cut && !dropped {
			dst = t.net.sinkOf(name)
		}
		err := errUnreachable
		if dst != nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			err = dst.Receive(ctx, t.self, []*raftpb.Message{e.m})
			cancel()
		}
		t.net.count(func(s *netStats) {
			switch {
			case cut:
				s.cut++
			case dropped:
				s.dropped++
			case err != nil:
				s.refused++
			default:
				s.delivered++
			}
		})
		if err != nil {
			sink.ReportUnreachable(e.m.GetTo())
		}
		if e.m.GetType() == raftpb.MsgSnap {
			sink.ReportSnapshot(e.m.GetTo(), err != nil)
		}
	}
}

var errUnreachable = status.Error(codes.Unavailable, "memnet: unreachable")

// Forward reaches member name's Handle unless the network cuts it off or
// drops the request; an answer can be lost too (the request did run),
// which the requester sees as Unavailable, as over gRPC. Errors that are
// not gRPC statuses are turned into statuses as a gRPC server would.
func (t *memTransport) Forward(ctx context.Context, name string, req *pb.ControlRequest) (*pb.ControlResponse, error) {
	t.mu.Lock()
	closed := t.closed
	t.mu.Unlock()
	if closed {
		return nil, status.Error(codes.Unavailable, ErrStopped.Error())
	}
	cut, dropped, delay := t.net.route(t.self, name)
	var dst Sink
	if !cut && !dropped {
		dst = t.net.sinkOf(name)
	}
	if dst == nil {
		t.net.count(func(s *netStats) { s.forwardCut++ })
		return nil, status.Errorf(codes.Unavailable, "memnet: %s cannot reach %s", t.self, name)
	}
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	t.net.count(func(s *netStats) { s.forwarded++ })
	resp, err := dst.Handle(ctx, proto.Clone(req).(*pb.ControlRequest))
	if err != nil {
		if _, ok := status.FromError(err); !ok {
			err = status.FromContextError(err).Err()
		}
		return nil, err
	}
	// The answer travels back: it may be cut off or lost.
	if cut, dropped, _ := t.net.route(name, t.self); cut || dropped {
		t.net.count(func(s *netStats) { s.answersLost++ })
		return nil, status.Errorf(codes.Unavailable, "memnet: the answer of %s to %s was lost", name, t.self)
	}
	return proto.Clone(resp).(*pb.ControlResponse), nil
}

// Close detaches the controller from the network and stops delivering.
func (t *memTransport) Close() {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.closed = true
	close(t.stop)
	t.mu.Unlock()
	t.net.mu.Lock()
	if t.net.ends[t.self] == t {
		delete(t.net.ends, t.self)
	}
	t.net.mu.Unlock()
	t.wg.Wait()
}
