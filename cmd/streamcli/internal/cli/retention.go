package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/api"
)

// Retention, trim and named consumers.

// retentionFlags are --max-bytes, --max-entries and --max-age, shared by
// create and retention.
type retentionFlags struct {
	maxBytes   int
	maxEntries uint64
	maxAge     time.Duration
}

func (r *retentionFlags) define(fs *flag.FlagSet) {
	fs.Var(sizeFlag(&r.maxBytes), "max-bytes", "keep about `SIZE` of the newest entries (whole regions), such as 64m or 10GiB, with --node")
	fs.Uint64Var(&r.maxEntries, "max-entries", 0, "keep the `N` newest entries, with --node")
	fs.DurationVar(&r.maxAge, "max-age", 0, "keep entries appended within `DURATION` (by the times their leader stamped), with --node")
}

// set reports whether any of the flags was given.
func (r *retentionFlags) set() bool { return r.maxBytes != 0 || r.maxEntries != 0 || r.maxAge != 0 }

func (r *retentionFlags) policy() (*api.Retention, error) {
	if r.maxBytes < 0 || r.maxAge < 0 {
		return nil, usagef("--max-bytes and --max-age must not be negative")
	}
	if !r.set() {
		return nil, nil
	}
	return &api.Retention{MaxBytes: uint64(r.maxBytes), MaxEntries: r.maxEntries, MaxAgeNs: int64(r.maxAge)}, nil
}

// formatRetention is a policy as people read it.
func formatRetention(r *api.Retention) string {
	if r == nil || r.MaxBytes == 0 && r.MaxEntries == 0 && r.MaxAgeNs == 0 {
		return "none (kept until trimmed)"
	}
	var parts []string
	if r.MaxBytes > 0 {
		parts = append(parts, "max bytes "+formatSize(int64(r.MaxBytes)))
	}
	if r.MaxEntries > 0 {
		parts = append(parts, fmt.Sprintf("max entries %d", r.MaxEntries))
	}
	if r.MaxAgeNs > 0 {
		parts = append(parts, "max age "+time.Duration(r.MaxAgeNs).String())
	}
	return strings.Join(parts, ", ")
}

var retentionCmd = &command{
	name:    "retention",
	args:    "STREAM [--max-bytes SIZE] [--max-entries N] [--max-age DURATION] [--none]",
	summary: "Show or change a stream's retention policy (needs --node).",
	detail: `
Without flags, retention prints the stream's policy and the position it
was trimmed to. With --max-bytes, --max-entries or --max-age it replaces
the policy with the one given (limits not given are none); --none removes
it. The stream's leader applies the policy within a second: it frees the
regions wholly before the newest entries the policy keeps, on every copy,
never past a consumer that holds retention (streamcli consumer add
--hold) and never past the committed end. Only whole regions go, so a
stream keeps what its policy asks and up to a region more.

--max-age needs entries that carry their append time; this build's do
not, and the node refuses it.`,
	flags: func(fs *flag.FlagSet) runFunc {
		var r retentionFlags
		r.define(fs)
		none := fs.Bool("none", false, "remove the policy: keep everything until trimmed")
		return func(ctx context.Context, c *invocation, args []string) error {
			if len(args) != 1 {
				return usagef("retention takes one stream name, got %d arguments", len(args))
			}
			if err := checkName(args[0]); err != nil {
				return err
			}
			pol, err := r.policy()
			if err != nil {
				return err
			}
			if *none && pol != nil {
				return usagef("--none and a limit contradict each other")
			}
			if c.node == "" {
				return usagef("retention needs --node HOST:PORT (or $RPSTREAM_NODE): a stream alone is trimmed with streamcli trim")
			}
			cl, err := c.dialNode()
			if err != nil {
				return err
			}
			defer cl.Close()
			if pol == nil && !*none {
				st, err := cl.Status(ctx, args[0])
				if err != nil {
					return c.explainRemote(args[0], err)
				}
				fmt.Fprintf(c.out, "stream %q: retention %s; trimmed to %d, oldest entry %d, next %d\n", args[0], formatRetention(st.Retention), st.TrimHead, st.Head, st.Committed)
				return nil
			}
			got, err := cl.SetRetention(ctx, args[0], pol)
			if err != nil {
				return c.explainRetention(args[0], err)
			}
			fmt.Fprintf(c.out, "stream %q: retention %s\n", args[0], formatRetention(got))
			return nil
		}
	},
}

var trimCmd = &command{
	name:    "trim",
	args:    "STREAM --before POSITION",
	summary: "Free the entries of a stream before a position.",
	detail: `
trim frees every region whose entries all come before POSITION: their
entries can no longer be read (a read gets "trimmed"), and the file's
space is given back. Entries of the region holding POSITION stay until a
later trim passes that region; the stream's head is the first entry still
held.

With --node the stream's leader records the trim in the catalog first,
then trims its own copy and every other copy; a consumer that holds
retention and has not acknowledged up to POSITION refuses the trim (exit
1), and so does a position past the committed end. Without --node the
stream file in the data directory is trimmed (no other process may be
writing it).`,
	flags: func(fs *flag.FlagSet) runFunc {
		before := fs.String("before", "", "trim the entries before `POSITION`")
		return func(ctx context.Context, c *invocation, args []string) error {
			if len(args) != 1 {
				return usagef("trim takes one stream name, got %d arguments", len(args))
			}
			if err := checkName(args[0]); err != nil {
				return err
			}
			if *before == "" {
				return usagef("trim needs --before POSITION")
			}
			pos, err := strconv.ParseUint(*before, 10, 64)
			if err != nil {
				return usagef("--before must be a position (0, 1, ...), not %q", *before)
			}
			if c.node != "" {
				cl, err := c.dialNode()
				if err != nil {
					return err
				}
				defer cl.Close()
				r, err := cl.Trim(ctx, args[0], pos)
				if err != nil {
					return c.explainRetention(args[0], err)
				}
				fmt.Fprintf(c.out, "stream %q trimmed before %d: oldest entry %d\n", args[0], r.TrimHead, r.Head)
				return nil
			}
			return c.trim(args[0], pos)
		}
	},
}

func (c *invocation) trim(name string, before uint64) error {
	path, err := c.data.path(name)
	if err != nil {
		return err
	}
	s, err := c.data.openWriter(name)
	if err != nil {
		return err
	}
	if before > s.Committed() {
		s.Close()
		return fmt.Errorf("stream %q: cannot trim before %d: the stream ends at %d", name, before, s.Committed())
	}
	head, err := s.Trim(before)
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return c.data.explain(name, path, err)
	}
	fmt.Fprintf(c.out, "stream %q trimmed before %d: oldest entry %d\n", name, before, head)
	return nil
}

// explainRetention is explainRemote for retention and consumer calls,
// whose NotFound and AlreadyExists may be about a consumer and whose
// FailedPrecondition says why a trim was refused.
func (c *invocation) explainRetention(name string, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch st.Code() {
	case codes.NotFound, codes.AlreadyExists:
		if strings.Contains(st.Message(), "consumer") {
			return fmt.Errorf("node %s: %s", c.node, st.Message())
		}
	case codes.FailedPrecondition, codes.InvalidArgument:
		return fmt.Errorf("node %s: %s", c.node, st.Message())
	}
	return c.explainRemote(name, err)
}

var consumerCmd = &command{
	name:    "consumer",
	args:    "add|ls|rm|ack STREAM ...",
	summary: "Manage a stream's named consumers: durable cursors (needs --node).",
	subNoun: "subcommand",
	detail: `
A named consumer is a cursor kept in the cluster's catalog, like a Kafka
consumer group's committed offset or a JetStream durable consumer: its
acknowledged position says that every entry before it was processed.
streamcli tail --consumer NAME resumes there. Delivery is at least once:
entries after the last committed acknowledgement are delivered again after
a restart, so processing must tolerate repeats (the position identifies
each entry). A consumer added with --hold also holds retention: no trim,
by policy or by hand, passes its acknowledged position.`,
	subs: []*command{consumerAddCmd, consumerLsCmd, consumerRmCmd, consumerAckCmd},
}

var consumerAddCmd = &command{
	name:    "consumer add",
	args:    "STREAM NAME [--start POSITION | --from-end] [--hold]",
	summary: "Make a named consumer of STREAM.",
	detail: `
The consumer starts at --start (default: the stream's oldest entry), or
with --from-end at the stream's next position (only new entries). --hold
makes it hold retention: the stream is never trimmed past what it has
acknowledged. NAME follows the rule of stream names.`,
	flags: func(fs *flag.FlagSet) runFunc {
		start := fs.Uint64("start", 0, "first `POSITION` to deliver")
		fromEnd := fs.Bool("from-end", false, "start at the stream's next position")
		hold := fs.Bool("hold", false, "hold retention at the consumer's acknowledged position")
		return func(ctx context.Context, c *invocation, args []string) error {
			if len(args) != 2 {
				return usagef("consumer add takes a stream and a consumer name, got %d arguments", len(args))
			}
			if err := checkNames(args); err != nil {
				return err
			}
			startSet := false
			fs.Visit(func(f *flag.Flag) { startSet = startSet || f.Name == "start" })
			if startSet && *fromEnd {
				return usagef("--start and --from-end contradict each other")
			}
			if c.node == "" {
				return usagef("consumer add needs --node HOST:PORT (or $RPSTREAM_NODE): consumers live in the cluster's catalog")
			}
			cl, err := c.dialNode()
			if err != nil {
				return err
			}
			defer cl.Close()
			from := *start
			if *fromEnd {
				st, err := cl.Status(ctx, args[0])
				if err != nil {
					return c.explainRemote(args[0], err)
				}
				from = st.Committed
			}
			k, err := cl.AddConsumer(ctx, args[0], args[1], from, *hold)
			if err != nil {
				return c.explainRetention(args[0], err)
			}
			held := ""
			if k.Hold {
				held = ", holding retention"
			}
			fmt.Fprintf(c.out, "consumer %q of stream %q starts at %d%s\n", k.Name, args[0], k.Acked, held)
			return nil
		}
	},
}

var consumerLsCmd = &command{
	name:    "consumer ls",
	args:    "STREAM [--output text|json]",
	summary: "List the named consumers of STREAM with their lag.",
	detail: `
One line per consumer: its name, acknowledged position (it resumes
there), lag (committed entries it has not acknowledged), whether it holds
retention, and when it last acknowledged. --output json prints
{"committed":N,"consumers":[{"name","acked","lag","hold","acked_time"}]}.`,
	flags: func(fs *flag.FlagSet) runFunc {
		output := outputFlag(fs)
		return func(ctx context.Context, c *invocation, args []string) error {
			if len(args) != 1 {
				return usagef("consumer ls takes one stream name, got %d arguments", len(args))
			}
			asJSON, err := wantJSON(*output)
			if err != nil {
				return err
			}
			if err := checkName(args[0]); err != nil {
				return err
			}
			if c.node == "" {
				return usagef("consumer ls needs --node HOST:PORT (or $RPSTREAM_NODE): consumers live in the cluster's catalog")
			}
			cl, err := c.dialNode()
			if err != nil {
				return err
			}
			defer cl.Close()
			r, err := cl.Consumers(ctx, args[0])
			if err != nil {
				return c.explainRetention(args[0], err)
			}
			if asJSON {
				out := struct {
					Committed uint64         `json:"committed"`
					Consumers []consumerJSON `json:"consumers"`
				}{Committed: r.Committed, Consumers: consumersJSON(r.Consumers)}
				if out.Consumers == nil {
					out.Consumers = []consumerJSON{}
				}
				return c.printJSON(out)
			}
			return c.printConsumers(r.Consumers)
		}
	},
}

// printConsumers writes the consumers table.
func (c *invocation) printConsumers(ks []*api.Consumer) error {
	tw := tabwriter.NewWriter(c.out, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "CONSUMER\tACKED\tLAG\tHOLD\tLAST ACK")
	for _, k := range ks {
		last := "-"
		if k.AckedTime != 0 {
			last = time.Unix(0, k.AckedTime).UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%v\t%s\n", k.Name, k.Acked, k.Lag, k.Hold, last)
	}
	return tw.Flush()
}

var consumerRmCmd = &command{
	name:    "consumer rm",
	args:    "STREAM NAME",
	summary: "Remove a named consumer of STREAM (and its hold on retention).",
	flags: func(fs *flag.FlagSet) runFunc {
		return func(ctx context.Context, c *invocation, args []string) error {
			if len(args) != 2 {
				return usagef("consumer rm takes a stream and a consumer name, got %d arguments", len(args))
			}
			if err := checkNames(args); err != nil {
				return err
			}
			if c.node == "" {
				return usagef("consumer rm needs --node HOST:PORT (or $RPSTREAM_NODE): consumers live in the cluster's catalog")
			}
			cl, err := c.dialNode()
			if err != nil {
				return err
			}
			defer cl.Close()
			if err := cl.RemoveConsumer(ctx, args[0], args[1]); err != nil {
				return c.explainRetention(args[0], err)
			}
			fmt.Fprintf(c.out, "removed consumer %q of stream %q\n", args[1], args[0])
			return nil
		}
	},
}

var consumerAckCmd = &command{
	name:    "consumer ack",
	args:    "STREAM NAME POSITION",
	summary: "Acknowledge every entry of STREAM before POSITION for consumer NAME.",
	detail: `
The acknowledgement is committed to the catalog before the command
returns. An acknowledged position never moves back: a lower POSITION
changes nothing.`,
	flags: func(fs *flag.FlagSet) runFunc {
		return func(ctx context.Context, c *invocation, args []string) error {
			if len(args) != 3 {
				return usagef("consumer ack takes a stream, a consumer name and a position, got %d arguments", len(args))
			}
			if err := checkNames(args[:2]); err != nil {
				return err
			}
			pos, err := strconv.ParseUint(args[2], 10, 64)
			if err != nil {
				return usagef("POSITION must be a position (0, 1, ...), not %q", args[2])
			}
			if c.node == "" {
				return usagef("consumer ack needs --node HOST:PORT (or $RPSTREAM_NODE): consumers live in the cluster's catalog")
			}
			cl, err := c.dialNode()
			if err != nil {
				return err
			}
			defer cl.Close()
			acked, err := cl.Ack(ctx, args[0], args[1], pos, true)
			if err != nil {
				return c.explainRetention(args[0], err)
			}
			fmt.Fprintf(c.out, "consumer %q of stream %q acknowledged before %d\n", args[1], args[0], acked)
			return nil
		}
	},
}

func checkNames(names []string) error {
	for _, n := range names {
		if err := checkName(n); err != nil {
			return err
		}
	}
	return nil
}

// consumerJSON is a consumer in consumer ls and status --output json.
type consumerJSON struct {
	Name      string `json:"name"`
	Acked     uint64 `json:"acked"`
	Lag       uint64 `json:"lag"`
	Hold      bool   `json:"hold"`
	AckedTime string `json:"acked_time,omitempty"`
}

func consumersJSON(ks []*api.Consumer) []consumerJSON {
	var out []consumerJSON
	for _, k := range ks {
		j := consumerJSON{Name: k.Name, Acked: k.Acked, Lag: k.Lag, Hold: k.Hold}
		if k.AckedTime != 0 {
			j.AckedTime = time.Unix(0, k.AckedTime).UTC().Format(time.RFC3339Nano)
		}
		out = append(out, j)
	}
	return out
}

// retentionJSON is a policy in status --output json.
type retentionJSON struct {
	MaxBytes   uint64 `json:"max_bytes,omitempty"`
	MaxEntries uint64 `json:"max_entries,omitempty"`
	MaxAge     string `json:"max_age,omitempty"`
}

func toRetentionJSON(r *api.Retention) *retentionJSON {
	if r == nil || r.MaxBytes == 0 && r.MaxEntries == 0 && r.MaxAgeNs == 0 {
		return nil
	}
	j := &retentionJSON{MaxBytes: r.MaxBytes, MaxEntries: r.MaxEntries}
	if r.MaxAgeNs > 0 {
		j.MaxAge = time.Duration(r.MaxAgeNs).String()
	}
	return j
}

// consumerTail is tail --consumer: where it starts, and how it
// acknowledges what it printed.
type consumerTail struct {
	name string
	auto bool // acknowledge after printing
}

// resolveConsumer is the position tail --consumer resumes at: the
// consumer's acknowledged position, or the stream's head if that was
// trimmed (the consumer did not hold retention).
func (c *invocation) resolveConsumer(ctx context.Context, stream string, ct consumerTail, head uint64) (uint64, error) {
	cl, err := c.dialNode()
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	k, err := cl.Consumer(ctx, stream, ct.name)
	if err != nil {
		return 0, c.explainRetention(stream, err)
	}
	if k.Acked < head {
		fmt.Fprintf(c.Stderr, "streamcli: consumer %q acknowledged up to %d, but the stream was trimmed to %d: resuming at %d\n", ct.name, k.Acked, head, head)
		return head, nil
	}
	return k.Acked, nil
}

var errAckMode = errors.New("--ack must be auto or explicit")

func parseAckMode(s string) (auto bool, err error) {
	switch s {
	case "auto", "":
		return true, nil
	case "explicit":
		return false, nil
	}
	return false, usagef("%v, not %q", errAckMode, s)
}
