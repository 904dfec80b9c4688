package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rpstream/rpstream/local"
	"github.com/rpstream/rpstream/remote"
)

// The scrubber: every Config.ScrubEvery the node reads each copy it holds
// for another leader, and each replicated stream it leads, through up to
// the commit point, at most Config.ScrubRate bytes a second, checking
// every entry's checksum (sealed regions too, which recovery and a
// leader's Tail do not read again).
//
// A damaged entry below the commit point of a copy is repaired from the
// leader, which holds it whole (it committed it): the copy's Target is
// closed (the leader's connection with it), the copy is cut back to the
// start of the damaged region (every later region freed, the highest
// first, and that one emptied, durably), and the leader, reconnecting,
// finds the copy's durable end there and writes the rest again. The next
// pass reads the repaired region.
//
// A damaged committed entry of a stream this node leads is repaired from
// a copy that acknowledged it (repairLed): the region's bytes are read
// from the copy's slot with one-sided rdma reads (replicate.Leader.Fetch;
// a copy holds the same bytes at the same offsets), checked entry by
// entry against the region's checksums, and written over the damaged
// ones in place (local.Stream.RepairRegion). A Read that meets such an
// entry repairs it the same way before it answers. Only when no copy
// holds the entry whole is it DataLoss (and the rest of the stream stays
// available). Counts are kept for status (ScrubStats).
//
// Not done here: repair of a copy from another copy rather than the
// leader.

// ScrubStats are the scrubber's counts since the node started.
type ScrubStats struct {
	Passes  uint64 // copies read through
	Bytes   uint64 // entry bytes read
	Damaged uint64 // damaged entries found
	// Repaired counts copies cut back for their leader to rewrite, and
	// regions of streams led here rewritten from a copy.
	Repaired uint64
	// Unrepairable counts damaged entries led here that no copy within
	// reach held whole.
	Unrepairable uint64
}

type scrubCounters struct {
	passes, bytes, damaged, repaired, unrepairable atomic.Uint64
}

// ScrubStats returns the scrubber's counts.
func (s *Server) ScrubStats() ScrubStats {
	return ScrubStats{Passes: s.scrub.passes.Load(), Bytes: s.scrub.bytes.Load(), Damaged: s.scrub.damaged.Load(), Repaired: s.scrub.repaired.Load(), Unrepairable: s.scrub.unrepairable.Load()}
}

func (s *Server) scrubLoop() {
	defer s.leave()
	t := time.NewTicker(s.cfg.ScrubEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stopCtx.Done():
			return
		case <-t.C:
		}
		for _, name := range s.replicas.list() {
			if s.stopCtx.Err() != nil {
				return
			}
			at, err := s.scrubCopy(name)
			if err == nil {
				continue
			}
			if !errors.Is(err, local.ErrCorrupt) {
				s.log.Debug("scrub: copy not read", "stream", name, "err", err)
				continue
			}
			s.scrub.damaged.Add(1)
			s.log.Warn("scrub: damaged entry in a copy", "stream", name, "index", at, "err", err)
			if rerr := s.repairCopy(name, at); rerr != nil {
				s.log.Warn("scrub: cannot cut the damaged copy back", "stream", name, "err", rerr)
				continue
			}
			s.scrub.repaired.Add(1)
			s.log.Warn("scrub: damaged copy cut back before the damage; its leader rewrites it", "stream", name, "index", at)
		}
		for _, name := range s.ledReplicated() {
			if s.stopCtx.Err() != nil {
				return
			}
			st := s.holdLed(name)
			if st == nil {
				continue
			}
			at, err := s.scrubRead(st.ls.Iterator(st.ls.Head()), st.committed())
			if errors.Is(err, local.ErrCorrupt) {
				s.scrub.damaged.Add(1)
				s.log.Warn("scrub: damaged entry in a stream led here", "stream", name, "index", at, "err", err)
				s.repairLed(st, at)
			} else if err != nil {
				s.log.Debug("scrub: stream not read", "stream", name, "err", err)
			}
			st.unhold()
		}
	}
}

// ledReplicated lists the open replicated streams this node leads.
func (s *Server) ledReplicated() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for name, st := range s.streams {
		if !st.gone && st.leader != nil {
			out = append(out, name)
		}
	}
	return out
}

// holdLed returns open stream name with a reference taken if this node
// leads it replicated, else nil.
func (s *Server) holdLed(name string) *stream {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streams[name]
	if st == nil || st.gone || st.leader == nil {
		return nil
	}
	st.hold()
	return st
}

// repairOnRead repairs the damaged committed entry at of stream st, led
// here, that a read met (err), and says whether it did.
func (s *Server) repairOnRead(st *stream, at uint64, err error) bool {
	if !errors.Is(err, local.ErrCorrupt) || st.leader == nil || at >= st.committed() {
		return false
	}
	s.scrub.damaged.Add(1)
	s.log.Warn("read: damaged entry in a stream led here", "stream", st.name, "index", at, "err", err)
	return s.repairLed(st, at) == nil
}

// repairTimeout bounds one repair of a leader's damaged region.
const repairTimeout = 5 * time.Second

// repairLed repairs the region of stream st, led here, that holds the
// damaged committed entry at, from a copy that acknowledged it. It
// returns nil once the region's committed entries check again.
func (s *Server) repairLed(st *stream, at uint64) error {
	st.repairMu.Lock()
	defer st.repairMu.Unlock()
	span, err := st.ls.RegionOf(at)
	if err != nil {
		return err
	}
	upTo := min(span.End, st.committed())
	if at >= upTo {
		return fmt.Errorf("node: entry %d of %s is not committed: nothing to repair it from", at, st.name)
	}
	ctx, cancel := context.WithTimeout(s.stopCtx, repairTimeout)
	defer cancel()
	img := make([]byte, st.ls.RegionSize())
	var diff int
	from, n, err := st.leader.Fetch(ctx, span.Seq, 0, img, func(b []byte) error {
		d, err := st.ls.RepairRegion(span.Seq, b, upTo)
		diff = d
		return err
	})
	if err != nil {
		s.scrub.unrepairable.Add(1)
		s.log.Error("repair: a damaged entry led here has no good copy within reach: reads of it answer DataLoss", "stream", st.name, "index", at, "region", span.Seq, "err", err)
		return err
	}
	s.scrub.repaired.Add(1)
	s.log.Warn("repair: damaged entries led here rewritten from a copy", "stream", st.name, "index", at, "region", span.Seq, "from", from, "read", n, "bytes_changed", diff)
	return nil
}

// scrubCopy reads stream name's copy through up to its commit point. On
// damage it returns the damaged entry's index and an ErrCorrupt error.
func (s *Server) scrubCopy(name string) (uint64, error) {
	path, maxSize, err := s.replicas.copyFile(name)
	if err != nil {
		return 0, err
	}
	cp, err := local.OpenCopy(path, maxSize)
	if err != nil {
		return 0, err
	}
	defer cp.Close()
	end := cp.Committed()
	if cp.Stuck() {
		// The leader's words cover an entry that fails its check (the
		// tail region's walk stopped there): read it, to report it.
		end++
	}
	return s.scrubRead(cp.Iterator(cp.Head()), end)
}

// scrubRead reads it through up to end, checking every entry, at most
// ScrubRate bytes a second. On damage it returns the damaged entry's
// index and an ErrCorrupt error.
func (s *Server) scrubRead(it entryIterator, end uint64) (uint64, error) {
	var read int
	start := time.Now()
	for it.Pos() < end && s.stopCtx.Err() == nil {
		at := it.Pos()
		if !it.Next() {
			if err := it.Err(); err != nil {
				return at, err
			}
			break
		}
		n := len(it.Entry().Data)
		read += n
		s.scrub.bytes.Add(uint64(n))
		// Rate: sleep off what this pass is ahead of ScrubRate.
		if want := time.Duration(float64(read) / float64(s.cfg.ScrubRate) * float64(time.Second)); want > time.Since(start)+10*time.Millisecond {
			time.Sleep(want - time.Since(start))
		}
	}
	s.scrub.passes.Add(1)
	return 0, nil
}

// repairCopy cuts stream name's copy back to the start of the region
// holding entry at: its Target is closed first (the leader reconnects and
// rewrites from the copy's new end).
func (s *Server) repairCopy(name string, at uint64) error {
	s.mu.Lock()
	s.repairing[name] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.repairing, name)
		s.mu.Unlock()
	}()
	if s.hub != nil {
		if err := s.hub.Drop(name); err != nil && !errors.Is(err, remote.ErrNoStream) {
			return err
		}
	}
	path, _, err := s.replicas.copyFile(name)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	b, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("node: mapping %s: %w", path, err)
	}
	defer unix.Munmap(b)
	sc, err := local.ScanCopy(b)
	if err != nil {
		return err
	}
	k := -1
	for i, r := range sc.Regions {
		if at >= r.First {
			k = i
		}
	}
	if k < 0 {
		return fmt.Errorf("node: entry %d is in no region of the copy", at)
	}
	// Region k stays, emptied (its header valid, its words and entries
	// zeroed: a tail holding nothing), and every later one is freed, the
	// highest first, as local frees regions.
	page := os.Getpagesize()
	persist := func(off, n int) error {
		lo := off &^ (page - 1)
		if err := unix.Msync(b[lo:off+n], unix.MS_SYNC); err != nil {
			return fmt.Errorf("node: %w", err)
		}
		return nil
	}
	gone := append(append([]local.ScanRegion(nil), sc.Regions[k+1:]...), sc.Truncated...)
	for i := len(gone) - 1; i >= 0; i-- {
		off := gone[i].Offset
		clear(b[off : off+64])
		if err := persist(off, 64); err != nil {
			return err
		}
	}
	base, rs := sc.Regions[k].Offset, sc.RegionSize
	clear(b[base+64 : base+rs])
	if err := persist(base+64, rs-64); err != nil {
		return err
	}
	return nil
}
