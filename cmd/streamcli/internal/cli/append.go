package cli

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"

	"github.com/rpstream/rpstream/client"
	"github.com/rpstream/rpstream/local"
)

var appendCmd = &command{
	name:    "append",
	args:    "STREAM [MESSAGE...] [--binary] [--expect N] [--timeout D] [--output text|json]",
	summary: "Append entries to a stream and print their positions.",
	detail: `
Each MESSAGE is one entry. Without messages, each line of standard input is
one entry (without its newline; lines may be as long as the largest entry).
With --binary, all of standard input is one entry.

The position of each entry is printed, one per line, once the entry is
durable: a printed position survives a crash or a power failure. Entries
from standard input are made durable in batches (one sync for all the input
at hand), so reading from a pipe is fast and typing lines interactively
prints each position at once.

With --node, an entry not acknowledged within --timeout (default 15s) of
being sent ends the command with exit code 1 and the reason the node gave
(such as too few copies reachable for the stream's --acks policy: the
node answers so after 5 s, and the entry is sent again, with the same
producer sequence number, until the timeout); the positions printed
before it are durable. A leader that moves or restarts meanwhile is
followed: the addresses of --node are asked in turn.

With --expect N the append is conditional (optimistic concurrency, as
JetStream's expected last sequence): all the entries (the messages, the
lines of standard input, or all of it with --binary) are appended as one
batch, at positions N, N+1, ..., only if the stream's next position is N;
otherwise nothing is appended and streamcli exits with code 5, saying the
stream's next position. Every position counts, also those tail does not
show (a new leader's epoch marker, a failed batch's positions): the next
position is the one after the last entry appended, or tail --output json's
last "position" + 1 when nothing is appended meanwhile, or the "next" of
ls STREAM. With --node the leader decides, in the order it stores
appends, and a batch is stored whole or not at all; in a data directory
the check is made holding the stream's writer lock.

--output json prints one object per entry, {"position":N}, instead of
the bare position.`,
	flags: func(fs *flag.FlagSet) runFunc {
		binary := fs.Bool("binary", false, "append all of standard input as one entry")
		timeout := fs.Duration("timeout", client.DefaultTimeout, "with --node: fail when an entry is not acknowledged within `D`")
		output := outputFlag(fs)
		expectFlag := fs.String("expect", "", "append only if the stream's next position is `N` (exit 5 if not)")
		return func(ctx context.Context, c *invocation, args []string) error {
			asJSON, err := wantJSON(*output)
			if err != nil {
				return err
			}
			if *timeout <= 0 {
				return usagef("--timeout must be above 0")
			}
			c.timeout = *timeout
			if len(args) < 1 {
				return usagef("append needs a stream name")
			}
			if *binary && len(args) > 1 {
				return usagef("--binary reads the entry from standard input: give no messages")
			}
			if *expectFlag != "" {
				n, err := strconv.ParseUint(*expectFlag, 10, 64)
				if err != nil {
					return usagef("--expect must be a position (0, 1, ...), not %q", *expectFlag)
				}
				return c.appendExpect(ctx, args[0], args[1:], *binary, n, asJSON)
			}
			if c.node != "" {
				return c.remoteAppend(ctx, args[0], args[1:], *binary, asJSON)
			}
			return c.append(args[0], args[1:], *binary, asJSON)
		}
	},
}

// appender appends entries without waiting for each to be durable, and
// makes a batch durable with one Sync before printing its positions.
type appender struct {
	c        *invocation
	s        *local.Stream
	name     string
	path     string
	maxEntry int
	pending  []uint64 // appended, not yet known durable nor printed
	printed  int
	num      []byte
	json     bool // print {"position":N}
}

func (c *invocation) append(name string, msgs []string, binary, asJSON bool) (err error) {
	s, err := c.data.openWriter(name)
	if err != nil {
		return err
	}
	path, _ := c.data.path(name)
	a := &appender{c: c, s: s, name: name, path: path, maxEntry: local.MaxEntrySize(s.RegionSize()), json: asJSON}
	defer func() {
		// Whatever happened, what was appended is made durable and printed
		// before the error is reported.
		if ferr := a.flush(); err == nil {
			err = ferr
		}
		if cerr := s.Close(); err == nil && cerr != nil {
			err = c.data.explain(name, path, cerr)
		}
		if err != nil && a.printed > 0 {
			err = fmt.Errorf("%w (the %d entries printed above were appended and are durable)", err, a.printed)
		}
	}()
	switch {
	case binary:
		data, err := io.ReadAll(io.LimitReader(c.Stdin, int64(a.maxEntry)+1))
		if err != nil {
			return fmt.Errorf("read standard input: %w", err)
		}
		return a.add(data, "standard input")
	case len(msgs) > 0:
		for k, m := range msgs {
			if err := a.add([]byte(m), fmt.Sprintf("message %d", k+1)); err != nil {
				return err
			}
		}
		return nil
	default:
		return a.lines(bufio.NewReaderSize(c.Stdin, 1<<20))
	}
}

// lines appends each line of r. It syncs and prints whenever r has no
// more input at hand, before it would block.
func (a *appender) lines(r *bufio.Reader) error {
	var long []byte
	for lineNo := 1; ; lineNo++ {
		if r.Buffered() == 0 {
			if err := a.flush(); err != nil {
				return err
			}
		}
		line, err := r.ReadSlice('\n')
		for errors.Is(err, bufio.ErrBufferFull) {
			// A line longer than the buffer: gather it, up to one byte
			// more than an entry can hold.
			if len(long)+len(line) > a.maxEntry+1 {
				return a.tooLarge(len(long)+len(line), fmt.Sprintf("line %d", lineNo), "more than ")
			}
			long = append(long, line...)
			line, err = r.ReadSlice('\n')
		}
		if len(long) > 0 {
			long = append(long, line...)
			line, long = long, long[:0]
		}
		if err != nil && err != io.EOF {
			return fmt.Errorf("read standard input: %w", err)
		}
		if err == io.EOF && len(line) == 0 {
			return nil
		}
		if n := len(line); n > 0 && line[n-1] == '\n' {
			line = line[:n-1]
		}
		if aerr := a.add(line, fmt.Sprintf("line %d", lineNo)); aerr != nil {
			return aerr
		}
		if err == io.EOF {
			return nil
		}
		if len(a.pending) >= 1<<16 {
			if err := a.flush(); err != nil {
				return err
			}
		}
	}
}

// add appends p, which what names for messages.
func (a *appender) add(p []byte, what string) error {
	if len(p) > a.maxEntry {
		return a.tooLarge(len(p), what, "")
	}
	i, err := a.s.AppendNoSync(p)
	if err != nil {
		if errors.Is(err, local.ErrTooLarge) {
			return a.tooLarge(len(p), what, "")
		}
		return a.c.data.explain(a.name, a.path, err)
	}
	a.pending = append(a.pending, i)
	return nil
}

func (a *appender) tooLarge(n int, what, more string) error {
	return fmt.Errorf("%s is %s%d bytes, larger than the largest entry of stream %q (%d bytes with region size %s); create a stream with a larger --region-size",
		what, more, n, a.name, a.maxEntry, formatSize(int64(a.s.RegionSize())))
}

// flush makes the pending entries durable with one Sync of the last, then
// prints their positions.
func (a *appender) flush() error {
	if len(a.pending) == 0 {
		return nil
	}
	if err := a.s.Sync(a.pending[len(a.pending)-1]); err != nil {
		a.pending = a.pending[:0]
		return a.c.data.explain(a.name, a.path, err)
	}
	for _, i := range a.pending {
		a.num = positionLine(a.num[:0], i, a.json)
		a.c.out.Write(a.num)
	}
	a.printed += len(a.pending)
	a.pending = a.pending[:0]
	return a.c.out.Flush()
}

// positionLine appends the output line of an appended entry's position
// to b: the number, or {"position":N} for --output json.
func positionLine(b []byte, pos uint64, json bool) []byte {
	if json {
		b = append(b, `{"position":`...)
		b = strconv.AppendUint(b, pos, 10)
		return append(b, "}\n"...)
	}
	b = strconv.AppendUint(b, pos, 10)
	return append(b, '\n')
}
