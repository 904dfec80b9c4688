package replicate

import (
	"context"
	"fmt"
	"slices"

	"github.com/rpstream/rpstream/rdma"
)

// Trim on a replicated stream.
//
// The leader trims its own stream first (local.Stream.Trim: the head is
// recorded durably in its superblock, then the regions below it are freed
// and their slots may be reused at once). A copy must follow before any
// reused slot's new region reaches it, or it would hold the new region
// next to older ones below it: the I/O loop does it in the same step, on
// each connected replica's Conn, ahead of every later write there (one
// Conn's operations apply in order): the leader's superblock, trim
// record included, written and flushed first, so that the copy opens at
// the new head whatever else it holds; then line 0 of each freed region
// zeroed, oldest first, and flushed, as local/ frees regions. A crash of
// the replica at any point leaves it opening at its old head or the new
// one, with a contiguous run of regions reaching it.
//
// A replica not connected, catching up from before the new head, or
// whose connection lacks a freed slot's descriptor, is sent through the
// connect path instead, which does the same (the superblock first; its
// remote Tail frees the regions before the copy's head, oldest first;
// the cut-back zeroes what else the leader does not hold) and gives the
// freed slots' storage back (remote.Client.Discard).

// opTrim marks the flush that ends a trim's writes to a replica: its
// completion reports only a failure.
const opTrim OpKind = 255

// Trim drops the leader's regions before region seq from the
// Replicator's log (the leader's stream freed them). Replicas that are
// connected and hold every byte before region seq durably keep their
// connection and are returned: the I/O loop must bring their copies to
// the new head on it before anything else goes there (see trim.go). The
// others, but those waiting out a backoff, are reconnected; one whose
// durable position was trimmed is rewritten from region seq. seq must
// not pass the region holding the commit point.
func (r *Replicator) Trim(seq uint64) (kept []ID, err error) {
	if len(r.log.regions) == 0 || seq <= r.log.regions[0].seq {
		return nil, nil
	}
	if last := r.log.last(); seq > last.seq {
		return nil, fmt.Errorf("%w: trim to region %d, the last is %d", ErrOrder, seq, last.seq)
	}
	if c := r.log.posOf(r.commit); c.Seq < seq {
		return nil, fmt.Errorf("%w: trim to region %d past the commit point (%d, in region %d)", ErrOrder, seq, r.commit, c.Seq)
	}
	n := int(seq - r.log.regions[0].seq)
	r.log.regions = append(r.log.regions[:0:0], r.log.regions[n:]...)
	r.log.compacted = max(0, r.log.compacted-n)
	for _, p := range r.replicas {
		switch {
		case p.state == StateRetry:
			// Its next Connect comes after the trim.
		case (p.state == StateReplicate || p.state == StateCatchUp) && p.acked.Seq >= seq:
			kept = append(kept, p.id)
		default:
			r.reset(p)
			p.state, p.connect = StateConnecting, true
		}
	}
	return kept, nil
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
		var freed []uint64
		for s := range l.slots {
			if s < seq {
				freed = append(freed, s)
			}
		}
		if len(freed) == 0 {
			return nil
		}
		slices.Sort(freed)
		slots := make([]int, len(freed))
		for i, s := range freed {
			slots[i] = l.slots[s]
			delete(l.slots, s)
		}
		kept, err := l.rep.Trim(seq)
		if err != nil {
			return err
		}
		for _, lk := range l.links {
			if !slices.Contains(kept, lk.addr.ID) {
				l.drop(lk) // reconnected by the Replicator
			} else if !l.trimCopy(lk, slots) {
				l.rep.Restarted(lk.addr.ID)
				l.drop(lk)
			}
		}
		l.count.Trims.Add(1)
		return nil
	})
	if err == nil {
		err = ctx.Err()
	}
	return head, err
}

// trimCopy posts, on lk's connection, the leader's superblock and the
// zeroing of line 0 of each freed slot (oldest region first), each
// flushed to persistence; the last flush's completion reports a failure.
// False if the connection lacks a descriptor it needs.
func (l *Leader) trimCopy(lk *link, slots []int) bool {
	rc := lk.c
	if rc == nil || rc.hdr.Len == 0 {
		return false
	}
	for _, k := range slots {
		if _, ok := rc.descs[k]; !ok {
			return false
		}
	}
	first := rc.conn.Write(rc.hdr, 0, l.sbMR, 0, superblockCopy)
	fl := rc.conn.Flush(rc.hdr, 0, superblockCopy, rdma.Persistence)
	for _, k := range slots {
		d := rc.descs[k]
		rc.conn.Write(d, 0, l.zeroMR, 0, 64)
		fl = rc.conn.Flush(d, 0, 64, rdma.Persistence)
	}
	l.count.Writes.Add(uint64(1 + len(slots)))
	l.count.Flushes.Add(uint64(1 + len(slots)))
	fl.Notify(l.cq, &opCtx{id: lk.addr.ID, gen: lk.gen, ops: []postedOp{{first: first, flush: fl, kind: opTrim}}})
	for _, k := range slots {
		delete(rc.descs, k) // void once given back; an Alloc asks again
	}
	if l.cfg.Discard {
		// The storage back, after the zeroing (the request follows the
		// writes on the Conn); allocations on this connection wait.
		id, gen, epoch := lk.addr.ID, lk.gen, l.rep.Epoch()
		rc.ctl.Add(1)
		rc.discards.add()
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			ctx, cancel := context.WithTimeout(l.ctx, l.cfg.ControlTimeout)
			_, err := rc.client.Discard(ctx, epoch, slots)
			cancel()
			rc.discards.done()
			rc.ctl.Done()
			if err != nil {
				l.send(func() {
					if lk := l.links[id]; lk != nil && lk.gen == gen && lk.c == rc {
						l.fail(lk, gen, fmt.Errorf("give back trimmed slots %v: %w", slots, fenceErr(err)))
					}
				})
			}
		}()
	}
	return true
}
