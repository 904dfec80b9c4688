package cluster

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

func TestLeftStateFormat(t *testing.T) {
	t0 := time.Now()
	var es []leftEntry
	for i := range maxLeftEntries + 6 {
		es = append(es, leftEntry{name: fmt.Sprint("m", i), addr: fmt.Sprintf("127.0.0.1:%d", 1000+i), at: t0.Add(time.Duration(i) * time.Second)})
	}
	es = append(es, leftEntry{name: strings.Repeat("x", maxLeftString+1), addr: "127.0.0.1:1", at: t0.Add(time.Hour)})
	got, err := parseLeftState(encodeLeftState(es))
	if err != nil {
		t.Fatal(err)
	}
	// The latest maxLeftEntries that fit, latest first.
	if len(got) != maxLeftEntries || got[0].name != fmt.Sprint("m", maxLeftEntries+5) || got[maxLeftEntries-1].name != "m6" {
		t.Fatalf("kept %d entries, first %+v, last %+v", len(got), got[0], got[len(got)-1])
	}
	if got[0].addr != fmt.Sprintf("127.0.0.1:%d", 1000+maxLeftEntries+5) {
		t.Errorf("address %q", got[0].addr)
	}
	empty, err := parseLeftState(encodeLeftState(nil))
	if err != nil || len(empty) != 0 {
		t.Errorf("empty state: %v, %v", empty, err)
	}

	good := encodeLeftState(es[:2])
	for name, b := range map[string][]byte{
		"nothing":         {},
		"version 2":       append([]byte{2}, good[1:]...),
		"no count":        {leftStateVersion},
		"too many":        {leftStateVersion, maxLeftEntries + 1},
		"truncated":       good[:len(good)-1],
		"trailing":        append(slices.Clone(good), 0),
		"string too long": append([]byte{leftStateVersion, 1, 0x80, 0x02}, make([]byte, 256)...),
	} {
		if _, err := parseLeftState(b); !errors.Is(err, errBadLeftState) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// leaveAt tells c's delegate that a member at 127.0.0.1:port left, as
// memberlist does, with the leaving flag in its metadata or not.
func leaveAt(c *Cluster, name string, port uint16, flag bool) {
	meta, err := Meta{Role: RoleNode, Capacity: 1, Leaving: flag}.Encode(nil)
	if err != nil {
		panic(err)
	}
	(*delegate)(c).NotifyLeave(&memberlist.Node{Name: name, Addr: net.IPv4(127, 0, 0, 1), Port: port, Meta: meta})
}

// A member that got a leave message before the leaving flag holds the
// member dead; the push/pull state of a member that saw the flag corrects
// it, for the same member at the same address only.
func TestLeftLearnedFromPeer(t *testing.T) {
	var evB eventLog
	a := start(t, "a", RoleNode, nil)
	b := start(t, "bb", RoleNode, &evB)
	if _, err := b.Join(a.GossipAddr()); err != nil {
		t.Fatal(err)
	}
	// bb first: no push/pull can have told it anything yet.
	leaveAt(b, "zed", 9, false)
	if st := stateOf(b, "zed"); st != StateDead {
		t.Fatalf("bb holds zed %v after a leave without the flag", st)
	}
	leaveAt(a, "zed", 9, true)
	leaveAt(a, "moved", 9, true)
	leaveAt(b, "moved", 10, false) // another address: another member
	leaveAt(a, "back", 9, true)
	meta, _ := Meta{Role: RoleNode, Capacity: 1}.Encode(nil)
	(*delegate)(b).NotifyJoin(&memberlist.Node{Name: "back", Addr: net.IPv4(127, 0, 0, 1), Port: 9, Meta: meta}) // came back
	// LoopbackConfig pushes and pulls every second.
	waitFor(t, 15*time.Second, "bb holds zed left", func() bool { return stateOf(b, "zed") == StateLeft },
		func() string { return fmt.Sprint("bb holds zed ", stateOf(b, "zed")) })
	waitFor(t, 5*time.Second, "bb is told zed left", func() bool { return evB.has(EventLeave, "zed", StateLeft) })
	if st := stateOf(b, "moved"); st != StateDead {
		t.Errorf("bb holds moved (another address) %v", st)
	}
	if st := stateOf(b, "back"); st != StateAlive {
		t.Errorf("bb holds back (alive again) %v", st)
	}
	// bb now gossips zed as left too.
	es, err := parseLeftState((*delegate)(b).LocalState(false))
	if err != nil || !slices.ContainsFunc(es, func(e leftEntry) bool { return e.name == "zed" && e.addr == "127.0.0.1:9" }) {
		t.Errorf("bb's push/pull state: %+v, %v", es, err)
	}
	// Garbage from a peer is ignored, changes nothing.
	(*delegate)(b).MergeRemoteState([]byte{leftStateVersion, 200}, false)
	if st := stateOf(b, "moved"); st != StateDead {
		t.Errorf("after garbage, bb holds moved %v", st)
	}
}
