package catalog

import (
	"bytes"
	"flag"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	pb "github.com/rpstream/rpstream/catalog/catalogpb"
	"github.com/rpstream/rpstream/internal/scenario"
)

var rewrite = flag.Bool("rewrite", false, "rewrite testdata/*.txt with the actual output")

// TestScenarios runs the stories in testdata/*.txt. Each command that is
// applied gets the next log index (1, 2, ...): a stream's id is the index
// of its create. Commands (key=value arguments are optional):
//
//	register NODE inc=N [role=node|backup|none] [replace]
//	create NAME copies=N1,N2,... [backup=B1,...] [replicas=N] [acks=leader|quorum|all|N]
//	       [region=N] [inc=N1:I,...]
//	                     replicas defaults to the number of copies, acks to
//	                     quorum, region to 65536, a copy's incarnation to
//	                     its node's registered one (0 if none)
//	activate NAME [id=N]
//	delete NAME [id=N]
//	dropped NAME id=N node=NODE
//	grant NAME leader=NODE [inc=N] [id=N]
//	                     inc defaults to the leader's registered incarnation
//	retention NAME [id=N] [max-bytes=N] [max-entries=N] [max-age=N]
//	                     (create takes the same max-* arguments)
//	trim NAME head=N [id=N]
//	consumer-add NAME consumer=C [start=N] [hold] [id=N]
//	consumer-rm NAME consumer=C [id=N]
//	ack NAME acks=C1:N1,C2:N2,... [id=N]
//	restore NAME source=NODE copies=N1,... [backup=B] from=EPOCH [srcinc=N]
//	        [inc=N1:I,...] [id=N]
//	                     a RestoreStream: the new placement as create's,
//	                     srcinc defaults to the source's registered
//	                     incarnation
//	forget NODE
//	noop                 a command without an operation
//	show                 the applied index, then every node and stream
//	snapshot-restore     restore a snapshot into a new catalog, which
//	                     must encode to the same bytes, and go on with it
//
// A name written X*N is N bytes X; "" is the empty name. An error prints
// as its text, whose start is the sentinel it wraps (the handler checks
// that it wraps exactly one). After every command the catalog must keep
// the invariants of checkInvariants.
//
// go test ./catalog -run TestScenarios -rewrite regenerates the outputs;
// review the diff.
func TestScenarios(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.txt")
	if len(files) == 0 {
		t.Fatal("no scenarios")
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) {
			e := &scenarioEnv{t: t, c: New(), epochs: map[uint64]uint64{}}
			scenario.Run(t, f, *rewrite, e.do)
		})
	}
}

type scenarioEnv struct {
	t      *testing.T
	c      *Catalog
	index  uint64            // of the last command applied
	epochs map[uint64]uint64 // for checkInvariants
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
	num := func(s string) uint64 {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("%q: %v", cmd, err)
		}
		return n
	}
	opt := func(k string, def uint64) uint64 {
		if v, ok := kv[k]; ok {
			return num(v)
		}
		return def
	}
	name := func() string {
		if len(args) == 0 {
			t.Fatalf("%q: missing name", cmd)
		}
		return expandName(args[0])
	}
	switch f[0] {
	case "register":
		role := pb.Role_ROLE_NODE
		switch kv["role"] {
		case "", "node":
		case "backup":
			role = pb.Role_ROLE_BACKUP
		case "none":
			role = pb.Role_ROLE_UNSPECIFIED
		default:
			t.Fatalf("%q: role %q", cmd, kv["role"])
		}
		return e.apply(registerCmd(name(), opt("inc", 0), role, slices.Contains(args, "replace")))
	case "create":
		return e.apply(e.create(cmd, name(), kv, num))
	case "activate":
		return e.apply(activateCmd(name(), opt("id", 0)))
	case "delete":
		return e.apply(deleteCmd(name(), opt("id", 0)))
	case "dropped":
		return e.apply(droppedCmd(name(), opt("id", 0), kv["node"]))
	case "grant":
		leader := kv["leader"]
		return e.apply(grantCmd(name(), opt("id", 0), leader, opt("inc", e.incarnation(leader))))
	case "elect":
		leader := kv["leader"]
		return e.apply(&pb.Command{Op: &pb.Command_ElectLeader{ElectLeader: &pb.ElectLeader{Name: name(), StreamId: opt("id", 0),
			Leader: leader, Incarnation: opt("inc", e.incarnation(leader)), FromEpoch: opt("from", 0), Reason: kv["reason"]}}})
	case "floor":
		return e.apply(&pb.Command{Op: &pb.Command_EpochStarted{EpochStarted: &pb.EpochStarted{Name: name(), StreamId: opt("id", 0),
			Epoch: opt("epoch", 0), Index: opt("index", 0)}}})
	case "retention":
		return e.apply(&pb.Command{Op: &pb.Command_SetRetention{SetRetention: &pb.SetRetention{Name: name(), StreamId: opt("id", 0),
			Retention: e.retention(cmd, kv)}}})
	case "trim":
		return e.apply(&pb.Command{Op: &pb.Command_TrimStream{TrimStream: &pb.TrimStream{Name: name(), StreamId: opt("id", 0), Head: opt("head", 0)}}})
	case "consumer-add":
		return e.apply(&pb.Command{Op: &pb.Command_AddConsumer{AddConsumer: &pb.AddConsumer{Name: name(), StreamId: opt("id", 0),
			Consumer: expandName(kv["consumer"]), Start: opt("start", 0), Hold: slices.Contains(args, "hold")}}})
	case "consumer-rm":
		return e.apply(&pb.Command{Op: &pb.Command_RemoveConsumer{RemoveConsumer: &pb.RemoveConsumer{Name: name(), StreamId: opt("id", 0),
			Consumer: kv["consumer"]}}})
	case "ack":
		op := &pb.AckConsumers{Name: name(), StreamId: opt("id", 0)}
		for _, a := range strings.Split(kv["acks"], ",") {
			k, n, ok := strings.Cut(a, ":")
			if !ok {
				t.Fatalf("%q: ack %q is not CONSUMER:POS", cmd, a)
			}
			op.Acks = append(op.Acks, &pb.ConsumerAck{Consumer: k, Acked: num(n)})
		}
		return e.apply(&pb.Command{Op: &pb.Command_AckConsumers{AckConsumers: op}})
	case "restore":
		src := kv["source"]
		cs := e.create(cmd, name(), kv, num).GetCreateStream()
		return e.apply(&pb.Command{Op: &pb.Command_RestoreStream{RestoreStream: &pb.RestoreStream{Name: cs.Name, StreamId: opt("id", 0),
			FromEpoch: opt("from", 0), Source: &pb.RestoreSource{Node: src, Incarnation: opt("srcinc", e.incarnation(src)), Reason: kv["reason"]}, Copies: cs.Copies}}})
	case "forget":
		return e.apply(forgetCmd(name()))
	case "noop":
		return e.apply(&pb.Command{})
	case "show":
		return e.show()
	case "snapshot-restore":
		b, err := e.c.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		c := New()
		if err := c.Restore(e.c.Applied(), b); err != nil {
			return "error: " + err.Error()
		}
		b2, err := c.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, b2) {
			t.Fatalf("%q: the restored catalog encodes to other bytes", cmd)
		}
		if c.Applied() != e.c.Applied() {
			t.Fatalf("%q: restored at %d, not %d", cmd, c.Applied(), e.c.Applied())
		}
		e.c = c
		return fmt.Sprintf("ok: restored at %d", c.Applied())
	}
	t.Fatalf("unknown command %q", cmd)
	return ""
}

// expandName reads a name as written in a story: X*N is N bytes X, ""
// is empty.
func expandName(s string) string {
	if s == `""` {
		return ""
	}
	if x, n, ok := strings.Cut(s, "*"); ok {
		if k, err := strconv.Atoi(n); err == nil {
			return strings.Repeat(x, k)
		}
	}
	return s
}

func (e *scenarioEnv) incarnation(node string) uint64 {
	if n, ok := e.c.Node(node); ok {
		return n.Incarnation
	}
	return 0
}

func (e *scenarioEnv) create(cmd, name string, kv map[string]string, num func(string) uint64) *pb.Command {
	incs := map[string]uint64{}
	if v, ok := kv["inc"]; ok {
		for _, p := range strings.Split(v, ",") {
			n, i, ok := strings.Cut(p, ":")
			if !ok {
				e.t.Fatalf("%q: inc %q is not NODE:INC", cmd, p)
			}
			incs[n] = num(i)
		}
	}
	var copies []*pb.Copy
	add := func(node string, backup bool) {
		inc, ok := incs[node]
		if !ok {
			inc = e.incarnation(node)
		}
		copies = append(copies, &pb.Copy{Node: node, Incarnation: inc, Backup: backup})
	}
	if v := kv["copies"]; v != "" {
		for _, n := range strings.Split(v, ",") {
			add(n, false)
		}
	}
	replicas := uint64(len(copies))
	if v := kv["backup"]; v != "" {
		for _, n := range strings.Split(v, ",") {
			add(n, true)
		}
	}
	if v, ok := kv["replicas"]; ok {
		replicas = num(v)
	}
	acks := pb.Acks_ACKS_QUORUM
	if v, ok := kv["acks"]; ok {
		if a, ok := pb.Acks_value["ACKS_"+strings.ToUpper(v)]; ok {
			acks = pb.Acks(a)
		} else {
			acks = pb.Acks(num(v))
		}
	}
	region := uint64(65536)
	if v, ok := kv["region"]; ok {
		region = num(v)
	}
	c := createCmd(name, uint32(replicas), acks, region, copies...)
	c.GetCreateStream().Retention = e.retention(cmd, kv)
	return c
}

// retention is the policy of the max-bytes, max-entries and max-age
// arguments (nil if none).
func (e *scenarioEnv) retention(cmd string, kv map[string]string) *pb.Retention {
	var r pb.Retention
	set := false
	for k, p := range map[string]*uint64{"max-bytes": &r.MaxBytes, "max-entries": &r.MaxEntries} {
		if v, ok := kv[k]; ok {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				e.t.Fatalf("%q: %s: %v", cmd, k, err)
			}
			*p, set = n, true
		}
	}
	if v, ok := kv["max-age"]; ok {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			e.t.Fatalf("%q: max-age: %v", cmd, err)
		}
		r.MaxAgeNs, set = n, true
	}
	if !set {
		return nil
	}
	return &r
}

// apply applies cmd at the next index and prints its result.
func (e *scenarioEnv) apply(cmd *pb.Command) string {
	t := e.t
	e.index++
	cmd.Time = int64(e.index) * 1e9
	r := e.c.Apply(e.index, cmd)
	if e.c.Applied() != e.index {
		t.Fatalf("applied %d after the command at %d", e.c.Applied(), e.index)
	}
	if err := checkInvariants(e.c, e.epochs); err != nil {
		t.Fatalf("after the command at %d: %v", e.index, err)
	}
	if r.Err != nil {
		if cls := errClass(r.Err); !isSentinel(cls) {
			t.Fatal(cls)
		}
		if r.Stream != nil || r.Epoch != 0 {
			t.Fatalf("a failed command returned stream %v, epoch %d", r.Stream, r.Epoch)
		}
		return "error: " + r.Err.Error()
	}
	switch {
	case cmd.GetGrantEpoch() != nil:
		if r.Epoch != r.Stream.Epoch {
			t.Fatalf("granted epoch %d, stream at %d", r.Epoch, r.Stream.Epoch)
		}
		return fmt.Sprintf("ok: epoch %d", r.Epoch)
	case r.Stream != nil:
		return "ok: " + e.streamLine(r.Stream)
	}
	return "ok"
}

func (e *scenarioEnv) show() string {
	lines := []string{fmt.Sprintf("applied %d", e.c.Applied())}
	for _, n := range e.c.Nodes() {
		role := strings.ToLower(strings.TrimPrefix(n.Role.String(), "ROLE_"))
		lines = append(lines, fmt.Sprintf("node %s inc=%d %s registered@%d", n.Name, n.Incarnation, role, n.RegisteredIndex))
	}
	for _, s := range e.c.Streams() {
		lines = append(lines, "stream "+e.streamLine(s))
	}
	return strings.Join(lines, "\n")
}

// streamLine is a stream on one line. A copy is NODE:INCARNATION, marked
// (old) if its node has registered another incarnation since (the copy
// holds nothing) and (gone) if its node is forgotten.
func (e *scenarioEnv) streamLine(s *pb.Stream) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s id=%d %s epoch=%d", s.Name, s.Id, StateName(s.State), s.Epoch)
	if s.State == pb.StreamState_STREAM_STATE_DELETED {
		fmt.Fprintf(&b, " deleted@%d", s.DeletedIndex)
		return b.String()
	}
	fmt.Fprintf(&b, " leader=%s copies=", s.Leader)
	for i, cp := range s.Copies {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, "%s:%d", cp.Node, cp.Incarnation)
		if cp.Backup {
			b.WriteString("(backup)")
		}
		n, ok := e.c.Node(cp.Node)
		if !ok {
			b.WriteString("(gone)")
		} else if _, current := HolderOf(s, cp.Node, n.Incarnation); !current {
			b.WriteString("(old)")
		}
	}
	fmt.Fprintf(&b, " replicas=%d acks=%s region=%d", s.Replicas, AcksName(s.Acks), s.RegionSize)
	if s.CommitFloor > 0 {
		fmt.Fprintf(&b, " floor=%d", s.CommitFloor)
	}
	if s.Elections > 0 {
		fmt.Fprintf(&b, " elections=%d (%s)", s.Elections, s.LastElection)
	}
	if r := s.Retention; r != nil {
		fmt.Fprintf(&b, " retention=bytes:%d,entries:%d,age:%d", r.MaxBytes, r.MaxEntries, r.MaxAgeNs)
	}
	if s.TrimHead > 0 {
		fmt.Fprintf(&b, " trim=%d", s.TrimHead)
	}
	for _, k := range s.Consumers {
		fmt.Fprintf(&b, " consumer=%s@%d", k.Name, k.Acked)
		if k.Hold {
			b.WriteString("(hold)")
		}
	}
	if s.Restores > 0 {
		fmt.Fprintf(&b, " restores=%d", s.Restores)
	}
	if r := s.Restoring; r != nil {
		fmt.Fprintf(&b, " restoring-from=%s:%d@%d", r.Node, r.Incarnation, r.Epoch)
	}
	if s.State == pb.StreamState_STREAM_STATE_DELETING {
		fmt.Fprintf(&b, " deleted@%d pending=%s", s.DeletedIndex, strings.Join(s.PendingDrop, ","))
	}
	return b.String()
}
