package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"

	"github.com/rpstream/rpstream/local"
	"github.com/rpstream/rpstream/pmem"
)

var createCmd = &command{
	name:    "create",
	args:    "STREAM [--region-size SIZE]",
	summary: "Create an empty stream.",
	detail: `
The stream is the file DIR/STREAM.stream; the data directory is made if it
does not exist. STREAM is 1 to 128 letters, digits, '.', '_' or '-'.
A stream is a sequence of regions of --region-size bytes, allocated as it
grows; the largest entry is a little less than a region.

With --node the stream is created through the cluster's catalog: the node
asked leads it if it can, and --replicas R places a copy on R-1 other live
nodes (too few live nodes: an error); --acks says how many copies hold an
entry before its append is answered.`,
	flags: func(fs *flag.FlagSet) runFunc {
		var regionSize int
		fs.Var(sizeFlag{&regionSize}, "region-size", fmt.Sprintf("`SIZE` of each region, such as 64k, 4MiB, 1g: a multiple of 4KiB from %s to %s (default %s)",
			formatSize(local.MinRegionSize), formatSize(local.MaxRegionSize), formatSize(local.DefaultRegionSize)))
		replicas := fs.Int("replicas", 0, "`R` copies of every entry, with --node: the leader's and R-1 on other nodes the catalog places (default 1; a node running alone keeps one and reports the stream under-replicated)")
		acks := fs.String("acks", "", "acknowledgement `POLICY`, with --node: leader, quorum or all (default quorum)")
		return func(ctx context.Context, c *invocation, args []string) error {
			if len(args) != 1 {
				return usagef("create takes one stream name, got %d arguments", len(args))
			}
			if c.node != "" {
				return c.remoteCreate(ctx, args[0], regionSize, *replicas, *acks)
			}
			if *replicas != 0 || *acks != "" {
				return usagef("--replicas and --acks need --node")
			}
			return c.create(args[0], regionSize)
		}
	},
}

func (c *invocation) create(name string, regionSize int) error {
	path, err := c.data.path(name)
	if err != nil {
		return err
	}
	opts := local.Options{RegionSize: regionSize, SpareRegions: -1}
	if err := opts.Validate(); err != nil {
		return usagef("bad --region-size %s: %s", formatSize(int64(regionSize)), detail(err))
	}
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
	fmt.Fprintf(c.out, "created stream %q in %s (region size %s)\n", name, path, formatSize(int64(rs)))
	return nil
}
