package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/api"
)

// clusterCmd is "cluster": the catalog's controller group as a node sees
// it, and the changes of its voters as subcommands.
var clusterCmd = &command{
	name:    "cluster",
	args:    "[add-voter NAME | remove-voter NAME] [--output text|json]",
	summary: "Show the catalog's controller group and nodes, or change its voters (needs --node).",
	subNoun: "subcommand",
	detail: `
The catalog (which streams exist, who leads each, where the copies are) is
kept by a Raft group of the cluster's nodes: its voters elect the
controller (the Raft leader) among them, the other nodes follow it without
a vote. Without a subcommand, cluster prints the group as the node given by
--node sees it: the controller and its term, the node's commit and applied
log indexes and Raft state (leader, follower, candidate, pre-candidate),
the voters and the followers, the live streams; then one line per node of
the catalog: its name, role (node or backup), membership state as the node
sees it (alive, suspect, dead, left), VOTER (yes; no: a follower without a
vote; -: not in the group yet), its registered incarnation (the identity of
its data directory) and client address.

When the node knows no controller (too few voters are up, or an election is
under way), cluster prints what it knows and exits with code 1.

--output json prints one object on one line with the fields node,
registered, controller ("" when none), term, commit, applied, raft_state,
voters, followers, streams and nodes, each node an object with name,
incarnation, role, state, voter, follower and client_addr.`,
	subs: []*command{clusterAddVoterCmd, clusterRemoveVoterCmd},
	flags: func(fs *flag.FlagSet) runFunc {
		output := fs.String("output", "text", "output `FORMAT`: text or json")
		return func(ctx context.Context, c *invocation, args []string) error {
			if len(args) != 0 {
				return usagef("cluster takes no arguments besides a subcommand, got %q", args)
			}
			if *output != "text" && *output != "json" {
				return usagef("--output must be text or json, not %q", *output)
			}
			if c.node == "" {
				return usagef("cluster needs --node HOST:PORT (or $RPSTREAM_NODE)")
			}
			return c.cluster(ctx, *output == "json")
		}
	},
}

var clusterAddVoterCmd = &command{
	name:    "cluster add-voter",
	args:    "NAME",
	summary: "Promote NAME, a node following the catalog, to a controller voter.",
	detail: `
NAME must follow the catalog already: streamcli cluster lists it with VOTER
"no" (a node that joins the cluster registers and follows within moments).
The controller makes the change, and the command returns once the group
has applied it. Keep the voters an odd number, 3 or 5: a majority of them
must be up for the catalog to change at all.`,
	flags: func(fs *flag.FlagSet) runFunc {
		return func(ctx context.Context, c *invocation, args []string) error {
			return c.changeVoter(ctx, args, false)
		}
	},
}

var clusterRemoveVoterCmd = &command{
	name:    "cluster remove-voter",
	args:    "NAME",
	summary: "Demote NAME, a controller voter, to a follower of the catalog without a vote.",
	detail: `
The node keeps following the catalog. The only voter cannot be removed.
Removing the controller itself makes the others elect a new one. The
command returns once the group has applied the change.`,
	flags: func(fs *flag.FlagSet) runFunc {
		return func(ctx context.Context, c *invocation, args []string) error {
			return c.changeVoter(ctx, args, true)
		}
	},
}

// clusterJSON is cluster --output json: the api.ClusterStatusResponse
// under the proto's field names, with role and state written as the text
// output writes them. Scripts read these names: never rename one.
type clusterJSON struct {
	Node       string            `json:"node"`
	Registered bool              `json:"registered"`
	Controller string            `json:"controller"`
	Term       uint64            `json:"term"`
	Commit     uint64            `json:"commit"`
	Applied    uint64            `json:"applied"`
	RaftState  string            `json:"raft_state"`
	Voters     []string          `json:"voters"`
	Followers  []string          `json:"followers"`
	Streams    uint32            `json:"streams"`
	Nodes      []clusterNodeJSON `json:"nodes"`
	Scrub      scrubJSON         `json:"scrub"`
}

// scrubJSON is the answering node's scrubber counts.
type scrubJSON struct {
	Passes       uint64 `json:"passes"`
	Bytes        uint64 `json:"bytes"`
	Damaged      uint64 `json:"damaged"`
	Repaired     uint64 `json:"repaired"`
	Unrepairable uint64 `json:"unrepairable"`
}

type clusterNodeJSON struct {
	Name        string `json:"name"`
	Incarnation string `json:"incarnation"`
	Role        string `json:"role"`
	State       string `json:"state"`
	Voter       bool   `json:"voter"`
	Follower    bool   `json:"follower"`
	ClientAddr  string `json:"client_addr"`
}

func roleName(r api.Role) string {
	return strings.ToLower(strings.TrimPrefix(r.String(), "ROLE_"))
}

func stateName(s api.MemberState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "MEMBER_STATE_"))
}

func (c *invocation) cluster(ctx context.Context, asJSON bool) error {
	cl, err := c.dialNode()
	if err != nil {
		return err
	}
	defer cl.Close()
	st, err := cl.ClusterStatus(ctx)
	if err != nil {
		return c.explainCluster("", err)
	}
	if asJSON {
		j := clusterJSON{
			Node: st.Node, Registered: st.Registered, Controller: st.Controller, Term: st.Term, Commit: st.Commit, Applied: st.Applied,
			RaftState: st.RaftState, Voters: append([]string{}, st.Voters...), Followers: append([]string{}, st.Followers...),
			Streams: st.Streams, Nodes: []clusterNodeJSON{},
			Scrub: scrubJSON{Passes: st.ScrubPasses, Bytes: st.ScrubBytes, Damaged: st.ScrubDamaged, Repaired: st.ScrubRepaired, Unrepairable: st.ScrubUnrepairable},
		}
		for _, n := range st.Nodes {
			j.Nodes = append(j.Nodes, clusterNodeJSON{Name: n.Name, Incarnation: n.Incarnation, Role: roleName(n.Role),
				State: stateName(n.State), Voter: n.Voter, Follower: n.Follower, ClientAddr: n.ClientAddr})
		}
		b, err := json.Marshal(j)
		if err != nil {
			return err
		}
		c.out.Write(append(b, '\n'))
	} else if err := c.printCluster(st); err != nil {
		return err
	}
	if st.Controller == "" {
		return fmt.Errorf("no controller: the catalog has no Raft leader as node %s sees it (too few voters up, or an election under way; voters: %s)", st.Node, list(st.Voters))
	}
	return nil
}

func (c *invocation) printCluster(st *api.ClusterStatusResponse) error {
	tw := tabwriter.NewWriter(c.out, 0, 8, 2, ' ', 0)
	node := st.Node
	if !st.Registered {
		node += " (not registered in the catalog under its data directory's incarnation)"
	}
	fmt.Fprintf(tw, "node\t%s\n", node)
	fmt.Fprintf(tw, "controller\t%s\n", dash(st.Controller))
	fmt.Fprintf(tw, "term\t%d\n", st.Term)
	fmt.Fprintf(tw, "raft state\t%s\n", dash(st.RaftState))
	fmt.Fprintf(tw, "commit\t%d\n", st.Commit)
	fmt.Fprintf(tw, "applied\t%d\n", st.Applied)
	fmt.Fprintf(tw, "voters\t%s\n", list(st.Voters))
	fmt.Fprintf(tw, "followers\t%s\n", list(st.Followers))
	fmt.Fprintf(tw, "streams\t%d\n", st.Streams)
	fmt.Fprintf(tw, "scrub\t%d copies and led streams read through (%d bytes), %d damaged entries found, %d repaired, %d beyond repair\n", st.ScrubPasses, st.ScrubBytes, st.ScrubDamaged, st.ScrubRepaired, st.ScrubUnrepairable)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(c.out)
	tw = tabwriter.NewWriter(c.out, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tROLE\tSTATE\tVOTER\tINCARNATION\tADDRESS")
	for _, n := range st.Nodes {
		voter := "-"
		switch {
		case n.Voter:
			voter = "yes"
		case n.Follower:
			voter = "no"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", n.Name, roleName(n.Role), stateName(n.State), voter, dash(n.Incarnation), dash(n.ClientAddr))
	}
	return tw.Flush()
}

// list writes names as "a, b", or "-" for none.
func list(names []string) string {
	return dash(strings.Join(names, ", "))
}

// changeVoter runs cluster add-voter (remove false) and remove-voter.
func (c *invocation) changeVoter(ctx context.Context, args []string, remove bool) error {
	cmd := "cluster add-voter"
	if remove {
		cmd = "cluster remove-voter"
	}
	if len(args) != 1 {
		return usagef("%s takes one node name, got %d arguments", cmd, len(args))
	}
	if args[0] == "" {
		return usagef("%s: empty node name", cmd)
	}
	if c.node == "" {
		return usagef("%s needs --node HOST:PORT (or $RPSTREAM_NODE)", cmd)
	}
	name := args[0]
	cl, err := c.dialNode()
	if err != nil {
		return err
	}
	defer cl.Close()
	if remove {
		if err := cl.RemoveVoter(ctx, name); err != nil {
			return c.explainCluster(fmt.Sprintf("cannot demote %s", name), err)
		}
		fmt.Fprintf(c.out, "demoted %s to a follower of the catalog without a vote\n", name)
		return nil
	}
	if err := cl.AddVoter(ctx, name); err != nil {
		return c.explainCluster(fmt.Sprintf("cannot promote %s to a controller voter", name), err)
	}
	fmt.Fprintf(c.out, "promoted %s to a controller voter\n", name)
	return nil
}

// explainCluster turns a status error of a cluster call into a message
// that starts with what failed ("" for reading the status).
func (c *invocation) explainCluster(what string, err error) error {
	prefix := ""
	if what != "" {
		prefix = what + ": "
	}
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%s%w", prefix, err)
	}
	msg := st.Message()
	for _, p := range []string{"controller: ", "catalog: "} {
		msg = strings.ReplaceAll(msg, p, "")
	}
	switch st.Code() {
	case codes.FailedPrecondition, codes.InvalidArgument:
		if what == "" {
			prefix = "node " + c.node + ": "
		}
		return fmt.Errorf("%s%s", prefix, msg)
	case codes.Unavailable:
		return fmt.Errorf("%snode %s is unavailable: %s", prefix, c.node, msg)
	}
	return fmt.Errorf("%snode %s: %s: %s", prefix, c.node, st.Code(), msg)
}
