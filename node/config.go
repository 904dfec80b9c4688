package node

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rpstream/rpstream/acl"
	"github.com/rpstream/rpstream/catalog/catalogpb"
	"github.com/rpstream/rpstream/catalog/controller"
	"github.com/rpstream/rpstream/local"
	"github.com/rpstream/rpstream/mover"
	"github.com/rpstream/rpstream/rdma"
)

// Config configures a Server. Start from DefaultConfig; New copies it
// before filling in defaults.
type Config struct {
	// Dir is the data directory (created if missing).
	Dir string
	// Name is this node's member name, reported as the leader of its
	// streams and in Members.
	Name string
	// ClientAddr is the address clients reach this node at, reported as
	// the leader's address; empty means the listener's address.
	ClientAddr string
	// RegionSize is the region size of streams created without one.
	RegionSize int
	// MaxStreamSize is the most bytes one stream file may grow to (address
	// space reserved per open stream); zero means local's default.
	MaxStreamSize int
	// IdempotenceWindow is how many of the highest sequence numbers stored are remembered
	// per producer and stream (see the package comment).
	IdempotenceWindow int
	// IdempotenceHorizon is how many of a stream's last entries are read
	// when it is opened to remember the sequence numbers producers stored
	// in them (see the package comment); a retry of an append older than
	// that may be stored twice after a restart.
	IdempotenceHorizon int
	// MaxOpenStreams is the most streams this node keeps open at once,
	// the streams it leads and the copies it holds for other leaders
	// together; opening one more fails with ResourceExhausted
	// (ErrTooManyStreams) unless an idle one can be closed for room (see
	// the package comment). Zero means as many as the process's file
	// descriptor limit fits (DefaultMaxOpenStreams: 17,500 for 20,000
	// descriptors with the tcp provider, about 5,800 with verbs).
	MaxOpenStreams int
	// IdleClose is how long a stream this node leads stays open with no
	// call using it; it then closes, and opens again on its next use
	// (idle.go). Zero means DefaultIdleClose; negative never closes.
	IdleClose time.Duration
	// MaxProducers is how many producer ids are remembered per stream; the
	// least recently used that no append is using is forgotten beyond it.
	MaxProducers int
	// Logger receives the server's logs; nil means slog.Default().
	Logger *slog.Logger
	// Cluster, if set, is the membership this node is part of: Members
	// reports it, and a call about a stream another member leads is
	// answered with a leader hint. Nil runs a single node.
	Cluster Membership
	// PeerAddr, if set, is where this node serves the copies it holds of
	// streams other members lead (remote.Hub), and Provider and RDMA the
	// rdma provider and settings (RDMA.Secret: the cluster's secret) of
	// that service and of this node's own leaders writing their replicas.
	PeerAddr string
	Provider rdma.Provider
	RDMA     rdma.Config
	// Mover, if set, copies appended payloads into the streams
	// (local.Appender); nil copies them on the appending goroutine. The
	// caller owns it and closes it after Shutdown.
	Mover mover.Mover
	// QuorumWait is how long an append to a replicated stream waits while
	// too few copies are reachable for its policy before it fails with
	// Unavailable (the entry stays stored here; a retry with the same
	// producer sequence number is answered with its position once
	// acknowledged). Zero means 5s.
	QuorumWait time.Duration
	// Backup makes this node a backup target: it holds copies of streams
	// other members lead, and leads none.
	Backup bool
	// ScrubEvery is how often the node reads every copy it holds for
	// other leaders through, checking each committed entry's checksum
	// (scrub.go); a damaged copy is cut back before the damage and
	// rewritten by its leader. Zero means 1 minute; negative disables it.
	// ScrubRate bounds the bytes read per second (zero: 64 MiB/s).
	ScrubEvery time.Duration
	ScrubRate  int
	// RetentionEvery is how often the node applies the retention policy
	// and the catalog's trim head to the streams it leads (retention.go).
	// Zero means 1s; negative disables it.
	RetentionEvery time.Duration
	// AckEvery is how often the node commits the consumers'
	// acknowledgements it gathered to the catalog (one command per
	// stream). Zero means 200ms.
	AckEvery time.Duration
	// Catalog, if set, is this node's member of the catalog's Raft group
	// (catalog/controller): it decides which streams exist, who leads
	// each under which epoch and where their copies are, and the node
	// serves by it (catalog.go). Nil runs a node alone, whose streams are
	// its own and have no copies. The caller starts it and stops it after
	// Shutdown.
	Catalog *controller.Controller
	// Control, if set, is registered on the gRPC server: the node-to-node
	// Control service (controller.GRPC.Service), separate from the
	// client service.
	Control catalogpb.ControlServer
	// TLS, if set, is the client port's TLS config (pki.Keys.ServerConfig):
	// the client service and Control are served over TLS only, and
	// refused handshakes are logged. Nil serves plaintext.
	TLS *tls.Config
	// ACL, if set, turns authentication and authorisation of the client
	// service on (auth.go): it returns the ACL in force at each call
	// (the caller may swap it, on SIGHUP). Nil lets every caller do
	// everything.
	ACL func() *acl.ACL
	// Metrics, if set, is where the server registers its Prometheus
	// metrics (metrics.go): a registry of this node's own, as tests run
	// several nodes in one process. Nil: nothing is counted.
	Metrics prometheus.Registerer
	// Clock, if set, is the time the node stamps on the entries it
	// appends (api.Entry.time_unix_nano); nil means time.Now. Times
	// increase with positions even when it steps back (append.go).
	Clock func() time.Time
}

// DefaultConfig returns the configuration of a node keeping its data in
// dir.
func DefaultConfig(dir string) Config {
	return Config{
		Dir:               dir,
		Name:              "node",
		RegionSize:        local.DefaultRegionSize,
		IdempotenceWindow: 64,
		MaxProducers:      4096,
	}
}

// Validate reports whether the configuration is usable.
func (c Config) Validate() error {
	if c.Dir == "" {
		return errors.New("node: Dir is empty")
	}
	if c.Name == "" {
		return errors.New("node: Name is empty")
	}
	if err := (local.Options{RegionSize: c.RegionSize, MaxSize: c.MaxStreamSize}).Validate(); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	if c.IdempotenceWindow < 1 || c.IdempotenceWindow > 1<<16 {
		return fmt.Errorf("node: IdempotenceWindow %d not in [1, 65536]", c.IdempotenceWindow)
	}
	if c.PeerAddr != "" {
		if c.Provider == nil {
			return errors.New("node: PeerAddr without an rdma Provider")
		}
		if err := c.RDMA.Validate(); err != nil {
			return fmt.Errorf("node: %w", err)
		}
	}
	if c.IdempotenceHorizon < 0 {
		return fmt.Errorf("node: IdempotenceHorizon %d < 0", c.IdempotenceHorizon)
	}
	if c.MaxProducers < 1 {
		return fmt.Errorf("node: MaxProducers %d < 1", c.MaxProducers)
	}
	if c.MaxOpenStreams < 0 {
		return fmt.Errorf("node: MaxOpenStreams %d < 0", c.MaxOpenStreams)
	}
	return nil
}

// withDefaults fills in what the zero value leaves open.
func (c Config) withDefaults() Config {
	if c.RegionSize == 0 {
		c.RegionSize = local.DefaultRegionSize
	}
	if c.IdempotenceWindow == 0 {
		c.IdempotenceWindow = 64
	}
	if c.IdempotenceHorizon == 0 {
		c.IdempotenceHorizon = 100000
	}
	if c.MaxProducers == 0 {
		c.MaxProducers = 4096
	}
	if c.ScrubEvery == 0 {
		c.ScrubEvery = time.Minute
	}
	if c.ScrubRate <= 0 {
		c.ScrubRate = 64 << 20
	}
	if c.IdleClose == 0 {
		c.IdleClose = DefaultIdleClose
	}
	if c.MaxOpenStreams == 0 {
		// Without a Provider the node holds no copies and dials no one:
		// its open streams take a descriptor each.
		c.MaxOpenStreams = processMaxOpenStreams(c.Provider == nil || c.Provider.Name() == "tcp")
	}
	if c.QuorumWait == 0 {
		c.QuorumWait = 5 * time.Second
	}
	if c.RetentionEvery == 0 {
		c.RetentionEvery = defaultRetentionEvery
	}
	if c.AckEvery <= 0 {
		c.AckEvery = defaultAckEvery
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	return c
}
