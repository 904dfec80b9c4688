package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/rpstream/rpstream/client"
	"github.com/rpstream/rpstream/local"
)

// appendExpect is append --expect N: the entries (msgs, the lines of
// standard input, or all of it with binary) appended as one batch at
// position expect, or nothing and exit code 5 if the stream's next
// position is not expect.
func (c *invocation) appendExpect(ctx context.Context, name string, msgs []string, binary bool, expect uint64, asJSON bool) error {
	entries, err := c.entriesOf(msgs, binary)
	if err != nil {
		return err
	}
	if len(entries) == 0 {
		return errors.New("nothing to append: give messages or lines on standard input")
	}
	conflict := func(actual uint64) error {
		return &exitError{exitConflict, fmt.Sprintf("stream %q: the next position is %d, not %d: nothing appended", name, actual, expect)}
	}
	if c.node != "" {
		if err := checkName(name); err != nil {
			return err
		}
		cl, err := c.dialNode()
		if err != nil {
			return err
		}
		defer cl.Close()
		pos, err := cl.AppendWith(ctx, name, entries, client.AppendOptions{ExpectNext: expect, Expect: true})
		var ce *client.ConditionError
		if errors.As(err, &ce) {
			return conflict(ce.Actual)
		}
		if err != nil {
			return c.explainRemote(name, err)
		}
		var line []byte
		for _, p := range pos {
			line = positionLine(line[:0], p, asJSON)
			c.out.Write(line)
		}
		return nil
	}
	s, err := c.data.openWriter(name)
	if err != nil {
		return err
	}
	path, _ := c.data.path(name)
	a := &appender{c: c, s: s, name: name, path: path, maxEntry: local.MaxEntrySize(s.RegionSize()), json: asJSON}
	defer s.Close()
	// The writer lock is held: no other process appends until Close.
	if next := s.Next(); next != expect {
		return conflict(next)
	}
	for k, e := range entries {
		if len(e) > a.maxEntry {
			return a.tooLarge(len(e), fmt.Sprintf("entry %d", k+1), "")
		}
	}
	for k, e := range entries {
		if err := a.add(e, fmt.Sprintf("entry %d", k+1)); err != nil {
			return err
		}
	}
	return a.flush()
}

// entriesOf is the entries an append is given: msgs, else all of
// standard input with binary, else each of its lines (without the
// newline).
func (c *invocation) entriesOf(msgs []string, binary bool) ([][]byte, error) {
	var out [][]byte
	switch {
	case len(msgs) > 0:
		for _, m := range msgs {
			out = append(out, []byte(m))
		}
		return out, nil
	case binary:
		data, err := io.ReadAll(io.LimitReader(c.Stdin, client.MaxMessageSize))
		if err != nil {
			return nil, fmt.Errorf("read standard input: %w", err)
		}
		return [][]byte{data}, nil
	}
	r := bufio.NewReaderSize(c.Stdin, 1<<20)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil && err != io.EOF {
			return nil, fmt.Errorf("read standard input: %w", err)
		}
		if err == io.EOF && len(line) == 0 {
			return out, nil
		}
		if n := len(line); n > 0 && line[n-1] == '\n' {
			line = line[:n-1]
		}
		out = append(out, line)
		if err == io.EOF {
			return out, nil
		}
	}
}
