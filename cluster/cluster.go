package cluster

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/rpstream/rpstream/internal/logrepeat"
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
	EventJoin    EventKind = iota // a member became alive (joined or came back)
	EventUpdate                   // its metadata changed
	EventLeave                    // it died (Member.State dead) or left (left)
	EventSuspect                  // this member's probe of it went unanswered
	EventAlive                    // a suspect answered a probe again
)

func (k EventKind) String() string {
	switch k {
	case EventJoin:
		return "join"
	case EventUpdate:
		return "update"
	case EventLeave:
		return "leave"
	case EventSuspect:
		return "suspect"
	case EventAlive:
		return "alive"
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
	// repeats keeps memberlist's repeated warnings from flooding log.
	repeats *logrepeat.Limiter

	// lifeMu serialises Join, Leave, UpdateCapacity and Shutdown
	// (memberlist panics on Leave after Shutdown). Taken before mu, never
	// while holding it.
	lifeMu sync.Mutex
	down   bool // guarded by lifeMu
	meta   Meta // our metadata; guarded by lifeMu and mu (written with both)

	mu      sync.Mutex
	view    map[string]Member    // by name: alive, dead and left members
	suspect map[string]bool      // members our own probes found unanswering
	left    map[string]time.Time // members held left, and since when
	queue   []Event              // for the dispatcher

	wake chan struct{}  // cap 1: queue is not empty
	stop chan struct{}  // closed by Shutdown
	wg   sync.WaitGroup // the dispatcher and the reconnect loop
}

// New starts memberlist on cfg.GossipAddr; the member is alone until Join.
func New(cfg Config) (*Cluster, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Join = slices.Clone(cfg.Join)
	c := &Cluster{
		cfg:     cfg,
		log:     cfg.Logger,
		repeats: logrepeat.New(0),
		meta:    Meta{Role: cfg.Role, Capacity: cfg.Capacity, ClientAddr: cfg.ClientAddr, PeerAddr: cfg.PeerAddr},
		view:    map[string]Member{},
		suspect: map[string]bool{},
		left:    map[string]time.Time{},
		wake:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
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
	if len(cfg.SecretKey) > 0 {
		mc.SecretKey = slices.Clone(cfg.SecretKey)
	}
	if cfg.Transport != nil {
		mc.Transport = cfg.Transport
	}
	mc.Delegate = (*delegate)(c)
	mc.Events = (*delegate)(c)
	mc.Ping = (*delegate)(c)
	mc.Logger = log.New((*logWriter)(c), "", 0)
	c.goFunc(c.dispatch)
	ml, err := memberlist.Create(mc)
	if err != nil {
		close(c.stop)
		c.wg.Wait()
		return nil, fmt.Errorf("cluster: start memberlist on %s: %w", cfg.GossipAddr, err)
	}
	c.ml = ml
	if cfg.ReconnectInterval > 0 {
		c.goFunc(c.reconnect)
	}
	if cfg.MeasureCapacity != nil {
		c.goFunc(c.refreshCapacity)
	}
	return c, nil
}

// Name is this member's name.
func (c *Cluster) Name() string { return c.cfg.Name }

// GossipAddr is the ip:port this member gossips on (its actual port when
// Config.GossipAddr asked for port 0), to give to others as a join address.
func (c *Cluster) GossipAddr() string {
	n := c.ml.LocalNode() // the local node's Addr and Port never change
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}

// Join contacts the given gossip addresses (Config.Join when none are
// given) and merges their view of the cluster. It returns how many were
// reached; it fails with ErrJoin when none was.
func (c *Cluster) Join(addrs ...string) (int, error) {
	if len(addrs) == 0 {
		addrs = c.cfg.Join
	}
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	if c.down {
		return 0, ErrClosed
	}
	if len(addrs) == 0 {
		return 0, nil
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

// Leave leaves the cluster gracefully: it publishes the leaving flag in
// this member's metadata (placement stops choosing it), then memberlist's
// leave message, waiting up to Config.LeaveTimeout for each to spread, so
// that the others report it left rather than dead. Call Shutdown after
// it. It is what SIGTERM should do once appends are drained.
func (c *Cluster) Leave() error {
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	if c.down {
		return ErrClosed
	}
	c.setMetaLocked(func(m *Meta) { m.Leaving = true })
	if err := c.ml.UpdateNode(c.cfg.LeaveTimeout); err != nil {
		c.log.Warn("cluster: leaving flag not spread; others may report this member dead", "err", err)
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
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	if c.down {
		return nil
	}
	c.down = true
	err := c.ml.Shutdown() // first: a reconnect in progress then fails fast
	close(c.stop)
	c.wg.Wait()
	return err
}

// UpdateCapacity changes the capacity in this member's metadata and
// spreads it, waiting up to Config.TCPTimeout.
func (c *Cluster) UpdateCapacity(capacity uint64) error {
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	return c.updateCapacityLocked(capacity)
}

// updateCapacityLocked is UpdateCapacity; lifeMu is held.
func (c *Cluster) updateCapacityLocked(capacity uint64) error {
	if c.down {
		return ErrClosed
	}
	c.setMetaLocked(func(m *Meta) { m.Capacity = capacity })
	if err := c.ml.UpdateNode(c.cfg.TCPTimeout); err != nil {
		return fmt.Errorf("cluster: update metadata: %w", err)
	}
	return nil
}

// refreshCapacity measures the capacity every CapacityInterval until
// Shutdown and spreads a value that moved by 1% or more (free space moves
// with every append; gossiping each byte would be noise).
func (c *Cluster) refreshCapacity() {
	every := c.cfg.CapacityInterval
	if every <= 0 {
		every = 5 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		now := c.cfg.MeasureCapacity()
		c.mu.Lock()
		was := c.meta.Capacity
		c.mu.Unlock()
		if !movedEnough(was, now) {
			continue
		}
		// Not UpdateCapacity: Shutdown holds lifeMu while it waits for
		// this goroutine, so a tick that finds it held (Join, Leave,
		// Shutdown under way) is skipped instead of waited for.
		if !c.lifeMu.TryLock() {
			continue
		}
		err := c.updateCapacityLocked(now)
		c.lifeMu.Unlock()
		if err != nil && !errors.Is(err, ErrClosed) {
			c.log.Warn("cluster: spreading the new capacity", "capacity", now, "err", err)
		}
	}
}

// movedEnough reports whether capacity now differs from was by 1% of was
// or more, or crosses zero.
func movedEnough(was, now uint64) bool {
	if (was == 0) != (now == 0) {
		return true
	}
	diff := max(was, now) - min(was, now)
	return diff > 0 && diff >= was/100
}

// setMetaLocked changes c.meta; lifeMu is held.
func (c *Cluster) setMetaLocked(f func(*Meta)) {
	c.mu.Lock()
	f(&c.meta)
	c.mu.Unlock()
}

// Members is every member this node knows of, this one included, sorted
// by name: live ones, and dead or left ones until they come back.
func (c *Cluster) Members() []Member {
	c.mu.Lock()
	out := make([]Member, 0, len(c.view))
	for _, m := range c.view {
		if m.State == StateAlive && c.suspect[m.Name] {
			m.State = StateSuspect
		}
		out = append(out, m)
	}
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// goFunc runs f in a goroutine that Shutdown waits for.
func (c *Cluster) goFunc(f func()) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f()
	}()
}

// reconnect joins members held dead again every ReconnectInterval until
// Shutdown: memberlist does not exchange state with members it holds dead,
// so after a partition heals neither side would learn of the other.
func (c *Cluster) reconnect() {
	t := time.NewTicker(c.cfg.ReconnectInterval)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		var addrs []string
		for _, m := range c.Members() {
			if m.State == StateDead && m.Name != c.cfg.Name {
				addrs = append(addrs, m.GossipAddr)
			}
		}
		if len(addrs) == 0 {
			continue
		}
		if n, err := c.ml.Join(addrs); n > 0 {
			c.log.Info("cluster: reconnected", "reached", n, "of", addrs)
		} else {
			c.log.Debug("cluster: reconnect failed", "addrs", addrs, "err", err)
		}
	}
}

// Forget drops a dead or left member from Members, and so from the
// reconnect loop, for a member that is gone for good (the operator's
// "remove node"). It comes back if it joins again.
func (c *Cluster) Forget(name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, ok := c.view[name]
	switch {
	case !ok:
		return fmt.Errorf("%w: %q", ErrUnknownMember, name)
	case m.State.Live():
		return fmt.Errorf("%w: %q is %v", ErrLiveMember, name, m.State)
	}
	delete(c.view, name)
	delete(c.suspect, name)
	delete(c.left, name)
	return nil
}

// dispatch delivers queued events to OnChange until Shutdown.
func (c *Cluster) dispatch() {
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

// emitLocked queues e for OnChange; mu is held.
func (c *Cluster) emitLocked(e Event) {
	c.queue = append(c.queue, e)
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// delegate is the Cluster as memberlist's Delegate, EventDelegate and
// PingDelegate. memberlist calls the event methods with its node lock
// held, which makes reading the *memberlist.Node safe there and only there.
type delegate Cluster

var (
	_ memberlist.Delegate      = (*delegate)(nil)
	_ memberlist.EventDelegate = (*delegate)(nil)
	_ memberlist.PingDelegate  = (*delegate)(nil)
)

func (d *delegate) NodeMeta(limit int) []byte {
	d.mu.Lock()
	m := d.meta
	d.mu.Unlock()
	b, err := m.Encode(nil)
	if err != nil || len(b) > limit {
		// Cannot happen: Config.Validate checked the same Meta, and
		// MaxMetaSize is memberlist's limit.
		d.log.Error("cluster: own metadata does not encode", "err", err, "len", len(b))
		return nil
	}
	return b
}

func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }

func (d *delegate) NotifyJoin(n *memberlist.Node)   { d.note(EventJoin, n) }
func (d *delegate) NotifyUpdate(n *memberlist.Node) { d.note(EventUpdate, n) }
func (d *delegate) NotifyLeave(n *memberlist.Node)  { d.note(EventLeave, n) }

func (d *delegate) AckPayload() []byte { return nil }

// NotifyPingComplete: a direct probe of other was answered.
func (d *delegate) NotifyPingComplete(other *memberlist.Node, _ time.Duration, _ []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.suspect[other.Name] {
		return
	}
	delete(d.suspect, other.Name)
	if m, ok := d.view[other.Name]; ok && m.State == StateAlive {
		(*Cluster)(d).emitLocked(Event{Kind: EventAlive, Member: m})
	}
}

// note records a join, update or leave. memberlist's Node.State is not
// kept up to date (see the package comment): the state comes from the kind
// of event and, for a leave, from the leaving flag the member published.
func (d *delegate) note(k EventKind, n *memberlist.Node) {
	m := Member{Name: n.Name, State: StateAlive, GossipAddr: net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))}
	meta, err := ParseMeta(n.Meta)
	if err != nil {
		m.MetaErr = err
		d.log.Warn("cluster: member has bad metadata; not trusted", "member", m.Name, "err", err)
	} else {
		m.Meta = meta
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if k == EventLeave {
		m.State = StateDead
		// The leaving flag may have come with this node's last update
		// rather than with the node passed to NotifyLeave.
		if prev, ok := d.view[m.Name]; (ok && prev.Leaving) || m.Leaving {
			m.State = StateLeft
		}
	}
	delete(d.suspect, m.Name)
	delete(d.left, m.Name)
	if m.State == StateLeft {
		d.left[m.Name] = time.Now()
	}
	d.view[m.Name] = m
	(*Cluster)(d).emitLocked(Event{Kind: k, Member: m})
}

// markSuspect records that this member's probe of name went unanswered.
func (c *Cluster) markSuspect(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, ok := c.view[name]
	if !ok || m.State != StateAlive || c.suspect[name] {
		return
	}
	c.suspect[name] = true
	m.State = StateSuspect
	c.emitLocked(Event{Kind: EventSuspect, Member: m})
}

// logWriter is the Cluster as memberlist's log output: it forwards lines
// to Config.Logger and watches for failed probes.
type logWriter Cluster

const (
	suspectPrefix = "memberlist: Suspect "
	suspectSuffix = " has failed, no acks received"
)

func (w *logWriter) Write(p []byte) (int, error) {
	line := strings.TrimRight(string(p), "\n")
	if i := strings.Index(line, suspectPrefix); i >= 0 && strings.HasSuffix(line, suspectSuffix) {
		name := line[i+len(suspectPrefix) : len(line)-len(suspectSuffix)]
		(*Cluster)(w).markSuspect(name)
	}
	level, msg := memberlistLevel(line)
	if level < slog.LevelWarn {
		w.log.Log(context.Background(), level, msg, "source", "memberlist")
		return len(p), nil
	}
	// A warning or error repeated word for word (a member that stays
	// unreachable) is logged once, then counted: once a minute at most.
	w.repeats.Log(w.log, level, msg, "repeat", msg, "source", "memberlist")
	return len(p), nil
}

// memberlistLevel parses one of memberlist's log lines, "[LEVEL]
// memberlist: text", into a slog level and the text. A line without a
// level is Debug.
func memberlistLevel(line string) (slog.Level, string) {
	level := slog.LevelDebug
	for _, l := range []struct {
		prefix string
		level  slog.Level
	}{{"[ERR]", slog.LevelError}, {"[ERROR]", slog.LevelError}, {"[WARN]", slog.LevelWarn}, {"[INFO]", slog.LevelInfo}, {"[DEBUG]", slog.LevelDebug}, {"[TRACE]", slog.LevelDebug}} {
		if rest, ok := strings.CutPrefix(line, l.prefix); ok {
			level, line = l.level, rest
			break
		}
	}
	line = strings.TrimSpace(line)
	line = strings.TrimPrefix(line, "memberlist: ")
	return level, "memberlist: " + line
}
