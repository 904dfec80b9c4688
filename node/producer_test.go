package node

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/quick"

	"github.com/rpstream/rpstream/internal/validate"
)

// TestProducerAgainstModel drives a producer with random sequence numbers
// and checks it against the plain record of everything stored: nothing is
// stored twice, a duplicate gets its original position, a number among
// the window highest stored is always recognised, and a number is refused
// only when it is at or below a forgotten one. (Remembering the highest
// numbers, not the latest stored, keeps the floor exact; a client whose
// numbers increase in the order it sends them, with fewer than window in
// flight, finds every unanswered append among them.)
func TestProducerAgainstModel(t *testing.T) {
	const window = 8
	f := func(seqs []uint8) bool {
		ps := newProducers(window, 10)
		stored := map[uint64]uint64{} // every number ever stored
		var order []uint64            // in the order stored
		next := uint64(0)
		for _, s8 := range seqs {
			seq := uint64(s8 % 64)
			p := ps.lock(producerKey("p"))
			pos, dup, err := p.lookup(seq)
			if err == nil && !dup {
				pos = next
				next++
				p.record(seq, pos, window)
			}
			ps.unlock(p)
			want, was := stored[seq]
			highest := slices.Sorted(slices.Values(order))
			recent := slices.Contains(highest[max(0, len(highest)-window):], seq)
			switch {
			case err != nil:
				// Refused: must not be among the window highest stored, and
				// must be at or below some forgotten number.
				if recent {
					t.Logf("seq %d refused though among the %d highest stored %v", seq, window, order)
					return false
				}
				forgotten := highest[:max(0, len(highest)-window)]
				if !slices.ContainsFunc(forgotten, func(f uint64) bool { return seq <= f }) {
					t.Logf("seq %d refused, forgotten %v", seq, forgotten)
					return false
				}
			case dup:
				if !was || pos != want {
					t.Logf("seq %d: duplicate at %d, stored %v at %d", seq, pos, was, want)
					return false
				}
			default:
				if was {
					t.Logf("seq %d stored twice", seq)
					return false
				}
				stored[seq] = pos
				order = append(order, seq)
			}
		}
		return true
	}
	if err := quick.Check(f, &quick.Config{MaxCount: 2000}); err != nil {
		t.Fatal(err)
	}
}

func TestProducersEvictLeastRecentlyUsed(t *testing.T) {
	ps := newProducers(4, 2)
	for _, id := range []string{"a", "b", "a", "c"} {
		p := ps.lock(producerKey(id))
		p.record(1, 7, 4)
		ps.unlock(p)
	}
	if _, ok := ps.byID[producerKey("b")]; ok || len(ps.byID) != 2 {
		t.Fatalf("after a, b, a, c with room for 2: %v", ps.byID)
	}
	p := ps.lock(producerKey("a"))
	defer ps.unlock(p)
	if pos, dup, err := p.lookup(1); !dup || pos != 7 || err != nil {
		t.Fatalf("a forgotten: %d %v %v", pos, dup, err)
	}
}

// TestProducersKeepOneInUse: a producer a call holds is not forgotten to
// make room, whatever its age: the next call of its id waits for the same
// producer and finds the sequence number stored.
func TestProducersKeepOneInUse(t *testing.T) {
	ps := newProducers(4, 2)
	a := ps.lock(producerKey("a")) // held, as by an append being stored
	b := ps.lock(producerKey("b"))
	ps.unlock(b)
	c := ps.lock(producerKey("c")) // no room: b goes, not a
	ps.unlock(c)
	if _, ok := ps.byID[producerKey("a")]; !ok {
		t.Fatalf("a, in use, forgotten: %v", ps.byID)
	}
	if _, ok := ps.byID[producerKey("b")]; ok {
		t.Fatalf("b, idle and oldest, kept: %v", ps.byID)
	}
	got := make(chan *producer)
	go func() { got <- ps.lock(producerKey("a")) }()
	a.record(1, 7, 4)
	ps.unlock(a)
	a2 := <-got
	defer ps.unlock(a2)
	if a2 != a {
		t.Fatal("a made anew while in use")
	}
	if pos, dup, err := a2.lookup(1); !dup || pos != 7 || err != nil {
		t.Fatalf("a's sequence number 1: %d %v %v", pos, dup, err)
	}
}

// FuzzStreamName: every name validName accepts is one plain, visible
// file name in the streams directory.
func FuzzStreamName(f *testing.F) {
	for _, s := range []string{"s", "orders.v1", "..", ".", "a/b", "-x", "a\x00b", "ü"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if validName(name) != nil {
			return
		}
		if name == "" || len(name) > validate.MaxNameLen || name[0] == '.' || name[0] == '-' ||
			strings.ContainsAny(name, "/\\\x00 ") || name == ".." {
			t.Fatalf("validName accepted %q", name)
		}
		if filepath.Base(filepath.Join("/streams", name)) != name {
			t.Fatalf("%q is not one path element", name)
		}
	})
}

// BenchmarkProducerRecord: one producer's appends in order with a full
// window, the common case of every append (lookup, record, forget).
func BenchmarkProducerRecord(b *testing.B) {
	ps := newProducers(64, 10)
	for i := range b.N {
		p := ps.lock(producerKey("p"))
		seq := uint64(i) + 1
		if _, dup, err := p.lookup(seq); err != nil || dup {
			b.Fatal(seq, dup, err)
		}
		p.record(seq, seq, 64)
		ps.unlock(p)
	}
}
