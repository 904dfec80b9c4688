package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"

	"github.com/rpstream/rpstream/cmd/streamcli/internal/bench"
	"github.com/rpstream/rpstream/mover"
)

// benchCmd is "bench KIND": one subcommand per kind of benchmark. A new
// kind (rdma, cluster) is one more entry in subs; a new option of a kind
// (--mover, --inflight) is one more flag and config field.
var benchCmd = &command{
	name:    "bench",
	args:    "KIND [FLAGS]",
	summary: "Measure append throughput and latency.",
	subs:    []*command{benchLocalCmd, benchRdmaCmd, benchClusterCmd, benchFailoverCmd, benchStreamsCmd},
}

var benchLocalCmd = &command{
	graceful: true,
	name:     "bench local",
	args:     "--count N --size S --writers C [--dir DIR] [--region-size SIZE] [--sync=true|false] [--mover ENGINE] [--inflight N] [--prepare=true|false] [--json | --output json]",
	summary:  "Append N entries of S bytes from C concurrent writers to a fresh stream file.",
	detail: `
The stream lives in a fresh temporary directory under --dir, removed
afterwards; by default --dir is /dev/shm (tmpfs: memory speed) if it exists.
Give --dir /tmp or a directory on a disk to measure durable appends to a
file (msync), where concurrent writers share each msync (group commit).
--mover sync|cpu|dsa|auto picks the data mover that copies entries into
the stream, --inflight N how many appends each writer keeps in flight: it
waits for the oldest (durable with --sync) when N are. Without --mover
and with --inflight 1 (the default), appends go one at a time through
Stream.Append, without a mover; naming a mover always uses the Appender.
Prints entries/s, MB/s (payload, 10^6 bytes), append latency percentiles
and the persistence mode; --json prints one JSON object instead.`,
	flags: func(fs *flag.FlagSet) runFunc {
		var cfg bench.Local
		var asJSON bool
		fs.IntVar(&cfg.Count, "count", 1000000, "`N` entries to append in all")
		fs.Var(sizeFlag(&cfg.Size), "size", "`S` bytes per entry, such as 64 or 4k (default 64)")
		cfg.Size = 64
		fs.IntVar(&cfg.Writers, "writers", 1, "`C` concurrent writers (goroutines)")
		fs.StringVar(&cfg.Dir, "dir", "", "`DIR` to make the temporary stream in (default /dev/shm if it exists, else the system temporary directory)")
		fs.Var(sizeFlag(&cfg.RegionSize), "region-size", "`SIZE` of the stream's regions (default 4MiB)")
		cfg.Sync = true
		fs.BoolVar(&cfg.Sync, "sync", true, "make each append durable before it returns; false: one sync at the end")
		fs.Var(&cfg.Mover, "mover", "data mover `ENGINE`: sync, cpu, dsa or auto (default: $"+mover.EnvVar+", else sync)")
		fs.IntVar(&cfg.InFlight, "inflight", 1, "`N` appends each writer keeps in flight (asynchronous appends when above 1)")
		fs.BoolVar(&asJSON, "json", false, "print one JSON object (the same as --output json)")
		output := outputFlag(fs)
		latency := fs.Bool("latency", true, "read the clock after each append for latency percentiles (false: bare throughput)")
		prepare := fs.Bool("prepare", true, "prepare (allocate, prefault) the regions the run fills before timing; false: time their allocation too")
		return func(ctx context.Context, c *invocation, args []string) error {
			if len(args) != 0 {
				return usagef("bench local takes no arguments, got %q", args)
			}
			if j, err := wantJSON(*output); err != nil {
				return err
			} else if j {
				asJSON = true
			}
			cfg.NoLatency = !*latency
			cfg.NoPrepare = !*prepare
			if err := cfg.Validate(); err != nil {
				return usagef("%s", err)
			}
			if !asJSON {
				dir, why := cfg.Dir, "given by --dir"
				if dir == "" {
					dir, why = bench.DefaultDir()
				}
				fmt.Fprintf(c.Stderr, "bench local: running in %s (%s)...\n", dir, why)
			}
			r, err := cfg.Run(ctx)
			return emitBench(ctx, c, asJSON, r, err, func() { r.Print(c.out) })
		}
	},
}

// emitBench reports a benchmark's outcome: an error (or an interruption),
// one JSON object with --json, else the text form printed by text.
func emitBench(ctx context.Context, c *invocation, asJSON bool, r any, err error, text func()) error {
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted")
		}
		return fmt.Errorf("%s", detail(err))
	}
	if asJSON {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.out, "%s\n", b)
		return nil
	}
	text()
	return nil
}
