package catalog

import (
	"bytes"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/rpstream/rpstream/catalog/catalogpb"
)

// fuzzCatalog is a catalog with something of everything: stream nodes, a
// backup target, an active stream with epochs, a deleting one, a
// finished tombstone and a creating one.
func fuzzCatalog(t testing.TB) *Catalog {
	c := New()
	cmds := []*pb.Command{
		registerCmd("n1", 1, pb.Role_ROLE_NODE, false),
		registerCmd("n2", 1, pb.Role_ROLE_NODE, false),
		registerCmd("n3", 1, pb.Role_ROLE_NODE, false),
		registerCmd("b1", 1, pb.Role_ROLE_BACKUP, false),
		createCmd("s1", 3, pb.Acks_ACKS_QUORUM, 4096, &pb.Copy{Node: "n1", Incarnation: 1}, &pb.Copy{Node: "n2", Incarnation: 1}, &pb.Copy{Node: "n3", Incarnation: 1}, &pb.Copy{Node: "b1", Incarnation: 1, Backup: true}),
		activateCmd("s1", 5),
		grantCmd("s1", 5, "n1", 1),
		grantCmd("s1", 5, "n1", 1),
		createCmd("s2", 2, pb.Acks_ACKS_ALL, 4096, &pb.Copy{Node: "n2", Incarnation: 1}, &pb.Copy{Node: "n3", Incarnation: 1}),
		deleteCmd("s2", 9),
		droppedCmd("s2", 9, "n2"),
		createCmd("s3", 1, pb.Acks_ACKS_LEADER, 4096, &pb.Copy{Node: "n3", Incarnation: 1}),
		deleteCmd("s3", 12),
		droppedCmd("s3", 12, "n3"),
		createCmd("s4", 1, pb.Acks_ACKS_LEADER, 4096, &pb.Copy{Node: "n1", Incarnation: 1}),
	}
	for i, cmd := range cmds {
		if r := c.Apply(uint64(i+1), cmd); r.Err != nil {
			t.Fatalf("setup command %d: %v", i+1, r.Err)
		}
	}
	return c
}

func snapshot(t testing.TB, c *Catalog) []byte {
	b, err := c.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzRestore hands Restore arbitrary bytes. It must never panic; it
// either refuses them as corrupt and leaves the catalog as it was, or
// takes them, and then the catalog snapshots and restores to the same
// bytes and takes any command without panicking.
func FuzzRestore(f *testing.F) {
	good := snapshot(f, fuzzCatalog(f))
	f.Add(good)
	f.Add([]byte{})
	f.Add(good[:len(good)/2])
	f.Add([]byte{0xff, 0xff, 0xff})
	for _, st := range []*pb.State{
		{Version: 2},
		{Version: StateVersion},
		{Version: StateVersion, Nodes: []*pb.Node{{Name: "n1"}, {Name: "n1"}}},
		{Version: StateVersion, Nodes: []*pb.Node{{Name: ".n1"}}},
		{Version: StateVersion, Streams: []*pb.Stream{{Name: "s1", State: pb.StreamState_STREAM_STATE_ACTIVE}}},
		{Version: StateVersion, Streams: []*pb.Stream{{Name: "s1", State: pb.StreamState_STREAM_STATE_DELETED}, {Name: "s1", State: pb.StreamState_STREAM_STATE_DELETED}}},
		// Well-formed, and strange: a stream in no state, one whose
		// leader holds no copy, a node in no role.
		{Version: StateVersion, Nodes: []*pb.Node{{Name: "n1", Incarnation: 1}}, Streams: []*pb.Stream{
			{Name: "s1", Id: 3, State: pb.StreamState_STREAM_STATE_UNSPECIFIED, Copies: []*pb.Copy{{Node: "n1"}}},
			{Name: "s2", Id: 4, State: pb.StreamState_STREAM_STATE_ACTIVE, Leader: "n9", Copies: []*pb.Copy{{Node: "n1", Incarnation: 1}}},
			{Name: "s3", Id: 5, State: pb.StreamState_STREAM_STATE_DELETING, Copies: []*pb.Copy{{Node: "n1", Backup: true}}},
		}},
	} {
		b, err := proto.Marshal(st)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c := fuzzCatalog(t)
		before, applied := snapshot(t, c), c.Applied()
		if err := c.Restore(1000, b); err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Restore: %v, not ErrCorrupt", err)
			}
			if !bytes.Equal(snapshot(t, c), before) || c.Applied() != applied {
				t.Fatalf("a refused Restore (%v) changed the catalog", err)
			}
			return
		}
		if c.Applied() != 1000 {
			t.Fatalf("restored at %d, want 1000", c.Applied())
		}
		snap := snapshot(t, c)
		again := New()
		if err := again.Restore(1000, snap); err != nil {
			t.Fatalf("the catalog's own snapshot does not restore: %v", err)
		}
		if !bytes.Equal(snapshot(t, again), snap) {
			t.Fatal("snapshot, restore, snapshot gives other bytes")
		}
		// Whatever was restored, every command about it is answered.
		index := uint64(1000)
		apply := func(cmd *pb.Command) {
			index++
			r := c.Apply(index, cmd)
			if cls := errClass(r.Err); r.Err != nil && (!isSentinel(cls) || cls == ErrCorrupt) {
				t.Fatalf("%v: %v", cmd, cls)
			}
		}
		for _, s := range c.Streams() {
			for _, cp := range s.Copies {
				apply(grantCmd(s.Name, s.Id, cp.Node, cp.Incarnation))
			}
			apply(activateCmd(s.Name, s.Id))
			apply(createCmd(s.Name, 1, pb.Acks_ACKS_ALL, 1, s.Copies...))
			apply(deleteCmd(s.Name, 0))
			for _, cp := range s.Copies {
				apply(droppedCmd(s.Name, s.Id, cp.Node))
			}
		}
		for _, n := range c.Nodes() {
			apply(registerCmd(n.Name, n.Incarnation+1, n.Role, true))
			apply(forgetCmd(n.Name))
		}
	})
}

// frame joins commands as FuzzApply reads them: each a length byte, then
// that many bytes of a marshalled Command.
func frame(t testing.TB, cmds ...*pb.Command) []byte {
	var out []byte
	for _, cmd := range cmds {
		b, err := proto.Marshal(cmd)
		if err != nil || len(b) > 255 {
			t.Fatalf("seed command %v: %d bytes, %v", cmd, len(b), err)
		}
		out = append(out, byte(len(b)))
		out = append(out, b...)
	}
	return out
}

// FuzzApply reads arbitrary bytes as a sequence of commands (see frame;
// a piece that does not unmarshal is skipped) and applies them, at
// increasing indexes, to fuzzCatalog. Apply must never panic; a failed
// command wraps one of the package's errors and changes nothing; after
// every command the invariants of checkInvariants hold; a granted epoch
// is one more than the stream id's last; and the end state snapshots
// and restores to the same bytes.
func FuzzApply(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{3, 0x52, 0x01, 0x41, 200})
	f.Add(frame(f, &pb.Command{}))
	// A restore of s1 (epoch 3) from the backup onto new incarnations,
	// a stale one, and the epoch start that ends it.
	restore := func(from uint64, src string, copies ...*pb.Copy) *pb.Command {
		return &pb.Command{Op: &pb.Command_RestoreStream{RestoreStream: &pb.RestoreStream{Name: "s1", StreamId: 5, FromEpoch: from,
			Source: &pb.RestoreSource{Node: src, Incarnation: 1}, Copies: copies}}}
	}
	f.Add(frame(f,
		registerCmd("n1", 2, pb.Role_ROLE_NODE, true),
		registerCmd("n2", 2, pb.Role_ROLE_NODE, true),
		registerCmd("n3", 2, pb.Role_ROLE_NODE, true),
		restore(3, "b1", &pb.Copy{Node: "n2", Incarnation: 2}, &pb.Copy{Node: "n1", Incarnation: 2}, &pb.Copy{Node: "n3", Incarnation: 2}, &pb.Copy{Node: "b1", Incarnation: 1, Backup: true}),
		restore(3, "b1", &pb.Copy{Node: "n3", Incarnation: 2}),
		&pb.Command{Op: &pb.Command_EpochStarted{EpochStarted: &pb.EpochStarted{Name: "s1", StreamId: 5, Epoch: 4, Index: 10}}},
		deleteCmd("s1", 5),
	))
	f.Add(frame(f,
		grantCmd("s1", 5, "n1", 1),
		registerCmd("n1", 2, pb.Role_ROLE_NODE, true),
		grantCmd("s1", 5, "n1", 2),
		grantCmd("s1", 0, "n2", 1),
		forgetCmd("n1"),
	))
	f.Add(frame(f,
		droppedCmd("s2", 9, "n3"),
		createCmd("s2", 2, pb.Acks_ACKS_QUORUM, 8192, &pb.Copy{Node: "n3", Incarnation: 1}, &pb.Copy{Node: "n1", Incarnation: 1}, &pb.Copy{Node: "b1", Incarnation: 1, Backup: true}),
		grantCmd("s2", 0, "n3", 1),
		activateCmd("s2", 0),
		deleteCmd("s2", 17),
		droppedCmd("s2", 17, "n1"),
		droppedCmd("s2", 17, "n3"),
		droppedCmd("s2", 17, "b1"),
		forgetCmd("b1"),
	))
	f.Add(frame(f,
		registerCmd("n4", 1, pb.Role_ROLE_NODE, false),
		createCmd("s3", 2, pb.Acks_ACKS_ALL, 1, &pb.Copy{Node: "n4", Incarnation: 1}, &pb.Copy{Node: "n2", Incarnation: 1}),
		createCmd("s3", 1, pb.Acks_ACKS_ALL, 1, &pb.Copy{Node: "n1", Incarnation: 1}),
		createCmd("s5", 1, pb.Acks_ACKS_ALL, 1, &pb.Copy{Node: "b1", Incarnation: 1, Backup: true}, &pb.Copy{Node: "n1", Incarnation: 1}),
		registerCmd("b1", 1, pb.Role_ROLE_NODE, false),
		deleteCmd("s4", 15),
		droppedCmd("s4", 15, "n1"),
		forgetCmd("n4"),
	))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := fuzzCatalog(t)
		epochs := map[uint64]uint64{}
		if err := checkInvariants(c, epochs); err != nil {
			t.Fatal(err)
		}
		index := c.Applied()
		prev := snapshot(t, c)
		for len(data) > 0 {
			n := min(int(data[0]), len(data)-1)
			piece := data[1 : 1+n]
			data = data[1+n:]
			var cmd pb.Command
			if proto.Unmarshal(piece, &cmd) != nil {
				continue
			}
			index++
			r := c.Apply(index, &cmd)
			if c.Applied() != index {
				t.Fatalf("applied %d after the command at %d", c.Applied(), index)
			}
			now := snapshot(t, c)
			if r.Err != nil {
				if cls := errClass(r.Err); !isSentinel(cls) || cls == ErrCorrupt {
					t.Fatalf("%v: %v", &cmd, cls)
				}
				if !bytes.Equal(now, prev) {
					t.Fatalf("%v failed (%v) and changed the catalog", &cmd, r.Err)
				}
			}
			if cmd.GetGrantEpoch() != nil && r.Err == nil && r.Epoch != epochs[r.Stream.Id]+1 {
				t.Fatalf("%v: granted epoch %d after %d", &cmd, r.Epoch, epochs[r.Stream.Id])
			}
			if err := checkInvariants(c, epochs); err != nil {
				t.Fatalf("after %v: %v", &cmd, err)
			}
			prev = now
		}
		again := New()
		if err := again.Restore(c.Applied(), prev); err != nil {
			t.Fatalf("the catalog's own snapshot does not restore: %v", err)
		}
		if !bytes.Equal(snapshot(t, again), prev) {
			t.Fatal("snapshot, restore, snapshot gives other bytes")
		}
	})
}
