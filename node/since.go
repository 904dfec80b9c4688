package node

import (
	"context"
	"fmt"
	"sort"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/local"
)

// Finding an entry by time. Times increase with positions (stamp in
// append.go), so the first entry appended at or after a time is found by
// binary search: over the stream's regions first, by the time of each
// region's first timed entry (one entry read per probe), then, in a full
// region, over its entries local.WalkStride apart, then by walking at
// most about that many entries (local.Stream.Walk: headers and the
// envelope's time only, no copies, no checksums). A lookup thus reads
// O(log n) entries and walks about a thousand: some 20 µs of CPU in a
// stream of 10 million entries (README, Performance).
//
// Entries without a time (epoch markers, batch slots, entries stored
// before times) are passed over: a region's time is that of its first
// timed entry, searched for at most up to the end of the next region
// (regions StartEpoch left empty have none of their own); a region with
// none in that reach counts as older than any time, which is exact for
// the entries written before times, all older than any timed one.

func (s *Server) FindPosition(ctx context.Context, req *api.FindPositionRequest) (*api.FindPositionResponse, error) {
	if err := s.enter(); err != nil {
		return nil, statusOf(err)
	}
	defer s.leave()
	st, err := s.acquire(req.Stream)
	if err != nil {
		return nil, s.route(ctx, req.Stream, err)
	}
	defer st.release()
	if !st.meta.Envelope {
		return nil, statusOf(fmt.Errorf("%w: stream %s was made before entries carried times", errBadArg, st.name))
	}
	end := st.committed()
	pos, t, err := findSince(st.ls, end, req.SinceUnixNano)
	if err != nil {
		return nil, statusOf(err)
	}
	return &api.FindPositionResponse{Position: pos, TimeUnixNano: t, Committed: end}, nil
}

// firstTime is the time of the first timed entry of ls in [from, to).
func firstTime(ls *local.Stream, from, to uint64) (t int64, found bool, err error) {
	_, err = ls.Walk(from, to, func(_ uint64, b []byte) bool {
		t, found = storedTime(b)
		return !found
	})
	return t, found, err
}

// findSince returns the position of the first client entry of ls before
// end appended at or after time since (Unix ns), and its time; end and 0
// if there is none.
func findSince(ls *local.Stream, end uint64, since int64) (uint64, int64, error) {
	head := ls.Head()
	regions := ls.Regions()
	// Regions past end (appended after the lookup began) are not asked.
	for len(regions) > 0 && regions[len(regions)-1].First >= end {
		regions = regions[:len(regions)-1]
	}
	// The first region whose first timed entry is at or after since: the
	// entry looked for is in the region before it, or is that entry.
	var err error
	k := sort.Search(len(regions), func(k int) bool {
		if err != nil {
			return true
		}
		to := end
		if k+2 < len(regions) {
			to = regions[k+2].First
		}
		var t int64
		var found bool
		t, found, err = firstTime(ls, max(regions[k].First, head), to)
		return err != nil || found && t >= since
	})
	if err != nil {
		return 0, 0, err
	}
	from := head
	if k > 0 {
		from = max(regions[k-1].First, head)
		if k < len(regions) {
			// A full region: binary search again over its entries
			// local.WalkStride apart (Walk starts at such an entry at
			// once), so that at most about that many are walked.
			lo, hi := from, regions[k].First
			steps := int((hi - lo) / local.WalkStride)
			j := sort.Search(steps, func(j int) bool {
				if err != nil {
					return true
				}
				var t int64
				var found bool
				t, found, err = firstTime(ls, lo+uint64(j+1)*local.WalkStride, hi)
				return err != nil || !found || t >= since
			})
			if err != nil {
				return 0, 0, err
			}
			from = lo + uint64(j)*local.WalkStride
		}
	}
	pos, t := end, int64(0)
	if _, err := ls.Walk(from, end, func(i uint64, b []byte) bool {
		at, ok := storedTime(b)
		if !ok || at < since {
			return true
		}
		pos, t = i, at
		if n := batchCount(b); n > 1 && uint64(n) <= i+1 {
			// A batch's entries start at its first slot.
			pos = max(i+1-uint64(n), head)
		}
		return false
	}); err != nil {
		return 0, 0, err
	}
	return pos, t, nil
}
