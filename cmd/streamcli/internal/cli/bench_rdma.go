package cli

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/rpstream/rpstream/rdma/rdmabench"
	"github.com/rpstream/rpstream/rdma/verbs"
)

// benchRdmaCmd is "bench rdma": one-sided write + flush over the tcp rdma
// provider on loopback, beside raw TCP measured in the same run.
var benchRdmaCmd = &command{
	graceful: true,
	name:     "bench rdma",
	args:     "--size S --inflight N [--duration D] [--dir DIR] [--visibility] [--provider tcp|verbs --addr IP] [--json | --output json]",
	summary:  "Measure write + flush round trips and throughput over an rdma provider (tcp on loopback by default).",
	detail: `
A target and a writer run in this process on 127.0.0.1. Each operation is an
RDMA write of S bytes followed by a flush to persistence (--visibility: to
visibility); N operations are kept in flight. Printed beside a raw loopback
TCP ping-pong (for latency) and stream (for bandwidth) of the same size,
measured in the same run. --dir puts the target's memory in a file there
(/dev/shm: the pmem stand-in; a disk: every flush is an msync); without it
the target's memory is anonymous and a flush persists nothing.
--provider verbs --addr IP measures the verbs provider on the RDMA device
whose interface has IP (SoftRoCE: make test-softroce's VM); its persistence
flush is a read after the writes.`,
	flags: func(fs *flag.FlagSet) runFunc {
		cfg := rdmabench.DefaultConfig()
		var asJSON bool
		fs.Var(sizeFlag(&cfg.Size), "size", "`S` bytes per write, such as 64 or 4k (default 4k)")
		fs.IntVar(&cfg.Inflight, "inflight", cfg.Inflight, "`N` operations in flight")
		fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "`D` for each of the three measurements")
		fs.StringVar(&cfg.Dir, "dir", "", "`DIR` for the target's memory file (default: anonymous memory)")
		fs.BoolVar(&cfg.Visibility, "visibility", false, "flush to visibility instead of persistence")
		fs.BoolVar(&asJSON, "json", false, "print one JSON object (the same as --output json)")
		output := outputFlag(fs)
		provider := fs.String("provider", "tcp", "rdma `provider`: tcp, or verbs (a streamcli built with -tags verbs, an RDMA device)")
		fs.StringVar(&cfg.Addr, "addr", "127.0.0.1", "local `IP` both ends use (for verbs, an address of the RDMA device's interface)")
		return func(ctx context.Context, c *invocation, args []string) error {
			if len(args) != 0 {
				return usagef("bench rdma takes no arguments, got %q", args)
			}
			if j, err := wantJSON(*output); err != nil {
				return err
			} else if j {
				asJSON = true
			}
			if cfg.Size < 1 || cfg.Size > 64<<20 {
				return usagef("size must be from 1 byte to 64MiB, not %d", cfg.Size)
			}
			if cfg.Inflight < 1 || cfg.Inflight > 4096 {
				return usagef("inflight must be from 1 to 4096, not %d", cfg.Inflight)
			}
			if cfg.Duration <= 0 || cfg.Duration > 10*time.Minute {
				return usagef("duration must be positive and at most 10m, not %v", cfg.Duration)
			}
			switch *provider {
			case "tcp":
			case "verbs":
				cfg.Provider = verbs.Provider{}
			default:
				return usagef("provider must be tcp or verbs, not %q", *provider)
			}
			r, err := rdmabench.Run(ctx, cfg)
			return emitBench(ctx, c, asJSON, r, err, func() { fmt.Fprintln(c.out, r.String()) })
		}
	},
}
