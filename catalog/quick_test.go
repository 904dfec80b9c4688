package catalog

import (
	"bytes"
	"errors"
	"testing"
	"testing/quick"

	pb "github.com/rpstream/rpstream/catalog/catalogpb"
)

// nameRef is the dumb reference of the name rule users rely on when
// several clients create one name at once: of any number of creates of a
// name between deletes, exactly the first succeeds. "Between deletes"
// means until the deletion is finished (every copy dropped): a deleting
// stream still holds its name.
type nameRef struct {
	state map[string]string // "" (free), "live" or "deleting"
}

// create says which sentinel a create of name returns (nil: it makes the
// stream). placed says whether its placement is good.
func (m *nameRef) create(name string, placed bool) error {
	switch {
	case m.state[name] != "":
		return ErrExists
	case !placed:
		return ErrUnknownNode
	}
	m.state[name] = "live"
	return nil
}

func (m *nameRef) delete(name string) error {
	if m.state[name] != "live" {
		return ErrNoStream
	}
	m.state[name] = "deleting"
	return nil
}

func TestNameRuleQuick(t *testing.T) {
	names := []string{"a", "b", "c"}
	f := func(ops []uint8) bool {
		c := New()
		c.Apply(1, registerCmd("n1", 1, pb.Role_ROLE_NODE, false))
		c.Apply(2, registerCmd("n2", 1, pb.Role_ROLE_NODE, false))
		index := uint64(2)
		apply := func(cmd *pb.Command) Result {
			index++
			return c.Apply(index, cmd)
		}
		m := &nameRef{state: map[string]string{}}
		ids := map[string]uint64{} // the last id each name had
		for _, op := range ops {
			name := names[int(op/5)%len(names)]
			switch op % 5 {
			case 0, 1: // two clients' creates, as the controller proposes them
				want := m.create(name, true)
				r := apply(createCmd(name, 2, pb.Acks_ACKS_QUORUM, 4096, &pb.Copy{Node: "n1", Incarnation: 1}, &pb.Copy{Node: "n2", Incarnation: 1}))
				if !errors.Is(r.Err, want) {
					t.Logf("create %s at %d: %v, want %v", name, index, r.Err, want)
					return false
				}
				if r.Err == nil {
					if r.Stream.Id != index || r.Stream.Id <= ids[name] {
						t.Logf("create %s at %d: id %d after %d", name, index, r.Stream.Id, ids[name])
						return false
					}
					ids[name] = r.Stream.Id
				}
			case 2: // a create placed on a node that left: it never takes the name
				want := m.create(name, false)
				r := apply(createCmd(name, 1, pb.Acks_ACKS_QUORUM, 4096, &pb.Copy{Node: "n9", Incarnation: 1}))
				if !errors.Is(r.Err, want) {
					t.Logf("misplaced create %s at %d: %v, want %v", name, index, r.Err, want)
					return false
				}
			case 3:
				want := m.delete(name)
				if r := apply(deleteCmd(name, 0)); !errors.Is(r.Err, want) {
					t.Logf("delete %s at %d: %v, want %v", name, index, r.Err, want)
					return false
				}
			case 4: // every copy of a deleting stream is dropped
				if m.state[name] != "deleting" {
					continue
				}
				for _, n := range []string{"n1", "n2"} {
					if r := apply(droppedCmd(name, ids[name], n)); r.Err != nil {
						t.Logf("dropped %s on %s at %d: %v", name, n, index, r.Err)
						return false
					}
				}
				m.state[name] = ""
			}
		}
		return true
	}
	if err := quick.Check(f, &quick.Config{MaxCount: 2000}); err != nil {
		t.Error(err)
	}
}

// TestSkip: entries that are not commands advance Applied and change
// nothing else; Applied never goes back.
func TestSkip(t *testing.T) {
	c := New()
	c.Apply(1, registerCmd("n1", 1, pb.Role_ROLE_NODE, false))
	before, err := c.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	c.Skip(2)
	c.Skip(3)
	if c.Applied() != 3 {
		t.Fatalf("applied %d after skipping 2 and 3, want 3", c.Applied())
	}
	after, err := c.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Fatal("Skip changed the catalog")
	}
	c.Skip(2)
	if c.Applied() != 3 {
		t.Fatalf("applied %d after skipping 2 again, want 3", c.Applied())
	}
	c.Apply(4, registerCmd("n2", 1, pb.Role_ROLE_NODE, false))
	if c.Applied() != 4 {
		t.Fatalf("applied %d after the command at 4", c.Applied())
	}
}
