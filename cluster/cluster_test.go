package cluster

import (
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// eventLog records what OnChange delivers.
type eventLog struct {
	mu sync.Mutex
	ev []Event
}

func (l *eventLog) add(e Event) {
	l.mu.Lock()
	l.ev = append(l.ev, e)
	l.mu.Unlock()
}

func (l *eventLog) snapshot() []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.ev)
}

func (l *eventLog) has(kind EventKind, name string, st State) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.ev {
		if e.Kind == kind && e.Member.Name == name && e.Member.State == st {
			return true
		}
	}
	return false
}

func start(t *testing.T, name string, role Role, events *eventLog) *Cluster {
	t.Helper()
	cfg := LoopbackConfig(name)
	cfg.Role = role
	cfg.ClientAddr = "127.0.0.1:" + fmt.Sprint(7000+len(name))
	cfg.PeerAddr = "127.0.0.1:7300"
	cfg.Capacity = uint64(len(name))
	if events != nil {
		cfg.OnChange = events.add
	}
	w := &testWriter{t: t, name: name}
	t.Cleanup(w.close) // runs after Shutdown; memberlist may log later still
	cfg.Logger = slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() { c.Shutdown() })
	return c
}

// testWriter sends a member's warnings to the test's log until the test
// ends.
type testWriter struct {
	t      *testing.T
	name   string
	mu     sync.Mutex
	closed bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.t.Logf("%s: %s", w.name, p)
	}
	return len(p), nil
}

func (w *testWriter) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}

// waitFor polls cond until it holds or d passes; no fixed sleeps.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool, state ...func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			for _, s := range state {
				what += "; " + s()
			}
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func lookup(c *Cluster, name string) (Member, bool) {
	for _, m := range c.Members() {
		if m.Name == name {
			return m, true
		}
	}
	return Member{}, false
}

func stateOf(c *Cluster, name string) State {
	m, ok := lookup(c, name)
	if !ok {
		return 255
	}
	return m.State
}

func TestMembership(t *testing.T) {
	var evA eventLog
	a := start(t, "a", RoleNode, &evA)
	b := start(t, "bb", RoleNode, nil)
	c := start(t, "ccc", RoleNode, nil)
	d := start(t, "dddd", RoleBackup, nil)
	for _, x := range []*Cluster{b, c, d} {
		if n, err := x.Join(a.GossipAddr()); err != nil || n != 1 {
			t.Fatalf("%s joins: %d, %v", x.Name(), n, err)
		}
	}
	all := []*Cluster{a, b, c, d}
	waitFor(t, 10*time.Second, "every member sees four alive", func() bool {
		for _, x := range all {
			ms := x.Members()
			if len(ms) != 4 {
				return false
			}
			for _, m := range ms {
				if m.State != StateAlive {
					return false
				}
			}
		}
		return true
	})
	// Metadata made the trip.
	for _, x := range all {
		for _, y := range all {
			m, _ := lookup(x, y.Name())
			want := Meta{Role: y.cfg.Role, Capacity: y.cfg.Capacity, ClientAddr: y.cfg.ClientAddr, PeerAddr: y.cfg.PeerAddr}
			if m.Meta != want || m.MetaErr != nil || m.GossipAddr != y.GossipAddr() {
				t.Errorf("%s sees %s as %+v, want %+v at %s", x.Name(), y.Name(), m, want, y.GossipAddr())
			}
		}
	}
	// Every member places a stream the same way.
	want, err := Place("orders", 3, Candidates(a.Members()))
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range all {
		got, err := Place("orders", 3, Candidates(x.Members()))
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("%s places orders on %v, %v; a on %v", x.Name(), got, err, want)
		}
		if bk := PlaceBackup("orders", Candidates(x.Members())); bk != "dddd" {
			t.Errorf("%s: backup %q", x.Name(), bk)
		}
	}

	// Capacity updates spread.
	if err := b.UpdateCapacity(42); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "a sees bb's new capacity", func() bool {
		m, _ := lookup(a, "bb")
		return m.Capacity == 42
	})
	waitFor(t, 15*time.Second, "a is told of the update", func() bool { return evA.has(EventUpdate, "bb", StateAlive) })

	// A graceful leave is seen as left, not dead.
	if err := c.Leave(); err != nil {
		t.Fatal(err)
	}
	c.Shutdown()
	waitFor(t, 15*time.Second, "ccc is left everywhere", func() bool {
		return stateOf(a, "ccc") == StateLeft && stateOf(b, "ccc") == StateLeft && stateOf(d, "ccc") == StateLeft
	}, func() string {
		return fmt.Sprintf("a sees %v, bb %v, dddd %v", stateOf(a, "ccc"), stateOf(b, "ccc"), stateOf(d, "ccc"))
	})
	if _, err := c.Join(a.GossipAddr()); !errors.Is(err, ErrClosed) {
		t.Errorf("join after shutdown: %v", err)
	}

	// An abrupt stop is suspected, then declared dead.
	d.Shutdown()
	sawSuspect := false
	waitFor(t, 10*time.Second, "dddd is dead on a and bb", func() bool {
		if stateOf(a, "dddd") == StateSuspect || stateOf(b, "dddd") == StateSuspect {
			sawSuspect = true
		}
		return stateOf(a, "dddd") == StateDead && stateOf(b, "dddd") == StateDead
	})
	if !sawSuspect {
		t.Error("dddd went dead without being seen suspect")
	}
	// a probes dddd at least once a round while bb's suspicion runs
	// (about a second with one confirmation), so a suspects it itself.
	// Events arrive after the state changes they report.
	waitFor(t, 15*time.Second, "a is told of the leave, the suspicion and the failure", func() bool {
		return evA.has(EventLeave, "ccc", StateLeft) && evA.has(EventSuspect, "dddd", StateSuspect) &&
			evA.has(EventLeave, "dddd", StateDead)
	})
	if err := a.Forget("bb"); !errors.Is(err, ErrLiveMember) {
		t.Errorf("forget a live member: %v", err)
	}
	if err := a.Forget("nobody"); !errors.Is(err, ErrUnknownMember) {
		t.Errorf("forget an unknown member: %v", err)
	}
	if err := b.Forget("ccc"); err != nil {
		t.Errorf("forget a left member: %v", err)
	}
	if _, ok := lookup(b, "ccc"); ok {
		t.Error("bb still lists ccc after Forget")
	}
	// Dead and left members are not placed on; the backup is gone.
	got, err := Place("orders", 2, Candidates(a.Members()))
	if err != nil || !slices.Equal(slices.Sorted(slices.Values(got)), []string{"a", "bb"}) {
		t.Errorf("placement after failures: %v, %v", got, err)
	}
	if _, err := Place("orders", 3, Candidates(a.Members())); !errors.Is(err, ErrNotEnoughMembers) {
		t.Errorf("R=3 with two live nodes: %v", err)
	}
	if bk := PlaceBackup("orders", Candidates(a.Members())); bk != "" {
		t.Errorf("backup %q after it died", bk)
	}
}

// garbageMeta is a memberlist delegate that advertises bad metadata.
type garbageMeta struct{}

func (garbageMeta) NodeMeta(int) []byte                    { return []byte{MetaVersion, 9, 0, 0, 0} }
func (garbageMeta) NotifyMsg([]byte)                       {}
func (garbageMeta) GetBroadcasts(int, int) [][]byte        { return nil }
func (garbageMeta) LocalState(bool) []byte                 { return nil }
func (garbageMeta) MergeRemoteState(buf []byte, join bool) {}

func TestBadMetadataNotTrusted(t *testing.T) {
	a := start(t, "a", RoleNode, nil)
	mc := memberlist.DefaultLocalConfig()
	mc.Name = "liar"
	mc.BindAddr, mc.BindPort, mc.AdvertisePort = "127.0.0.1", 0, 0
	mc.Delegate = garbageMeta{}
	mc.Logger = log.New(io.Discard, "", 0)
	ml, err := memberlist.Create(mc)
	if err != nil {
		t.Fatal(err)
	}
	defer ml.Shutdown()
	if _, err := ml.Join([]string{a.GossipAddr()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "a lists liar", func() bool { _, ok := lookup(a, "liar"); return ok })
	m, _ := lookup(a, "liar")
	if !errors.Is(m.MetaErr, ErrBadMeta) || m.Role != RoleUnknown || m.State != StateAlive {
		t.Errorf("liar: %+v", m)
	}
	for _, c := range Candidates(a.Members()) {
		if c.Name == "liar" {
			t.Error("a member with bad metadata is a placement candidate")
		}
	}
}

func TestJoinUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	a := start(t, "a", RoleNode, nil)
	if _, err := a.Join(addr); !errors.Is(err, ErrJoin) {
		t.Errorf("join %s: %v", addr, err)
	}
	if err := a.Leave(); err != nil {
		t.Errorf("leave alone: %v", err)
	}
	if m, _ := lookup(a, "a"); m.State != StateLeft || !m.Leaving {
		t.Errorf("a sees itself as %+v after leaving", m)
	}
	if a.Shutdown() != nil || a.Shutdown() != nil {
		t.Error("shutdown twice")
	}
	if err := a.Leave(); !errors.Is(err, ErrClosed) {
		t.Errorf("leave after shutdown: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := LoopbackConfig("n")
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	if d := DefaultConfig(); d.Validate() != nil {
		t.Fatal(d.Validate())
	}
	for name, mut := range map[string]func(*Config){
		"no name":        func(c *Config) { c.Name = "" },
		"gossip no port": func(c *Config) { c.GossipAddr = "127.0.0.1" },
		"gossip name":    func(c *Config) { c.GossipAddr = "localhost:1" },
		"advertise":      func(c *Config) { c.AdvertiseAddr = "x" },
		"join":           func(c *Config) { c.Join = []string{"nope"} },
		"role":           func(c *Config) { c.Role = RoleUnknown },
		"client addr":    func(c *Config) { c.ClientAddr = "no-port" },
		"probe":          func(c *Config) { c.ProbeTimeout = c.ProbeInterval },
		"zero interval":  func(c *Config) { c.GossipInterval = 0 },
		"suspicion":      func(c *Config) { c.SuspicionMult = 0 },
		"secret key":     func(c *Config) { c.SecretKey = make([]byte, 15) },
		"reconnect":      func(c *Config) { c.ReconnectInterval = -1 },
	} {
		c := LoopbackConfig("n")
		mut(&c)
		if err := c.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v", name, err)
		}
		if _, err := New(c); !errors.Is(err, ErrConfig) {
			t.Errorf("New with %s: %v", name, err)
		}
	}
	if r, err := ParseRole("backup"); err != nil || r != RoleBackup {
		t.Error(r, err)
	}
	if _, err := ParseRole("leader"); !errors.Is(err, ErrConfig) {
		t.Error(err)
	}
}

func TestSecretKey(t *testing.T) {
	mk := func(name string, key byte) *Cluster {
		cfg := LoopbackConfig(name)
		if key != 0 {
			cfg.SecretKey = make([]byte, 32)
			cfg.SecretKey[0] = key
		}
		c, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Shutdown() })
		return c
	}
	a, b := mk("a", 1), mk("b", 1)
	if _, err := b.Join(a.GossipAddr()); err != nil {
		t.Fatalf("same key: %v", err)
	}
	for _, x := range []*Cluster{mk("wrong", 2), mk("none", 0)} {
		if _, err := x.Join(a.GossipAddr()); !errors.Is(err, ErrJoin) {
			t.Errorf("%s joins a keyed cluster: %v", x.Name(), err)
		}
	}
	waitFor(t, 15*time.Second, "a sees b", func() bool { return stateOf(a, "b") == StateAlive })
	for _, n := range []string{"wrong", "none"} {
		if _, ok := lookup(a, n); ok {
			t.Errorf("a lists %s", n)
		}
	}
}

// TestCapacityRefreshed: a member measures its capacity again every
// CapacityInterval and spreads what moved by 1% or more, so that the
// others (and placement) see the free space it has now, not at start.
func TestCapacityRefreshed(t *testing.T) {
	var free atomic.Uint64
	free.Store(1000)
	cfg := LoopbackConfig("measured")
	cfg.Capacity = 1000
	cfg.MeasureCapacity = free.Load
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown()
	other := start(t, "other", RoleNode, nil)
	if _, err := other.Join(m.GossipAddr()); err != nil {
		t.Fatal(err)
	}
	capacity := func(c *Cluster) uint64 {
		mm, _ := lookup(c, "measured")
		return mm.Capacity
	}
	waitFor(t, 10*time.Second, "other sees measured", func() bool { return capacity(other) == 1000 })

	free.Store(400) // the disk filled
	waitFor(t, 10*time.Second, "the new capacity spreads", func() bool { return capacity(m) == 400 && capacity(other) == 400 })

	// A move under 1% is not gossiped.
	free.Store(399)
	time.Sleep(5 * cfg.CapacityInterval)
	if got := capacity(m); got != 400 {
		t.Fatalf("a 0.25%% move was spread: %d", got)
	}
	free.Store(0) // full: never chosen for a new stream
	waitFor(t, 10*time.Second, "a full member spreads 0", func() bool { return capacity(other) == 0 })
	if _, err := Place("s", 2, Candidates(other.Members())); err == nil {
		t.Fatal("a full member was placed on")
	}
	// Shutdown ends the loop (no deadlock with a tick under way).
	done := make(chan error, 1)
	go func() { done <- m.Shutdown() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return")
	}
}

func TestMovedEnough(t *testing.T) {
	for _, tc := range []struct {
		was, now uint64
		want     bool
	}{{1000, 1000, false}, {1000, 995, false}, {1000, 990, true}, {1000, 1010, true}, {0, 0, false}, {0, 1, true}, {5, 0, true}, {50, 51, true}} {
		if got := movedEnough(tc.was, tc.now); got != tc.want {
			t.Errorf("movedEnough(%d, %d) = %v", tc.was, tc.now, got)
		}
	}
}
