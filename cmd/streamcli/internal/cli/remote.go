package cli

import (
	"bufio"
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/client"
	"github.com/rpstream/rpstream/local"
)

// Network mode: with --node HOST:PORT[,HOST:PORT...] (or $RPSTREAM_NODE)
// create, append, tail and ls go through the client package to a
// streamnode instead of opening the files of a data directory; the
// addresses are the client's seeds, asked in turn when one is
// unavailable.

// dialNode connects to the nodes named by --node. An address without a
// port gets client.DefaultPort. When no address answers as a node does
// (connection refused, an HTTP server, another protocol), it fails at
// once, saying so in plain words, rather than after --timeout of
// retries; one address that answers, or one that cannot be told (no
// answer in time), is enough to go on.
func (c *invocation) dialNode() (*client.Client, error) {
	var addrs []string
	for _, a := range strings.Split(c.node, ",") {
		if a = client.WithDefaultPort(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	c.node = strings.Join(addrs, ",")
	opts := c.clientOptions()
	tlsConfig, err := opts.TLSConfig()
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", c.node, err)
	}
	// Loaded once, for the probe and the client alike.
	opts.TLS = tlsConfig
	if err := c.probeNodes(addrs, tlsConfig); err != nil {
		return nil, err
	}
	cl, err := client.Dial(c.node, opts)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", c.node, err)
	}
	return cl, nil
}

// probeNodes probes addrs at once (client.Probe, at most 3 s) and
// returns an error only when every one of them is known not to be a node.
// When none answered as a node but some could not be told (they accepted
// a connection and said nothing: a hung node, or a port that is not a
// client port), it says so on stderr before the command goes on trying
// for --timeout.
func (c *invocation) probeNodes(addrs []string, tlsConfig *tls.Config) error {
	errs := make([]error, len(addrs))
	var wg sync.WaitGroup
	for i, a := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = client.Probe(context.Background(), a, tlsConfig)
		}()
	}
	wg.Wait()
	var words []string
	silent := false
	for _, err := range errs {
		if err == nil {
			return nil
		}
		silent = silent || errors.Is(err, client.ErrNoAnswer)
		words = append(words, err.Error())
	}
	if silent {
		fmt.Fprintf(c.Stderr, "streamcli: %s (is it a node's client address, not its peer or gossip one?); trying for %v\n",
			strings.Join(words, "; "), cmp.Or(c.timeout, client.DefaultTimeout))
		return nil
	}
	return errors.New(strings.Join(words, "; "))
}

// explainRemote turns a status error from the node into a message.
func (c *invocation) explainRemote(name string, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch st.Code() {
	case codes.NotFound:
		return fmt.Errorf("stream %q does not exist on node %s", name, c.node)
	case codes.AlreadyExists:
		return fmt.Errorf("stream %q already exists on node %s", name, c.node)
	case codes.Unavailable:
		if errors.Is(err, client.ErrTimeout) {
			return fmt.Errorf("unavailable (node %s): %s", c.node, st.Message())
		}
		return fmt.Errorf("node %s is unavailable: %s", c.node, st.Message())
	}
	return fmt.Errorf("node %s: %s: %s", c.node, st.Code(), st.Message())
}

func parseAcks(s string) (api.AckPolicy, error) {
	switch s {
	case "leader":
		return api.AckPolicy_ACK_POLICY_LEADER, nil
	case "quorum", "":
		return api.AckPolicy_ACK_POLICY_QUORUM, nil
	case "all":
		return api.AckPolicy_ACK_POLICY_ALL, nil
	}
	return 0, usagef("--acks must be leader, quorum or all, not %q", s)
}

func acksName(a api.AckPolicy) string {
	switch a {
	case api.AckPolicy_ACK_POLICY_LEADER:
		return "leader"
	case api.AckPolicy_ACK_POLICY_ALL:
		return "all"
	}
	return "quorum"
}

func (c *invocation) remoteCreate(ctx context.Context, name string, regionSize, replicas int, acks string, pol *api.Retention, asJSON bool) error {
	ap, err := parseAcks(acks)
	if err != nil {
		return err
	}
	cl, err := c.dialNode()
	if err != nil {
		return err
	}
	defer cl.Close()
	st, err := cl.Create(ctx, name, client.CreateOptions{Replicas: replicas, Acks: ap, RegionSize: regionSize, Retention: pol})
	if err != nil {
		if status.Code(err) == codes.InvalidArgument {
			return c.explainRetention(name, err)
		}
		return c.explainRemote(name, err)
	}
	if asJSON {
		return c.printJSON(createdJSON{Stream: name, Node: c.node, Leader: st.Leader, Replicas: st.Replicas, Acks: acksName(st.Acks), RegionSize: int(st.RegionSize)})
	}
	fmt.Fprintf(c.out, "created stream %q on node %s (leader %s, %d replicas, acks %s, region size %s)\n",
		name, c.node, st.Leader, st.Replicas, acksName(st.Acks), formatSize(int64(st.RegionSize)))
	return nil
}

// remoteAppend appends each message, each line of standard input, or all
// of it (binary), printing each position once the node has answered
// (durable). Appends are pipelined on one call (client.Appender) and
// retried after a broken call without being stored twice; the input at
// hand is sent before its positions are awaited and printed, so pipes are
// fast and interactive lines print at once.
func (c *invocation) remoteAppend(ctx context.Context, name string, msgs []string, binary, asJSON bool) (err error) {
	if err := checkName(name); err != nil {
		return err
	}
	cl, err := c.dialNode()
	if err != nil {
		return err
	}
	defer cl.Close()
	a := cl.NewAppender(ctx, name)
	printed := 0
	var line []byte
	var pending []*client.Pending
	// flush waits for the pending appends, in order, and prints them.
	flush := func() error {
		for _, p := range pending {
			pos, err := p.Wait(ctx)
			if err != nil {
				pending = nil
				return c.explainRemote(name, err)
			}
			line = positionLine(line[:0], pos, asJSON)
			c.out.Write(line)
			printed++
		}
		pending = pending[:0]
		return c.out.Flush()
	}
	add := func(p []byte) error {
		pd, err := a.Append(p)
		if err != nil {
			return c.explainRemote(name, err)
		}
		pending = append(pending, pd)
		return nil
	}
	defer func() {
		if ferr := flush(); err == nil {
			err = ferr
		}
		if cerr := a.Close(); err == nil && cerr != nil {
			err = c.explainRemote(name, cerr)
		}
		if err != nil && printed > 0 {
			err = fmt.Errorf("%w (the %d entries printed above were appended and are durable)", err, printed)
		}
	}()
	switch {
	case binary:
		data, err := io.ReadAll(io.LimitReader(c.Stdin, client.MaxMessageSize))
		if err != nil {
			return fmt.Errorf("read standard input: %w", err)
		}
		return add(data)
	case len(msgs) > 0:
		for _, m := range msgs {
			if err := add([]byte(m)); err != nil {
				return err
			}
		}
		return nil
	}
	r := bufio.NewReaderSize(c.Stdin, 1<<20)
	for {
		if r.Buffered() == 0 {
			if err := flush(); err != nil {
				return err
			}
		}
		line, rerr := r.ReadBytes('\n')
		if rerr != nil && rerr != io.EOF {
			return fmt.Errorf("read standard input: %w", rerr)
		}
		if rerr == io.EOF && len(line) == 0 {
			return nil
		}
		if n := len(line); n > 0 && line[n-1] == '\n' {
			line = line[:n-1]
		}
		if err := add(line); err != nil {
			return err
		}
		if rerr == io.EOF {
			return nil
		}
		if len(pending) >= 1<<12 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
}

func (c *invocation) remoteTail(ctx context.Context, name string, start startAt, ct *consumerTail, follow, json bool) (err error) {
	if err := checkName(name); err != nil {
		return err
	}
	cl, err := c.dialNode()
	if err != nil {
		return err
	}
	defer cl.Close()
	st, err := cl.Status(ctx, name)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return c.explainRemote(name, err)
	}
	from := start.resolve(st.Head, st.Committed)
	if ct != nil {
		if from, err = c.resolveConsumer(ctx, name, *ct, st.Head); err != nil {
			return err
		}
	} else if start.hasSince {
		if from, err = cl.FindPosition(ctx, name, start.since); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return c.explainRemote(name, err)
		}
		from = max(from, st.Head)
	}
	if from < st.Head {
		return fmt.Errorf("position %d of stream %q was trimmed: the oldest entry is %d", from, name, st.Head)
	}
	// printed is the position after the last entry written out (and
	// flushed, with -f): what an automatic acknowledgement covers.
	var printed atomic.Uint64
	printed.Store(from)
	if ct != nil && ct.auto {
		stop := c.autoAck(cl, name, ct.name, &printed, from)
		defer func() {
			if ferr := c.out.Flush(); ferr != nil && err == nil {
				err = fmt.Errorf("write output: %w", ferr)
			}
			if aerr := stop(err == nil); aerr != nil && err == nil {
				err = aerr
			}
		}()
	}
	var line []byte
	print := func(e client.Entry) error {
		var t int64
		if !e.Time.IsZero() {
			t = e.Time.UnixNano()
		}
		line = formatEntry(line[:0], local.Entry{Index: e.Position, Data: e.Data}, t, json)
		if _, err := c.out.Write(line); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
		return nil
	}
	if !follow {
		for from < st.Committed {
			es, next, err := cl.Read(ctx, name, from, 1000)
			if err != nil {
				return c.explainRemote(name, err)
			}
			for _, e := range es {
				if e.Position >= st.Committed {
					return nil
				}
				if err := print(e); err != nil {
					return err
				}
			}
			if next == from {
				return nil
			}
			from = next
			printed.Store(from)
		}
		return nil
	}
	for e, err := range cl.Tail(ctx, name, from) {
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, context.Canceled) {
				return nil // interrupted: the normal end of tail -f
			}
			return c.explainRemote(name, err)
		}
		if err := print(e); err != nil {
			return err
		}
		if err := c.out.Flush(); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
		printed.Store(e.Position + 1)
	}
	return nil
}

// autoAck acknowledges *printed for consumer every 200ms (the node
// commits within its own period) until the returned stop, which
// acknowledges once more, committed before it returns, if final.
func (c *invocation) autoAck(cl *client.Client, stream, consumer string, printed *atomic.Uint64, from uint64) (stop func(final bool) error) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		acked := from
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			if p := printed.Load(); p > acked {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				if _, err := cl.Ack(ctx, stream, consumer, p, false); err == nil {
					acked = p
				}
				cancel()
			}
		}
	}()
	return func(final bool) error {
		close(done)
		wg.Wait()
		p := printed.Load()
		if !final || p <= from {
			return nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := cl.Ack(ctx, stream, consumer, p, true); err != nil {
			return fmt.Errorf("consumer %q: acknowledge %d: %w", consumer, p, c.explainRetention(stream, err))
		}
		return nil
	}
}

// remoteLs lists the node's streams (name "") or describes one; for one
// stream it also reports whether the stream is under-replicated.
func (c *invocation) remoteLs(ctx context.Context, name string, asJSON bool) (underReplicated bool, err error) {
	if name != "" {
		if err := checkName(name); err != nil {
			return false, err
		}
	}
	cl, err := c.dialNode()
	if err != nil {
		return false, err
	}
	defer cl.Close()
	if name != "" {
		st, err := cl.Status(ctx, name)
		if err != nil {
			return false, c.explainRemote(name, err)
		}
		if st.Stream == "" {
			st.Stream = name
		}
		if asJSON {
			return st.UnderReplicated, c.printJSON(remoteStreamJSON(st, true))
		}
		return st.UnderReplicated, c.printRemoteStatus(st)
	}
	names, err := cl.List(ctx)
	if err != nil {
		return false, c.explainRemote("", err)
	}
	var sts []*api.StreamStatusResponse
	for _, n := range names {
		st, err := cl.Status(ctx, n)
		if err != nil {
			if status.Code(err) == codes.NotFound {
				continue // deleted meanwhile
			}
			return false, c.explainRemote(n, err)
		}
		if st.Stream == "" {
			st.Stream = n
		}
		sts = append(sts, st)
	}
	if asJSON {
		list := struct {
			Streams []streamJSON `json:"streams"`
		}{Streams: []streamJSON{}}
		for _, st := range sts {
			list.Streams = append(list.Streams, remoteStreamJSON(st, false))
		}
		return false, c.printJSON(list)
	}
	tw := tabwriter.NewWriter(c.out, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "STREAM\tREGIONS\tHEAD\tNEXT\tENTRIES\tREGION SIZE\tREPLICAS\tACKS\tLEADER\tEPOCH")
	for _, st := range sts {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\t%d\t%s\t%s\t%d\n", st.Stream, len(st.Regions), st.Head, st.Committed,
			st.Committed-st.Head, formatSize(int64(st.RegionSize)), st.Replicas, acksName(st.Acks), st.Leader, st.Epoch)
	}
	return false, tw.Flush()
}

// printRemoteStatus writes a node's status of one stream.
func (c *invocation) printRemoteStatus(st *api.StreamStatusResponse) error {
	tw := tabwriter.NewWriter(c.out, 0, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "stream\t%s\nnode\t%s\nleader\t%s (%s), epoch %d\nreplicas\t%d, acks %s", st.Stream, c.node, st.Leader, st.LeaderAddr, st.Epoch, st.Replicas, acksName(st.Acks))
	if st.UnderReplicated {
		fmt.Fprint(tw, " (under-replicated)")
	}
	fmt.Fprintf(tw, "\nhead\t%d\nnext\t%d\npersisted\t%d\nregion size\t%s\n", st.Head, st.Committed, st.Persisted, formatSize(int64(st.RegionSize)))
	fmt.Fprintf(tw, "retention\t%s\ntrimmed to\t%d\n\n", formatRetention(st.Retention), st.TrimHead)
	if len(st.Consumers) > 0 {
		fmt.Fprintln(tw, "CONSUMER\tACKED\tLAG\tHOLD")
		for _, k := range st.Consumers {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%v\n", k.Name, k.Acked, k.Lag, k.Hold)
		}
		fmt.Fprintln(tw)
	}
	if len(st.ReplicaStatus) > 0 {
		fmt.Fprintln(tw, "COPY\tKIND\tDURABLE\tLAG")
		for _, r := range st.ReplicaStatus {
			kind := "replica"
			if r.Backup {
				kind = "backup"
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\n", r.Member, kind, r.Persisted, r.Lag)
		}
		fmt.Fprintln(tw)
	}
	fmt.Fprintln(tw, "SEQ\tFIRST\tENTRIES\tUSED\tSEALED")
	for _, r := range st.Regions {
		fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%v\n", r.Seq, r.First, r.Count, formatSize(int64(r.Used)), r.Sealed)
	}
	return tw.Flush()
}
