package local

import (
	"context"
	"fmt"
)

// Epochs.
//
// Every region header records the epoch of the writer that allocated it,
// and from format version 2 every entry's checksum covers it, so that an
// entry left in a slot by a region of the same sequence number but an
// older epoch (an old leader's unacknowledged entries on a copy) never
// validates in the region that replaced it. That holds only if a region is
// written under one epoch: a new leader must not append into a region an
// older leader allocated, or its entries and the old leader's, both valid
// under that region's epoch, could meet at the same offsets on a copy.
// StartEpoch is how a writer keeps to it: it ends the tail region where it
// stands and starts the next under the new epoch, before anything is
// appended under it. Region epochs never go back along a stream.

// StartEpoch makes epoch the stream's epoch. If the tail region was
// allocated under an older epoch, it ends that region at its last entry
// and allocates the next region under epoch, so that every later entry
// lands in a region of epoch; otherwise it only records epoch for the
// regions to come. When it returns nil, the new region's header is
// durable, and so are the entries reserved before the call and the seal
// of the region they end (a crash cannot reopen the old region for
// appends). It waits for entries reserved before the call to be published
// (ctx bounds that wait, not a persist under way); appends may run
// concurrently and land on either side of the new region. If ctx ends
// first, the new region stands (appends go there) and calling StartEpoch
// again with the same epoch finishes the wait.
//
// An epoch below the tail region's, or below the opener's (Options.Epoch
// or an earlier StartEpoch), gives ErrEpoch and changes nothing. A
// leader taking over a stream calls it once it has chosen and completed
// its log and before it appends under the new epoch; a stream whose
// opener never calls it appends into the tail region under that region's
// epoch until the region is full.
func (s *Stream) StartEpoch(ctx context.Context, epoch uint64) error {
	if err := s.writable(); err != nil {
		return err
	}
	s.mu.Lock()
	if len(s.regions) == 0 {
		// Nothing appended: the first region, when an append
		// allocates it, is of epoch.
		defer s.mu.Unlock()
		if epoch < s.epoch {
			return fmt.Errorf("%w: epoch %d, the opener's is %d", ErrEpoch, epoch, s.epoch)
		}
		s.epoch = epoch
		return nil
	}
	tail := s.regions[len(s.regions)-1]
	if epoch < tail.epoch || epoch < s.epoch {
		s.mu.Unlock()
		return fmt.Errorf("%w: epoch %d, the opener's is %d and the tail region %d's %d", ErrEpoch, epoch, s.epoch, tail.seq, tail.epoch)
	}
	prev := s.epoch
	s.epoch = epoch
	if epoch == tail.epoch {
		// Started already (perhaps by a call whose ctx ended): settle
		// what lies before it.
		s.mu.Unlock()
		return s.settle(ctx, tail)
	}
	r, err := s.allocRegionLocked(s.next)
	if err != nil {
		s.epoch = prev
		s.mu.Unlock()
		return err
	}
	tail.end.Store(int64(s.tailOff))
	tail.next.Store(r)
	s.regions = append(s.regions, r)
	s.tailOff = RegionHeaderSize
	s.mu.Unlock()
	return s.settle(ctx, r)
}

// settle waits for the entries before region r to be committed, moves the
// commit point into r if it is still before it, and persists up to the
// commit point: that makes those entries durable and seals every region
// before r.
func (s *Stream) settle(ctx context.Context, r *region) error {
	if r.first > 0 {
		if err := s.waitCommitted(ctx, r.first-1); err != nil {
			return err
		}
	}
	s.enterRegion(r, r.first)
	return s.syncAll()
}

// enterRegion moves the commit point to the start of r if every entry
// before index last (the first of r) is committed and none after: so
// the persisting goroutine seals the regions before r although no entry
// of r is committed yet, and an observer hears of r at once.
func (s *Stream) enterRegion(r *region, last uint64) {
	s.pub.Lock()
	defer s.pub.Unlock()
	if s.committed.Load() != last {
		return // entries of r (or later) are committed: the point is past r
	}
	p := s.commitLoc.r.next.Load()
	for p != nil && p != r {
		p = p.next.Load()
	}
	if p == nil {
		return // the point is at r already, or past it (a later StartEpoch moved it)
	}
	if s.obs != nil {
		s.startedLocked(s.commitLoc.r, r)
	}
	s.commitLoc = loc{r, RegionHeaderSize}
}

// observed describes r to an observer.
func observed(r *region) ObservedRegion {
	return ObservedRegion{Seq: r.seq, Slot: r.slot, First: r.first, Epoch: r.epoch}
}

// Epoch is the epoch of the regions the stream allocates next: the
// opener's, or the tail region's if that is greater.
func (s *Stream) Epoch() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.regions); n > 0 {
		return max(s.epoch, s.regions[n-1].epoch)
	}
	return s.epoch
}
