package local

import (
	"sort"

	"github.com/rpstream/rpstream/pmem"
)

// The preparer keeps spare slots allocated (blocks reserved, file grown)
// and, on memory-speed media, prefaulted, so that an append that fills the
// tail region does not wait for a region's worth of page faults (about 2 ms
// per 4 MiB on our machines). It is one goroutine owned by the Stream,
// started by Open/Create on a real file and stopped by Close. Its only
// shared state is s.spare and the slot lists, under s.mu. A spare slot has
// no valid header, so a crash simply leaves it free.

// startPreparer makes the stream eligible for a preparer; the goroutine
// starts with the first reservation of this opening that reaches past a
// prepareFrom-th of the tail region, or finds more than one region
// (armPreparerLocked), so that a stream nobody writes to, or that holds a
// few small entries, holds no spare region and no goroutine: a node holds
// thousands of such streams, and a prefaulted spare is a region of memory
// each (4 MiB by default on tmpfs) that Close must give back, most of the
// cost of closing one (about 1.5 ms of 2 here).
func (s *Stream) startPreparer() {
	if _, ok := s.mem.(*pmem.File); !ok || s.readOnly || s.spareTarget == 0 {
		return // simulated memories stay single-threaded and reproducible
	}
	s.mu.Lock()
	s.prepEligible = true
	s.mu.Unlock()
}

// armPreparerLocked starts the preparer if the stream is eligible and it
// has not started. s.mu is held. Not before the stream has a region: a
// file with no region holds at most the first region's slot (recovery
// counts on it).
func (s *Stream) armPreparerLocked() {
	if !s.prepEligible || s.prepStop != nil || len(s.regions) == 0 {
		return
	}
	s.prepWake = make(chan struct{}, 1)
	s.prepStop = make(chan struct{})
	s.prepDone = make(chan struct{})
	go s.prepareLoop()
	s.wakePreparer()
}

// prepareFrom: the preparer starts once the tail region is used beyond a
// prepareFrom-th of it. A stream written fast passes that at once and
// still has three quarters of the region to fill while its first spare is
// prepared (2 to 5 ms for 4 MiB here).
const prepareFrom = 4

func (s *Stream) wakePreparer() {
	if s.prepWake != nil {
		select {
		case s.prepWake <- struct{}{}:
		default:
		}
	}
}

// stopPreparer stops the preparer, if it started, and returns the spare
// slots' storage to the file system: a closed stream holds no spare.
func (s *Stream) stopPreparer() {
	s.mu.Lock()
	s.prepEligible = false
	stop, done := s.prepStop, s.prepDone
	s.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
	s.mu.Lock()
	spares := s.spares
	s.spares = nil
	s.free = append(s.free, spares...)
	sort.Ints(s.free)
	s.mu.Unlock()
	if d, ok := s.mem.(pmem.Discarder); ok {
		for _, k := range spares {
			// A spare has no valid header: freeing its blocks loses
			// nothing, and a later use allocates them again.
			_ = d.Discard(s.slotBase(k), s.sb.regionSize)
		}
	}
}

func (s *Stream) prepareLoop() {
	defer close(s.prepDone)
	for {
		select {
		case <-s.prepStop:
			return
		case <-s.prepWake:
		}
		for {
			s.mu.Lock()
			if len(s.spares) >= s.spareTarget {
				s.mu.Unlock()
				break
			}
			s.mu.Unlock()
			if s.prepareOne() != nil {
				// An append will try again and report the error (a
				// full disk, say) itself.
				break
			}
		}
	}
}

// prepareOne allocates (and on memory-speed media prefaults) one more
// spare slot.
func (s *Stream) prepareOne() error {
	s.mu.Lock()
	slot := s.takeSlotLocked()
	s.mu.Unlock()
	err := s.mem.Allocate(s.slotBase(slot), s.sb.regionSize)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.free = append(s.free, slot)
		sort.Ints(s.free)
		return wrapAlloc(err)
	}
	s.spares = append(s.spares, slot)
	return nil
}

// Prepare allocates regions ahead of need, now, until n are ready beyond
// the tail (Options.SpareRegions says how many the background preparer
// keeps ready). Appends into prepared
// regions run at memory speed: without it, the first touch of every page
// of a new region is a page fault (about 2 µs a page on our machines),
// paid by the appender that fills the tail unless the background preparer
// got there first. A stream with no region yet gets its first region
// allocated, then n spares. A full disk gives ErrNoSpace; what was
// prepared stays.
func (s *Stream) Prepare(n int) error {
	if err := s.writable(); err != nil {
		return err
	}
	s.mu.Lock()
	if len(s.regions) == 0 {
		if _, err := s.firstRegionLocked(); err != nil {
			s.mu.Unlock()
			return err
		}
	}
	s.mu.Unlock()
	for {
		s.mu.Lock()
		have := len(s.spares)
		s.mu.Unlock()
		if have >= n {
			return nil
		}
		if err := s.prepareOne(); err != nil {
			return err
		}
	}
}

// takeSlotLocked removes a slot from the free list or adds one at the end.
func (s *Stream) takeSlotLocked() int {
	if len(s.free) > 0 {
		k := s.free[0]
		s.free = s.free[1:]
		return k
	}
	s.nslots++
	return s.nslots - 1
}
