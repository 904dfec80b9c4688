package remote

import (
	"context"
	"fmt"

	"github.com/rpstream/rpstream/pmem"
	"github.com/rpstream/rpstream/rdma"
	"github.com/rpstream/rpstream/remote/remotepb"
)

// SlotDiscarder is a RegionStore that can give the storage of a region
// slot back to the system (punch a hole): the slot then reads as zero and
// stays usable (EnsureRegion allocates it again). Optional: a store
// without it keeps freed slots' storage until they are reused.
type SlotDiscarder interface {
	DiscardRegion(k int) error
}

var _ SlotDiscarder = (*FileStore)(nil)

// DiscardRegion implements SlotDiscarder.
func (s *FileStore) DiscardRegion(k int) error {
	if k < 0 || k >= s.Regions() {
		return fmt.Errorf("%w: slot %d", ErrNoRegion, k)
	}
	d, ok := s.mem.(pmem.Discarder)
	if !ok {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := d.Discard(RegionOffset(k, s.regionSize), s.regionSize); err != nil {
		return err
	}
	// EnsureRegion allocates the blocks again before the slot is handed
	// out: a writer's one-sided writes must never fault on a hole when
	// the disk is full.
	if s.holes == nil {
		s.holes = map[int]bool{}
	}
	s.holes[k] = true
	return nil
}

// discard serves a DiscardRequest (see remotepb): slots whose line 0 is
// zero lose their registration and, if the store can, their storage.
func (t *Target) discard(id uint64, c rdma.Conn, q *remotepb.DiscardRequest) *remotepb.Response {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.writer != c || q.Epoch != t.epoch {
		return errResp(id, remotepb.Code_CODE_NOT_WRITER, fmt.Sprintf("epoch %d is not held by this connection (current %d)", q.Epoch, t.epoch))
	}
	d, _ := t.store.(SlotDiscarder)
	b := t.store.Memory().Bytes()
	rs := t.store.RegionSize()
	n := t.store.Regions()
	var done []uint32
	for _, k32 := range q.Slots {
		k := int(k32)
		if k32 == HeaderSlot || k >= n {
			continue
		}
		off := RegionOffset(k, rs)
		if off+64 > len(b) || !zero64(b[off:off+64]) {
			continue // holds a region (or bytes that are not ours to drop)
		}
		if mr := t.mrs[k]; mr != nil {
			delete(t.mrs, k)
			if err := mr.Deregister(); err != nil {
				return errResp(id, remotepb.Code_CODE_INTERNAL, fmt.Sprintf("slot %d: %v", k, err))
			}
		}
		if d != nil {
			if err := d.DiscardRegion(k); err != nil {
				return errResp(id, remotepb.Code_CODE_INTERNAL, fmt.Sprintf("slot %d: %v", k, err))
			}
		}
		done = append(done, k32)
	}
	return &remotepb.Response{Id: id, Body: &remotepb.Response_Discard{Discard: &remotepb.DiscardResponse{Discarded: done}}}
}

func zero64(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// Discard asks the target to give back the storage of slots, which must
// hold no region (see remotepb.DiscardRequest); it returns the slots it
// gave back. Their descriptors are void afterwards: ask Region again.
func (c *Client) Discard(ctx context.Context, epoch uint64, slots []int) ([]int, error) {
	q := &remotepb.DiscardRequest{Epoch: epoch}
	for _, k := range slots {
		if k < 0 || k >= HeaderSlot {
			return nil, fmt.Errorf("%w: slot %d", ErrNoRegion, k)
		}
		q.Slots = append(q.Slots, uint32(k))
	}
	resp, err := c.call(ctx, &remotepb.Request{Body: &remotepb.Request_Discard{Discard: q}})
	if err != nil {
		return nil, err
	}
	r := resp.GetDiscard()
	if r == nil {
		return nil, fmt.Errorf("%w: discard answered without a body", ErrMalformed)
	}
	out := make([]int, len(r.Discarded))
	for i, k := range r.Discarded {
		out[i] = int(k)
	}
	return out, nil
}
