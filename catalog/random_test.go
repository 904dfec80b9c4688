package catalog

import (
	"bytes"
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/rpstream/rpstream/catalog/catalogpb"
)

var seedFlag = flag.Uint64("seed", 0, "seed of TestRandomDeterminism (0: from the clock)")

// TestRandomDeterminism applies random command sequences (mostly valid,
// some not) to two catalogs: one straight, the other as a node that
// reads each command back from the log (marshalled and unmarshalled) and
// now and then restarts from its own snapshot. After every command both
// must encode to the same bytes and have said the same thing (error
// class, epoch, stream). A failed command must change nothing, and the
// invariants of checkInvariants must hold throughout.
//
// A failure names its seed: rerun with -seed=N.
func TestRandomDeterminism(t *testing.T) {
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -seed=%d)", seed, seed)
	const runs, steps = 16, 300
	var ok, failed [kindCount]int // per kind of command
	var classes [kindCount]map[string]int
	for i := range classes {
		classes[i] = map[string]int{}
	}
	for run := range uint64(runs) {
		rng := rand.New(rand.NewPCG(seed, run))
		straight, restarted := New(), New()
		epochs := map[uint64]uint64{}
		prev, _ := straight.Snapshot()
		for i := range uint64(steps) {
			index := i + 1
			cmd, kind := randomCommand(rng, straight)
			wire, err := proto.Marshal(cmd)
			if err != nil {
				t.Fatal(err)
			}
			var read pb.Command
			if err := proto.Unmarshal(wire, &read); err != nil {
				t.Fatal(err)
			}
			ra := straight.Apply(index, cmd)
			rb := restarted.Apply(index, &read)
			where := func() string { return fmt.Sprintf("seed %d run %d index %d (%v)", seed, run, index, cmd) }
			if ca, cb := errClass(ra.Err), errClass(rb.Err); ca != cb || ca != nil && !isSentinel(ca) {
				t.Fatalf("%s: results %v and %v", where(), ra.Err, rb.Err)
			}
			// The text too goes back to the proposer, from whichever
			// node answers: it must not depend on map order.
			if ra.Err != nil && ra.Err.Error() != rb.Err.Error() {
				t.Fatalf("%s: errors say %q and %q", where(), ra.Err, rb.Err)
			}
			if ra.Epoch != rb.Epoch || !proto.Equal(ra.Stream, rb.Stream) {
				t.Fatalf("%s: results differ: epoch %d, %v and epoch %d, %v", where(), ra.Epoch, ra.Stream, rb.Epoch, rb.Stream)
			}
			if ra.Err == nil {
				ok[kind]++
			} else {
				failed[kind]++
				classes[kind][errClass(ra.Err).Error()]++
			}
			a, _ := straight.Snapshot()
			b, _ := restarted.Snapshot()
			if !bytes.Equal(a, b) || straight.Applied() != restarted.Applied() {
				t.Fatalf("%s: the catalogs differ", where())
			}
			if ra.Err != nil && !bytes.Equal(a, prev) {
				t.Fatalf("%s: failed with %v, and changed the catalog", where(), ra.Err)
			}
			prev = a
			if kind == kindGrant && ra.Err == nil && ra.Epoch != epochs[ra.Stream.Id]+1 {
				t.Fatalf("%s: granted epoch %d after %d", where(), ra.Epoch, epochs[ra.Stream.Id])
			}
			if err := checkInvariants(straight, epochs); err != nil {
				t.Fatalf("%s: %v", where(), err)
			}
			if rng.IntN(20) == 0 {
				c := New()
				if err := c.Restore(restarted.Applied(), b); err != nil {
					t.Fatalf("%s: restore: %v", where(), err)
				}
				restarted = c
			}
			// Neither the result nor the command may be the catalog's
			// own record: scribble on them, and the next comparison
			// finds any that was.
			if ra.Stream != nil {
				ra.Stream.Epoch += 100
				ra.Stream.Copies = append(ra.Stream.Copies[:0], &pb.Copy{Node: "scribble"})
				if len(ra.Stream.Consumers) > 0 {
					ra.Stream.Consumers[0].Acked += 1000
				}
				if ra.Stream.Retention != nil {
					ra.Stream.Retention.MaxBytes++
				}
			}
			if op := cmd.GetSetRetention(); op != nil && op.Retention != nil {
				op.Retention.MaxEntries++
			}
			if op := cmd.GetCreateStream(); op != nil && len(op.Copies) > 0 {
				op.Copies[0].Node = "scribble"
			}
		}
	}
	t.Logf("succeeded/failed by kind (register create activate delete dropped grant forget noop retention): %v / %v", ok, failed)
	t.Logf("failures by kind and class: %v", classes)
	// The generator must mostly make commands that do something, or this
	// test checks little.
	for k := range kindCount {
		if ok[k] == 0 && k != kindNoop {
			t.Errorf("no command of kind %d succeeded", k)
		}
	}
}

const (
	kindRegister = iota
	kindCreate
	kindActivate
	kindDelete
	kindDropped
	kindGrant
	kindForget
	kindNoop
	kindRetention // trims, consumers, acks
	kindCount
)

var (
	randomNodes   = []string{"n1", "n2", "n3", "n4", "b1", "b2"}
	randomStreams = []string{"s1", "s2", "s3", "s4"}
)

// randomCommand makes a command for catalog c: mostly one a controller
// would propose (from what c holds), sometimes a stale, wrong or
// malformed one.
func randomCommand(rng *rand.Rand, c *Catalog) (*pb.Command, int) {
	const (
		creating = pb.StreamState_STREAM_STATE_CREATING
		active   = pb.StreamState_STREAM_STATE_ACTIVE
		deleting = pb.StreamState_STREAM_STATE_DELETING
		deleted  = pb.StreamState_STREAM_STATE_DELETED
	)
	pick := func(s []string) string { return s[rng.IntN(len(s))] }
	bad := func() bool { return rng.IntN(8) == 0 }
	// in lists the stream names whose state is one of want (a name
	// never used counts as deleted).
	in := func(want ...pb.StreamState) []string {
		var fit []string
		for _, n := range randomStreams {
			st := deleted
			if s, ok := c.Stream(n); ok {
				st = s.State
			}
			if slices.Contains(want, st) {
				fit = append(fit, n)
			}
		}
		return fit
	}
	// stream picks a stream name, most often one whose state is one of
	// want (the streams a node proposes commands about).
	stream := func(want ...pb.StreamState) (string, *pb.Stream) {
		name := pick(randomStreams)
		if fit := in(want...); len(fit) > 0 && rng.IntN(8) > 0 {
			name = pick(fit)
		}
		if bad() {
			name = pick([]string{"", ".s1", "s9"})
		}
		s, _ := c.Stream(name)
		return name, s
	}
	id := func(s *pb.Stream) uint64 {
		switch {
		case s == nil || bad():
			return uint64(rng.IntN(50))
		case rng.IntN(4) == 0:
			return 0
		}
		return s.Id
	}
	inc := func(node string) uint64 {
		if n, ok := c.Node(node); ok && !bad() {
			return n.Incarnation
		}
		return uint64(rng.IntN(4))
	}
	// A kind of command, by weight; mostly one that has a stream to be
	// about (a controller seldom proposes a create with no name free).
	weights := [kindCount]int{kindRegister: 10, kindCreate: 18, kindActivate: 10, kindDelete: 7,
		kindDropped: 20, kindGrant: 18, kindForget: 2, kindNoop: 2, kindRetention: 13}
	wants := [kindCount][]pb.StreamState{kindCreate: {deleted}, kindActivate: {creating},
		kindDelete: {creating, active}, kindDropped: {deleting}, kindGrant: {creating, active}, kindRetention: {creating, active}}
	kind := kindNoop
	for range 4 {
		w := rng.IntN(100)
		for kind = 0; w >= weights[kind]; kind++ {
			w -= weights[kind]
		}
		if wants[kind] == nil || len(in(wants[kind]...)) > 0 || bad() {
			break
		}
	}
	switch kind {
	case kindRegister:
		name := pick(randomNodes)
		role := pb.Role_ROLE_NODE
		if name[0] == 'b' {
			role = pb.Role_ROLE_BACKUP
		}
		if bad() {
			role = pb.Role(rng.IntN(4))
		}
		i := inc(name)
		if rng.IntN(8) == 0 {
			i = uint64(1 + rng.IntN(4)) // wiped, or a stranger
		}
		return registerCmd(name, i, role, rng.IntN(3) > 0), kind
	case kindCreate:
		name, _ := stream(wants[kind]...)
		var reps, backups []*pb.Copy
		for _, n := range c.Nodes() {
			cp := &pb.Copy{Node: n.Name, Incarnation: n.Incarnation}
			if n.Role == pb.Role_ROLE_BACKUP {
				cp.Backup = true
				backups = append(backups, cp)
			} else {
				reps = append(reps, cp)
			}
		}
		rng.Shuffle(len(reps), func(i, j int) { reps[i], reps[j] = reps[j], reps[i] })
		copies := reps[:min(len(reps), 1+rng.IntN(3))]
		replicas := uint32(len(copies))
		if len(backups) > 0 && rng.IntN(3) == 0 {
			copies = append(copies, backups[rng.IntN(len(backups))])
		}
		acks, region := pb.Acks(1+rng.IntN(3)), uint64(1)<<(12+rng.IntN(8))
		if bad() {
			switch rng.IntN(5) {
			case 0:
				replicas = uint32(rng.IntN(17))
			case 1:
				acks = pb.Acks(rng.IntN(5))
			case 2:
				region = 0
			case 3:
				if len(copies) > 0 {
					copies[rng.IntN(len(copies))].Incarnation++ // placed before a replace
				}
			case 4:
				rng.Shuffle(len(copies), func(i, j int) { copies[i], copies[j] = copies[j], copies[i] })
			}
		}
		return createCmd(name, replicas, acks, region, copies...), kind
	case kindActivate:
		name, s := stream(wants[kind]...)
		return activateCmd(name, id(s)), kind
	case kindDelete:
		name, s := stream(wants[kind]...)
		return deleteCmd(name, id(s)), kind
	case kindDropped:
		name, s := stream(wants[kind]...)
		node := pick(randomNodes)
		if s != nil && len(s.PendingDrop) > 0 && !bad() {
			node = pick(s.PendingDrop)
		}
		i := uint64(0)
		if s != nil {
			i = s.Id
		}
		if bad() {
			i = uint64(rng.IntN(50))
		}
		return droppedCmd(name, i, node), kind
	case kindGrant:
		name, s := stream(wants[kind]...)
		leader := pick(randomNodes)
		if s != nil && !bad() {
			leader = s.Leader
		}
		return grantCmd(name, id(s), leader, inc(leader)), kind
	case kindForget:
		return forgetCmd(pick(randomNodes)), kind
	case kindRetention:
		name, s := stream(wants[kind]...)
		consumer := pick([]string{"c1", "c2", "c3"})
		if bad() {
			consumer = pick([]string{"", ".c"})
		}
		pos := uint64(rng.IntN(200))
		if s != nil && !bad() {
			// Mostly near the stream's trim head and its consumers.
			pos = s.TrimHead + uint64(rng.IntN(40))
		}
		switch rng.IntN(5) {
		case 0:
			return &pb.Command{Op: &pb.Command_TrimStream{TrimStream: &pb.TrimStream{Name: name, StreamId: id(s), Head: pos}}}, kind
		case 1:
			return &pb.Command{Op: &pb.Command_AddConsumer{AddConsumer: &pb.AddConsumer{Name: name, StreamId: id(s), Consumer: consumer,
				Start: pos, Hold: rng.IntN(2) == 0}}}, kind
		case 2:
			return &pb.Command{Op: &pb.Command_RemoveConsumer{RemoveConsumer: &pb.RemoveConsumer{Name: name, StreamId: id(s), Consumer: consumer}}}, kind
		case 3:
			r := &pb.Retention{MaxBytes: uint64(rng.IntN(3)) << 20, MaxEntries: uint64(rng.IntN(3)) * 100}
			if bad() {
				r.MaxAgeNs = -1
			}
			return &pb.Command{Op: &pb.Command_SetRetention{SetRetention: &pb.SetRetention{Name: name, StreamId: id(s), Retention: r}}}, kind
		}
		op := &pb.AckConsumers{Name: name, StreamId: id(s)}
		for range 1 + rng.IntN(3) {
			op.Acks = append(op.Acks, &pb.ConsumerAck{Consumer: pick([]string{"c1", "c2", "c3", "gone"}), Acked: pos + uint64(rng.IntN(40))})
		}
		return &pb.Command{Op: &pb.Command_AckConsumers{AckConsumers: op}}, kind
	}
	return &pb.Command{}, kind
}
