package cli

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
)

var statusCmd = &command{
	name:    "status",
	args:    "STREAM",
	summary: "Describe a stream: its leader, epoch, replicas, positions and regions.",
	detail: `
With --node: the node's view of the stream (leader and its address, epoch,
replication factor and acknowledgement policy, head, next and persisted
positions, regions). Without --node: the same as "ls STREAM".`,
	flags: func(fs *flag.FlagSet) runFunc {
		return func(ctx context.Context, c *invocation, args []string) error {
			if len(args) != 1 {
				return usagef("status takes one stream name, got %d arguments", len(args))
			}
			if c.node != "" {
				return c.remoteLs(ctx, args[0])
			}
			return c.lsOne(args[0])
		}
	},
}

var membersCmd = &command{
	name:    "members",
	args:    "",
	summary: "List the members of the cluster of a node (needs --node).",
	detail: `
One line per member as the node knows it: name, role (node or backup),
state, client, peer and gossip addresses, and free bytes in its data
directory. A single node lists itself.`,
	flags: func(fs *flag.FlagSet) runFunc {
		return func(ctx context.Context, c *invocation, args []string) error {
			if len(args) != 0 {
				return usagef("members takes no arguments")
			}
			if c.node == "" {
				return usagef("members needs --node HOST:PORT (or $RPSTREAM_NODE)")
			}
			return c.members(ctx)
		}
	},
}

func (c *invocation) members(ctx context.Context) error {
	cl, err := c.dialNode()
	if err != nil {
		return err
	}
	defer cl.Close()
	ms, err := cl.Members(ctx)
	if err != nil {
		return c.explainRemote("", err)
	}
	tw := tabwriter.NewWriter(c.out, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tROLE\tSTATE\tCLIENT\tPEER\tGOSSIP\tFREE")
	for _, m := range ms {
		name := m.Name
		if m.Self {
			name += " (this node)"
		}
		role := strings.ToLower(strings.TrimPrefix(m.Role.String(), "ROLE_"))
		state := strings.ToLower(strings.TrimPrefix(m.State.String(), "MEMBER_STATE_"))
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, role, state, dash(m.ClientAddr), dash(m.PeerAddr), dash(m.GossipAddr), formatSize(int64(m.Capacity)))
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
