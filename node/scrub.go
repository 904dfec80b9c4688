package node

import (
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
// for another leader through, up to the copy's commit point, at most
// Config.ScrubRate bytes a second, checking every entry's checksum (its
// sealed regions too, which recovery and a leader's Tail do not read
// again). A damaged entry below the commit point is repaired from the
// leader, which holds it whole (it committed it): the copy's Target is
// closed (the leader's connection with it), the copy is cut back to the
// start of the damaged region (every later region freed, the highest
// first, and that one emptied, durably), and the leader, reconnecting, finds the copy's
// durable end there and writes the rest again. The next pass reads the
// repaired region. Counts are kept for status (ScrubStats).
//
// Not done here: a leader's own damaged entries (a read of one answers
// DataLoss; when the leader restarts, a takeover prefers a copy's longer
// log to its own truncated one, and damage in its tail region is then
// repaired by that copy's leadership), and repair of a copy from another
// copy rather than the leader.

// ScrubStats are the scrubber's counts since the node started.
type ScrubStats struct {
	Passes   uint64 // copies read through
	Bytes    uint64 // entry bytes read
	Damaged  uint64 // damaged entries found
	Repaired uint64 // copies cut back for their leader to rewrite
}

type scrubCounters struct {
	passes, bytes, damaged, repaired atomic.Uint64
}

// ScrubStats returns the scrubber's counts.
func (s *Server) ScrubStats() ScrubStats {
	return ScrubStats{Passes: s.scrub.passes.Load(), Bytes: s.scrub.bytes.Load(), Damaged: s.scrub.damaged.Load(), Repaired: s.scrub.repaired.Load()}
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
	}
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
	it := cp.Iterator(cp.Head())
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
