package cluster

import (
	"errors"
	"testing"

	"github.com/rpstream/rpstream/remote"
)

func TestLeaseSuccession(t *testing.T) {
	l1 := Lease{Stream: "s", Epoch: 1, Leader: "a", Replicas: []string{"a", "b", "c"}, Backup: "z"}
	tests := []struct {
		name string
		prev Lease
		next Lease
		want error
	}{
		{"first", Lease{}, l1, nil},
		{"higher", l1, Lease{Stream: "s", Epoch: 2, Leader: "b", Replicas: []string{"b", "c"}}, nil},
		{"same epoch", l1, Lease{Stream: "s", Epoch: 1, Leader: "b", Replicas: []string{"b"}}, ErrStaleEpoch},
		{"lower epoch", Lease{Stream: "s", Epoch: 5, Leader: "a", Replicas: []string{"a"}}, l1, ErrStaleEpoch},
		{"other stream", l1, Lease{Stream: "t", Epoch: 9, Leader: "a", Replicas: []string{"a"}}, ErrBadLease},
		{"epoch 0", Lease{}, Lease{Stream: "s", Leader: "a", Replicas: []string{"a"}}, ErrBadLease},
		{"leader not replica", l1, Lease{Stream: "s", Epoch: 2, Leader: "x", Replicas: []string{"a"}}, ErrBadLease},
		{"repeated replica", l1, Lease{Stream: "s", Epoch: 2, Leader: "a", Replicas: []string{"a", "a"}}, ErrBadLease},
		{"backup is replica", l1, Lease{Stream: "s", Epoch: 2, Leader: "a", Replicas: []string{"a"}, Backup: "a"}, ErrBadLease},
		{"no stream", Lease{}, Lease{Epoch: 1, Leader: "a", Replicas: []string{"a"}}, ErrBadLease},
	}
	for _, tt := range tests {
		err := tt.prev.CheckSuccessor(tt.next)
		if (tt.want == nil) != (err == nil) || (tt.want != nil && !errors.Is(err, tt.want)) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestLeasesAuthorize(t *testing.T) {
	var tab Leases
	auth := tab.Authorizer("s")
	if err := auth(1, "a"); !errors.Is(err, ErrUnknownStream) {
		t.Fatalf("no lease: %v", err)
	}
	must := func(l Lease) {
		t.Helper()
		if err := tab.Apply(l); err != nil {
			t.Fatal(err)
		}
	}
	must(Lease{Stream: "s", Epoch: 3, Leader: "a", Replicas: []string{"a", "b"}})
	if err := auth(3, "a"); err != nil {
		t.Fatalf("current leader: %v", err)
	}
	for _, c := range []struct {
		epoch  uint64
		writer string
		want   error
	}{{2, "a", ErrStaleEpoch}, {3, "b", ErrNotLeader}, {4, "a", ErrNotLeader}} {
		if err := auth(c.epoch, c.writer); !errors.Is(err, c.want) {
			t.Errorf("(%d, %s): %v, want %v", c.epoch, c.writer, err, c.want)
		}
	}
	// A new leader under a new epoch: the old one is refused from then on.
	must(Lease{Stream: "s", Epoch: 4, Leader: "b", Replicas: []string{"a", "b"}})
	if err := auth(3, "a"); !errors.Is(err, ErrStaleEpoch) {
		t.Errorf("deposed leader: %v", err)
	}
	if err := auth(4, "b"); err != nil {
		t.Errorf("new leader: %v", err)
	}
	if err := tab.Apply(Lease{Stream: "s", Epoch: 4, Leader: "a", Replicas: []string{"a"}}); !errors.Is(err, ErrStaleEpoch) {
		t.Errorf("reapplying epoch 4: %v", err)
	}
	// Get hands out a copy.
	l, _ := tab.Get("s")
	l.Replicas[0] = "mutated"
	if l2, _ := tab.Get("s"); l2.Replicas[0] != "a" {
		t.Errorf("Get shares its slice: %v", l2.Replicas)
	}
}

// The table plugs into a remote Target as is.
var _ = remote.Config{Authorize: (&Leases{}).Authorizer("stream")}
