package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/catalog"
	"github.com/rpstream/rpstream/catalog/catalogpb"
	"github.com/rpstream/rpstream/catalog/controller"
	"github.com/rpstream/rpstream/cluster"
	"github.com/rpstream/rpstream/internal/parallel"
	"github.com/rpstream/rpstream/local"
	"github.com/rpstream/rpstream/remote"
	"github.com/rpstream/rpstream/replicate"
)

// MaxMessageSize is the largest gRPC message the server receives or sends
// (api.MaxMessageSize).
const MaxMessageSize = api.MaxMessageSize

// Server serves the client service over the streams of one data
// directory. Create it with New, run it with Serve, stop it with Shutdown.
type Server struct {
	api.UnimplementedStreamsServer

	cfg      Config
	store    *store
	replicas *replicas // copies of streams other members lead
	grpc     *grpc.Server
	log      *slog.Logger

	// mu guards streams, opening and closing.
	mu      sync.Mutex
	streams map[string]*stream
	// opening has a channel per stream being opened, closed when done.
	opening map[string]chan struct{}
	// held holds, per stream, the epoch this process took it over under
	// (catalog.go, openLed): the next takeover by this process, while the
	// catalog still grants that epoch to this node, reuses it instead of
	// taking another, and so needs no new region (every region is
	// written under one epoch). Dropped when a stream opened under it is
	// closed with entries not durable in its file.
	held map[string]uint64
	// idle holds the streams closed for idleness and how (idle.go).
	idle map[string]idleRecord
	// members holds the metadata last seen of each member (MemberChanged).
	members map[string]cluster.Meta
	// repairing names the copies the scrubber is cutting back: their
	// leader's connections are refused meanwhile.
	repairing map[string]bool
	// moveMu serialises promote and demote (a stream's files moving
	// between streams/ and replicas/). Lock order: the Hub's lock (held
	// while it calls openCopy, which may demote), then moveMu; never
	// the Hub with moveMu held.
	moveMu  sync.Mutex
	scrub   scrubCounters
	closing bool
	// stopCtx is cancelled when Shutdown begins, with cause ErrClosing;
	// every stream's context derives from it.
	stopCtx  context.Context
	stopFunc context.CancelCauseFunc
	calls    sync.WaitGroup // calls in flight
	addr     string         // listener address, once Serve runs; under mu

	metrics *metrics       // nil without Config.Metrics
	health  *health.Server // grpc.health.v1 on the client port, following Ready

	hub     *remote.Hub   // serves copies on Config.PeerAddr; nil without
	hubDone chan struct{} // closed when the hub's Serve returned

	leaderPeer leaderPeer // the rdma Peer this node's Leaders share (sharedpeer.go)
	// beforeLeader, set by tests, runs before a replicated
	// stream's Leader starts; an error fails the opening as a Leader that
	// cannot start does (descriptors ran out, say).
	beforeLeader atomic.Pointer[func(stream string) error]
	ret          retentionState // retention.go

	// membership is Config.Cluster, or what SetCluster set: read through
	// cluster(), since the hub serves leaders (openCopy) from New on,
	// possibly while SetCluster runs.
	membership atomic.Pointer[Membership]
}

var _ api.StreamsServer = (*Server)(nil)

// stream is an open stream and the calls using it.
type stream struct {
	name string
	meta meta
	ls   *local.Stream
	// leader replicates the stream to its copies; nil for a stream of
	// this node alone. quorumWait is Config.QuorumWait.
	leader     *replicate.Leader
	repairMu   sync.Mutex // one repair of its damaged entries at a time (scrub.go)
	quorumWait time.Duration
	opened     time.Time // when leader started
	// app copies payloads into the stream with Config.Mover; nil copies
	// them on the appending goroutine.
	app  *local.Appender
	prod *producers
	// appendMu orders the node's appends to the stream: positions are
	// taken, a conditional append's expected position checked and times
	// stamped under it (append.go). lastTime is the last time stamped.
	appendMu sync.Mutex
	clock    func() time.Time
	lastTime int64
	// ctx ends when the stream is deleted or the server stops: tails
	// watch it. Its cause (context.Cause) says which: ErrNoStream or
	// ErrClosing.
	ctx    context.Context
	cancel context.CancelCauseFunc
	refs   sync.WaitGroup
	gone   bool // deleted; under Server.mu
	// users counts holders (hold, release), and used is when a call
	// last acquired or released it (UnixNano): idle.go closes a stream
	// no one uses.
	users atomic.Int32
	used  atomic.Int64
	// policy is the retention policy of a stream of a node without a
	// catalog (meta.json's); the catalog's otherwise.
	policy atomic.Pointer[catalogpb.Retention]
}

// New opens the data directory cfg.Dir (creating it if needed) and
// returns a server ready to Serve.
func New(cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	st, err := openStore(cfg.Dir, cfg.MaxStreamSize)
	if err != nil {
		return nil, err
	}
	reps, err := openReplicas(cfg.Dir, cfg.MaxStreamSize, cfg.RegionSize)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, store: st, replicas: reps, log: cfg.Logger, streams: make(map[string]*stream), opening: map[string]chan struct{}{}, held: map[string]uint64{}, idle: map[string]idleRecord{}, repairing: map[string]bool{}}
	s.stopCtx, s.stopFunc = context.WithCancelCause(context.Background())
	if cfg.Cluster != nil {
		s.membership.Store(&cfg.Cluster)
	}
	if cfg.PeerAddr != "" {
		if err := s.startHub(); err != nil {
			return nil, err
		}
	}
	if cfg.Metrics != nil {
		if s.metrics, err = newMetrics(s, cfg.Metrics); err != nil {
			s.stopHub()
			return nil, fmt.Errorf("node: metrics: %w", err)
		}
	}
	opts := serverOptions()
	refusals := &deniedLog{log: s.log}
	if cfg.TLS != nil {
		opts = append(opts, grpc.Creds(loggedCreds{credentials.NewTLS(cfg.TLS), refusals}))
	}
	if cfg.ACL != nil {
		a := &authorizer{acl: cfg.ACL, log: refusals}
		opts = append(opts, grpc.ChainUnaryInterceptor(a.unary), grpc.ChainStreamInterceptor(a.stream))
	}
	s.grpc = grpc.NewServer(opts...)
	api.RegisterStreamsServer(s.grpc, s)
	api.RegisterRestoresServer(s.grpc, &restoreService{s: s})
	if cfg.Control != nil {
		catalogpb.RegisterControlServer(s.grpc, cfg.Control)
	}
	s.health = health.NewServer()
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	s.health.SetServingStatus(api.Streams_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	healthgrpc.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	s.calls.Add(1)
	go s.healthLoop()
	if cfg.Catalog != nil {
		s.calls.Add(1)
		go s.reconcileLoop()
	}
	if s.cfg.ScrubEvery > 0 {
		s.calls.Add(1)
		go s.scrubLoop()
	}
	s.ret.kick = make(chan struct{}, 1)
	if s.cfg.RetentionEvery > 0 {
		s.calls.Add(1)
		go s.retentionLoop()
	}
	if cfg.Catalog != nil {
		s.calls.Add(1)
		go s.ackLoop()
	}
	return s, nil
}

// SetCluster makes the server part of a cluster (Config.Cluster), for
// when the membership can only be made after New (it advertises
// addresses New opened). Call it before Serve.
func (s *Server) SetCluster(m Membership) {
	if m == nil {
		s.membership.Store(nil)
		return
	}
	s.membership.Store(&m)
}

// cluster is the membership this node is part of, nil if none.
func (s *Server) cluster() Membership {
	if m := s.membership.Load(); m != nil {
		return *m
	}
	return nil
}

// Serve accepts client connections on lis until Shutdown; it returns nil
// after Shutdown.
func (s *Server) Serve(lis net.Listener) error {
	s.mu.Lock()
	s.addr = lis.Addr().String()
	s.mu.Unlock()
	s.log.Info("serving clients", "addr", lis.Addr().String(), "dir", s.cfg.Dir, "name", s.cfg.Name)
	err := s.grpc.Serve(lis)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Shutdown stops the server: new calls are refused with Unavailable,
// tails end, the calls in flight (appends above all) finish and are
// answered, then connections close and every stream is closed. If ctx
// ends first, the calls still in flight are cut off (their clients see
// Unavailable) and ctx's error is returned after the streams are closed.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil
	}
	s.closing = true
	s.mu.Unlock()
	s.stopFunc(ErrClosing)
	// Health checks answer NOT_SERVING while the calls drain.
	s.health.Shutdown()

	drained := make(chan struct{})
	go func() { s.calls.Wait(); close(drained) }()
	var err error
	select {
	case <-drained:
		s.grpc.GracefulStop()
	case <-ctx.Done():
		err = ctx.Err()
		s.grpc.Stop()
		<-drained
	}
	s.mu.Lock()
	streams := s.streams
	s.streams = nil
	s.mu.Unlock()
	if cerr := closeStreams(streams); cerr != nil && err == nil {
		err = cerr
	}
	if perr := s.closeSharedPeer(); perr != nil && err == nil {
		err = perr
	}
	if herr := s.stopHub(); herr != nil && err == nil {
		err = herr
	}
	s.log.Info("stopped", "streams_closed", len(streams))
	return err
}

// closeParallel bounds how many streams Shutdown closes at once.
const closeParallel = 8

// closeStreams closes streams (Shutdown's, no call using them any more),
// closeParallel at a time, and returns their errors, joined. Closing one is
// mostly the kernel's work: its Leader's connections, a final persist,
// a spare region's blocks given back if it has one, the mapping undone
// (0.5 to 2 ms for a stream on tmpfs with 4 MiB regions); one after
// another, a node with thousands of open streams took more than 20 s to
// stop. Streams share nothing that their closes wait for, so they close
// side by side (which gains little on two cores, more on more); each
// still persists everything it holds before its file closes.
func closeStreams(streams map[string]*stream) error {
	return parallel.Each(streams, closeParallel, func(st *stream) error {
		if err := st.close(); err != nil {
			return fmt.Errorf("node: closing stream %s: %w", st.name, err)
		}
		return nil
	})
}

// enter counts a call in flight, or refuses it once Shutdown has begun.
func (s *Server) enter() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return ErrClosing
	}
	s.calls.Add(1)
	return nil
}

func (s *Server) leave() { s.calls.Done() }

// acquire returns stream name, opened if it was not, with a reference the
// caller drops with release. Opening runs under s.mu: a first call to a
// large stream waits for its recovery, and so do calls to other streams
// opening at the same time (fine for a first version).
func (s *Server) acquire(name string) (*stream, error) {
	return s.acquireOpen(name, true)
}

// acquireOpen is acquire; at Config.MaxOpenStreams it closes the least
// recently used idle stream for room if evict is set, else it fails.
func (s *Server) acquireOpen(name string, evict bool) (*stream, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	for {
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			return nil, ErrClosing
		}
		if st := s.streams[name]; st != nil {
			defer s.mu.Unlock()
			if st.gone {
				return nil, fmt.Errorf("%w: %s", ErrNoStream, name)
			}
			st.hold()
			st.touch()
			return st, nil
		}
		if ch := s.opening[name]; ch != nil {
			// Another call opens it: wait for that.
			s.mu.Unlock()
			<-ch
			continue
		}
		if err := s.checkOpenLimitLocked(); err != nil {
			s.mu.Unlock()
			if evict && s.evictIdle(true) {
				continue
			}
			return nil, err
		}
		ch := make(chan struct{})
		s.opening[name] = ch
		s.mu.Unlock()
		st, err := s.open(name)
		s.mu.Lock()
		delete(s.opening, name)
		close(ch)
		if err == nil && s.closing {
			st.close()
			err = ErrClosing
		}
		if err != nil {
			s.mu.Unlock()
			return nil, err
		}
		st.ctx, st.cancel = context.WithCancelCause(s.stopCtx)
		s.streams[name] = st
		s.mu.Unlock()
		s.log.Info("stream opened", "stream", name, "committed", st.ls.Committed(), "epoch", st.meta.Epoch)
	}
}

// open opens stream name for writing: by its meta.json alone on a node
// without a catalog, else as the catalog has it (openLed). A first call
// to a large stream waits for its recovery; calls to other streams do
// not.
func (s *Server) open(name string) (*stream, error) {
	var m meta
	var tk takeover
	var rec *catalogpb.Stream
	if s.cfg.Catalog != nil {
		var err error
		if rec, err = s.ledHere(name); err != nil {
			return nil, err
		}
		if m, tk, err = s.openLed(rec); err != nil {
			return nil, err
		}
	} else {
		var err error
		if m, err = s.store.readMeta(name); err != nil {
			return nil, err
		}
		if m.replicated() {
			return nil, fmt.Errorf("%w: %s has copies on other members but this node runs without a catalog", errBadArg, name)
		}
	}
	ls, err := s.store.open(name, m)
	if err != nil {
		return nil, err
	}
	if tk.reopen {
		// Everything it holds was committed when it closed (idle.go).
		tk.floor = ls.Committed()
	}
	st := &stream{name: name, meta: m, ls: ls, prod: newProducers(s.cfg.IdempotenceWindow, s.cfg.MaxProducers), quorumWait: s.cfg.QuorumWait, clock: s.cfg.Clock}
	st.policy.Store(m.Retention.proto())
	if m.Envelope {
		if err := st.rebuildProducers(uint64(s.cfg.IdempotenceHorizon)); err != nil {
			ls.Close()
			return nil, err
		}
		if st.lastTime, err = st.latestTime(); err != nil {
			ls.Close()
			return nil, err
		}
	}
	if s.cfg.Mover != nil {
		if st.app, err = local.NewAppender(ls, s.cfg.Mover, local.AppenderOptions{MaxInFlight: appendWindow}); err != nil {
			ls.Close()
			return nil, err
		}
	}
	if m.replicated() {
		// The epoch's first entry, in a region of its own: the commit
		// point passes the entries earlier leaders left only with it.
		start := uint64(0)
		if tk.survey {
			if start, err = s.openEpoch(ls, m.Epoch); err != nil {
				s.closeTakenOver(name, ls)
				return nil, err
			}
		}
		if f := s.beforeLeader.Load(); f != nil {
			err = (*f)(name)
		}
		if err == nil {
			st.leader, err = s.startLeader(name, m, ls, tk.floor, start)
		}
		if err != nil {
			s.closeTakenOver(name, ls)
			return nil, err
		}
		st.opened = time.Now()
		if tk.survey {
			go s.recordEpochStart(rec, m.Epoch, st.leader, start)
		}
	}
	return st, nil
}

// closeTakenOver closes ls, stream name opened under the epoch held for
// it, after its opening failed. The epoch stays held (the next takeover
// reuses it, in the region its marker is in) only if everything appended
// is durable in the file and it closed cleanly: then the file holds every
// byte a Leader could have sent to a copy under that epoch, and a later
// writer under it cannot meet a different entry of the same epoch at the
// same offset on a copy.
func (s *Server) closeTakenOver(name string, ls *local.Stream) {
	durable := ls.Persisted() == ls.Next()
	s.settleHeld(name, ls.Close(), durable)
}

// closeOpen closes st, an open stream no call uses any more, and forgets
// the epoch held for it (Server.held) unless everything appended to it is
// durable in its file (as closeTakenOver).
func (s *Server) closeOpen(st *stream) error {
	err := st.close()
	s.settleHeld(st.name, err, st.ls.Persisted() == st.ls.Next())
	return err
}

// settleHeld forgets the epoch held for stream name unless its stream
// closed cleanly (closeErr nil) with everything appended durable.
func (s *Server) settleHeld(name string, closeErr error, durable bool) {
	if closeErr == nil && durable {
		return
	}
	s.mu.Lock()
	delete(s.held, name)
	s.mu.Unlock()
}

// connectWait is how long after a replicated stream is opened appends
// wait for its copies to connect (each holder checks the new epoch with
// its catalog) before a lost quorum fails them after QuorumWait.
const connectWait = 2 * time.Second

func (st *stream) release() {
	st.users.Add(-1)
	st.touch()
	st.refs.Done()
}

// close stops replicating the stream and closes it.
func (st *stream) close() error {
	var err error
	if st.leader != nil {
		err = st.leader.Close()
	}
	if cerr := st.ls.Close(); err == nil {
		err = cerr
	}
	return err
}

// appendWindow bounds the appends whose copy by the mover is in flight
// per stream.
const appendWindow = 1024

// start appends p without waiting for it to be durable: a copy by the
// node's mover, or a copy here.
func (st *stream) start(p []byte) (uint64, error) {
	if st.leader != nil {
		if err := st.leader.Err(); err != nil {
			return 0, err
		}
	}
	if st.app != nil {
		i, err := st.app.Start(st.ctx, p)
		if err != nil && errors.Is(err, context.Canceled) && st.ctx.Err() != nil {
			// Stopped by Shutdown or DeleteStream while waiting for
			// room: Unavailable or NotFound, not Canceled, which a
			// client would take as final.
			err = context.Cause(st.ctx)
		}
		return i, err
	}
	return st.ls.AppendNoSync(p)
}

// waitDurable waits until entry pos is acknowledged: durable here and,
// for a replicated stream, on the copies its policy needs.
func (st *stream) waitDurable(ctx context.Context, pos uint64) error {
	if st.leader == nil {
		return st.ls.SyncContext(ctx, pos)
	}
	// The Leader's commit point counts its own persist (its persister
	// makes it, sharing it with everyone), so the commit point alone is
	// waited for: one wake-up per answer, not a group commit's and then
	// the commit's.
	for {
		if st.leader.Committed() > pos {
			return nil
		}
		wctx, cancel := context.WithTimeout(ctx, st.quorumWait)
		err := st.leader.WaitCommitted(wctx, pos)
		cancel()
		if err == nil || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		if rs := st.leader.Status(); rs.QuorumLost && time.Since(st.opened) > connectWait {
			return fmt.Errorf("%w: entry %d of %s is stored here but not on enough copies for its policy yet", errQuorumLost, pos, st.name)
		}
	}
}

// durable says whether entry pos is acknowledged already (what
// waitDurable waits for).
func (st *stream) durable(pos uint64) bool {
	return st.ls.Persisted() > pos && (st.leader == nil || st.leader.Committed() > pos)
}

// errQuorumLost says too few copies of a stream are reachable for its
// acknowledgement policy (Unavailable: a retry with the same producer
// sequence number gets the entry's position once it is acknowledged).
var errQuorumLost = errors.New("node: quorum lost")

// committed is the end of what readers may see: the local commit point,
// or the replicated one for a replicated stream.
func (st *stream) committed() uint64 {
	if st.leader != nil {
		return st.leader.Committed()
	}
	return st.ls.Committed()
}

// statusOf maps an error to the gRPC status the client sees (see
// api.proto for the meaning of each code).
func statusOf(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Internal
	switch {
	case errors.Is(err, ErrNoStream):
		code = codes.NotFound
	case errors.Is(err, ErrExists):
		code = codes.AlreadyExists
	case errors.Is(err, ErrBadName), errors.Is(err, errBadArg):
		code = codes.InvalidArgument
	case errors.Is(err, ErrClosing), errors.Is(err, local.ErrClosed), errors.Is(err, errQuorumLost), errors.Is(err, replicate.ErrClosed):
		code = codes.Unavailable
	case errors.Is(err, local.ErrTooLarge), errors.Is(err, local.ErrNoSpace), errors.Is(err, local.ErrTooManyReservations),
		errors.Is(err, ErrTooManyStreams), exhausted(err):
		code = codes.ResourceExhausted
	case errors.Is(err, replicate.ErrFenced), errors.Is(err, errTakeover), errors.Is(err, errRestore), errors.Is(err, catalog.ErrStale):
		// Another leader took the stream over, or one is taking it over:
		// the client asks again, and finds the new leader.
		code = codes.Unavailable
	case errors.Is(err, local.ErrTrimmed), errors.Is(err, errSeqTooOld):
		code = codes.FailedPrecondition
	case errors.Is(err, local.ErrCorrupt):
		code = codes.DataLoss
	case errors.Is(err, local.ErrLocked):
		// Another process (an embedded streamcli append) holds the
		// stream's file for writing.
		code = codes.FailedPrecondition
	case errors.Is(err, errLost), errors.Is(err, controller.ErrNoController), errors.Is(err, controller.ErrStopped), errors.Is(err, controller.ErrTimeout):
		code = codes.Unavailable
	case errors.Is(err, catalog.ErrNotLeader), errors.Is(err, controller.ErrPlacement), errors.Is(err, ErrWrongLeader), errors.Is(err, ErrStaleEpoch),
		errors.Is(err, catalog.ErrUnknownNode), errors.Is(err, controller.ErrGroupState), errors.Is(err, controller.ErrLeaderLive):
		code = codes.FailedPrecondition
	case errors.Is(err, catalog.ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, catalog.ErrExists):
		code = codes.AlreadyExists
	case errors.Is(err, catalog.ErrNoStream):
		code = codes.NotFound
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	}
	return status.Error(code, err.Error())
}

// errBadArg is the class of invalid request fields.
var errBadArg = errors.New("node: invalid argument")
