package replicate

import "testing"

// BenchmarkRound is the core's cost per append when every append gets its
// own round (the worst case for batching): Append, Persisted, Ready with
// one write per replica, and two Flushed.
func BenchmarkRound(b *testing.B) {
	r, err := New(Config{}, 1)
	if err != nil {
		b.Fatal(err)
	}
	const regionSize = 4 << 20
	r.NewRegion(RegionInfo{Seq: 1, Slot: 0})
	for _, id := range []ID{"r1", "r2"} {
		r.AddReplica(id, false)
		for _, c := range r.Ready().Connects {
			r.Connected(c.Replica, c.Gen, Pos{1, RegionHeaderSize})
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		last := r.log.last()
		if last.tail+128 > regionSize {
			r.NewRegion(RegionInfo{Seq: last.seq + 1, Slot: int(last.seq % 64), First: r.Appended()})
			last = r.log.last()
		}
		r.Append(Span{Seq: last.seq, Off: last.tail, Len: 128, End: r.Appended() + 1})
		r.Persisted(r.Appended())
		rd := r.Ready()
		for _, a := range rd.Allocs {
			r.Allocated(a.Replica, a.Gen, a.Seq)
		}
		for _, o := range rd.Ops {
			if o.Kind == OpWrite {
				r.Flushed(o.Replica, o.Gen, o.End)
			}
		}
	}
}
