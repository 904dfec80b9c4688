package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"

	"github.com/rpstream/rpstream/internal/validate"
	"github.com/rpstream/rpstream/local"
	"github.com/rpstream/rpstream/pmem"
)

var createCmd = &command{
	name:    "create",
	args:    "STREAM [--region-size SIZE] [--replicas R] [--acks POLICY] [--max-bytes SIZE] [--max-entries N] [--max-age DURATION] [--output text|json]",
	summary: "Create an empty stream.",
	detail: `
The stream is the file DIR/STREAM.stream; the data directory is made if it
does not exist. STREAM is 1 to 128 letters, digits, '.', '_' or '-',
starting with a letter or digit (the same rule in embedded and node mode).
A stream is a sequence of regions of --region-size bytes, allocated as it
grows; the largest entry is a little less than a region.

With --node the stream is created through the cluster's catalog: the node
asked leads it if it can, and --replicas R places a copy on R-1 other live
nodes (too few live stream nodes: an error, exit 1); --acks says how many
copies hold an entry before its append is answered; --max-bytes,
--max-entries and --max-age set its retention policy (see streamcli
retention).

--output json prints one object: stream, region_size, and path (embedded)
or node, leader, replicas and acks (with --node).`,
	flags: func(fs *flag.FlagSet) runFunc {
		var regionSize int
		fs.Var(sizeFlag(&regionSize), "region-size", fmt.Sprintf("`SIZE` of each region, such as 64k, 4MiB, 1g: a multiple of 4KiB from %s to %s (default %s)",
			formatSize(local.MinRegionSize), formatSize(local.MaxRegionSize), formatSize(local.DefaultRegionSize)))
		replicas := fs.Int("replicas", 0, fmt.Sprintf("`R` copies of every entry, with --node: the leader's and R-1 on other live nodes the catalog places, 1 to %d (default 1)", validate.MaxReplicas))
		acks := fs.String("acks", "", "acknowledgement `POLICY`, with --node: leader, quorum or all (default quorum)")
		var ret retentionFlags
		ret.define(fs)
		output := outputFlag(fs)
		return func(ctx context.Context, c *invocation, args []string) error {
			if len(args) != 1 {
				return usagef("create takes one stream name, got %d arguments", len(args))
			}
			asJSON, err := wantJSON(*output)
			if err != nil {
				return err
			}
			if err := checkName(args[0]); err != nil {
				return err
			}
			if err := checkRegionSize(regionSize); err != nil {
				return err
			}
			replicasSet := false
			fs.Visit(func(f *flag.Flag) { replicasSet = replicasSet || f.Name == "replicas" })
			if replicasSet {
				if err := validate.Replicas(*replicas); err != nil {
					return usagef("--%s", err)
				}
			}
			pol, err := ret.policy()
			if err != nil {
				return err
			}
			if c.node != "" {
				return c.remoteCreate(ctx, args[0], regionSize, *replicas, *acks, pol, asJSON)
			}
			if replicasSet || *acks != "" {
				return usagef("--replicas and --acks need --node")
			}
			if pol != nil {
				return usagef("--max-bytes, --max-entries and --max-age need --node (a stream alone is trimmed with streamcli trim)")
			}
			return c.create(args[0], regionSize, asJSON)
		}
	},
}

// checkRegionSize refuses (bad usage) a region size package local would
// refuse, before any node is asked: embedded and node mode alike.
func checkRegionSize(n int) error {
	if err := (local.Options{RegionSize: n}).Validate(); err != nil {
		return usagef("bad --region-size %s: %s", formatSize(int64(n)), detail(err))
	}
	return nil
}

func (c *invocation) create(name string, regionSize int, asJSON bool) error {
	path, err := c.data.path(name)
	if err != nil {
		return err
	}
	opts := local.Options{RegionSize: regionSize, SpareRegions: -1}
	if err := os.MkdirAll(c.data.dir, 0o755); err != nil {
		return fmt.Errorf("make data directory: %w", err)
	}
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("stream %q already exists in %s", name, c.data.dir)
	}
	s, err := local.Create(path, opts)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("stream %q already exists in %s", name, c.data.dir)
		}
		if errors.Is(err, local.ErrNoSpace) || errors.Is(err, pmem.ErrNoSpace) {
			return fmt.Errorf("the disk holding %s is full: cannot create stream %q (%s)", c.data.dir, name, detail(err))
		}
		return c.data.explain(name, path, err)
	}
	rs := s.RegionSize()
	if err := s.Close(); err != nil {
		return c.data.explain(name, path, err)
	}
	if asJSON {
		return c.printJSON(createdJSON{Stream: name, Path: path, RegionSize: rs})
	}
	fmt.Fprintf(c.out, "created stream %q in %s (region size %s)\n", name, path, formatSize(int64(rs)))
	return nil
}
