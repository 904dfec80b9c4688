package cli

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/api"
)

// healthCmd is "health": one answer, by exit code, to "is the cluster
// serving every stream as asked?", as rpk cluster health gives.
var healthCmd = &command{
	name:    "health",
	args:    "[--timeout D] [--output text|json]",
	summary: "Check the cluster of a node: controller, nodes and streams; the exit code says (needs --node).",
	detail: `
Asks the node given by --node for the catalog's controller group and
nodes, then each live stream's status, and prints: healthy or not, the
controller, the voters up, the nodes down (dead or suspected, as the node
sees them), the streams, the under-replicated ones (fewer copies than
--replicas asked for) and the unavailable ones (their leader is down and
not replaced yet).

Exit codes, for scripts and health checks:
  0  healthy: a controller, every node alive, every stream fully replicated
  1  the node could not be asked (unreachable, not a node: the message says)
  2  bad usage
  3  degraded: a node down, or a stream under-replicated or unavailable
  4  no controller: too few voters are up for a quorum (or an election is
     under way); the catalog cannot change, no stream can fail over

--timeout bounds each call (default 5s). --output json prints one object
with healthy, status (healthy, degraded or no-controller), controller,
term, voters, voters_alive, nodes, nodes_down, streams, under_replicated
and unavailable (names).`,
	flags: func(fs *flag.FlagSet) runFunc {
		timeout := fs.Duration("timeout", 5*time.Second, "bound each call to the node by `D`")
		output := outputFlag(fs)
		return func(ctx context.Context, c *invocation, args []string) error {
			if len(args) != 0 {
				return usagef("health takes no arguments, got %q", args)
			}
			asJSON, err := wantJSON(*output)
			if err != nil {
				return err
			}
			if *timeout <= 0 {
				return usagef("--timeout must be above 0")
			}
			if c.node == "" {
				return usagef("health needs --node HOST:PORT (or $RPSTREAM_NODE)")
			}
			c.timeout = *timeout
			return c.health(ctx, asJSON)
		}
	},
}

// healthJSON is health --output json. Scripts read these names: never
// rename one.
type healthJSON struct {
	Healthy         bool     `json:"healthy"`
	Status          string   `json:"status"`
	Controller      string   `json:"controller"`
	Term            uint64   `json:"term"`
	Voters          []string `json:"voters"`
	VotersAlive     int      `json:"voters_alive"`
	Nodes           int      `json:"nodes"`
	NodesDown       []string `json:"nodes_down"`
	Streams         int      `json:"streams"`
	UnderReplicated []string `json:"under_replicated"`
	Unavailable     []string `json:"unavailable"`
}

func (c *invocation) health(ctx context.Context, asJSON bool) error {
	cl, err := c.dialNode()
	if err != nil {
		return err
	}
	defer cl.Close()
	cs, err := cl.ClusterStatus(ctx)
	if err != nil {
		return c.explainCluster("", err)
	}
	h := healthJSON{Controller: cs.Controller, Term: cs.Term, Voters: append([]string{}, cs.Voters...), Nodes: len(cs.Nodes),
		NodesDown: []string{}, UnderReplicated: []string{}, Unavailable: []string{}}
	for _, n := range cs.Nodes {
		switch n.State {
		case api.MemberState_MEMBER_STATE_ALIVE:
			if slices.Contains(cs.Voters, n.Name) {
				h.VotersAlive++
			}
		case api.MemberState_MEMBER_STATE_DEAD, api.MemberState_MEMBER_STATE_SUSPECT:
			h.NodesDown = append(h.NodesDown, n.Name)
		}
	}
	if cs.Controller != "" {
		names, err := cl.List(ctx)
		if err != nil {
			return c.explainRemote("", err)
		}
		for _, n := range names {
			st, err := cl.Status(ctx, n)
			switch {
			case status.Code(err) == codes.NotFound:
				continue // deleted meanwhile
			case status.Code(err) == codes.Unavailable:
				h.Unavailable = append(h.Unavailable, n)
			case err != nil:
				return c.explainRemote(n, err)
			case st.UnderReplicated:
				h.UnderReplicated = append(h.UnderReplicated, n)
			}
			h.Streams++
		}
	}
	code := 0
	switch {
	case cs.Controller == "":
		h.Status, code = "no-controller", exitNoController
	case len(h.NodesDown) > 0 || len(h.UnderReplicated) > 0 || len(h.Unavailable) > 0:
		h.Status, code = "degraded", exitDegraded
	default:
		h.Status, h.Healthy = "healthy", true
	}
	if asJSON {
		err = c.printJSON(h)
	} else {
		err = c.printHealth(h)
	}
	if err != nil || code == 0 {
		return err
	}
	var why []string
	if cs.Controller == "" {
		why = append(why, fmt.Sprintf("no controller: %d of %d voters alive as node %s sees it", h.VotersAlive, len(h.Voters), cs.Node))
	}
	if len(h.NodesDown) > 0 {
		why = append(why, fmt.Sprintf("%d node(s) down", len(h.NodesDown)))
	}
	if len(h.UnderReplicated) > 0 {
		why = append(why, fmt.Sprintf("%d stream(s) under-replicated", len(h.UnderReplicated)))
	}
	if len(h.Unavailable) > 0 {
		why = append(why, fmt.Sprintf("%d stream(s) unavailable", len(h.Unavailable)))
	}
	return &exitError{code, "unhealthy: " + strings.Join(why, ", ")}
}

func (c *invocation) printHealth(h healthJSON) error {
	tw := tabwriter.NewWriter(c.out, 0, 8, 2, ' ', 0)
	healthy := "no (" + h.Status + ")"
	if h.Healthy {
		healthy = "yes"
	}
	fmt.Fprintf(tw, "healthy\t%s\n", healthy)
	if h.Controller != "" {
		fmt.Fprintf(tw, "controller\t%s (term %d)\n", h.Controller, h.Term)
	} else {
		fmt.Fprintf(tw, "controller\t- (none)\n")
	}
	fmt.Fprintf(tw, "voters\t%s (%d of %d alive)\n", list(h.Voters), h.VotersAlive, len(h.Voters))
	fmt.Fprintf(tw, "nodes\t%d\n", h.Nodes)
	fmt.Fprintf(tw, "nodes down\t%s\n", list(h.NodesDown))
	if h.Controller == "" {
		fmt.Fprintf(tw, "streams\tnot asked (no controller)\n")
	} else {
		fmt.Fprintf(tw, "streams\t%d\n", h.Streams)
		fmt.Fprintf(tw, "under-replicated\t%s\n", list(h.UnderReplicated))
		fmt.Fprintf(tw, "unavailable\t%s\n", list(h.Unavailable))
	}
	return tw.Flush()
}
