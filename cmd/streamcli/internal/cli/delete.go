package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"

	"github.com/rpstream/rpstream/local"
)

var deleteCmd = &command{
	name:    "delete",
	args:    "STREAM [--output text|json]",
	summary: "Delete a stream and all its entries.",
	detail: `
Without --node: the file DIR/STREAM.stream is removed, unless another
process is appending to it (the stream is locked: nothing is removed). A
reader that has it open (tail -f in another process) keeps what it read and
sees no new entries; end it yourself. A file streamcli cannot open as a
stream (corrupt, another format) is not removed: remove it by hand if it is
to go.

With --node: the stream is deleted from the cluster's catalog. Its reads
and tails end, and every node holding a copy removes it (a node that is
down does when it comes back).

There is no undo. A stream of the same name may be created afterwards; it
starts empty.

--output json prints one object: stream, deleted (true), and path
(embedded) or node.`,
	flags: func(fs *flag.FlagSet) runFunc {
		output := outputFlag(fs)
		return func(ctx context.Context, c *invocation, args []string) error {
			if len(args) != 1 {
				return usagef("delete takes one stream name, got %d arguments", len(args))
			}
			asJSON, err := wantJSON(*output)
			if err != nil {
				return err
			}
			if c.node != "" {
				return c.remoteDelete(ctx, args[0], asJSON)
			}
			return c.delete(args[0], asJSON)
		}
	},
}

// delete removes stream name's file while holding its writer lock, so
// that a stream another process appends to is never removed under it.
func (c *invocation) delete(name string, asJSON bool) error {
	path, err := c.data.path(name)
	if err != nil {
		return err
	}
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("stream %q does not exist in %s", name, c.data.dir)
	}
	s, err := local.Open(path, local.Options{SpareRegions: -1})
	if err != nil {
		if errors.Is(err, local.ErrLocked) {
			return c.data.explain(name, path, err)
		}
		return fmt.Errorf("%w; not deleted (remove the file by hand if it is to go)", c.data.explain(name, path, err))
	}
	err = os.Remove(path)
	if err == nil {
		err = syncDir(c.data.dir)
	}
	// Closed after the removal, so that no other writer takes the lock in
	// between; what Close could fail to persist went with the file.
	s.Close()
	if err != nil {
		return fmt.Errorf("stream %q: %w", name, err)
	}
	if asJSON {
		return c.printJSON(deletedJSON{Stream: name, Deleted: true, Path: path})
	}
	fmt.Fprintf(c.out, "deleted stream %q (removed %s)\n", name, path)
	return nil
}

// syncDir makes the removal of an entry of dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func (c *invocation) remoteDelete(ctx context.Context, name string, asJSON bool) error {
	if err := checkName(name); err != nil {
		return err
	}
	cl, err := c.dialNode()
	if err != nil {
		return err
	}
	defer cl.Close()
	if err := cl.Delete(ctx, name); err != nil {
		return c.explainRemote(name, err)
	}
	if asJSON {
		return c.printJSON(deletedJSON{Stream: name, Deleted: true, Node: c.node})
	}
	fmt.Fprintf(c.out, "deleted stream %q on node %s\n", name, c.node)
	return nil
}
