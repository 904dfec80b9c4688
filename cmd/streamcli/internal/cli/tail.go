package cli

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/rpstream/rpstream/local"
)

var tailCmd = &command{
	graceful: true,
	name:     "tail",
	args:     "STREAM [--from POSITION | --since TIME | --consumer NAME [--ack auto|explicit]] [-f] [--output text|json]",
	summary:  "Print the entries of a stream, and with -f follow new ones.",
	detail: `
Text output prints the data of each entry as it is, followed by a newline
(an entry that holds newlines or binary bytes is printed raw: use
--output json to read such entries unambiguously). JSON output prints one
object per line: {"position":N,"size":BYTES,"data":"BASE64"}, data in
standard base64, and "time" (RFC 3339, nanoseconds) when the entry
carries the time its leader appended it (entries a node stored; not those
streamcli appends to a data directory).

--since TIME (needs --node) starts at the first entry appended at or
after TIME: a duration back from now (10m, 1h30m, 36h) or an RFC 3339
time (2026-01-02T15:04:05Z, with nanoseconds and a zone offset too). The
node finds that position by binary search over the stream's regions; when
no entry is that recent, tail starts at the end (with -f it waits for new
entries).

--from is a position (the first is 0; positions freed by retention are
gone) or -N for the last N entries. Without --from, tail starts at the
oldest entry.

With -f, tail waits for new entries, also while another process appends,
until it is interrupted (SIGINT or SIGTERM), and then exits with code 0.
tail only reads: it never takes the writer lock.

--consumer NAME (with --node) resumes where the named consumer
acknowledged (streamcli consumer add makes one; at the stream's head if
that position was trimmed). With --ack auto (the default) tail
acknowledges what it printed: every 200ms while it runs, and once more,
committed, when it ends; an entry printed but not acknowledged yet when
tail is killed is printed again by the next tail --consumer (delivery is
at least once). With --ack explicit tail acknowledges nothing: the
consumer's processing acknowledges with streamcli consumer ack.`,
	flags: func(fs *flag.FlagSet) runFunc {
		from := fs.String("from", "", "first `POSITION` to print, or -N for the last N entries (default: the oldest entry)")
		follow := fs.Bool("f", false, "follow: keep printing new entries until interrupted")
		fs.BoolVar(follow, "follow", false, "same as -f")
		output := fs.String("output", "text", "output `FORMAT`: text or json")
		since := fs.String("since", "", "with --node: start at the first entry appended at or after `TIME` (10m, or RFC 3339)")
		consumer := fs.String("consumer", "", "resume where the named consumer `NAME` acknowledged, with --node")
		ack := fs.String("ack", "auto", "with --consumer: `MODE` auto (acknowledge what is printed) or explicit (streamcli consumer ack)")
		return func(ctx context.Context, c *invocation, args []string) error {
			if len(args) != 1 {
				return usagef("tail takes one stream name, got %d arguments", len(args))
			}
			var ct *consumerTail
			if *consumer != "" {
				if *from != "" || *since != "" {
					return usagef("--from or --since and --consumer contradict each other: a consumer resumes where it acknowledged")
				}
				if err := checkName(*consumer); err != nil {
					return err
				}
				auto, err := parseAckMode(*ack)
				if err != nil {
					return err
				}
				if c.node == "" {
					return usagef("--consumer needs --node HOST:PORT (or $RPSTREAM_NODE): consumers live in the cluster's catalog")
				}
				ct = &consumerTail{name: *consumer, auto: auto}
			}
			if *output != "text" && *output != "json" {
				return usagef("--output must be text or json, not %q", *output)
			}
			var start startAt
			if err := start.parse(*from); err != nil {
				return err
			}
			if *since != "" {
				if *from != "" {
					return usagef("give --from or --since, not both")
				}
				if err := start.parseSince(*since, time.Now()); err != nil {
					return err
				}
				if c.node == "" {
					return usagef("--since needs --node: entries streamcli appends to a data directory carry no time")
				}
			}
			if c.node != "" {
				return c.remoteTail(ctx, args[0], start, ct, *follow, *output == "json")
			}
			return c.tail(ctx, args[0], start, *follow, *output == "json")
		}
	},
}

// startAt is where tail starts: the oldest entry, a position, the last
// n entries, or the first entry appended at or after a time (hasSince).
type startAt struct {
	set      bool
	last     bool
	n        uint64
	hasSince bool
	since    time.Time
}

// parseSince sets the start to the time s names: a duration back from
// now, or an RFC 3339 time.
func (p *startAt) parseSince(s string, now time.Time) error {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return usagef("--since takes a duration back from now (10m) or an RFC 3339 time, not %q", s)
		}
		p.hasSince, p.since = true, now.Add(-d)
		return nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return usagef("--since must be a duration (10m, 1h30m) or an RFC 3339 time (2026-01-02T15:04:05Z), not %q", s)
	}
	p.hasSince, p.since = true, t
	return nil
}

func (p *startAt) parse(s string) error {
	if s == "" {
		return nil
	}
	p.set = true
	if rest, ok := strings.CutPrefix(s, "-"); ok {
		p.last = true
		s = rest
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return usagef("--from must be a position (0, 1, ...) or -N for the last N entries, not %q", s)
	}
	p.n = n
	return nil
}

// resolve is the first position to read of a stream whose entries are
// [head, committed).
func (p startAt) resolve(head, committed uint64) uint64 {
	switch {
	case !p.set:
		return head
	case p.last:
		if committed-head < p.n {
			return head
		}
		return committed - p.n
	}
	return p.n
}

func (c *invocation) tail(ctx context.Context, name string, start startAt, follow, json bool) error {
	s, err := c.data.openReader(name)
	if err != nil {
		return err
	}
	defer s.Close()
	path, nf, _ := c.data.resolve(name)
	from := start.resolve(s.Head(), s.Committed())
	if from < s.Head() {
		return fmt.Errorf("position %d of stream %q was trimmed: the oldest entry is %d", from, name, s.Head())
	}
	it := s.Iterator(from)
	var line []byte
	for {
		for it.Next() {
			es, err := unwrapEntries(it.Entry(), nf)
			if err != nil {
				return err
			}
			for _, e := range es {
				line = formatEntry(line[:0], e, 0, json)
				if _, err := c.out.Write(line); err != nil {
					return fmt.Errorf("write output: %w", err)
				}
			}
		}
		if err := it.Err(); err != nil {
			if errors.Is(err, local.ErrTrimmed) {
				return fmt.Errorf("stream %q: retention freed entries while tail read them (%s)", name, detail(err))
			}
			return c.data.explain(name, path, err)
		}
		if !follow {
			return nil
		}
		if err := c.out.Flush(); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
		if err := it.Wait(ctx); err != nil {
			if ctx.Err() != nil {
				return nil // interrupted: the normal end of tail -f
			}
			return c.data.explain(name, path, err)
		}
	}
}

// formatEntry appends the output line of e, appended at time t (Unix ns,
// 0 if unknown), to b.
func formatEntry(b []byte, e local.Entry, t int64, json bool) []byte {
	if !json {
		b = append(b, e.Data...)
		return append(b, '\n')
	}
	b = append(b, `{"position":`...)
	b = strconv.AppendUint(b, e.Index, 10)
	b = append(b, `,"size":`...)
	b = strconv.AppendInt(b, int64(len(e.Data)), 10)
	b = append(b, `,"data":"`...)
	b = base64.StdEncoding.AppendEncode(b, e.Data)
	if t != 0 {
		b = append(b, `","time":"`...)
		b = time.Unix(0, t).UTC().AppendFormat(b, time.RFC3339Nano)
	}
	return append(b, "\"}\n"...)
}
