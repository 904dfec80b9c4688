package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
)

// Errors returned by this package. Test them with errors.Is.
var (
	// ErrConfig is returned by Config.Validate and New for a bad Config.
	ErrConfig = errors.New("cluster: bad config")
	// ErrBadMeta is returned by ParseMeta (and reported in Member.MetaErr)
	// for metadata that is not a valid encoding.
	ErrBadMeta = errors.New("cluster: bad member metadata")
	// ErrJoin is returned by Join when no given address could be contacted.
	ErrJoin = errors.New("cluster: join failed")
	// ErrClosed is returned by methods called after Shutdown.
	ErrClosed = errors.New("cluster: shut down")
	// ErrNotEnoughMembers is returned by Place when fewer eligible members
	// than the replication factor are alive.
	ErrNotEnoughMembers = errors.New("cluster: not enough live members")
	// ErrLiveMember is returned by Forget for a member that is alive or
	// suspect, and ErrUnknownMember for a name not in the view.
	ErrLiveMember    = errors.New("cluster: member is live")
	ErrUnknownMember = errors.New("cluster: unknown member")
)

// Role is what a member does.
type Role uint8

// Roles. Their values are in the metadata format and must never change.
const (
	// RoleUnknown is reported for a member whose metadata did not parse.
	RoleUnknown Role = 0
	// RoleNode is a stream node: it leads and replicates streams.
	RoleNode Role = 1
	// RoleBackup is a backup target: it only receives extra copies.
	RoleBackup Role = 2
)

func (r Role) String() string {
	switch r {
	case RoleNode:
		return "node"
	case RoleBackup:
		return "backup"
	}
	return "unknown"
}

// ParseRole parses "node" or "backup" (the --role flag).
func ParseRole(s string) (Role, error) {
	switch s {
	case "node":
		return RoleNode, nil
	case "backup":
		return RoleBackup, nil
	}
	return RoleUnknown, fmt.Errorf("%w: role %q is not node or backup", ErrConfig, s)
}

// Config configures a Cluster member. New copies it; DefaultConfig and
// LoopbackConfig give starting points.
type Config struct {
	// Name is the member's unique name in the cluster (--name).
	Name string
	// GossipAddr is the ip:port memberlist binds (TCP and UDP) for
	// gossip (--gossip-addr). Port 0 picks a free port; see
	// Cluster.GossipAddr.
	GossipAddr string
	// AdvertiseAddr, if set, is the ip:port other members use to reach
	// this one's gossip (behind NAT or when bound to 0.0.0.0).
	AdvertiseAddr string
	// Join lists gossip addresses of existing members (--join). New does
	// not join them; call Join.
	Join []string
	// Role is RoleNode or RoleBackup.
	Role Role
	// ClientAddr is the member's client (gRPC) address, carried in its
	// metadata.
	ClientAddr string
	// PeerAddr is the member's peer (control and rdma) address, carried in
	// its metadata.
	PeerAddr string
	// Capacity is the member's weight for placement (for example free
	// bytes or region slots); 0 keeps it from being chosen for new streams.
	Capacity uint64
	// MeasureCapacity, if set, measures the capacity again (streamnode:
	// the free bytes of its data directory) every CapacityInterval; a
	// value that moved by 1% or more from the one advertised is put in the
	// member's metadata and spread (UpdateCapacity), so that placement
	// weighs members by what they have now, not at start. Capacity is
	// advertised until the first measure.
	MeasureCapacity func() uint64
	// CapacityInterval is how often MeasureCapacity runs; 0 means 5 s.
	CapacityInterval time.Duration

	// ProbeInterval is how often a random member is probed.
	ProbeInterval time.Duration
	// ProbeTimeout is how long a probe waits for an ack.
	ProbeTimeout time.Duration
	// GossipInterval is how often gossip messages are sent.
	GossipInterval time.Duration
	// PushPullInterval is how often full state is exchanged with a member.
	PushPullInterval time.Duration
	// SuspicionMult scales how long a suspect member has to refute before
	// it is declared dead (SuspicionMult × ProbeInterval × log10(members)).
	SuspicionMult int
	// TCPTimeout bounds TCP exchanges (push/pull, fallback probes, join).
	TCPTimeout time.Duration
	// LeaveTimeout bounds how long Leave waits for its message to spread.
	LeaveTimeout time.Duration
	// ReconnectInterval is how often members held dead are joined again
	// (memberlist alone never heals a partition); 0 never does.
	ReconnectInterval time.Duration

	// SecretKey, if set, encrypts and authenticates gossip with AES-GCM
	// (16, 24 or 32 bytes, the same on every member): without it anyone
	// who reaches the gossip port can join and advertise any metadata.
	SecretKey []byte

	// Transport, if set, replaces memberlist's UDP/TCP transport bound to
	// GossipAddr (which is then only checked for form). Tests use it to
	// run members over memberlist's MockNetwork with injected faults.
	Transport memberlist.NodeAwareTransport

	// OnChange, if set, is called for every membership event, in order,
	// from one goroutine owned by the Cluster. It must not block for long:
	// events queue behind it.
	OnChange func(Event)
	// Logger receives memberlist's log lines, at the level each carries
	// ("[WARN]": Warn; a warning repeated word for word is logged once a
	// minute with its count), and the Cluster's own; nil discards them.
	Logger *slog.Logger
}

// DefaultConfig is for LAN deployments: memberlist's LAN timings.
func DefaultConfig() Config {
	return Config{
		Name:              "node1",
		GossipAddr:        "0.0.0.0:7946",
		Role:              RoleNode,
		Capacity:          1,
		ProbeInterval:     time.Second,
		ProbeTimeout:      500 * time.Millisecond,
		GossipInterval:    200 * time.Millisecond,
		PushPullInterval:  30 * time.Second,
		SuspicionMult:     4,
		TCPTimeout:        10 * time.Second,
		LeaveTimeout:      5 * time.Second,
		ReconnectInterval: 10 * time.Second,
		CapacityInterval:  5 * time.Second,
	}
}

// LoopbackConfig is for tests on 127.0.0.1: a free port and fast probes,
// so that a stopped member is suspected within a few hundred milliseconds
// and declared dead within about two seconds.
func LoopbackConfig(name string) Config {
	c := DefaultConfig()
	c.Name = name
	c.GossipAddr = "127.0.0.1:0"
	c.ClientAddr = "127.0.0.1:1"
	c.PeerAddr = "127.0.0.1:2"
	c.ProbeInterval = 100 * time.Millisecond
	c.ProbeTimeout = 50 * time.Millisecond
	c.GossipInterval = 20 * time.Millisecond
	c.PushPullInterval = time.Second
	c.SuspicionMult = 4
	c.TCPTimeout = time.Second
	c.ReconnectInterval = 200 * time.Millisecond
	c.CapacityInterval = 100 * time.Millisecond
	return c
}

// Validate checks c.
func (c *Config) Validate() error {
	if c.Name == "" {
		return fmt.Errorf("%w: no name", ErrConfig)
	}
	if _, _, err := splitIPPort(c.GossipAddr); err != nil {
		return fmt.Errorf("%w: gossip address: %w", ErrConfig, err)
	}
	if c.AdvertiseAddr != "" {
		if _, _, err := splitIPPort(c.AdvertiseAddr); err != nil {
			return fmt.Errorf("%w: advertise address: %w", ErrConfig, err)
		}
	}
	for _, j := range c.Join {
		if _, _, err := net.SplitHostPort(j); err != nil {
			return fmt.Errorf("%w: join address %q: %w", ErrConfig, j, err)
		}
	}
	if c.Role != RoleNode && c.Role != RoleBackup {
		return fmt.Errorf("%w: role %d", ErrConfig, c.Role)
	}
	m := Meta{Role: c.Role, Capacity: c.Capacity, ClientAddr: c.ClientAddr, PeerAddr: c.PeerAddr}
	if err := m.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if c.ProbeInterval <= 0 || c.ProbeTimeout <= 0 || c.GossipInterval <= 0 ||
		c.PushPullInterval <= 0 || c.TCPTimeout <= 0 || c.LeaveTimeout <= 0 {
		return fmt.Errorf("%w: intervals and timeouts must be positive", ErrConfig)
	}
	if c.ProbeTimeout >= c.ProbeInterval {
		return fmt.Errorf("%w: probe timeout %v not below probe interval %v", ErrConfig, c.ProbeTimeout, c.ProbeInterval)
	}
	if n := len(c.SecretKey); n != 0 && n != 16 && n != 24 && n != 32 {
		return fmt.Errorf("%w: secret key of %d bytes, want 16, 24 or 32", ErrConfig, n)
	}
	if c.ReconnectInterval < 0 {
		return fmt.Errorf("%w: negative reconnect interval", ErrConfig)
	}
	if c.SuspicionMult < 1 {
		return fmt.Errorf("%w: suspicion multiplier %d", ErrConfig, c.SuspicionMult)
	}
	return nil
}

// splitHostPort parses host:port with a numeric port; the host may be an
// IP or a name that memberlist resolves.
func splitHostPort(s string) (string, int, error) {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", p, err)
	}
	return h, int(port), nil
}

// splitIPPort parses ip:port, as memberlist binds and advertises IPs.
func splitIPPort(s string) (string, int, error) {
	h, p, err := splitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	if net.ParseIP(h) == nil {
		return "", 0, fmt.Errorf("%q is not an IP address", h)
	}
	return h, p, nil
}
