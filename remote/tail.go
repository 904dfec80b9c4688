package remote

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/rpstream/rpstream/local"
	"github.com/rpstream/rpstream/pmem"
	"github.com/rpstream/rpstream/rdma"
	"github.com/rpstream/rpstream/remote/remotepb"
)

// MaxStreamName bounds the stream name of an Open.
const MaxStreamName = 255

// validOpen checks the fields of an Open that need no target state.
func validOpen(o *remotepb.OpenRequest) error {
	switch {
	case o == nil:
		return errors.New("open without a body")
	case o.Stream == "" || len(o.Stream) > MaxStreamName:
		return fmt.Errorf("open with a stream name of %d bytes (1 to %d)", len(o.Stream), MaxStreamName)
	case o.RegionSize == 0 || o.RegionSize%4096 != 0 || o.RegionSize > local.MaxRegionSize:
		return fmt.Errorf("open with region size %d", o.RegionSize)
	}
	return nil
}

// open binds c to t's stream after checking that the replica matches the
// writer's stream.
func (t *Target) open(id uint64, c rdma.Conn, o *remotepb.OpenRequest) *remotepb.Response {
	t.mu.Lock()
	defer t.mu.Unlock()
	opened, served := t.conns[c]
	if opened {
		return errResp(id, remotepb.Code_CODE_MALFORMED, "a second open on this connection")
	}
	if rs := t.store.RegionSize(); int(o.RegionSize) != rs {
		return errResp(id, remotepb.Code_CODE_MISMATCH, fmt.Sprintf("stream %q: region size %d, the replica's is %d", o.Stream, o.RegionSize, rs))
	}
	sid, err := local.StreamIDOf(t.store.Memory().Bytes())
	if err != nil {
		sid = 0 // no valid superblock yet: the writer's copy will bring one
	}
	if o.StreamId != 0 && sid != 0 && sid != o.StreamId {
		return errResp(id, remotepb.Code_CODE_MISMATCH, fmt.Sprintf("stream %q: stream id %x, the replica holds %x; delete it first", o.Stream, o.StreamId, sid))
	}
	if served {
		t.conns[c] = true
	}
	return &remotepb.Response{Id: id, Body: &remotepb.Response_Open{Open: &remotepb.OpenResponse{
		Stream: o.Stream, RegionSize: o.RegionSize, StreamId: sid,
		Regions: uint32(t.store.Regions()), Epoch: t.epoch,
	}}}
}

// tail finds the durable end of the replica's valid prefix, cutting back
// what lies beyond the writer's end, and persists what it reports.
func (t *Target) tail(id uint64, c rdma.Conn, q *remotepb.TailRequest) *remotepb.Response {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.writer != c || q.Epoch != t.epoch {
		return errResp(id, remotepb.Code_CODE_NOT_WRITER, fmt.Sprintf("epoch %d is not held by this connection (current %d)", q.Epoch, t.epoch))
	}
	rs := t.store.RegionSize()
	if q.LeaderSeq != 0 && (q.LeaderOff < local.RegionHeaderSize || q.LeaderOff > uint64(rs) || q.LeaderOff%local.EntryAlign != 0) {
		return errResp(id, remotepb.Code_CODE_MALFORMED, fmt.Sprintf("tail with leader offset %d in regions of %d bytes", q.LeaderOff, rs))
	}
	mem := t.store.Memory()
	b := mem.Bytes()
	if _, err := local.StreamIDOf(b); err != nil {
		return tailResp(id, 0, 0, 0) // no valid superblock: a fresh replica
	}
	if q.Probe {
		return t.probeLocked(id, b)
	}
	if local.NoRegions(b) {
		// Cut back to nothing by a leader (after a trim that passed
		// everything the copy held, say): it holds nothing.
		if err := mem.Persist(0, SuperblockSize); err != nil {
			return errResp(id, remotepb.Code_CODE_INTERNAL, err.Error())
		}
		return tailResp(id, 0, 0, 0)
	}
	sc, err := local.Scan(b)
	if off, sealed := local.SealedTail(b); err != nil && sealed {
		// The last region was sealed by a leader whose copy of the next
		// region was lost: the region is whole, but no longer followed.
		binary.LittleEndian.PutUint64(b[off+local.RegionSealOffset:], 0)
		if err := mem.Persist(off+local.RegionSealOffset, 8); err != nil {
			return errResp(id, remotepb.Code_CODE_INTERNAL, err.Error())
		}
		sc, err = local.Scan(b)
	}
	if err != nil {
		return errResp(id, remotepb.Code_CODE_INTERNAL, fmt.Sprintf("replica: %v", err))
	}
	if sc.RegionSize != rs {
		return errResp(id, remotepb.Code_CODE_MISMATCH, fmt.Sprintf("the replica's superblock says region size %d, its store %d", sc.RegionSize, rs))
	}
	if len(sc.Regions) == 0 {
		return tailResp(id, 0, 0, 0)
	}
	if freed, err := freeBelowHead(mem, sc); err != nil {
		return errResp(id, remotepb.Code_CODE_INTERNAL, err.Error())
	} else if freed {
		// The copy's superblock names a head (its leader trimmed): the
		// regions wholly before it go first, as local's recovery
		// finishes a trim.
		if sc, err = local.Scan(b); err != nil {
			return errResp(id, remotepb.Code_CODE_INTERNAL, fmt.Sprintf("replica after freeing the trimmed regions: %v", err))
		}
	}
	if len(q.Runs) > 0 {
		if r := t.cutToRunsLocked(id, b, sc, q.Runs); r != nil {
			return r
		}
		if sc, err = local.Scan(b); err != nil {
			return errResp(id, remotepb.Code_CODE_INTERNAL, fmt.Sprintf("replica after the cut: %v", err))
		}
		if len(sc.Regions) == 0 {
			return tailResp(id, 0, 0, 0)
		}
	} else if end := sc.Regions[len(sc.Regions)-1]; q.LeaderSeq != 0 && after(end.Seq, uint64(end.End), q.LeaderSeq, q.LeaderOff) {
		if r := t.cutBackLocked(id, b, sc, q); r != nil {
			return r
		}
		if sc, err = local.Scan(b); err != nil {
			return errResp(id, remotepb.Code_CODE_INTERNAL, fmt.Sprintf("replica after the cut: %v", err))
		}
	} else if len(sc.Truncated) > 0 {
		// Valid regions after a tail that lost entries are not part of the
		// prefix (recovery frees them): free them now, so that the
		// writer's copies of those sequence numbers, wherever they land,
		// cannot meet a stale twin.
		if err := freeRegions(mem, sc.Truncated); err != nil {
			return errResp(id, remotepb.Code_CODE_INTERNAL, err.Error())
		}
	}
	if err := mem.Persist(0, SuperblockSize); err != nil {
		return errResp(id, remotepb.Code_CODE_INTERNAL, err.Error())
	}
	for _, r := range sc.Regions {
		if err := mem.Persist(r.Offset, r.End); err != nil {
			return errResp(id, remotepb.Code_CODE_INTERNAL, err.Error())
		}
	}
	end := sc.Regions[len(sc.Regions)-1]
	if q.LeaderIndex != nil && end.Seq == q.LeaderSeq && uint64(end.End) == q.LeaderOff && sc.Next != *q.LeaderIndex {
		return errResp(id, remotepb.Code_CODE_MISMATCH, fmt.Sprintf("the replica ends where the writer does with %d entries, the writer %d", sc.Next, *q.LeaderIndex))
	}
	r := tailResp(id, end.Seq, uint64(end.End), sc.Next)
	r.GetTail().Epoch = end.Epoch
	return r
}

// probeLocked reports the replica's durable end, the epoch of its last
// region and what its commit words say, changing nothing.
func (t *Target) probeLocked(id uint64, b []byte) *remotepb.Response {
	// A sealed last region (its successor's copy lost) is whole: ScanCopy
	// reads it as the tail without clearing its seal.
	sc, err := local.ScanCopy(b)
	if err != nil {
		return errResp(id, remotepb.Code_CODE_INTERNAL, fmt.Sprintf("replica: %v", err))
	}
	if len(sc.Regions) == 0 {
		return tailResp(id, 0, 0, 0)
	}
	end := sc.Regions[len(sc.Regions)-1]
	r := tailResp(id, end.Seq, uint64(end.End), sc.Next)
	r.GetTail().Epoch = end.Epoch
	r.GetTail().Committed = sc.Committed()
	return r
}

// commonEnd is where the replica's log (sc) stops agreeing with the
// writer's, described by runs: the end of the highest replica region
// that the writer holds under the same epoch, no further than the
// writer's copy of it ends (the writer's regions of one epoch were all
// written by that epoch's leader, which wrote a region's successor only
// after the region itself, so a region of equal sequence and epoch on
// both sides is a prefix of the same bytes, and so is everything before
// it). ok is false when nothing is common.
func commonEnd(sc local.ScanResult, runs []*remotepb.EpochRun) (k int, off int, ok bool) {
	for i := len(sc.Regions) - 1; i >= 0; i-- {
		r := sc.Regions[i]
		for _, run := range runs {
			if r.Seq < run.FirstSeq || r.Seq > run.LastSeq || run.Epoch != r.Epoch {
				continue
			}
			off := r.End
			if r.Seq == run.LastSeq && uint64(off) > run.LastEnd {
				off = int(run.LastEnd)
			}
			return i, off, true
		}
	}
	return 0, 0, false
}

// cutToRunsLocked cuts the replica back to the longest prefix it shares
// with the writer's log (commonEnd), durably.
func (t *Target) cutToRunsLocked(id uint64, b []byte, sc local.ScanResult, runs []*remotepb.EpochRun) *remotepb.Response {
	rs := uint64(sc.RegionSize)
	for _, run := range runs {
		if run.FirstSeq == 0 || run.LastSeq < run.FirstSeq || run.LastEnd < local.RegionHeaderSize || run.LastEnd > rs || run.LastEnd%local.EntryAlign != 0 {
			return errResp(id, remotepb.Code_CODE_MALFORMED, fmt.Sprintf("epoch run %v in regions of %d bytes", run, rs))
		}
	}
	k, off, ok := commonEnd(sc, runs)
	if !ok {
		all := append(append([]local.ScanRegion(nil), sc.Regions...), sc.Truncated...)
		if err := freeRegions(t.store.Memory(), all); err != nil {
			return errResp(id, remotepb.Code_CODE_INTERNAL, err.Error())
		}
		return nil
	}
	last := sc.Regions[len(sc.Regions)-1]
	if k == len(sc.Regions)-1 && off == last.End && len(sc.Truncated) == 0 {
		return nil // nothing to cut
	}
	return t.cutAtLocked(id, b, sc, k, uint64(off))
}

// after reports whether position (seq, off) lies after (lseq, loff).
func after(seq, off, lseq, loff uint64) bool {
	return seq > lseq || (seq == lseq && off > loff)
}

// cutBackLocked makes the replica end at the writer's end: it invalidates
// every region after the writer's tail region, highest first (as local's
// recovery frees regions, so that a crash leaves a contiguous sequence),
// then unseals that region and zeroes its bytes from the writer's end. It
// returns an error response, or nil once the cut is durable.
func (t *Target) cutBackLocked(id uint64, b []byte, sc local.ScanResult, q *remotepb.TailRequest) *remotepb.Response {
	k := -1
	for i, r := range sc.Regions {
		if r.Seq == q.LeaderSeq {
			k = i
		}
	}
	if k < 0 {
		return errResp(id, remotepb.Code_CODE_MISMATCH, fmt.Sprintf("the writer ends in region %d, the replica holds regions %d to %d",
			q.LeaderSeq, sc.Regions[0].Seq, sc.Regions[len(sc.Regions)-1].Seq))
	}
	cut := sc.Regions[k]
	if k < len(sc.Regions)-1 && uint64(cut.End) < q.LeaderOff {
		return errResp(id, remotepb.Code_CODE_MISMATCH, fmt.Sprintf("region %d ends at %d on the replica, which has regions after it, but at %d on the writer",
			cut.Seq, cut.End, q.LeaderOff))
	}
	return t.cutAtLocked(id, b, sc, k, q.LeaderOff)
}

// cutAtLocked makes the replica end in its region k at off: every later
// region is freed (highest first), region k unsealed, its commit word
// kept within off and its bytes from off on zeroed, durably.
func (t *Target) cutAtLocked(id uint64, b []byte, sc local.ScanResult, k int, leaderOff uint64) *remotepb.Response {
	mem := t.store.Memory()
	rs := sc.RegionSize
	cut := sc.Regions[k]
	higher := append(append([]local.ScanRegion(nil), sc.Regions[k+1:]...), sc.Truncated...)
	if err := freeRegions(mem, higher); err != nil {
		return errResp(id, remotepb.Code_CODE_INTERNAL, err.Error())
	}
	rb := b[cut.Offset : cut.Offset+rs]
	// The region is the tail now: no seal, and no commit beyond its end.
	binary.LittleEndian.PutUint64(rb[local.RegionSealOffset:], 0)
	if binary.LittleEndian.Uint64(rb[local.RegionCommitOffset:]) > leaderOff {
		binary.LittleEndian.PutUint64(rb[local.RegionCommitOffset:], leaderOff)
	}
	if err := mem.Persist(cut.Offset+local.RegionCommitOffset, 16); err != nil {
		return errResp(id, remotepb.Code_CODE_INTERNAL, err.Error())
	}
	from := int(leaderOff)
	to := len(rb) &^ 7
	for to > from && binary.LittleEndian.Uint64(rb[to-8:]) == 0 {
		to -= 8
	}
	if to > from {
		clear(rb[from:to])
		if err := mem.Persist(cut.Offset+from, to-from); err != nil {
			return errResp(id, remotepb.Code_CODE_INTERNAL, err.Error())
		}
	}
	return nil
}

// freeBelowHead frees, oldest first and durably, the regions of sc whose
// entries all lie before sc.Head (the trim record the leader copied into
// the superblock), never the last: a crash meanwhile leaves a contiguous
// run that still reaches the head. It reports whether it freed any.
func freeBelowHead(mem pmem.Memory, sc local.ScanResult) (bool, error) {
	b := mem.Bytes()
	n := 0
	for n+1 < len(sc.Regions) && sc.Regions[n+1].First <= sc.Head {
		off := sc.Regions[n].Offset
		clear(b[off : off+64])
		if err := mem.Persist(off, 64); err != nil {
			return n > 0, err
		}
		n++
	}
	return n > 0, nil
}

// freeRegions invalidates regions (in ascending sequence) durably, the
// highest first, by zeroing the whole of line 0 as local does.
func freeRegions(mem pmem.Memory, regions []local.ScanRegion) error {
	b := mem.Bytes()
	for i := len(regions) - 1; i >= 0; i-- {
		off := regions[i].Offset
		clear(b[off : off+64])
		if err := mem.Persist(off, 64); err != nil {
			return err
		}
	}
	return nil
}

func tailResp(id, seq, off, index uint64) *remotepb.Response {
	return &remotepb.Response{Id: id, Body: &remotepb.Response_Tail{Tail: &remotepb.TailResponse{Seq: seq, Off: off, Index: index}}}
}
