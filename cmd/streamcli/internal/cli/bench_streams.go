package cli

import (
	"context"
	"flag"
	"strings"

	"github.com/rpstream/rpstream/cmd/streamcli/internal/bench"
)

// benchStreamsCmd is "bench streams": many replicated streams on a
// loopback cluster it starts, their creation rate and the memory each
// idle stream and copy holds.
var benchStreamsCmd = &command{
	graceful: true,
	name:     "bench streams",
	args:     "--count N [--replicas R] [--clients C] [--append] [--region-size SIZE] [--nodes K] [--node-args ARGS] [--made-wait D] [--settle D] [--profile FILE] [--keep] [--streamnode PATH] [--dir DIR] [--json | --output json]",
	summary:  "Create N replicated streams on a loopback cluster; measure creates/s and memory per idle stream and copy.",
	detail: `
Starts K streamnode processes on 127.0.0.1 (default 3) with their data in a
fresh directory under --dir (default /dev/shm, tmpfs, so that the files'
blocks are memory), creates N streams (many-000000, ...) with --replicas
copies, C creates at a time spread over the nodes. A create returns once
the catalog holds the stream; the nodes make its files and copies after,
so the run then waits (at most --made-wait, default 5m) until every
stream's files and copies exist on the nodes' disks, and reports the
streams made per second. With --append it appends one entry to each.
After --settle (default 3s) it measures the memory of the cluster: every
node's anonymous resident memory and page tables plus the blocks of its
data directory, and divides the growth since before the creates by the
streams and copies made (N x R once all are). --node-args passes extra streamnode
flags (such as "--max-open-streams 500"). Stops the cluster and removes
its data afterwards. A create that fails ends the run; the result says
which and how many were made.`,
	flags: func(fs *flag.FlagSet) runFunc {
		var cfg bench.Streams
		var asJSON bool
		var nodeArgs string
		fs.IntVar(&cfg.Count, "count", 1000, "`N` streams to create")
		fs.IntVar(&cfg.Replicas, "replicas", 3, "`R` replicas of each stream")
		fs.IntVar(&cfg.Clients, "clients", 8, "`C` creates at a time")
		fs.BoolVar(&cfg.Append, "append", false, "append one entry to every stream after the creates")
		fs.Var(sizeFlag(&cfg.RegionSize), "region-size", "`SIZE` of the streams' regions (default: the nodes' default)")
		fs.IntVar(&cfg.Nodes, "nodes", 0, "`K` streamnode processes to start (default 3)")
		fs.StringVar(&nodeArgs, "node-args", "", "extra streamnode `ARGS`, separated by spaces")
		fs.DurationVar(&cfg.Settle, "settle", 0, "wait `D` after the creates before measuring memory (default 3s)")
		fs.DurationVar(&cfg.MadeWait, "made-wait", 0, "wait at most `D` after the creates for every stream's files and copies to be made on the nodes (default 5m)")
		fs.StringVar(&cfg.Streamnode, "streamnode", "", "streamnode binary `PATH`")
		fs.BoolVar(&cfg.Keep, "keep", false, "keep the cluster's data directory and logs")
		fs.StringVar(&cfg.Profile, "profile", "", "write a CPU profile of the first node over the creates to `FILE`, and its heap profile after to FILE.heap")
		fs.StringVar(&cfg.Dir, "dir", "", "`DIR` for the cluster's data (default /dev/shm if it exists, else the system temporary directory)")
		fs.BoolVar(&asJSON, "json", false, "print one JSON object (the same as --output json)")
		output := outputFlag(fs)
		return func(ctx context.Context, c *invocation, args []string) error {
			if len(args) != 0 {
				return usagef("bench streams takes no arguments, got %q", args)
			}
			if j, err := wantJSON(*output); err != nil {
				return err
			} else if j {
				asJSON = true
			}
			cfg.Args = strings.Fields(nodeArgs)
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
