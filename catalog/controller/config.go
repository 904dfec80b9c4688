package controller

import (
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"time"

	"github.com/rpstream/rpstream/catalog"
	pb "github.com/rpstream/rpstream/catalog/catalogpb"
	"github.com/rpstream/rpstream/cluster"
)

// Config configures a Controller. Start from DefaultConfig (or
// LoopbackConfig in tests); Start copies it before filling in defaults.
type Config struct {
	// Name is this node's member name; Incarnation the identity of its
	// data directory (random, never 0, kept with the data).
	Name        string
	Incarnation uint64
	// Role is what this node is in the catalog: a stream node or a
	// backup target.
	Role pb.Role
	// Dir holds the Raft log and its snapshots (DATA/catalog).
	Dir string
	// Voters are the controller voters the group starts with: used only
	// by a node in the list whose log is empty (bootstrap). Every
	// bootstrapping voter must be given the same list. A node outside
	// the list starts empty and joins as a non-voting follower once the
	// controller adds it. Later changes are AddVoter and RemoveVoter.
	Voters []string
	// Transport carries Raft messages and forwarded requests.
	Transport Transport
	// Members is the address book and the liveness hint: the cluster's
	// members as memberlist sees them.
	Members func() []cluster.Member
	// Tick is one Raft tick; ElectionTicks and HeartbeatTicks count them.
	Tick           time.Duration
	ElectionTicks  int
	HeartbeatTicks int
	// LeaseTTL is how long a node's lease at the controller lasts without
	// a heartbeat; nodes heartbeat every LeaseTTL/4.
	LeaseTTL time.Duration
	// SnapshotEvery is how many applied entries trigger a snapshot.
	SnapshotEvery uint64
	// RequestTimeout bounds one forwarded request and one proposal's wait.
	RequestTimeout time.Duration
	// Logger receives the controller's logs; nil means slog.Default().
	Logger *slog.Logger
}

// DefaultConfig is the configuration of a controller member on a real
// network: 100 ms ticks, elections after 1 s, leases of 3 s.
func DefaultConfig(name string) Config {
	return Config{
		Name:           name,
		Role:           pb.Role_ROLE_NODE,
		Tick:           100 * time.Millisecond,
		ElectionTicks:  10,
		HeartbeatTicks: 1,
		LeaseTTL:       3 * time.Second,
		SnapshotEvery:  10000,
		RequestTimeout: 5 * time.Second,
	}
}

// LoopbackConfig is DefaultConfig for processes on one machine: 20 ms
// ticks, elections after 300 ms, leases of 1 s; requests may wait 10 s
// (tests run under the race detector on loaded machines).
func LoopbackConfig(name string) Config {
	c := DefaultConfig(name)
	c.Tick = 20 * time.Millisecond
	c.ElectionTicks = 15
	c.LeaseTTL = time.Second
	c.RequestTimeout = 10 * time.Second
	return c
}

// Validate reports whether c is usable.
func (c Config) Validate() error {
	if err := catalog.ValidName(c.Name); err != nil {
		return fmt.Errorf("controller: name %w", err)
	}
	if c.Incarnation == 0 {
		return errors.New("controller: incarnation 0")
	}
	if c.Role != pb.Role_ROLE_NODE && c.Role != pb.Role_ROLE_BACKUP {
		return fmt.Errorf("controller: role %v", c.Role)
	}
	if c.Dir == "" {
		return errors.New("controller: Dir is empty")
	}
	if c.Transport == nil || c.Members == nil {
		return errors.New("controller: Transport and Members are required")
	}
	if len(c.Voters) > 7 {
		return fmt.Errorf("controller: %d voters; at most 7 (3 or 5 are usual)", len(c.Voters))
	}
	seen := map[uint64]string{}
	for _, v := range c.Voters {
		if err := catalog.ValidName(v); err != nil {
			return fmt.Errorf("controller: voter %w", err)
		}
		if o, ok := seen[RaftID(v)]; ok {
			return fmt.Errorf("controller: voters %q and %q repeat or share a Raft id", o, v)
		}
		seen[RaftID(v)] = v
	}
	if c.Tick <= 0 || c.ElectionTicks <= c.HeartbeatTicks || c.HeartbeatTicks < 1 {
		return fmt.Errorf("controller: tick %v, election %d ticks, heartbeat %d ticks", c.Tick, c.ElectionTicks, c.HeartbeatTicks)
	}
	if c.LeaseTTL < 2*c.Tick {
		return fmt.Errorf("controller: lease TTL %v shorter than two ticks", c.LeaseTTL)
	}
	if c.SnapshotEvery < 1 || c.RequestTimeout <= 0 {
		return errors.New("controller: SnapshotEvery and RequestTimeout must be positive")
	}
	return nil
}

func (c Config) withDefaults() Config {
	d := DefaultConfig(c.Name)
	if c.Tick == 0 {
		c.Tick = d.Tick
	}
	if c.ElectionTicks == 0 {
		c.ElectionTicks = d.ElectionTicks
	}
	if c.HeartbeatTicks == 0 {
		c.HeartbeatTicks = d.HeartbeatTicks
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = d.LeaseTTL
	}
	if c.SnapshotEvery == 0 {
		c.SnapshotEvery = d.SnapshotEvery
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = d.RequestTimeout
	}
	if c.Role == pb.Role_ROLE_UNSPECIFIED {
		c.Role = pb.Role_ROLE_NODE
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Voters = slices.Clone(c.Voters)
	return c
}

// RaftID is member name's Raft id: FNV-1a 64 of the name (never 0). It
// must never change: ids are in every node's Raft log.
func RaftID(name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	if id := h.Sum64(); id != 0 {
		return id
	}
	return 1
}
