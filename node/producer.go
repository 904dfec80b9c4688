package node

import (
	"errors"
	"sync"
)

// errSeqTooOld is returned for a sequence number below a producer's
// remembered window: it may have been stored, and its position is
// forgotten.
var errSeqTooOld = errors.New("node: sequence number older than the idempotence window")

// producers remembers, per producer id, the positions of its last window
// sequence numbers stored in one stream (in memory only: see the package
// comment). Safe for concurrent use.
type producers struct {
	window, max int

	mu    sync.Mutex
	byID  map[string]*producer
	clock uint64 // ticks per use, for least-recently-used eviction
}

// producer is one producer's state. Its mutex is held from the lookup of a
// sequence number to the recording of its position, so that a retry
// arriving while the original is being appended waits for it instead of
// storing a second copy.
type producer struct {
	mu      sync.Mutex
	used    uint64 // producers.clock at the last use; under producers.mu
	seqs    []uint64
	pos     []uint64 // pos[k] is the position of seqs[k], ring of window
	n       int      // entries filled, up to window
	k       int      // next slot to fill
	highest uint64
}

func newProducers(window, max int) *producers {
	return &producers{window: window, max: max, byID: make(map[string]*producer)}
}

// lock returns producer id's state, locked; the caller unlocks it.
func (ps *producers) lock(id string) *producer {
	ps.mu.Lock()
	p := ps.byID[id]
	if p == nil {
		if len(ps.byID) >= ps.max {
			ps.evictLocked()
		}
		p = &producer{seqs: make([]uint64, ps.window), pos: make([]uint64, ps.window)}
		ps.byID[id] = p
	}
	ps.clock++
	p.used = ps.clock
	ps.mu.Unlock()
	p.mu.Lock()
	return p
}

// evictLocked forgets the least recently used producer. A linear scan:
// it runs only when MaxProducers distinct ids are in use.
func (ps *producers) evictLocked() {
	var oldest string
	var at uint64
	for id, p := range ps.byID {
		if oldest == "" || p.used < at {
			oldest, at = id, p.used
		}
	}
	delete(ps.byID, oldest)
}

// lookup says whether seq was stored (and where); errSeqTooOld if it is
// below the window. Called with p locked.
func (p *producer) lookup(seq uint64) (pos uint64, dup bool, err error) {
	if p.n == 0 || seq > p.highest {
		return 0, false, nil
	}
	for j := 0; j < p.n; j++ {
		if p.seqs[j] == seq {
			return p.pos[j], true, nil
		}
	}
	// Not remembered and not above the highest: either below the window,
	// or skipped (sequence numbers may have gaps) and now out of order.
	oldest := p.highest
	for j := 0; j < p.n; j++ {
		oldest = min(oldest, p.seqs[j])
	}
	if seq < oldest {
		return 0, false, errSeqTooOld
	}
	return 0, false, errSeqOrder
}

// errSeqOrder is returned for a sequence number not stored but lower than
// the highest stored: numbers must increase.
var errSeqOrder = errors.New("node: sequence number lower than one already stored")

// record remembers that seq was stored at pos. Called with p locked.
func (p *producer) record(seq, pos uint64) {
	p.seqs[p.k], p.pos[p.k] = seq, pos
	p.k = (p.k + 1) % len(p.seqs)
	if p.n < len(p.seqs) {
		p.n++
	}
	p.highest = seq
}
