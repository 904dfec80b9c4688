// Command streamnode is the rpstream daemon: it serves the client service
// of api/ (gRPC) over the streams of its data directory, replicates the
// streams it leads to other members, and holds copies for them (package
// node).
//
// Each node is a member of a cluster (hashicorp/memberlist on
// --gossip-addr, joining --join); a node started alone is a cluster of
// one. Started with no flags it runs on embedded defaults
// (data ./rpstream-node, clients on 127.0.0.1:7420). Configuration: see
// Config (flags, RPSTREAM_* environment variables, a JSON --config file).
//
// SIGTERM or SIGINT drains: new calls are refused, tails end, appends in
// flight finish and are answered (for at most --drain-timeout), streams
// are closed, and the process exits 0. Logs are structured (log/slog) on
// standard error. SIGHUP reloads the TLS files and the ACL. Exit codes:
// 0 after a drain, 1 on a failure, 2 on bad configuration.
//
// `streamnode dev-ca` writes a development CA and certificates instead
// (security.go).
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/rpstream/rpstream/admin"
	"github.com/rpstream/rpstream/catalog"
	"github.com/rpstream/rpstream/catalog/catalogpb"
	"github.com/rpstream/rpstream/catalog/controller"
	"github.com/rpstream/rpstream/cluster"
	"github.com/rpstream/rpstream/internal/buildinfo"
	"github.com/rpstream/rpstream/mover"
	"github.com/rpstream/rpstream/node"
	"github.com/rpstream/rpstream/rdma"
	"github.com/rpstream/rpstream/rdma/tcp"
	"github.com/rpstream/rpstream/rdma/verbs"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "probe" {
		os.Exit(probe(os.Args[2:], os.Stdout, os.Stderr))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stderr))
}

// stdout is where --version prints.
var stdout io.Writer = os.Stdout

// run is the whole program; it returns the exit code.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "dev-ca" {
		return devCA(args[1:], os.Stdout, stderr)
	}
	var usage bytes.Buffer
	cfg, err := loadConfig(args, getenv, &usage)
	if errors.Is(err, flag.ErrHelp) {
		stderr.Write(usage.Bytes())
		return 0
	}
	if errors.Is(err, errVersion) {
		fmt.Fprintln(stdout, buildinfo.Read().String("streamnode"))
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "streamnode: %v\n", err)
		if usage.Len() > 0 {
			stderr.Write(usage.Bytes())
		}
		return 2
	}
	log := newLogger(cfg, stderr)
	log.Info("starting", "name", cfg.Name, "data", cfg.Data, "client_addr", cfg.ClientAddr,
		"peer_addr", cfg.PeerAddr, "gossip_addr", cfg.GossipAddr, "join", cfg.Join, "role", cfg.Role)
	secret := []byte(cfg.Secret)
	if len(secret) == 0 {
		secret = []byte(devSecret)
		log.Warn("no --secret-file or RPSTREAM_SECRET: using the built-in development secret; anyone who knows it can join this cluster's gossip")
	}
	sec, err := loadSecurity(cfg)
	if err != nil {
		log.Error("cannot load the TLS files or the ACL", "err", err)
		return 2
	}
	stopHUP := make(chan struct{})
	hupDone := sec.watchHUP(log, stopHUP)
	defer func() { close(stopHUP); <-hupDone }()

	provider, why := chooseProvider(cfg.RDMA)
	log.Info("rdma provider", "provider", provider.Name(), "why", why)
	if sec.keys != nil {
		log.Info("TLS on: clients over TLS 1.3, nodes over mutual TLS", "cert", cfg.TLSCert, "ca", cfg.TLSCA, "acl", cfg.ACL != "")
		if provider.Name() != "tcp" {
			log.Warn("TLS on, but the rdma provider is verbs: replica data moves over the RDMA fabric unencrypted (the fabric must be trusted); control and client traffic are encrypted")
		}
	} else {
		log.Warn("TLS off: clients and nodes talk in plaintext; see --tls-cert")
	}

	inc, err := node.Incarnation(cfg.Data)
	if err != nil {
		log.Error("cannot read the data directory's incarnation", "err", err)
		return 1
	}
	lis, err := net.Listen("tcp", cfg.ClientAddr)
	if err != nil {
		log.Error("cannot listen for clients", "err", err)
		return 1
	}
	defer lis.Close()
	var adminLis net.Listener
	if cfg.AdminAddr != "" {
		if adminLis, err = net.Listen("tcp", cfg.AdminAddr); err != nil {
			log.Error("cannot listen for the admin listener", "err", err)
			return 1
		}
		defer adminLis.Close()
	}

	// The catalog: this node's member of its Raft group. Its transport
	// finds members' client addresses through memberlist, made below.
	var members atomic.Pointer[cluster.Cluster]
	listMembers := func() []cluster.Member {
		if c := members.Load(); c != nil {
			return c.Members()
		}
		return nil
	}
	addrOf := func(name string) (string, bool) {
		if name == cfg.Name {
			return lis.Addr().String(), true
		}
		for _, m := range listMembers() {
			if m.Name == name && m.ClientAddr != "" {
				return m.ClientAddr, true
			}
		}
		return "", false
	}
	transport := controller.NewGRPC(cfg.Name, secret, addrOf)
	transport.UseLogger(log.With("component", "catalog"))
	if sec.keys != nil {
		transport.UseTLS(sec.keys.PeerConfig(), log.With("component", "catalog"))
	}
	ctlCfg := controller.DefaultConfig(cfg.Name)
	if cfg.CatalogTiming == "loopback" {
		ctlCfg = controller.LoopbackConfig(cfg.Name)
	}
	if cfg.LeaseTTL != 0 {
		ctlCfg.LeaseTTL = time.Duration(cfg.LeaseTTL)
	}
	ctlCfg.Incarnation = inc
	ctlCfg.Role = catalogpb.Role_ROLE_NODE
	if cfg.Role == "backup" {
		ctlCfg.Role = catalogpb.Role_ROLE_BACKUP
	}
	ctlCfg.Dir = filepath.Join(cfg.Data, "catalog")
	ctlCfg.Voters = cfg.Voters
	if len(ctlCfg.Voters) == 0 && len(cfg.Join) == 0 {
		ctlCfg.Voters = []string{cfg.Name}
	}
	ctlCfg.Transport = transport
	ctlCfg.Members = listMembers
	ctlCfg.Logger = log.With("component", "catalog")
	ctl, err := controller.Start(ctlCfg)
	if err != nil {
		log.Error("cannot start the catalog", "err", err)
		return 1
	}
	defer ctl.Stop()

	ncfg := node.DefaultConfig(cfg.Data)
	ncfg.Name = cfg.Name
	ncfg.RegionSize = cfg.RegionSize
	ncfg.MaxOpenStreams = cfg.MaxOpenStreams
	ncfg.IdleClose = time.Duration(cfg.IdleClose)
	ncfg.Logger = log
	ncfg.PeerAddr = cfg.PeerAddr
	ncfg.Provider = provider
	ncfg.RDMA = rdma.DefaultConfig()
	ncfg.RDMA.Secret = secret
	// A peer silent for a lease is gone, for the rdma connections as for
	// the controller: a leader cut off from its copies fails its
	// appends (Unavailable, quorum lost) within about a lease instead of
	// the provider's default 30 s, and its clients go on at the leader
	// elected meanwhile. (A real NIC's reliable connection gives up
	// after its retry budget, typically well under a second.)
	ncfg.RDMA.AckTimeout = max(ctlCfg.LeaseTTL, time.Second)
	ncfg.QuorumWait = ncfg.RDMA.AckTimeout
	ncfg.Backup = cfg.Role == "backup"
	ncfg.ScrubEvery = time.Duration(cfg.ScrubEvery)
	ncfg.RetentionEvery = time.Duration(cfg.RetentionEvery)
	ncfg.AckEvery = time.Duration(cfg.AckEvery)
	ncfg.Catalog = ctl
	ncfg.Control = transport.Service()
	if sec.keys != nil {
		ncfg.TLS = sec.keys.ServerConfig()
		ncfg.RDMA.TLS = sec.keys.PeerConfig()
	}
	if cfg.ACL != "" {
		ncfg.ACL = sec.acl.Load
	}
	mv, err := newMover(cfg.Mover)
	if err != nil {
		log.Error("cannot start the data mover", "mover", cfg.Mover, "err", err)
		return 1
	}
	defer mv.Close()
	log.Info("data mover", "mover", mv.Describe())
	ncfg.Mover = mv
	var reg *prometheus.Registry
	if adminLis != nil {
		reg = admin.NewRegistry()
		ncfg.Metrics = reg
	}
	srv, err := node.New(ncfg)
	if err != nil {
		log.Error("cannot open the data directory", "err", err)
		return 1
	}
	if adminLis != nil {
		hs := admin.NewServer(admin.Handler(admin.Config{Gatherer: reg, Ready: srv.Ready, Pprof: cfg.Pprof}))
		hs.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelDebug)
		log.Info("serving admin", "addr", adminLis.Addr().String(), "pprof", cfg.Pprof)
		adminDone := make(chan struct{})
		go func() {
			defer close(adminDone)
			if err := hs.Serve(adminLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("admin listener failed", "err", err)
			}
		}()
		// Last to stop: /readyz says "draining" while the node drains.
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			if hs.Shutdown(sctx) != nil {
				hs.Close()
			}
			<-adminDone
		}()
	}
	role, _ := cluster.ParseRole(cfg.Role)
	ccfg := cluster.DefaultConfig()
	ccfg.Name = cfg.Name
	ccfg.GossipAddr = cfg.GossipAddr
	ccfg.Join = cfg.Join
	ccfg.Role = role
	ccfg.ClientAddr = lis.Addr().String()
	ccfg.PeerAddr = srv.PeerAddr()
	ccfg.Capacity = max(1, freeBytes(cfg.Data))
	// Kept current: placement weighs members by the space they have now.
	ccfg.MeasureCapacity = func() uint64 { return max(1, freeBytes(cfg.Data)) }
	key := sha256.Sum256(append([]byte("rpstream gossip key\x00"), secret...))
	ccfg.SecretKey = key[:]
	ccfg.Logger = log.With("component", "cluster")
	ccfg.OnChange = func(ev cluster.Event) {
		log.Info("member "+ev.Kind.String(), "member", ev.Member.Name, "state", ev.Member.State.String(), "role", ev.Member.Role.String())
		srv.MemberChanged(ev)
	}
	mc, err := cluster.New(ccfg)
	if err != nil {
		log.Error("cannot start membership", "err", err)
		srv.Shutdown(context.Background())
		return 1
	}
	members.Store(mc)
	srv.SetCluster(mc)
	joinCtx, stopJoining := context.WithCancel(ctx)
	joined := make(chan struct{})
	go func() {
		defer close(joined)
		joinLoop(joinCtx, mc, cfg.Join, log)
	}()

	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()

	if err := register(ctx, ctl, ctlCfg.LeaseTTL, log); err != nil && ctx.Err() != nil && ownsName(ctl, cfg.Name) {
		// Stopped (SIGTERM) while registering again after a restart: the
		// catalog already holds this incarnation under its name, so this
		// is an ordinary stop, drained below.
		log.Info("stopped while registering again in the catalog", "err", err)
	} else if err != nil {
		// Not Leave: the name may be another live node's, whose
		// membership a leave message in this name would end.
		log.Error("cannot join the catalog", "err", err)
		stopJoining()
		<-joined
		mc.Shutdown()
		srv.Shutdown(context.Background())
		<-served
		return 1
	}

	select {
	case err := <-served:
		log.Error("serving failed", "err", err)
		stopJoining()
		<-joined
		mc.Shutdown()
		srv.Shutdown(context.Background())
		return 1
	case <-ctx.Done():
	}
	stopJoining()
	<-joined
	log.Info("draining", "timeout", time.Duration(cfg.DrainTimeout).String())
	dctx, cancel := context.WithTimeout(context.Background(), time.Duration(cfg.DrainTimeout))
	defer cancel()
	err = srv.Shutdown(dctx)
	if serr := <-served; serr != nil && err == nil {
		err = serr
	}
	// Drained: tell the others this member leaves, so they report it left
	// rather than dead.
	if lerr := mc.Leave(); lerr != nil {
		log.Warn("leaving the cluster", "err", lerr)
	}
	mc.Shutdown()
	if err != nil {
		log.Error("stopped with an error", "err", err)
		return 1
	}
	log.Info("stopped cleanly")
	return 0
}

// probe is "streamnode probe URL": an HTTP GET of URL (an admin
// listener's /readyz or /healthz), for health checks where there is no
// curl (the FROM scratch image). It prints the answer and returns 0 for
// 200, 1 for any other answer or no answer within 3 s, 2 for bad usage.
func probe(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 || !strings.HasPrefix(args[0], "http://") {
		fmt.Fprintln(stderr, "usage: streamnode probe http://HOST:PORT/readyz")
		return 2
	}
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(args[0])
	if err != nil {
		fmt.Fprintf(stderr, "streamnode probe: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	io.Copy(stdout, io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return 1
	}
	return 0
}

// register records this node in the catalog, retrying while no
// controller answers (the group is forming, or this node is joining it)
// until ctx ends. A name held by another live incarnation is refused for
// good once it stayed so for two lease periods: a node restarted on a new
// data directory (a new incarnation) waits until the lease of the old one
// has expired.
func register(ctx context.Context, ctl *controller.Controller, ttl time.Duration, log *slog.Logger) error {
	var takenSince time.Time
	for attempt := 1; ; attempt++ {
		err := ctl.Register(ctx)
		if err == nil {
			log.Info("registered in the catalog", "incarnation", fmt.Sprintf("%016x", ctl.Incarnation()), "controller", ctl.ControllerName())
			return nil
		}
		if errors.Is(err, catalog.ErrNameTaken) {
			if takenSince.IsZero() {
				takenSince = time.Now()
			}
			if time.Since(takenSince) > 2*ttl {
				return err
			}
		} else if attempt == 1 || attempt%10 == 0 {
			log.Warn("cannot register in the catalog yet; retrying", "err", err, "attempt", attempt)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stopped before registering in the catalog: %w", err)
		case <-time.After(ttl / 4):
		}
	}
}

// ownsName says whether the catalog, as this node sees it, holds name
// under this node's incarnation.
func ownsName(ctl *controller.Controller, name string) bool {
	n, ok := ctl.Node(name)
	return ok && n.Incarnation == ctl.Incarnation()
}

// chooseProvider is the rdma provider --rdma names; auto takes verbs when
// an RDMA device is usable here, else tcp, and says why.
func chooseProvider(name string) (rdma.Provider, string) {
	switch name {
	case "tcp":
		return tcp.Provider{}, "--rdma tcp"
	case "verbs":
		return verbs.Provider{}, "--rdma verbs"
	}
	if err := verbs.Check(); err != nil {
		return tcp.Provider{}, "auto: " + err.Error()
	}
	return verbs.Provider{}, "auto: an RDMA device is present"
}

// newMover starts the --mover engine for local appends.
func newMover(name string) (mover.Mover, error) {
	eng, err := mover.ParseEngine(name)
	if err != nil {
		return nil, err
	}
	cfg := mover.DefaultConfig()
	cfg.Engine = eng
	return mover.New(cfg)
}

// devSecret is the cluster secret when none is configured: fine on one
// machine, never on a network others reach.
const devSecret = "rpstream development secret, not for production"

// joinLoop joins the members at addrs, retrying with a growing wait until
// one answers or ctx ends: members start in any order.
func joinLoop(ctx context.Context, c *cluster.Cluster, addrs []string, log *slog.Logger) {
	if len(addrs) == 0 {
		return
	}
	wait := 200 * time.Millisecond
	for attempt := 1; ; attempt++ {
		n, err := c.Join(addrs...)
		if err == nil {
			log.Info("joined the cluster", "reached", n, "of", len(addrs))
			return
		}
		if attempt == 1 || attempt%10 == 0 {
			log.Warn("cannot join yet; retrying", "join", addrs, "err", err, "attempt", attempt)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// freeBytes is the space left in dir's file system, 0 if unknown.
func freeBytes(dir string) uint64 {
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) != nil {
		return 0
	}
	return st.Bavail * uint64(st.Bsize)
}

func newLogger(cfg Config, w io.Writer) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)).With("node", cfg.Name)
	}
	return slog.New(slog.NewTextHandler(w, opts)).With("node", cfg.Name)
}
