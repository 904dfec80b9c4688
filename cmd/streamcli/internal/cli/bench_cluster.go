package cli

import (
	"context"
	"flag"
	"strings"

	"github.com/rpstream/rpstream/cmd/streamcli/internal/bench"
)

// benchClusterCmd is "bench cluster": appends through the client service
// of a cluster, started for the run (on loopback or --hosts) or given by
// --node.
var benchClusterCmd = &command{
	graceful: true,
	name:     "bench cluster",
	args:     "--clients C --size S --count N --acks leader|quorum|all --replicas R [--node HOST:PORT | --nodes K] [--duration D] [--inflight N] [--conns K] [--calls K] [--unary] [--streamnode PATH] [--hosts ADDR[,ADDR...]] [--node-args ARGS] [--keep] [--admin] [--profile FILE] [--dir DIR] [--tls] [--json | --output json]",
	summary:  "Measure appends through streamnode: C concurrent clients append N entries of S bytes to a fresh stream.",
	detail: `
Without --node it starts its own cluster of K streamnode processes on
127.0.0.1 (default 3; the binary is --streamnode, else the streamnode next
to streamcli, else the one on PATH) with their data in a fresh directory
under --dir (default /dev/shm, tmpfs, if it exists), and stops it and
removes the data afterwards. --hosts puts member i on the i-th address
given, round robin (such as SoftRoCE's 10.77.0.1,10.77.0.2,10.77.0.3
inside the VM), and --node-args passes extra streamnode flags to every
member (such as "--rdma verbs"); the result names the rdma provider the
members logged that they use; --keep leaves their data and logs in the
directory it names. --admin starts them with their admin
listener (metrics counted) and scrapes each one's /metrics every second,
to measure what metrics cost. With --node it uses that running node's
cluster and deletes the stream it made afterwards. The stream is fresh
(bench-TIME-RANDOM), created with --replicas and --acks. After a warm-up
(50 appends per client, untimed), C clients append N entries in all on
AppendStream calls (client.Appender) shared round robin, by default as
few as hold C x --inflight appends, 64 each (one for 64 clients: the
fastest here, as appends queued behind a call's requests in flight go out
as one batch request; --calls K: K calls, --calls C: one each), and at
least one per connection, each client keeping --inflight appends in
flight (default 1; --unary: one Append call each instead), all on one
gRPC connection (--conns K: K shared round robin). --conns C measures C
independent clients, as C separate programs would append: each with a
connection, a call and a producer of its own, so that nothing batches
their appends but the node. --duration D ends the run after D even if
fewer than N were appended. --profile FILE saves a CPU profile (pprof
format; go tool pprof FILE) of the stream's leader during the run: the
started nodes get their admin listener and --pprof, and the leader is
sampled for --duration, or 10 s without it. Prints
entries/s, MB/s (payload, 10^6 bytes) and p50/p99/p99.9/max latency from
each append's send to its acknowledgement; --json prints one object.`,
	flags: func(fs *flag.FlagSet) runFunc {
		var cfg bench.Cluster
		var asJSON bool
		fs.IntVar(&cfg.Clients, "clients", 1, "`C` concurrent clients")
		cfg.Size = 128
		fs.Var(sizeFlag(&cfg.Size), "size", "`S` bytes per entry, such as 128 or 4k (default 128)")
		fs.IntVar(&cfg.Count, "count", 100000, "`N` entries to append in all")
		fs.StringVar(&cfg.Acks, "acks", "quorum", "acknowledgement `POLICY`: leader, quorum or all")
		fs.IntVar(&cfg.Replicas, "replicas", 3, "`R` replicas of the stream")
		fs.IntVar(&cfg.Nodes, "nodes", 0, "`K` streamnode processes to start when --node is not given (default 3)")
		fs.DurationVar(&cfg.Duration, "duration", 0, "stop after `D` even if fewer than N entries were appended (default: no limit)")
		fs.IntVar(&cfg.InFlight, "inflight", 1, "`N` appends each client keeps in flight")
		fs.IntVar(&cfg.Conns, "conns", 0, "`K` gRPC connections shared by the clients, round robin (default 1)")
		fs.IntVar(&cfg.Calls, "calls", 0, "`K` AppendStream calls shared by the clients, round robin (default: clients x inflight / 64, rounded up, and at least --conns)")
		fs.BoolVar(&cfg.Unary, "unary", false, "one Append call per append instead of an AppendStream call per client")
		fs.StringVar(&cfg.Streamnode, "streamnode", "", "streamnode binary `PATH` for the cluster it starts")
		var hosts, nodeArgs string
		fs.StringVar(&hosts, "hosts", "", "IP `ADDR`s, comma-separated, the started members listen on, member i on the i-th, round robin (default 127.0.0.1)")
		fs.StringVar(&nodeArgs, "node-args", "", "extra streamnode `ARGS` for every started member, separated by spaces")
		fs.BoolVar(&cfg.Keep, "keep", false, "keep the started cluster's data directory and logs")
		fs.BoolVar(&cfg.Admin, "admin", false, "start the nodes with --admin-addr (metrics counted) and scrape their /metrics every second")
		fs.StringVar(&cfg.Profile, "profile", "", "save a CPU profile of the stream's leader during the run to `FILE` (started cluster only)")
		fs.StringVar(&cfg.Dir, "dir", "", "`DIR` for the started cluster's data (default /dev/shm if it exists, else the system temporary directory)")
		fs.BoolVar(&cfg.TLS, "tls", false, "start the cluster with TLS on (a development CA made for the run); with --node use --tls-ca and the other global flags")
		fs.BoolVar(&asJSON, "json", false, "print one JSON object (the same as --output json)")
		output := outputFlag(fs)
		return func(ctx context.Context, c *invocation, args []string) error {
			if len(args) != 0 {
				return usagef("bench cluster takes no arguments, got %q", args)
			}
			if j, err := wantJSON(*output); err != nil {
				return err
			} else if j {
				asJSON = true
			}
			cfg.Node = c.node
			if hosts != "" {
				for _, h := range strings.Split(hosts, ",") {
					cfg.Hosts = append(cfg.Hosts, strings.TrimSpace(h))
				}
			}
			cfg.Args = strings.Fields(nodeArgs)
			cfg.ClientOptions = c.clientOptions()
			if err := cfg.Validate(); err != nil {
				return usagef("%s", err)
			}
			if !asJSON {
				cfg.Progress = c.Stderr
			}
			r, err := cfg.Run(ctx)
			return emitBench(ctx, c, asJSON, r, err, func() { r.Print(c.out) })
		}
	},
}
