package replicate

import (
	"context"
	"fmt"
)

// Trim on a replicated stream.
//
// The leader trims its own stream first (local.Stream.Trim: the head is
// recorded durably in its superblock, then the regions below it are freed
// and their slots may be reused at once). Its copies follow through the
// connect path, which every replica then goes through again: the
// leader's superblock, trim record included, is copied and flushed first,
// so that the copy opens at the new head whatever else it holds; then
// the cut-back zeroes line 0 of every slot that holds no live region of
// the leader (the trimmed ones) and of every live slot past the
// replica's durable position (a reused slot may still hold an old region
// there), and asks the target to give those slots' storage back
// (remote.Client.Discard); only then is the replica written again, from
// its durable position or, if that was trimmed, from the new head. So a
// copy never meets a reused slot's new region while it still holds the
// old one below it, and a crash at any point leaves it opening at a head
// no later than the leader's: the old head, or the new one.

// Trim drops the leader's regions before region seq from the
// Replicator's log (the leader's stream freed them) and reconnects every
// replica that is not waiting out a backoff, so that each copy is
// brought to the new head by the connect path (see trim.go). seq must
// not pass the region holding the commit point. A replica whose durable
// position was trimmed is rewritten from region seq.
func (r *Replicator) Trim(seq uint64) error {
	if len(r.log.regions) == 0 || seq <= r.log.regions[0].seq {
		return nil
	}
	if last := r.log.last(); seq > last.seq {
		return fmt.Errorf("%w: trim to region %d, the last is %d", ErrOrder, seq, last.seq)
	}
	if c := r.log.posOf(r.commit); c.Seq < seq {
		return fmt.Errorf("%w: trim to region %d past the commit point (%d, in region %d)", ErrOrder, seq, r.commit, c.Seq)
	}
	n := int(seq - r.log.regions[0].seq)
	r.log.regions = append(r.log.regions[:0:0], r.log.regions[n:]...)
	r.log.compacted = max(0, r.log.compacted-n)
	for _, p := range r.replicas {
		if p.state == StateRetry {
			continue // its next Connect comes after the trim
		}
		r.reset(p)
		p.state, p.connect = StateConnecting, true
	}
	return nil
}

// Trim trims the leader's stream before index before (whole regions: the
// new head is the first index of the oldest region kept), never past the
// commit point, and brings every copy to the new head (see trim.go). It
// returns the stream's head.
func (l *Leader) Trim(ctx context.Context, before uint64) (uint64, error) {
	var head uint64
	err := l.do(func() error {
		// Regions the stream announced are the Replicator's before any
		// of them can be dropped.
		l.observed()
		var err error
		head, err = l.s.Trim(min(before, l.rep.Committed()))
		if err != nil {
			return err
		}
		regions := l.s.Regions()
		if len(regions) == 0 {
			return nil
		}
		seq := regions[0].Seq // the oldest region kept
		dropped := false
		for s := range l.slots {
			if s < seq {
				delete(l.slots, s)
				dropped = true
			}
		}
		if !dropped {
			return nil
		}
		if err := l.rep.Trim(seq); err != nil {
			return err
		}
		for _, lk := range l.links {
			l.drop(lk)
		}
		l.count.Trims.Add(1)
		return nil
	})
	if err == nil {
		err = ctx.Err()
	}
	return head, err
}
