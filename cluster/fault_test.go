package cluster

import (
	"bytes"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// errUnreachable is what dials to or from a cut-off member fail with.
var errUnreachable = errors.New("fake network: unreachable")

// fakeNet is an in-process network for memberlist, like its
// MockTransport but shaped like the real one (memberlist's mock delivers
// packets synchronously, so two members answering each other deadlock),
// with a switch per member: a member that is cut off neither sends nor
// receives (packets are lost, as with UDP; dials fail). Packets that find
// a full queue are lost too.
type fakeNet struct {
	mu    sync.Mutex
	nodes map[string]*fakeTransport // by address; guarded by mu
	cut   map[string]bool           // by address; guarded by mu
}

// fakeTransport is one member's memberlist transport on a fakeNet.
type fakeTransport struct {
	net     *fakeNet
	addr    *net.UDPAddr
	packets chan *memberlist.Packet
	streams chan net.Conn
	done    chan struct{} // closed by Shutdown
	once    sync.Once
}

var _ memberlist.NodeAwareTransport = (*fakeTransport)(nil)

func (n *fakeNet) transport() *fakeTransport {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.nodes == nil {
		n.nodes, n.cut = map[string]*fakeTransport{}, map[string]bool{}
	}
	t := &fakeTransport{
		net:     n,
		addr:    &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1 + len(n.nodes)},
		packets: make(chan *memberlist.Packet, 256),
		streams: make(chan net.Conn),
		done:    make(chan struct{}),
	}
	n.nodes[t.addr.String()] = t
	return t
}

func (n *fakeNet) setCut(addr string, cut bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cut[addr] = cut
}

// route is the transport at to, or nil if from or to is cut off.
func (n *fakeNet) route(from, to string) *fakeTransport {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cut[from] || n.cut[to] {
		return nil
	}
	return n.nodes[to]
}

func (f *fakeTransport) FinalAdvertiseAddr(string, int) (net.IP, int, error) {
	return f.addr.IP, f.addr.Port, nil
}

func (f *fakeTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return f.WriteToAddress(b, memberlist.Address{Addr: addr})
}

func (f *fakeTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	now := time.Now()
	dest := f.net.route(f.addr.String(), a.Addr)
	if dest == nil {
		return now, nil // lost on the way
	}
	select {
	case dest.packets <- &memberlist.Packet{Buf: bytes.Clone(b), From: f.addr, Timestamp: now}:
	default: // queue full: lost
	}
	return now, nil
}

func (f *fakeTransport) PacketCh() <-chan *memberlist.Packet { return f.packets }

func (f *fakeTransport) IngestPacket(net.Conn, net.Addr, time.Time, bool) error {
	return errors.New("fake network: no packet ingestion")
}

func (f *fakeTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return f.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

func (f *fakeTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	dest := f.net.route(f.addr.String(), a.Addr)
	if dest == nil {
		return nil, errUnreachable
	}
	mine, theirs := net.Pipe()
	tm := time.NewTimer(timeout)
	defer tm.Stop()
	select {
	case dest.streams <- theirs:
		return mine, nil
	case <-dest.done:
	case <-f.done:
	case <-tm.C:
	}
	mine.Close()
	theirs.Close()
	return nil, errUnreachable
}

func (f *fakeTransport) StreamCh() <-chan net.Conn { return f.streams }

func (f *fakeTransport) IngestStream(net.Conn) error {
	return errors.New("fake network: no stream ingestion")
}

func (f *fakeTransport) Shutdown() error {
	f.once.Do(func() { close(f.done) })
	return nil
}

// TestPartition cuts a running member off the network: the others suspect
// it and declare it dead although its process runs, and it finds them
// dead; once the network heals, the reconnect loops bring everyone back
// alive.
func TestPartition(t *testing.T) {
	var fn fakeNet
	names := []string{"a", "bb", "ccc"}
	var cs []*Cluster
	var ts []*fakeTransport
	for _, name := range names {
		tr := fn.transport()
		cfg := LoopbackConfig(name)
		cfg.Transport = tr
		c, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		cs, ts = append(cs, c), append(ts, tr)
	}
	t.Cleanup(func() {
		for _, c := range cs {
			c.Shutdown()
		}
	})
	a, b, c := cs[0], cs[1], cs[2]
	for _, x := range []*Cluster{b, c} {
		if _, err := x.Join(a.GossipAddr()); err != nil {
			t.Fatal(err)
		}
	}
	allAlive := func() bool {
		for _, x := range cs {
			for _, n := range names {
				if stateOf(x, n) != StateAlive {
					return false
				}
			}
		}
		return true
	}
	waitFor(t, 10*time.Second, "three alive everywhere", allAlive)

	fn.setCut(ts[2].addr.String(), true)
	sawSuspect := false
	waitFor(t, 10*time.Second, "ccc dead on both sides of the cut", func() bool {
		if stateOf(a, "ccc") == StateSuspect || stateOf(b, "ccc") == StateSuspect {
			sawSuspect = true
		}
		ok := stateOf(a, "ccc") == StateDead && stateOf(b, "ccc") == StateDead &&
			stateOf(c, "a") == StateDead && stateOf(c, "bb") == StateDead
		return ok
	})
	if !sawSuspect {
		t.Error("ccc was never seen suspect")
	}
	if got, err := Place("s", 3, Candidates(a.Members())); !errors.Is(err, ErrNotEnoughMembers) {
		t.Errorf("placed on a cut-off member: %v, %v", got, err)
	}

	// memberlist does not push/pull with members it holds dead; the
	// reconnect loops join them again once the network heals.
	fn.setCut(ts[2].addr.String(), false)
	waitFor(t, 10*time.Second, "three alive again after the heal", allAlive)
}
