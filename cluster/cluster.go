package cluster

import (
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"

	"github.com/hashicorp/memberlist"
)

// State is a member's state as failure detection sees it.
type State uint8

// Member states.
const (
	StateAlive   State = iota // answering probes
	StateSuspect              // missed probes; may still refute
	StateDead                 // declared failed
	StateLeft                 // left gracefully
)

func (s State) String() string {
	switch s {
	case StateAlive:
		return "alive"
	case StateSuspect:
		return "suspect"
	case StateDead:
		return "dead"
	case StateLeft:
		return "left"
	}
	return "state(" + strconv.Itoa(int(s)) + ")"
}

// Live reports whether a member in state s counts as up (alive or suspect).
func (s State) Live() bool { return s == StateAlive || s == StateSuspect }

// Member is one member as this node sees it.
type Member struct {
	Name       string
	State      State
	GossipAddr string // ip:port of its memberlist
	// Meta is its metadata; zero (RoleUnknown) when MetaErr is set.
	Meta
	// MetaErr is why its metadata was rejected (wraps ErrBadMeta), nil if
	// it parsed. Such a member is never trusted by placement.
	MetaErr error
}

// EventKind says what happened to a member.
type EventKind uint8

// Event kinds.
const (
	EventJoin   EventKind = iota // a member became alive (joined or came back)
	EventUpdate                  // its metadata changed
	EventLeave                   // it died (Member.State dead) or left (left)
)

func (k EventKind) String() string {
	switch k {
	case EventJoin:
		return "join"
	case EventUpdate:
		return "update"
	case EventLeave:
		return "leave"
	}
	return "event(" + strconv.Itoa(int(k)) + ")"
}

// Event is one membership change, delivered to Config.OnChange.
type Event struct {
	Kind   EventKind
	Member Member
}

// Cluster is this process's membership in the cluster. Its methods may be
// called concurrently.
type Cluster struct {
	cfg Config
	log *slog.Logger
	ml  *memberlist.Memberlist

	mu     sync.Mutex
	meta   []byte            // our encoded metadata, served to memberlist
	view   map[string]Member // by name; alive, dead and left members
	queue  []Event           // for the dispatcher
	closed bool

	wake     chan struct{} // cap 1: queue is not empty
	stop     chan struct{} // closed by Shutdown
	done     chan struct{} // closed when the dispatcher returns
	shutOnce sync.Once
}

// New starts memberlist on cfg.GossipAddr; the member is alone until Join.
func New(cfg Config) (*Cluster, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Join = slices.Clone(cfg.Join)
	meta, err := Meta{Role: cfg.Role, Capacity: cfg.Capacity, ClientAddr: cfg.ClientAddr, PeerAddr: cfg.PeerAddr}.Encode(nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	c := &Cluster{
		cfg:  cfg,
		log:  cfg.Logger,
		meta: meta,
		view: map[string]Member{},
		wake: make(chan struct{}, 1),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.Name
	mc.BindAddr, mc.BindPort, _ = splitIPPort(cfg.GossipAddr)
	mc.AdvertiseAddr, mc.AdvertisePort = "", mc.BindPort
	if cfg.AdvertiseAddr != "" {
		mc.AdvertiseAddr, mc.AdvertisePort, _ = splitIPPort(cfg.AdvertiseAddr)
	}
	mc.ProbeInterval = cfg.ProbeInterval
	mc.ProbeTimeout = cfg.ProbeTimeout
	mc.GossipInterval = cfg.GossipInterval
	mc.PushPullInterval = cfg.PushPullInterval
	mc.SuspicionMult = cfg.SuspicionMult
	mc.TCPTimeout = cfg.TCPTimeout
	mc.Delegate = (*delegate)(c)
	mc.Events = (*delegate)(c)
	if cfg.Logger != nil {
		mc.Logger = slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug)
	} else {
		mc.Logger = log.New(io.Discard, "", 0)
	}
	go c.dispatch()
	ml, err := memberlist.Create(mc)
	if err != nil {
		close(c.stop)
		<-c.done
		return nil, fmt.Errorf("cluster: start memberlist on %s: %w", cfg.GossipAddr, err)
	}
	c.ml = ml
	return c, nil
}

// Name is this member's name.
func (c *Cluster) Name() string { return c.cfg.Name }

// GossipAddr is the ip:port this member gossips on (its actual port when
// Config.GossipAddr asked for port 0), to give to others as a join address.
func (c *Cluster) GossipAddr() string {
	n := c.ml.LocalNode() // Addr and Port of the local node never change
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}

// Join contacts the given gossip addresses (Config.Join when none are
// given) and merges their view of the cluster. It returns how many were
// reached; it fails with ErrJoin when none was.
func (c *Cluster) Join(addrs ...string) (int, error) {
	if len(addrs) == 0 {
		addrs = c.cfg.Join
	}
	if len(addrs) == 0 {
		return 0, nil
	}
	if c.isClosed() {
		return 0, ErrClosed
	}
	n, err := c.ml.Join(addrs)
	if n == 0 {
		return 0, fmt.Errorf("%w: %v: %w", ErrJoin, addrs, err)
	}
	if err != nil {
		c.log.Warn("cluster: some join addresses failed", "reached", n, "err", err)
	}
	return n, nil
}

// Leave tells the cluster this member is leaving (others see it as left,
// not dead) and waits up to Config.LeaveTimeout for that to spread. Call
// Shutdown after it. It is what SIGTERM should do.
func (c *Cluster) Leave() error {
	if c.isClosed() {
		return ErrClosed
	}
	if err := c.ml.Leave(c.cfg.LeaveTimeout); err != nil {
		return fmt.Errorf("cluster: leave: %w", err)
	}
	return nil
}

// Shutdown stops gossip at once (without Leave, others will find this
// member dead) and the dispatcher. Events not yet delivered are dropped.
// It is safe to call more than once.
func (c *Cluster) Shutdown() error {
	var err error
	c.shutOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		err = c.ml.Shutdown()
		close(c.stop)
		<-c.done
	})
	return err
}

func (c *Cluster) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// UpdateCapacity changes the capacity in this member's metadata and
// spreads it.
func (c *Cluster) UpdateCapacity(capacity uint64) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	c.cfg.Capacity = capacity
	m := Meta{Role: c.cfg.Role, Capacity: capacity, ClientAddr: c.cfg.ClientAddr, PeerAddr: c.cfg.PeerAddr}
	b, err := m.Encode(nil)
	if err != nil {
		c.mu.Unlock()
		return err
	}
	c.meta = b
	c.mu.Unlock()
	if err := c.ml.UpdateNode(c.cfg.TCPTimeout); err != nil {
		return fmt.Errorf("cluster: update metadata: %w", err)
	}
	return nil
}

// Members is every member this node knows of, this one included, sorted
// by name: live ones, and dead or left ones until they come back.
func (c *Cluster) Members() []Member {
	suspect := c.suspects()
	c.mu.Lock()
	out := make([]Member, 0, len(c.view))
	for _, m := range c.view {
		if m.State == StateAlive && suspect[m.Name] {
			m.State = StateSuspect
		}
		out = append(out, m)
	}
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out
}

// suspects is the set of members memberlist holds suspect now.
//
// memberlist hands out pointers into its own state, which it updates
// under its lock; the fields are copied at once and NumMembers then takes
// that lock again, so that memberlist's next update happens after the
// copy.
func (c *Cluster) suspects() map[string]bool {
	if c.isClosed() {
		return nil
	}
	var s map[string]bool
	for _, n := range c.ml.Members() {
		if n.State == memberlist.StateSuspect {
			if s == nil {
				s = map[string]bool{}
			}
			s[n.Name] = true
		}
	}
	c.ml.NumMembers()
	return s
}

// dispatch delivers queued events to OnChange until Shutdown.
func (c *Cluster) dispatch() {
	defer close(c.done)
	for {
		select {
		case <-c.stop:
			return
		case <-c.wake:
		}
		c.mu.Lock()
		q := c.queue
		c.queue = nil
		c.mu.Unlock()
		for _, e := range q {
			if c.cfg.OnChange != nil {
				c.cfg.OnChange(e)
			}
		}
	}
}

// delegate is the Cluster as memberlist's Delegate and EventDelegate.
// memberlist calls the event methods with its node lock held, which makes
// reading the *memberlist.Node safe there and only there.
type delegate Cluster

var (
	_ memberlist.Delegate      = (*delegate)(nil)
	_ memberlist.EventDelegate = (*delegate)(nil)
)

func (d *delegate) NodeMeta(limit int) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.meta) > limit {
		return nil // cannot happen: MaxMetaSize ≤ memberlist's limit
	}
	return slices.Clone(d.meta)
}

func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

func (d *delegate) NotifyJoin(n *memberlist.Node)   { d.note(EventJoin, n) }
func (d *delegate) NotifyUpdate(n *memberlist.Node) { d.note(EventUpdate, n) }
func (d *delegate) NotifyLeave(n *memberlist.Node)  { d.note(EventLeave, n) }

func (d *delegate) note(k EventKind, n *memberlist.Node) {
	m := member(n)
	if k == EventLeave && m.State.Live() {
		m.State = StateDead
	}
	if m.MetaErr != nil {
		d.log.Warn("cluster: member has bad metadata; not trusted", "member", m.Name, "err", m.MetaErr)
	}
	d.mu.Lock()
	d.view[m.Name] = m
	d.queue = append(d.queue, Event{Kind: k, Member: m})
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// member copies n; the caller holds memberlist's node lock.
func member(n *memberlist.Node) Member {
	m := Member{Name: n.Name, GossipAddr: net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))}
	switch n.State {
	case memberlist.StateAlive:
		m.State = StateAlive
	case memberlist.StateSuspect:
		m.State = StateSuspect
	case memberlist.StateDead:
		m.State = StateDead
	case memberlist.StateLeft:
		m.State = StateLeft
	}
	meta, err := ParseMeta(n.Meta)
	if err != nil {
		m.MetaErr = err
	} else {
		m.Meta = meta
	}
	return m
}
