package raftlog

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// The raft.Storage contract, against the reference implementation: a
// raft.MemoryStorage fed the same calls (ApplySnapshot, Append,
// SetHardState for a Save; CreateSnapshot and Compact for a snapshot).
// After every operation, and after every reopen, random queries of
// Entries, Term, FirstIndex, LastIndex, Snapshot and InitialState must
// give the same answers, errors included (ErrCompacted, ErrUnavailable).

// feed applies o to the reference as the Log's contract says.
func feed(ref *raft.MemoryStorage, o op, catchUp uint64) error {
	switch o.kind {
	case opSave:
		if !raft.IsEmptySnap(o.snap) {
			if err := ref.ApplySnapshot(o.snap); err != nil {
				return err
			}
		}
		if err := ref.Append(o.ents); err != nil {
			return err
		}
		if !raft.IsEmptyHardState(o.hs) {
			ref.SetHardState(o.hs)
		}
	case opCreate:
		if _, err := ref.CreateSnapshot(o.index, raftpb.EnsureConfState(proto.Clone(o.cs).(*raftpb.ConfState)), o.data); err != nil {
			return err
		}
		first, _ := ref.FirstIndex()
		if o.index > catchUp && o.index-catchUp >= first {
			return ref.Compact(o.index - catchUp)
		}
	}
	return nil
}

// compare asks l and ref the same random questions.
func compare(rng *rand.Rand, l *Log, ref *raft.MemoryStorage) error {
	f1, _ := l.FirstIndex()
	f2, _ := ref.FirstIndex()
	l1, _ := l.LastIndex()
	l2, _ := ref.LastIndex()
	if f1 != f2 || l1 != l2 {
		return fmt.Errorf("indexes %d..%d, reference %d..%d", f1, l1, f2, l2)
	}
	h1, c1, _ := l.InitialState()
	h2, c2, _ := ref.InitialState()
	if hsOf(h1) != hsOf(h2) || !proto.Equal(c1, c2) {
		return fmt.Errorf("initial state %v %v, reference %v %v", h1, c1, h2, c2)
	}
	s1, _ := l.Snapshot()
	s2, _ := ref.Snapshot()
	if !proto.Equal(s1, s2) {
		return fmt.Errorf("snapshot %v, reference %v", s1.GetMetadata(), s2.GetMetadata())
	}
	for q := 0; q < 20; q++ {
		i := f1 - min(f1, 2) + rng.Uint64N(l1-f1+5)
		t1, e1 := l.Term(i)
		t2, e2 := ref.Term(i)
		if t1 != t2 || !sameErr(e1, e2) {
			return fmt.Errorf("Term(%d) = %d, %v; reference %d, %v", i, t1, e1, t2, e2)
		}
		lo := f1 - min(f1, 2) + rng.Uint64N(l1-f1+4)
		if lo > l1+1 {
			lo = l1 + 1
		}
		hi := lo + rng.Uint64N(l1+2-lo)
		if hi <= lo {
			continue
		}
		maxSize := []uint64{0, 1, 300, 5000, math.MaxUint64}[rng.IntN(5)]
		es1, e1 := l.Entries(lo, hi, maxSize)
		es2, e2 := ref.Entries(lo, hi, maxSize)
		if !sameErr(e1, e2) || len(es1) != len(es2) {
			return fmt.Errorf("Entries(%d, %d, %d): %d entries, %v; reference %d, %v", lo, hi, maxSize, len(es1), e1, len(es2), e2)
		}
		for k := range es1 {
			if !proto.Equal(es1[k], es2[k]) {
				return fmt.Errorf("Entries(%d, %d, %d): entry %d differs", lo, hi, maxSize, es1[k].GetIndex())
			}
		}
	}
	return nil
}

func sameErr(a, b error) bool {
	for _, e := range []error{raft.ErrCompacted, raft.ErrUnavailable} {
		if errors.Is(a, e) != errors.Is(b, e) {
			return false
		}
	}
	return (a == nil) == (b == nil)
}

func TestStorageContract(t *testing.T) {
	n, ops := 3, 150
	if testing.Short() {
		n, ops = 1, 100
	}
	for _, seed := range seeds(t, n) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Logf("seed %d (rerun with RPSTREAM_RAFTLOG_SEED=%d go test -run TestStorageContract ./catalog/raftlog/)", seed, seed)
			rng := rand.New(rand.NewPCG(seed, 77))
			dir := fastDir(t)
			l := mustOpen(t, dir, smallOpts)
			defer func() { l.Close() }()
			ref := raft.NewMemoryStorage()
			g := newGen(rng, l.maxEntry)
			g.reopen = true
			for k := 0; k < ops; k++ {
				o := g.next()
				if o.kind == opReopen {
					l = reopen(t, l, dir, smallOpts)
				} else {
					if err := o.run(l); err != nil {
						t.Fatalf("op %d (%v): %v", k, o, err)
					}
					if err := feed(ref, o, smallOpts.SnapshotCatchUp); err != nil {
						t.Fatalf("op %d (%v): reference: %v", k, o, err)
					}
				}
				if err := compare(rng, l, ref); err != nil {
					t.Fatalf("op %d (%v): %v", k, o, err)
				}
			}
			l = reopen(t, l, dir, smallOpts)
			if err := compare(rng, l, ref); err != nil {
				t.Fatalf("after the last reopen: %v", err)
			}
		})
	}
}
