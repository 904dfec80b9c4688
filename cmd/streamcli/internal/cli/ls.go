package cli

import (
	"context"
	"flag"
	"fmt"
	"os"
	"syscall"
	"text/tabwriter"

	"github.com/rpstream/rpstream/local"
	"github.com/rpstream/rpstream/pmem"
)

var lsCmd = &command{
	name:    "ls",
	args:    "[STREAM] [--output text|json]",
	summary: "List the streams of the data directory, or the regions of one stream.",
	detail: `
Without STREAM: one line per stream with its regions, the positions of its
oldest entry (HEAD) and of the next entry to be appended (NEXT), its number
of entries, the bytes its file takes on disk, its region size and how its
memory persists (msync: an ordinary file; fence: tmpfs or eADR persistent
memory; flush: persistent memory with cache flushes).

With STREAM: the stream's details and one line per region: its sequence
number, slot in the file, first position, entries, bytes used (header
included) and whether it is sealed (full and durable).

ls only reads: it works beside a process appending to the streams.

--output json prints one object: without STREAM {"streams":[...]}, each
stream an object with stream, head, next, entries, region_size,
region_count, under_replicated, and on_disk, file_size and persist
(embedded) or leader, leader_addr, epoch, replicas and acks (with --node);
with STREAM that object with its regions (seq, first, count, used,
sealed; slot embedded), persist_detail (embedded) or persisted and copies
(member, backup, persisted, lag; with --node).`,
	flags: func(fs *flag.FlagSet) runFunc {
		output := outputFlag(fs)
		return func(ctx context.Context, c *invocation, args []string) error {
			asJSON, err := wantJSON(*output)
			if err != nil {
				return err
			}
			if c.node != "" && len(args) <= 1 {
				name := ""
				if len(args) == 1 {
					name = args[0]
				}
				_, err := c.remoteLs(ctx, name, asJSON)
				return err
			}
			switch len(args) {
			case 0:
				return c.lsAll(asJSON)
			case 1:
				return c.lsOne(args[0], asJSON)
			}
			return usagef("ls takes at most one stream name, got %d arguments", len(args))
		}
	},
}

// streamInfo is what ls shows of a stream.
type streamInfo struct {
	regions    []local.RegionInfo
	head, next uint64
	disk, size int64 // bytes on disk, file length
	regionSize int
	mode       string
	why        string
}

func (c *invocation) info(name string) (*streamInfo, error) {
	s, err := c.data.openReader(name)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	path, _, _ := c.data.resolve(name)
	in := &streamInfo{
		head:       s.Head(),
		next:       s.Committed(),
		regionSize: s.RegionSize(),
		mode:       s.Mode().String(),
		why:        s.Mode().String(),
	}
	in.regions = s.Regions()
	if d, ok := s.Memory().(pmem.Describer); ok {
		in.why = d.Describe()
	}
	if fi, err := os.Stat(path); err == nil {
		in.size = fi.Size()
		in.disk = fi.Size()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			in.disk = st.Blocks * 512
		}
	}
	return in, nil
}

// localStreamJSON is the JSON of stream name; regions only when
// withRegions.
func localStreamJSON(name string, in *streamInfo, withRegions bool) streamJSON {
	j := streamJSON{Stream: name, Head: in.head, Next: in.next, Entries: in.next - in.head, RegionSize: in.regionSize,
		RegionCount: len(in.regions), OnDisk: in.disk, FileSize: in.size, Persist: in.mode}
	if withRegions {
		j.PersistDetail = in.why
		for _, r := range in.regions {
			j.Regions = append(j.Regions, regionJSON{Seq: r.Seq, Slot: &r.Slot, First: r.First, Count: r.Count, Used: uint64(r.Used), Sealed: r.Sealed})
		}
	}
	return j
}

func (c *invocation) lsAll(asJSON bool) error {
	names, err := c.data.names()
	if err != nil {
		return err
	}
	if asJSON {
		list := struct {
			Streams []streamJSON `json:"streams"`
		}{Streams: []streamJSON{}}
		var failed error
		for _, n := range names {
			in, err := c.info(n)
			if err != nil {
				list.Streams = append(list.Streams, streamJSON{Stream: n, Error: err.Error()})
				if failed == nil {
					failed = err
				}
				continue
			}
			list.Streams = append(list.Streams, localStreamJSON(n, in, false))
		}
		if err := c.printJSON(list); err != nil {
			return err
		}
		return failed
	}
	if len(names) == 0 {
		fmt.Fprintf(c.Stderr, "no streams in %s\n", c.data.dir)
		return nil
	}
	tw := tabwriter.NewWriter(c.out, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "STREAM\tREGIONS\tHEAD\tNEXT\tENTRIES\tON DISK\tREGION SIZE\tPERSIST")
	var failed error
	for _, n := range names {
		in, err := c.info(n)
		if err != nil {
			fmt.Fprintf(tw, "%s\t(error: see below)\n", n)
			if failed == nil {
				failed = err
			}
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\n", n, len(in.regions), in.head, in.next,
			in.next-in.head, formatSize(in.disk), formatSize(int64(in.regionSize)), in.mode)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return failed
}

func (c *invocation) lsOne(name string, asJSON bool) error {
	in, err := c.info(name)
	if err != nil {
		return err
	}
	if asJSON {
		return c.printJSON(localStreamJSON(name, in, true))
	}
	path, _, _ := c.data.resolve(name)
	w := c.out
	fmt.Fprintf(w, "stream      %s\n", name)
	fmt.Fprintf(w, "file        %s (%s on disk, %s long)\n", path, formatSize(in.disk), formatSize(in.size))
	if in.next > in.head {
		fmt.Fprintf(w, "entries     %d (positions %d to %d; the next is %d)\n", in.next-in.head, in.head, in.next-1, in.next)
	} else {
		fmt.Fprintf(w, "entries     0 (the next position is %d)\n", in.next)
	}
	fmt.Fprintf(w, "region size %s (largest entry %d bytes)\n", formatSize(int64(in.regionSize)), local.MaxEntrySize(in.regionSize))
	fmt.Fprintf(w, "persistence %s\n\n", in.why)
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tSLOT\tFIRST\tCOUNT\tUSED\tSEALED")
	for _, r := range in.regions {
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%v\n", r.Seq, r.Slot, r.First, r.Count, r.Used, r.Sealed)
	}
	return tw.Flush()
}
