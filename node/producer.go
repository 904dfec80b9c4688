package node

import (
	"errors"
	"slices"
	"sync"
)

// errSeqTooOld is returned for a sequence number not remembered and not
// above a producer's floor: it may have been stored, and its position is
// forgotten.
var errSeqTooOld = errors.New("node: sequence number older than the idempotence window")

// producers remembers, per producer id, where its recent sequence numbers
// were stored in one stream (rebuilt from the entries' envelopes when the
// stream is opened: see the package comment).
// Safe for concurrent use.
type producers struct {
	window, max int

	mu    sync.Mutex
	byID  map[uint64]*producer // by producerKey
	clock uint64               // ticks per use, for least-recently-used eviction
}

// producer is one producer's state: the positions of the window highest
// sequence numbers stored, and a floor: every number stored that is not
// remembered is at most floor. A number above floor and not remembered
// was therefore never stored, which lets appends in flight at once arrive
// in any order. Its mutex is held from the lookup of a sequence number to
// the recording of its position, so that a retry arriving while the
// original is being appended waits for it instead of storing it twice.
type producer struct {
	mu     sync.Mutex
	used   uint64 // producers.clock at the last use; under producers.mu
	users  int    // calls holding or waiting for mu; under producers.mu
	stored map[uint64]uint64
	// seqs are the keys of stored in ascending order, so that forgetting
	// the lowest costs no scan of the map (which cost microseconds per
	// append with a full window). Numbers mostly arrive in order: an
	// insertion is then an append.
	seqs   []uint64
	floor  uint64
	hasFlr bool // floor is set (something was forgotten)
}

func newProducers(window, max int) *producers {
	return &producers{window: window, max: max, byID: make(map[uint64]*producer)}
}

// lock returns the state of the producer whose key (producerKey) is id,
// locked; the caller unlocks it.
func (ps *producers) lock(id uint64) *producer {
	ps.mu.Lock()
	p := ps.byID[id]
	if p == nil {
		if len(ps.byID) >= ps.max {
			ps.evictLocked()
		}
		p = &producer{stored: make(map[uint64]uint64, ps.window), seqs: make([]uint64, 0, ps.window+1)}
		ps.byID[id] = p
	}
	ps.clock++
	p.used = ps.clock
	p.users++
	ps.mu.Unlock()
	p.mu.Lock()
	return p
}

// unlock releases p, which lock returned.
func (ps *producers) unlock(p *producer) {
	p.mu.Unlock()
	ps.mu.Lock()
	p.users--
	ps.mu.Unlock()
}

// evictLocked forgets the least recently used producer that no call
// holds or waits for: one in use, forgotten, would be made anew, empty,
// by the next call of its id, which would then store again a sequence
// number the holder is storing. With every producer in use, none is
// forgotten (there are then at most as many more as calls). A linear
// scan: it runs only when MaxProducers distinct ids are in use.
func (ps *producers) evictLocked() {
	var oldest, at uint64
	found := false
	for id, p := range ps.byID {
		if p.users == 0 && (!found || p.used < at) {
			oldest, at, found = id, p.used, true
		}
	}
	if found {
		delete(ps.byID, oldest)
	}
}

// lookup says whether seq was stored (and where), or errSeqTooOld if that
// is no longer known. Called with p locked.
func (p *producer) lookup(seq uint64) (pos uint64, dup bool, err error) {
	if pos, ok := p.stored[seq]; ok {
		return pos, true, nil
	}
	if p.hasFlr && seq <= p.floor {
		return 0, false, errSeqTooOld
	}
	return 0, false, nil
}

// record remembers that seq was stored at pos, forgetting the lowest
// number remembered beyond window. Called with p locked.
func (p *producer) record(seq, pos uint64, window int) {
	if _, ok := p.stored[seq]; !ok {
		i := len(p.seqs)
		for i > 0 && p.seqs[i-1] > seq {
			i--
		}
		p.seqs = slices.Insert(p.seqs, i, seq)
	}
	p.stored[seq] = pos
	if len(p.stored) <= window {
		return
	}
	low := p.seqs[0]
	p.seqs = append(p.seqs[:0], p.seqs[1:]...)
	delete(p.stored, low)
	if !p.hasFlr || low > p.floor {
		p.floor, p.hasFlr = low, true
	}
}
