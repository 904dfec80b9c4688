package node

import (
	"testing"

	"github.com/rpstream/rpstream/cluster"
)

// A member's capacity changes whenever its free space moves by 1 %: the
// update must not make every leader writing to it reconnect (thousands
// at once, for nothing). A join, a first sight, or an update changing
// more than the capacity may be the member restarted: they do.
func TestMemberRestarted(t *testing.T) {
	s := &Server{}
	meta := cluster.Meta{Role: cluster.RoleNode, Capacity: 100, ClientAddr: "127.0.0.1:1", PeerAddr: "127.0.0.1:2"}
	ev := func(kind cluster.EventKind, m cluster.Meta) cluster.Event {
		return cluster.Event{Kind: kind, Member: cluster.Member{Name: "n2", State: cluster.StateAlive, Meta: m}}
	}
	steps := []struct {
		what string
		ev   cluster.Event
		want bool
	}{
		{"first update seen", ev(cluster.EventUpdate, meta), true},
		{"capacity only", ev(cluster.EventUpdate, func() cluster.Meta { m := meta; m.Capacity = 90; return m }()), false},
		{"capacity only again", ev(cluster.EventUpdate, func() cluster.Meta { m := meta; m.Capacity = 80; return m }()), false},
		{"new peer address", ev(cluster.EventUpdate, func() cluster.Meta { m := meta; m.Capacity = 80; m.PeerAddr = "127.0.0.1:3"; return m }()), true},
		{"join", ev(cluster.EventJoin, meta), true},
		{"leaving", ev(cluster.EventUpdate, func() cluster.Meta { m := meta; m.Leaving = true; return m }()), false},
		{"suspect", ev(cluster.EventSuspect, meta), false},
	}
	for _, st := range steps {
		if got := s.memberRestarted(st.ev); got != st.want {
			t.Errorf("%s: reconnect %v, want %v", st.what, got, st.want)
		}
	}
}
