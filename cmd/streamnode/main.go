// Command streamnode is the rpstream daemon: it serves the client service
// of api/ (gRPC) over the streams of its data directory.
//
// This is the single-node version: every stream is led here; replication,
// membership and backup targets (--peer-addr, --gossip-addr, --join,
// --role) are accepted and validated so that scripts can rely on them,
// but not used yet. Started with no flags it runs on embedded defaults
// (data ./rpstream-node, clients on 127.0.0.1:7420). Configuration: see
// Config (flags, RPSTREAM_* environment variables, a JSON --config file).
//
// SIGTERM or SIGINT drains: new calls are refused, tails end, appends in
// flight finish and are answered (for at most --drain-timeout), streams
// are closed, and the process exits 0. Logs are structured (log/slog) on
// standard error. Exit codes: 0 after a drain, 1 on a failure, 2 on bad
// configuration.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rpstream/rpstream/node"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stderr))
}

// run is the whole program; it returns the exit code.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) int {
	var usage bytes.Buffer
	cfg, err := loadConfig(args, getenv, &usage)
	if errors.Is(err, flag.ErrHelp) {
		stderr.Write(usage.Bytes())
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
	if len(cfg.Join) > 0 || cfg.Role != "node" {
		log.Warn("membership and backup roles are not implemented yet: running as a single node", "join", cfg.Join, "role", cfg.Role)
	}

	ncfg := node.DefaultConfig(cfg.Data)
	ncfg.Name = cfg.Name
	ncfg.RegionSize = cfg.RegionSize
	ncfg.Logger = log
	srv, err := node.New(ncfg)
	if err != nil {
		log.Error("cannot open the data directory", "err", err)
		return 1
	}
	lis, err := net.Listen("tcp", cfg.ClientAddr)
	if err != nil {
		log.Error("cannot listen for clients", "err", err)
		srv.Shutdown(context.Background())
		return 1
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()

	select {
	case err := <-served:
		log.Error("serving failed", "err", err)
		srv.Shutdown(context.Background())
		return 1
	case <-ctx.Done():
	}
	log.Info("draining", "timeout", time.Duration(cfg.DrainTimeout).String())
	dctx, cancel := context.WithTimeout(context.Background(), time.Duration(cfg.DrainTimeout))
	defer cancel()
	err = srv.Shutdown(dctx)
	if serr := <-served; serr != nil && err == nil {
		err = serr
	}
	if err != nil {
		log.Error("stopped with an error", "err", err)
		return 1
	}
	log.Info("stopped cleanly")
	return 0
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
