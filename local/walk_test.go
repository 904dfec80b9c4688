package local_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/rpstream/rpstream/local"
)

// TestWalk: Walk visits the committed entries from a position, across
// regions (empty ones StartEpoch leaves included), stops where its
// function says or at the committed end, and refuses trimmed positions.
func TestWalk(t *testing.T) {
	s, err := local.Create(filepath.Join(t.TempDir(), "s"), local.Options{RegionSize: local.MinRegionSize})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var want []string
	for i := range 600 {
		if i == 300 {
			// An empty region, then a new one, under a new epoch.
			if err := s.StartEpoch(context.Background(), 2); err != nil {
				t.Fatal(err)
			}
		}
		p := fmt.Sprintf("entry-%d-%0*d", i, i%97, 0)
		want = append(want, p)
		if _, err := s.AppendNoSync([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	if s.Next() != 600 {
		t.Fatalf("Next %d, want 600", s.Next())
	}
	if len(s.Regions()) < 4 {
		t.Fatalf("%d regions", len(s.Regions()))
	}
	for _, from := range []uint64{0, 1, 150, 299, 300, 301, 599, 600} {
		next := from
		end, err := s.Walk(from, 1000, func(i uint64, p []byte) bool {
			if i != next || string(p) != want[i] {
				t.Fatalf("from %d: entry %d is %q, want %d %q", from, i, p, next, want[next])
			}
			next++
			return true
		})
		if err != nil || end != 600 || next != 600 {
			t.Fatalf("from %d: ended at %d (%d visited), %v", from, end, next-from, err)
		}
	}
	if end, err := s.Walk(10, 20, func(uint64, []byte) bool { return true }); err != nil || end != 20 {
		t.Fatalf("walk to 20: %d, %v", end, err)
	}
	if end, err := s.Walk(10, 600, func(i uint64, _ []byte) bool { return i < 333 }); err != nil || end != 333 {
		t.Fatalf("stopped at 333: %d, %v", end, err)
	}
	if err := s.Sync(599); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Trim(400); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Walk(s.Head()-1, 600, func(uint64, []byte) bool { return true }); !errors.Is(err, local.ErrTrimmed) {
		t.Fatalf("walk from a trimmed position: %v", err)
	}
}

// TestWalkStride: walks from any entry of regions of thousands of
// entries, full ones (started at a noted WalkStride-th entry) and the
// tail, see every entry from there, in order, whatever walked before.
func TestWalkStride(t *testing.T) {
	s, err := local.Create(filepath.Join(t.TempDir(), "s"), local.Options{RegionSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const n = 15000
	for i := range n {
		if _, err := s.AppendNoSync(binary.LittleEndian.AppendUint64(nil, uint64(i))); err != nil {
			t.Fatal(err)
		}
	}
	if len(s.Regions()) < 3 || s.Regions()[0].Count <= 2*local.WalkStride {
		t.Fatalf("regions %+v: want several of more than %d entries", s.Regions(), 2*local.WalkStride)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 300 {
		from := uint64(rng.IntN(n))
		want := from
		end, err := s.Walk(from, from+uint64(rng.IntN(3000)), func(i uint64, p []byte) bool {
			if i != want || binary.LittleEndian.Uint64(p) != i {
				t.Fatalf("from %d: entry %d holds %d, want entry %d", from, i, binary.LittleEndian.Uint64(p), want)
			}
			want++
			return true
		})
		if err != nil || end != want {
			t.Fatalf("from %d: ended at %d after %d, %v", from, end, want, err)
		}
	}
}
