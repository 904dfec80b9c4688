package local

import (
	"context"
	"fmt"
)

// Reservation is space for one entry, handed out in index order by Reserve.
// The caller fills Bytes and then calls Publish exactly once. Until it is
// published, no later entry can be committed: publish promptly.
type Reservation struct {
	s     *Stream
	Index uint64 // the entry's position in the stream
	r     *region
	off   int // entry offset within the region
	n     int
	buf   []byte // payload space in the mapping
	done  bool
}

// Bytes is the payload space, len n, inside the mapped file. It may be
// written until Publish; it must not be used after.
func (v *Reservation) Bytes() []byte { return v.buf }

// Reserve hands out space for an entry of n payload bytes at the tail,
// allocating a new region when the tail region is full (or the stream has
// none yet). It does not wait
// for earlier reservations.
func (s *Stream) Reserve(n int) (*Reservation, error) {
	v := &Reservation{}
	if err := s.reserve(n, v); err != nil {
		return nil, err
	}
	return v, nil
}

func (s *Stream) reserve(n int, v *Reservation) error {
	if err := s.writable(); err != nil {
		return err
	}
	if n < 0 || n > MaxEntrySize(s.sb.regionSize) {
		return fmt.Errorf("%w: %d bytes, at most %d in regions of %d", ErrTooLarge, n, MaxEntrySize(s.sb.regionSize), s.sb.regionSize)
	}
	size := entrySize(n)
	s.mu.Lock()
	if s.next-s.committed.Load() >= MaxInFlight {
		s.mu.Unlock()
		return ErrTooManyReservations
	}
	if len(s.regions) == 0 {
		if _, err := s.firstRegionLocked(); err != nil {
			s.mu.Unlock()
			return err
		}
	}
	if len(s.regions) > 1 || s.tailOff+size > s.sb.regionSize/prepareFrom {
		s.armPreparerLocked()
	}
	tail := s.regions[len(s.regions)-1]
	if s.tailOff+size > s.sb.regionSize {
		r, err := s.allocRegionLocked(s.next)
		if err != nil {
			s.mu.Unlock()
			return err
		}
		tail.end.Store(int64(s.tailOff))
		tail.next.Store(r)
		s.regions = append(s.regions, r)
		s.tailOff = RegionHeaderSize
		tail = r
	}
	*v = Reservation{s: s, Index: s.next, r: tail, off: s.tailOff, n: n}
	s.tailOff += size
	s.next++
	s.mu.Unlock()
	b := s.regionBytes(tail)
	v.buf = b[v.off+EntryHeaderSize : v.off+EntryHeaderSize+n : v.off+EntryHeaderSize+n]
	return nil
}

// Publish seals the entry with its header and commits it in index order:
// it becomes visible to readers once every earlier entry is published too.
// It does not wait for durability: see Sync. It returns the entry's index.
func (v *Reservation) Publish() (uint64, error) {
	if v.done {
		return v.Index, fmt.Errorf("local: reservation %d published twice", v.Index)
	}
	v.done = true
	s := v.s
	if s.closed.Load() {
		return v.Index, ErrClosed
	}
	writeEntryHeader(s.regionBytes(v.r), v.r.key, v.off, v.n)
	s.commit(v.Index, loc{v.r, v.off + entrySize(v.n)})
	return v.Index, nil
}

// commit marks index i published and advances the committed position over
// the contiguous run of published entries.
func (s *Stream) commit(i uint64, end loc) {
	s.pub.Lock()
	c := s.committed.Load()
	if i != c {
		*s.ringSlotLocked(i, c) = ringSlot{done: true, end: end}
		s.pub.Unlock()
		return
	}
	if s.obs != nil {
		c = s.commitObservedLocked(i, end)
		s.committed.Store(c)
		s.pub.Unlock()
		s.live.publish(c)
		s.notify.wake()
		return
	}
	c++
	for {
		sl := &s.ring[c&uint64(len(s.ring)-1)]
		if !sl.done {
			break
		}
		end = sl.end
		*sl = ringSlot{}
		c++
	}
	s.commitLoc = end
	s.committed.Store(c)
	s.pub.Unlock()
	s.live.publish(c)
	s.notify.wake()
}

// Append writes p as one entry and returns its index once the entry is
// durable (Sync). Concurrent appenders share persists (group commit).
func (s *Stream) Append(p []byte) (uint64, error) {
	var v Reservation
	if err := s.reserve(len(p), &v); err != nil {
		return 0, err
	}
	copy(v.buf, p)
	i, err := v.Publish()
	if err != nil {
		return i, err
	}
	return i, s.Sync(i)
}

// AppendNoSync writes p as one entry and commits it without waiting for it
// to be durable: a later Sync of it or of any later index makes it so.
func (s *Stream) AppendNoSync(p []byte) (uint64, error) {
	var v Reservation
	if err := s.reserve(len(p), &v); err != nil {
		return 0, err
	}
	copy(v.buf, p)
	return v.Publish()
}

// AppendNoSyncPrefixed is AppendNoSync of the entry prefix followed by p,
// copied once into the mapping without assembling it first.
func (s *Stream) AppendNoSyncPrefixed(prefix, p []byte) (uint64, error) {
	var v Reservation
	if err := s.reserve(len(prefix)+len(p), &v); err != nil {
		return 0, err
	}
	copy(v.buf[copy(v.buf, prefix):], p)
	return v.Publish()
}

// Sync returns once entry i and every entry before it are durable. It
// waits for i to be committed first (earlier reservations to be
// published). Goroutines syncing at the same time share one persist: one
// of them persists everything committed so far while the others wait, and
// all of them are woken at once when it is done (group commit).
func (s *Stream) Sync(i uint64) error {
	if s.persisted.Load() > i {
		return nil
	}
	if s.committed.Load() <= i {
		if err := s.waitCommitted(context.Background(), i); err != nil {
			return err
		}
	}
	for s.persisted.Load() <= i {
		if e := s.failed.Load(); e != nil {
			return *e
		}
		// Take the round's channel before trying to lead: a leader
		// that holds persistMu now closes this channel (or a later
		// one) when it is done.
		s.syncWaiters.Add(1)
		ch := s.roundCh.Load()
		if s.persisted.Load() > i {
			s.syncWaiters.Add(-1)
			return nil
		}
		if s.persistMu.TryLock() {
			s.syncWaiters.Add(-1)
			err := s.persistCommittedLeader()
			s.persistMu.Unlock()
			s.endRound()
			if err != nil {
				return err
			}
			continue
		}
		<-*ch
		s.syncWaiters.Add(-1)
	}
	return nil
}

// endRound wakes everyone waiting for the round that just ended. The
// channel is replaced only when someone waits, so a lone writer does not
// allocate. It runs after persistMu is released: a waiter that failed to
// take persistMu counted itself before trying, so the leader that held it
// sees the count here and closes its channel (or a later leader already
// has). Checking before the release would miss a waiter arriving between
// the check and the release, which then sleeps forever.
func (s *Stream) endRound() {
	if s.syncWaiters.Load() == 0 {
		return
	}
	next := make(chan struct{})
	old := s.roundCh.Swap(&next)
	close(*old)
}

// syncAll makes every committed entry durable.
func (s *Stream) syncAll() error {
	s.persistMu.Lock()
	err := s.persistCommittedLeader()
	s.persistMu.Unlock()
	s.endRound()
	return err
}

// persistCommittedLeader persists everything from the persisted position
// to the committed position. Only the goroutine holding s.persistMu calls
// it; it alone touches persistLoc and seals regions.
func (s *Stream) persistCommittedLeader() error {
	if e := s.failed.Load(); e != nil {
		return *e
	}
	s.pub.Lock()
	target, end, obs := s.committed.Load(), s.commitLoc, s.obs
	s.pub.Unlock()
	persisted := s.persisted.Load()
	if target <= persisted && end.r == s.persistLoc.r {
		// Nothing to persist, and no region to seal: the commit point
		// moves into a region without entries only by StartEpoch (or
		// the first region's allocation, which moves this one too).
		return nil
	}
	from := s.persistLoc
	for r := from.r; ; r = r.next.Load() {
		lo := RegionHeaderSize
		if r == from.r {
			lo = from.off
		}
		hi := end.off
		if r != end.r {
			hi = int(r.end.Load())
		}
		if hi > lo {
			if err := s.mem.Persist(r.base+lo, hi-lo); err != nil {
				return s.fail(err)
			}
		}
		if r == end.r {
			break
		}
		// Every entry of r is durable now, and r has a successor.
		if err := s.sealRegion(r); err != nil {
			return err
		}
	}
	s.persistLoc = end
	if target <= persisted {
		return nil
	}
	s.persisted.Store(target)
	if obs != nil {
		obs.Persisted(target)
	}
	return nil
}

// waitCommitted blocks until entry i is committed.
func (s *Stream) waitCommitted(ctx context.Context, i uint64) error {
	for {
		ch := s.notify.arm()
		if s.committed.Load() > i {
			s.notify.disarm()
			return nil
		}
		err := s.notify.wait(ctx, ch)
		if err != nil {
			return err
		}
	}
}
