package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/rpstream/rpstream/api"
)

// restoreCmd is "restore": rebuild a stream, or every stream a lost node
// led, from a surviving copy (node/restorecmd.go).
var restoreCmd = &command{
	name:    "restore",
	args:    "STREAM | --lost NODE [--from NODE] [--leader NODE] [--force] [--wait DURATION] [--output text|json]",
	summary: "Rebuild a stream, or every stream a lost node led, from a surviving copy (needs --node).",
	detail: `
Use restore when failover cannot bring a stream back: every stream node
holding a copy of it lost its data (a wiped node comes back as a new
incarnation, whose old copies hold nothing), so only the backup target's
copy, which never leads, or a copy on a node no longer placed, is left. Or
to rebuild a stream on other nodes.

The node given by --node surveys the stream's copies (each placed node,
the leader, and --from), chooses the copy with the longest log (the
epoch of its last region, then its position: as a failover's takeover
chooses, so no acknowledged entry a reachable copy holds is lost), and
asks the controller to restore the stream from it: new copies placed on
live nodes, a new leader (--leader, else the source if it is a stream
node, else placement's choice) under a new epoch. The new leader fetches
the source's file, checks its SHA-256 against the sender's, that every
entry passes its checksum, then serves; the new copies are written from
it. restore returns once the new leader's first entry of its epoch is
committed on its copies, and prints the source, what it held and the new
placement.

A stream whose leader is live is refused unless --force (failover handles
a leader that only died); so is --from naming a copy shorter than another
reachable one. --lost NODE restores every active stream NODE leads.

--output json prints one object per stream restored, with the fields
stream, source, entries, source_epoch, leader, epoch, copies, surveyed;
then one {"skipped": "STREAM: why"} per stream of --lost NODE left alone
because its leader is live.`,
	flags: func(fs *flag.FlagSet) runFunc {
		lost := fs.String("lost", "", "restore every stream `NODE` leads (a lost node)")
		from := fs.String("from", "", "restore from `NODE`'s copy (default: the longest reachable)")
		leader := fs.String("leader", "", "`NODE` to lead the restored stream (default: placement's choice)")
		force := fs.Bool("force", false, "restore even while the leader is live, or from a shorter copy")
		wait := fs.Duration("wait", 3*time.Minute, "how long to wait for the restored streams to serve")
		output := fs.String("output", "text", "output `FORMAT`: text or json")
		return func(ctx context.Context, c *invocation, args []string) error {
			if *output != "text" && *output != "json" {
				return usagef("--output must be text or json, not %q", *output)
			}
			req := &api.RestoreStreamRequest{Node: *lost, From: *from, Leader: *leader, Force: *force}
			switch {
			case len(args) == 1 && *lost == "":
				if err := checkName(args[0]); err != nil {
					return err
				}
				req.Stream = args[0]
			case len(args) == 0 && *lost != "":
			default:
				return usagef("restore takes one stream name, or --lost NODE")
			}
			if *wait <= 0 {
				return usagef("--wait must be positive")
			}
			if c.node == "" {
				return usagef("restore needs --node HOST:PORT (or $RPSTREAM_NODE): it asks a cluster")
			}
			return c.restore(ctx, req, *wait, *output == "json")
		}
	},
}

// restoredJSON is one line of restore --output json. Scripts read these
// names: never rename one.
type restoredJSON struct {
	Stream      string   `json:"stream"`
	Source      string   `json:"source"`
	Entries     uint64   `json:"entries"`
	SourceEpoch uint64   `json:"source_epoch"`
	Leader      string   `json:"leader"`
	Epoch       uint64   `json:"epoch"`
	Copies      []string `json:"copies"`
	Surveyed    []string `json:"surveyed"`
}

func (c *invocation) restore(ctx context.Context, req *api.RestoreStreamRequest, wait time.Duration, asJSON bool) error {
	cl, err := c.dialNode()
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	what := "cannot restore " + req.Stream
	if req.Node != "" {
		what = "cannot restore the streams " + req.Node + " led"
	}
	resp, err := cl.Restore(ctx, req)
	if err != nil {
		return c.explainCluster(what, err)
	}
	for _, r := range resp.Streams {
		if asJSON {
			b, err := json.Marshal(restoredJSON{Stream: r.Stream, Source: r.Source, Entries: r.Entries, SourceEpoch: r.SourceEpoch,
				Leader: r.Leader, Epoch: r.Epoch, Copies: append([]string{}, r.Copies...), Surveyed: append([]string{}, r.Surveyed...)})
			if err != nil {
				return err
			}
			c.out.Write(append(b, '\n'))
			continue
		}
		fmt.Fprintf(c.out, "restored %s from %s's copy (%d entries, its last region of epoch %d): leader %s, epoch %d, copies %s\n",
			r.Stream, r.Source, r.Entries, r.SourceEpoch, r.Leader, r.Epoch, strings.Join(r.Copies, ", "))
		fmt.Fprintf(c.out, "  surveyed: %s\n", strings.Join(r.Surveyed, "; "))
	}
	for _, why := range resp.Skipped {
		if asJSON {
			b, err := json.Marshal(struct {
				Skipped string `json:"skipped"`
			}{why})
			if err != nil {
				return err
			}
			c.out.Write(append(b, '\n'))
			continue
		}
		fmt.Fprintf(c.out, "skipped %s\n", why)
	}
	return nil
}
