package cli

import (
	"context"
	"flag"
	"fmt"

	"github.com/rpstream/rpstream/cmd/streamcli/internal/bench"
)

// benchFailoverCmd is "bench failover": the leader of a stream under load
// killed and restarted, again and again.
var benchFailoverCmd = &command{
	graceful: true,
	name:     "bench failover",
	args:     "--kills N --producers P --size S --acks leader|quorum|all --replicas R [--node HOST:PORT,... | --nodes K] [--inflight N] [--interval D] [--restart-delay D] [--lease-ttl D] [--wait D] [--streamnode PATH] [--dir DIR] [--json | --output json]",
	summary:  "Kill a stream's leader (SIGKILL) N times under load and time each kill to the first acknowledged append.",
	detail: `
Without --node it starts its own cluster of K streamnode processes on
127.0.0.1 (default 3; the binary is --streamnode, else the streamnode next
to streamcli, else the one on PATH) with their data in a fresh directory
under --dir (default /dev/shm), and stops it and removes the data
afterwards. With --node (one or more addresses of a running cluster) the
cluster's processes must run on this machine: each leader is found by the
port it listens on (/proc), killed, and started again with the program,
arguments, environment and working directory it had, in a session of its
own (it outlives streamcli; its output goes to the files it went to).

It creates a fresh stream (failover-TIME-RANDOM) with --replicas and
--acks, and P producers (each a client with its own producer id, on a
client.Appender with --inflight appends in flight) append entries of S
bytes naming their producer and sequence number. After --interval of load
(default 2s), it asks the stream's leader, kills its process with SIGKILL,
starts it again after --restart-delay (default at once) and times the
kill to the first append acknowledged after the process exited; then
--interval of load again, and the next kill (of whichever node leads by
then). At the end it reads the stream back: an acknowledged append not at
the position it was acknowledged with is lost; a payload stored more than
once is a duplicate. It prints the kill-to-acknowledgement p50, p99 and
max, each kill, and the counts, and exits 1 if anything acknowledged was
lost or stored twice; --json prints one object.

A killed leader is replaced once its lease at the controller expires
(--lease-ttl of the cluster it starts; the loopback preset's is 1s),
unless it is back first: restarted at once, a node is often back and
heartbeating before that, and then reopens its streams itself; the time
measured is whichever came first (the "leader then" column tells).
--restart-delay longer than the lease measures the failover alone. --wait (default 60s) bounds the wait for the first
acknowledgement after a kill and for a restarted node, and is the
producers' client timeout: an append not acknowledged within it counts as
failed (neither acknowledged nor lost).`,
	flags: func(fs *flag.FlagSet) runFunc {
		var cfg bench.Failover
		var asJSON bool
		fs.IntVar(&cfg.Kills, "kills", 5, "`N` kills of the leader")
		fs.IntVar(&cfg.Producers, "producers", 4, "`P` concurrent producers")
		cfg.Size = 128
		fs.Var(sizeFlag(&cfg.Size), "size", "`S` bytes per entry, 32 or more (default 128)")
		fs.StringVar(&cfg.Acks, "acks", "quorum", "acknowledgement `POLICY`: leader, quorum or all")
		fs.IntVar(&cfg.Replicas, "replicas", 3, "`R` replicas of the stream")
		fs.IntVar(&cfg.Nodes, "nodes", 0, "`K` streamnode processes to start when --node is not given (default 3)")
		fs.IntVar(&cfg.InFlight, "inflight", 1, "`N` appends each producer keeps in flight")
		fs.DurationVar(&cfg.Interval, "interval", 0, "`D` of load before the first kill and after each recovery (default 2s)")
		fs.DurationVar(&cfg.RestartDelay, "restart-delay", 0, "wait `D` after a kill before starting the killed node again (default: at once)")
		fs.DurationVar(&cfg.LeaseTTL, "lease-ttl", 0, "node lease `D` of the cluster it starts (streamnode --lease-ttl; default: the loopback preset's 1s)")
		fs.DurationVar(&cfg.Wait, "wait", 0, "give up when no append is acknowledged within `D` of a kill; the producers' client timeout (default 60s)")
		fs.StringVar(&cfg.Streamnode, "streamnode", "", "streamnode binary `PATH` for the cluster it starts")
		fs.StringVar(&cfg.Dir, "dir", "", "`DIR` for the started cluster's data (default /dev/shm if it exists, else the system temporary directory)")
		fs.BoolVar(&asJSON, "json", false, "print one JSON object (the same as --output json)")
		output := outputFlag(fs)
		return func(ctx context.Context, c *invocation, args []string) error {
			if len(args) != 0 {
				return usagef("bench failover takes no arguments, got %q", args)
			}
			if j, err := wantJSON(*output); err != nil {
				return err
			} else if j {
				asJSON = true
			}
			cfg.Node = c.node
			if err := cfg.Validate(); err != nil {
				return usagef("%s", err)
			}
			if !asJSON {
				cfg.Progress = c.Stderr
			}
			r, err := cfg.Run(ctx)
			if err := emitBench(ctx, c, asJSON, r, err, func() { r.Print(c.out) }); err != nil {
				return err
			}
			if r.Lost > 0 || r.Duplicates > 0 {
				return fmt.Errorf("%d acknowledged append(s) lost, %d stored twice", r.Lost, r.Duplicates)
			}
			return nil
		}
	},
}
