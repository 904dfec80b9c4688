package cluster

import (
	"fmt"
	"slices"
	"sync"
)

// Lease says who leads a stream and under which epoch. Epoch 0 is never
// granted; each change of leader or replica set takes a higher epoch.
type Lease struct {
	Stream   string
	Epoch    uint64
	Leader   string   // member name; one of Replicas
	Replicas []string // distinct member names, the leader included
	Backup   string   // backup target's member name, or ""
}

// Validate checks that l is well formed.
func (l Lease) Validate() error {
	switch {
	case l.Stream == "":
		return fmt.Errorf("%w: no stream", ErrBadLease)
	case l.Epoch == 0:
		return fmt.Errorf("%w: epoch 0", ErrBadLease)
	case l.Leader == "":
		return fmt.Errorf("%w: no leader", ErrBadLease)
	case !slices.Contains(l.Replicas, l.Leader):
		return fmt.Errorf("%w: leader %q is not a replica", ErrBadLease, l.Leader)
	case slices.Contains(l.Replicas, l.Backup) && l.Backup != "":
		return fmt.Errorf("%w: backup %q is also a replica", ErrBadLease, l.Backup)
	}
	seen := map[string]bool{}
	for _, r := range l.Replicas {
		if r == "" || seen[r] {
			return fmt.Errorf("%w: replica %q empty or repeated", ErrBadLease, r)
		}
		seen[r] = true
	}
	return nil
}

// CheckSuccessor says whether next may replace l: the same stream, well
// formed, and a strictly higher epoch (ErrStaleEpoch otherwise). The zero
// Lease (no lease yet) accepts any valid next.
func (l Lease) CheckSuccessor(next Lease) error {
	if err := next.Validate(); err != nil {
		return err
	}
	if l.Stream == "" && l.Epoch == 0 {
		return nil
	}
	if next.Stream != l.Stream {
		return fmt.Errorf("%w: stream %q succeeding %q", ErrBadLease, next.Stream, l.Stream)
	}
	if next.Epoch <= l.Epoch {
		return fmt.Errorf("%w: epoch %d after %d", ErrStaleEpoch, next.Epoch, l.Epoch)
	}
	return nil
}

// Leases is a table of the current lease of each stream. It holds them in
// memory only: whoever feeds it must have made a lease durable (and agreed
// on) before Apply, because a remote Target forgets epochs on restart. Its
// methods may be called concurrently.
type Leases struct {
	mu sync.Mutex
	m  map[string]Lease // by stream; guarded by mu
}

// Apply installs next as its stream's lease if it is a valid successor of
// the current one.
func (t *Leases) Apply(next Lease) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	cur := t.m[next.Stream]
	if err := cur.CheckSuccessor(next); err != nil {
		return err
	}
	if t.m == nil {
		t.m = map[string]Lease{}
	}
	next.Replicas = slices.Clone(next.Replicas)
	t.m[next.Stream] = next
	return nil
}

// Get returns stream's current lease.
func (t *Leases) Get(stream string) (Lease, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	l, ok := t.m[stream]
	l.Replicas = slices.Clone(l.Replicas)
	return l, ok
}

// Authorize says whether writer leads stream under epoch: nil if the
// current lease is exactly (epoch, writer); ErrStaleEpoch for an older
// epoch; ErrNotLeader for another writer or an epoch this table has not
// seen; ErrUnknownStream when stream has no lease.
func (t *Leases) Authorize(stream string, epoch uint64, writer string) error {
	l, ok := t.Get(stream)
	switch {
	case !ok:
		return fmt.Errorf("%w: %q", ErrUnknownStream, stream)
	case epoch < l.Epoch:
		return fmt.Errorf("%w: epoch %d, current %d", ErrStaleEpoch, epoch, l.Epoch)
	case epoch != l.Epoch || writer != l.Leader:
		return fmt.Errorf("%w: %q under epoch %d; lease is %q under %d", ErrNotLeader, writer, epoch, l.Leader, l.Epoch)
	}
	return nil
}

// Authorizer is the remote.Config.Authorize hook for the Target serving
// stream: it is quick and takes no lock but the table's.
func (t *Leases) Authorizer(stream string) func(epoch uint64, writer string) error {
	return func(epoch uint64, writer string) error { return t.Authorize(stream, epoch, writer) }
}
