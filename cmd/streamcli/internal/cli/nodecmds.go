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
	args:    "STREAM [--output text|json]",
	summary: "Describe a stream: its leader, epoch, replicas, positions and regions.",
	detail: `
With --node: the node's view of the stream (leader and its address, epoch,
replication factor and acknowledgement policy, head, next and persisted
positions, its copies and their lag, regions). Without --node: the same
as "ls STREAM". --output json prints the object ls STREAM --output json
prints.

Exit codes: 0 the stream is fully replicated (embedded: it opened), 1 it
could not be asked about (missing, node unreachable), 2 bad usage, 3 it
is under-replicated (fewer copies hold it than --replicas asked for; the
status is printed all the same).`,
	flags: func(fs *flag.FlagSet) runFunc {
		output := outputFlag(fs)
		return func(ctx context.Context, c *invocation, args []string) error {
			if len(args) != 1 {
				return usagef("status takes one stream name, got %d arguments", len(args))
			}
			asJSON, err := wantJSON(*output)
			if err != nil {
				return err
			}
			if c.node == "" {
				return c.lsOne(args[0], asJSON)
			}
			under, err := c.remoteLs(ctx, args[0], asJSON)
			if err == nil && under {
				return &exitError{exitDegraded, fmt.Sprintf("stream %q is under-replicated", args[0])}
			}
			return err
		}
	},
}

var membersCmd = &command{
	name:    "members",
	args:    "[--output text|json]",
	summary: "List the members of the cluster of a node (needs --node).",
	detail: `
One line per member as the node knows it: name, role (node or backup),
state, client, peer and gossip addresses, and free bytes in its data
directory (each member measures its own every few seconds and gossips
it). A single node lists itself.

--output json prints {"members":[...]}, each member an object with name,
self, role, state, client_addr, peer_addr, gossip_addr and free_bytes.`,
	flags: func(fs *flag.FlagSet) runFunc {
		output := outputFlag(fs)
		return func(ctx context.Context, c *invocation, args []string) error {
			if len(args) != 0 {
				return usagef("members takes no arguments")
			}
			asJSON, err := wantJSON(*output)
			if err != nil {
				return err
			}
			if c.node == "" {
				return usagef("members needs --node HOST:PORT (or $RPSTREAM_NODE)")
			}
			return c.members(ctx, asJSON)
		}
	},
}

func (c *invocation) members(ctx context.Context, asJSON bool) error {
	cl, err := c.dialNode()
	if err != nil {
		return err
	}
	defer cl.Close()
	ms, err := cl.Members(ctx)
	if err != nil {
		return c.explainRemote("", err)
	}
	if asJSON {
		list := struct {
			Members []memberJSON `json:"members"`
		}{Members: []memberJSON{}}
		for _, m := range ms {
			list.Members = append(list.Members, memberJSON{Name: m.Name, Self: m.Self, Role: roleName(m.Role), State: stateName(m.State),
				ClientAddr: m.ClientAddr, PeerAddr: m.PeerAddr, GossipAddr: m.GossipAddr, FreeBytes: m.Capacity})
		}
		return c.printJSON(list)
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
