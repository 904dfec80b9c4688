package replicate

import "testing"

// TestCompaction: the map of append boundaries follows the slowest
// replica's backlog, not the number of appends ever made.
func TestCompaction(t *testing.T) {
	r, err := New(Config{}, 1)
	if err != nil {
		t.Fatal(err)
	}
	const regionSize = 1 << 16
	if err := r.NewRegion(RegionInfo{Seq: 1, Slot: 0}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []ID{"r1", "r2"} {
		r.AddReplica(id, false)
		for _, c := range r.Ready().Connects {
			r.Connected(c.Replica, c.Gen, Pos{1, RegionHeaderSize})
		}
	}
	for i := range 100000 {
		last := r.log.last()
		if last.tail+8 > regionSize {
			if err := r.NewRegion(RegionInfo{Seq: last.seq + 1, Slot: int(last.seq), First: r.Appended()}); err != nil {
				t.Fatal(err)
			}
			last = r.log.last()
		}
		if err := r.Append(Span{Seq: last.seq, Off: last.tail, Len: 8, End: r.Appended() + 1}); err != nil {
			t.Fatal(err)
		}
		r.Persisted(r.Appended())
		rd := r.Ready()
		for _, a := range rd.Allocs {
			r.Allocated(a.Replica, a.Gen, a.Seq)
		}
		for _, o := range rd.Ops {
			if o.Kind == OpWrite {
				if err := r.Flushed(o.Replica, o.Gen, o.End); err != nil {
					t.Fatalf("append %d: %v", i, err)
				}
			}
		}
	}
	rd := r.Ready()
	if r.Committed() != 100000 || len(rd.Ops) != 0 {
		t.Fatalf("commit %d, %d ops left", r.Committed(), len(rd.Ops))
	}
	n := 0
	for _, reg := range r.log.regions {
		n += len(reg.bs)
	}
	if max := len(r.log.regions) + compactMin; n > max {
		t.Errorf("%d boundaries kept for %d regions, want at most %d", n, len(r.log.regions), max)
	}
}
