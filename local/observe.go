package local

import "fmt"

// Observer is told where committed entries landed, in commit order, so
// that a replicating leader can copy the same bytes to its replicas
// (package replicate). RegionStarted and Committed are called with the
// stream's commit lock held, by whichever goroutine advanced the commit
// point (an appender, a mover's completion); Persisted by the goroutine
// that persisted, after the fact (once more, possibly, just after the
// observer was removed). All must be quick and must neither block nor call
// the Stream: push to a queue.
type Observer interface {
	// RegionStarted: the commit point entered a new region, whose header
	// is in the mapping (and durable). It comes before the region's first
	// Committed span. Every region is announced, in sequence: StartEpoch
	// announces the region it starts at once, and may leave a region
	// without entries (its First is its successor's).
	RegionStarted(r ObservedRegion)
	// Committed: the entries before index End, bytes [Off, Off+Len) of
	// region Seq, were committed. Spans of one region are contiguous and
	// in order; a span never crosses regions.
	Committed(s Span)
	// Persisted: every entry before index is durable on this node.
	Persisted(index uint64)
}

// ObservedRegion is a region the commit point entered.
type ObservedRegion struct {
	Seq   uint64
	Slot  int
	First uint64 // index of its first entry
	Epoch uint64 // recorded in its header
}

// Span is a run of committed entries in one region.
type Span struct {
	Seq  uint64
	Slot int
	Off  int    // offset within the region of the first entry
	Len  int    // bytes, entry headers and padding included
	End  uint64 // index after the last entry
}

// ObserverStart is the stream as of the moment an Observer was set: later
// events continue from it.
type ObserverStart struct {
	// Regions are the live regions up to the one holding the commit
	// point, head first. For each, Count is the entries committed in it
	// and Used the end of its committed bytes (header included).
	Regions   []RegionInfo
	Committed uint64
	Persisted uint64
}

// SetObserver installs o (nil removes the current one) and returns the
// committed state it starts from: every commit after it is reported to o,
// none before it. Only a stream open for writing has commits to observe.
// Without an observer the commit path pays one nil check. On an error the
// observer is left as it was.
func (s *Stream) SetObserver(o Observer) (ObserverStart, error) {
	if err := s.writable(); err != nil {
		return ObserverStart{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pub.Lock()
	defer s.pub.Unlock()
	st := ObserverStart{Committed: s.committed.Load(), Persisted: s.persisted.Load()}
	for i, r := range s.regions {
		ri := r.info()
		if r == s.commitLoc.r {
			ri.Count, ri.Used = st.Committed-r.first, s.commitLoc.off
			st.Regions = append(st.Regions, ri)
			break
		}
		if i+1 >= len(s.regions) {
			return ObserverStart{}, fmt.Errorf("%w: commit point outside the live regions", ErrCorrupt)
		}
		ri.Count, ri.Used = s.regions[i+1].first-r.first, int(r.end.Load())
		st.Regions = append(st.Regions, ri)
	}
	// Only once the start is known good: a caller that gets an error
	// (StartLeader) releases o, which must then never be called.
	s.obs = o
	return st, nil
}

// commitObservedLocked is commit's contiguous case with an observer: entry
// i, ending at end, is the next to commit. s.pub is held.
func (s *Stream) commitObservedLocked(i uint64, end loc) uint64 {
	o := s.obs
	prev := s.commitLoc // end of the committed bytes
	start := prev       // start of the span being gathered, in prev.r
	c := i
	for {
		if end.r != prev.r {
			if prev.off > start.off {
				o.Committed(Span{Seq: prev.r.seq, Slot: prev.r.slot, Off: start.off, Len: prev.off - start.off, End: c})
			}
			s.startedLocked(prev.r, end.r)
			start = loc{end.r, RegionHeaderSize}
		}
		prev = end
		c++
		sl := &s.ring[c&uint64(len(s.ring)-1)]
		if !sl.done {
			break
		}
		end = sl.end
		*sl = ringSlot{}
	}
	if prev.off > start.off {
		o.Committed(Span{Seq: prev.r.seq, Slot: prev.r.slot, Off: start.off, Len: prev.off - start.off, End: c})
	}
	s.commitLoc = prev
	return c
}

// startedLocked tells the observer of each region after from up to and
// including to: regions left empty by StartEpoch are announced too, so
// that the observer sees every sequence number. s.pub is held.
func (s *Stream) startedLocked(from, to *region) {
	for r := from.next.Load(); r != nil; r = r.next.Load() {
		s.obs.RegionStarted(observed(r))
		if r == to {
			return
		}
	}
}
