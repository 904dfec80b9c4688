package replicate

import (
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/rpstream/rpstream/internal/scenario"

	"github.com/rpstream/rpstream/replicate/quorum"
)

var rewrite = flag.Bool("rewrite", false, "rewrite testdata/*.txt with the actual output")

// TestScenarios runs the stories in testdata/*.txt. Each step is a command
// line, a "----" line and the expected output, then a blank line; lines
// starting with # before a command are comments. Commands (key=value
// arguments are optional):
//
//	config [policy=quorum|leader|all] [inflight=N] [batch=N] [chunk=N]
//	       [lag=N] [words=N] [retry=N] [maxretry=N] [backupsvote] [floor=N] [start=N]
//	                          a new Replicator under epoch 1
//	region SEQ SLOT           a new region (first: the appended end)
//	append LEN [entries=N]    one local append of LEN bytes and N entries
//	persist INDEX             the leader persisted up to INDEX
//	add ID [backup]           add a replica
//	connected ID [SEQ/OFF]    it connected; its durable position
//	allocated ID [SEQ]        it allocated region SEQ (default: every one asked)
//	flushed ID [SEQ/OFF...]   writes ending there completed, in that order
//	                          (default: every write in flight, in order)
//	fail ID [fenced]          its connection failed
//	restart ID | remove ID    membership events
//	tick [N]                  N ticks
//	epoch E                   SetEpoch
//	ready                     take a Ready and print it
//	progress                  print Progress and the commit point
//
// go test ./replicate -run TestScenarios -rewrite regenerates the
// outputs; review the diff.
func TestScenarios(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.txt")
	if len(files) == 0 {
		t.Fatal("no scenarios")
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) { runScenario(t, f) })
	}
}

func runScenario(t *testing.T, path string) {
	e := &scenarioEnv{t: t, writes: map[ID][]Pos{}, allocs: map[ID][]uint64{}}
	scenario.Run(t, path, *rewrite, e.do)
}

type scenarioEnv struct {
	t      *testing.T
	r      *Replicator
	writes map[ID][]Pos    // handed out, not yet reported
	allocs map[ID][]uint64 // asked for, not yet reported
}

func (e *scenarioEnv) do(cmd string) string {
	t := e.t
	f := strings.Fields(cmd)
	args, kv := []string{}, map[string]string{}
	for _, a := range f[1:] {
		if k, v, ok := strings.Cut(a, "="); ok {
			kv[k] = v
		} else {
			args = append(args, a)
		}
	}
	atoi := func(s string) int {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("%q: %v", cmd, err)
		}
		return n
	}
	arg := func(i int) string {
		if i >= len(args) {
			t.Fatalf("%q: missing argument %d", cmd, i+1)
		}
		return args[i]
	}
	opt := func(k string, def int) int {
		if v, ok := kv[k]; ok {
			return atoi(v)
		}
		return def
	}
	pos := func(s string) Pos {
		a, b, ok := strings.Cut(s, "/")
		if !ok {
			t.Fatalf("%q: position %q is not SEQ/OFF", cmd, s)
		}
		return Pos{uint64(atoi(a)), atoi(b)}
	}
	if f[0] != "config" && e.r == nil {
		t.Fatalf("%q before config", cmd)
	}
	id := func() ID { return ID(arg(0)) }
	gen := func() uint64 {
		for _, p := range e.r.replicas {
			if p.id == id() {
				return p.gen
			}
		}
		return 0
	}
	switch f[0] {
	case "config":
		cfg := Config{
			MaxInflight: opt("inflight", 0), MaxBatch: opt("batch", 0), MinBatch: opt("minbatch", 0), CatchUpChunk: opt("chunk", 0),
			LagEntries: uint64(opt("lag", 0)), CommitWordTicks: opt("words", 0),
			RetryTicks: opt("retry", 0), MaxRetryTicks: opt("maxretry", 0),
			BackupsVote: slices.Contains(args, "backupsvote"),
			Floor:       uint64(opt("floor", 0)), EpochStart: uint64(opt("start", 0)),
		}
		if p, ok := kv["policy"]; ok {
			var err error
			if cfg.Policy, err = quorum.ParsePolicy(p); err != nil {
				t.Fatal(err)
			}
		}
		r, err := New(cfg, 1)
		if err != nil {
			return result(err)
		}
		e.r = r
		return "ok"
	case "region":
		return result(e.r.NewRegion(RegionInfo{Seq: uint64(atoi(arg(0))), Slot: atoi(arg(1)), First: e.r.Appended()}))
	case "append":
		last := e.r.log.last()
		if last == nil {
			return result(e.r.Append(Span{Seq: 1, Len: atoi(arg(0)), End: 1}))
		}
		n := opt("entries", 1)
		return result(e.r.Append(Span{Seq: last.seq, Off: last.tail, Len: atoi(arg(0)), End: e.r.Appended() + uint64(n)}))
	case "persist":
		e.r.Persisted(uint64(atoi(arg(0))))
		return fmt.Sprintf("commit %d", e.r.Committed())
	case "add":
		return result(e.r.AddReplica(id(), slices.Contains(args, "backup")))
	case "connected":
		p := Pos{}
		if len(args) > 1 {
			p = pos(args[1])
		}
		return result(e.r.Connected(id(), gen(), p))
	case "allocated":
		seqs := e.allocs[id()]
		if len(args) > 1 {
			seqs = []uint64{uint64(atoi(args[1]))}
		}
		for _, s := range seqs {
			if err := e.r.Allocated(id(), gen(), s); err != nil {
				return result(err)
			}
			e.allocs[id()] = slicesDelete(e.allocs[id()], s)
		}
		return fmt.Sprintf("commit %d", e.r.Committed())
	case "flushed":
		ends := append([]Pos(nil), e.writes[id()]...)
		if len(args) > 1 {
			ends = nil
			for _, a := range args[1:] {
				ends = append(ends, pos(a))
			}
		}
		for _, p := range ends {
			if err := e.r.Flushed(id(), gen(), p); err != nil {
				return result(err)
			}
			e.writes[id()] = slicesDelete(e.writes[id()], p)
		}
		return fmt.Sprintf("commit %d", e.r.Committed())
	case "fail":
		var err error = errors.New("connection lost")
		if slices.Contains(args, "fenced") {
			err = fmt.Errorf("target said: %w", ErrFenced)
		}
		delete(e.writes, id())
		delete(e.allocs, id())
		return result(e.r.Failed(id(), gen(), err))
	case "restart":
		delete(e.writes, id())
		delete(e.allocs, id())
		return result(e.r.Restarted(id()))
	case "remove":
		return result(e.r.RemoveReplica(id()))
	case "tick":
		n := 1
		if len(args) > 0 {
			n = atoi(args[0])
		}
		for range n {
			e.r.Tick()
		}
		return "ok"
	case "epoch":
		return result(e.r.SetEpoch(uint64(atoi(arg(0)))))
	case "ready":
		return e.ready()
	case "progress":
		var b strings.Builder
		fmt.Fprintf(&b, "appended %d persisted %d commit %d", e.r.Appended(), e.r.persisted, e.r.Committed())
		for _, p := range e.r.Progress() {
			fmt.Fprintf(&b, "\n%s %s acked=%v (%d entries) next=%v inflight=%d", p.ID, p.State, p.Acked, p.AckedIdx, p.Next, p.Inflight)
			if p.LastErr != "" {
				fmt.Fprintf(&b, " err=%q", p.LastErr)
			}
		}
		return b.String()
	}
	t.Fatalf("unknown command %q", cmd)
	return ""
}

func (e *scenarioEnv) ready() string {
	rd := e.r.Ready()
	var lines []string
	for _, c := range rd.Connects {
		lines = append(lines, fmt.Sprintf("connect %s gen=%d epoch=%d", c.Replica, c.Gen, c.Epoch))
	}
	for _, a := range rd.Allocs {
		lines = append(lines, fmt.Sprintf("alloc %s region=%d slot=%d", a.Replica, a.Seq, a.Slot))
		e.allocs[a.Replica] = append(e.allocs[a.Replica], a.Seq)
	}
	for _, o := range rd.Ops {
		switch o.Kind {
		case OpWrite:
			lines = append(lines, fmt.Sprintf("write %s slot=%d [%d,%d) end=%v", o.Replica, o.Slot, o.Off, o.Off+o.Len, o.End))
			e.writes[o.Replica] = append(e.writes[o.Replica], o.End)
		case OpCommitWord:
			lines = append(lines, fmt.Sprintf("word %s slot=%d value=%d", o.Replica, o.Slot, o.Value))
		case OpSealWord:
			lines = append(lines, fmt.Sprintf("seal %s slot=%d count=%d end=%d", o.Replica, o.Slot, o.Value>>32, uint32(o.Value)))
		}
	}
	if rd.CommitAdvanced {
		lines = append(lines, fmt.Sprintf("commit %d", rd.Commit))
	}
	if s := rd.Status; s != nil {
		var b strings.Builder
		b.WriteString("status:")
		for _, c := range []struct {
			on   bool
			name string
		}{{s.UnderReplicated, " under-replicated"}, {s.QuorumLost, " quorum-lost"}, {s.Fenced, " fenced"}} {
			if c.on {
				b.WriteString(c.name)
			}
		}
		if !s.UnderReplicated && !s.QuorumLost && !s.Fenced {
			b.WriteString(" healthy")
		}
		for _, p := range s.Replicas {
			fmt.Fprintf(&b, "; %s %s", p.ID, p.State)
			if p.Backup {
				b.WriteString(" backup")
			}
			if p.Lagging {
				b.WriteString(" lagging")
			}
		}
		lines = append(lines, b.String())
	}
	if len(lines) == 0 {
		return "(empty)"
	}
	return strings.Join(lines, "\n")
}

func slicesDelete[T comparable](s []T, v T) []T {
	for i, x := range s {
		if x == v {
			return append(s[:i:i], s[i+1:]...)
		}
	}
	return s
}

// result names an error by the sentinel it wraps.
func result(err error) string {
	if err == nil {
		return "ok"
	}
	for _, s := range []error{ErrConfig, ErrOrder, ErrNoRegion, ErrReplica, ErrStaleEpoch} {
		if errors.Is(err, s) {
			return "error: " + s.Error()
		}
	}
	return "error: " + err.Error()
}
