package replicate

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/rpstream/rpstream/replicate/quorum"
)

// Errors returned by the Replicator's inputs.
var (
	// ErrConfig: Config.Validate failed.
	ErrConfig = errors.New("replicate: bad config")
	// ErrOrder: a region or an append does not follow the previous one
	// (wrong sequence number, a gap or overlap in offsets or indexes).
	ErrOrder = errors.New("replicate: out of order")
	// ErrNoRegion: an append names a region not announced by NewRegion.
	ErrNoRegion = errors.New("replicate: no such region")
	// ErrReplica: an input names a replica that is not configured, or
	// adds one twice.
	ErrReplica = errors.New("replicate: unknown replica")
	// ErrStaleEpoch: SetEpoch was given an epoch below the current one.
	ErrStaleEpoch = errors.New("replicate: stale epoch")
	// ErrFenced is what the I/O loop wraps in a Failed error when a
	// replica refused this leader's epoch (remote.ErrStaleEpoch,
	// remote.ErrNotWriter): another leader holds a newer epoch. The
	// Replicator then stops producing work until SetEpoch raises its
	// epoch.
	ErrFenced = errors.New("replicate: fenced by a newer epoch")
)

// ID names a replica (its node name).
type ID string

// State is where a replica is in its life cycle.
type State uint8

const (
	// StateConnecting: a Connect was handed out; waiting for Connected.
	StateConnecting State = iota
	// StateRetry: failed; waiting RetryTicks before reconnecting.
	StateRetry
	// StateCatchUp: connected, lagging; written in bounded chunks.
	StateCatchUp
	// StateReplicate: connected and keeping up; written in batches.
	StateReplicate
)

func (s State) String() string {
	return [...]string{"connecting", "retry", "catch-up", "replicate"}[s]
}

// RegionInfo announces a region of the leader's stream, after its header
// is written in the leader's mapping.
type RegionInfo struct {
	Seq   uint64 // region sequence number, +1 per region
	Slot  int    // slot it occupies, the same on every replica
	First uint64 // index of its first entry
	// Tail and End describe a region already partly filled (a leader
	// restarting on an existing stream): its bytes end at Tail, its
	// entries at index End. Zero for a fresh region (Tail is then
	// RegionHeaderSize).
	Tail int
	End  uint64
}

// Span is one local append: the entries [previous end, End) whose bytes
// are [Off, Off+Len) of region Seq, now in the leader's mapping.
type Span struct {
	Seq uint64
	Off int
	Len int
	End uint64
}

type flight struct {
	end  Pos
	done bool
}

type replica struct {
	id        ID
	backup    bool
	state     State
	gen       uint64 // incarnation; bumped by every failure and reconnect
	acked     Pos    // every byte before it is durable on the replica
	ackedIdx  uint64 // entries wholly before acked
	next      Pos    // written (or being written) up to here
	inflight  []flight
	have      uint64          // regions up to this sequence number exist there
	alloc     map[uint64]bool // regions after have: allocated (true) or asked for (false)
	published Pos             // commit word written up to here
	sealNext  uint64          // the next region to seal there
	wordAge   int             // ticks a commit word has waited
	backoff   int             // ticks left in StateRetry
	failures  int             // in a row, for the backoff
	connect   bool            // a Connect is due in the next Ready
	lastErr   string
}

// Replicator is the leader's replication state for one stream: a
// deterministic state machine (see the package comment). It is not safe
// for concurrent use: one goroutine, the I/O loop, owns it.
type Replicator struct {
	cfg       Config
	epoch     uint64
	fenced    bool
	log       log
	persisted uint64 // leader's own durable index
	commit    uint64
	reported  uint64 // commit as of the last Ready
	replicas  []*replica
	gens      uint64 // the last generation handed to a replica
	status    Status // as of the last Ready
}

// New returns a Replicator leading under epoch with no replicas and no
// regions.
func New(cfg Config, epoch uint64) (*Replicator, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Replicator{cfg: cfg, epoch: epoch, commit: cfg.Floor, reported: cfg.Floor}, nil
}

func (r *Replicator) replica(id ID) *replica {
	for _, p := range r.replicas {
		if p.id == id {
			return p
		}
	}
	return nil
}

// NewRegion announces the next region of the leader's stream. Replicas
// keeping up are asked to allocate it at once, so that appends do not wait
// for the allocation when they reach it.
func (r *Replicator) NewRegion(ri RegionInfo) error {
	last := r.log.last()
	tail, end := ri.Tail, ri.End
	if tail == 0 {
		tail, end = RegionHeaderSize, ri.First
	}
	switch {
	case ri.Slot < 0 || tail < RegionHeaderSize || end < ri.First:
		return fmt.Errorf("%w: region %+v", ErrOrder, ri)
	case last != nil && (ri.Seq != last.seq+1 || ri.First != r.log.appended()):
		return fmt.Errorf("%w: region %d (first %d) after region %d (end %d)", ErrOrder, ri.Seq, ri.First, last.seq, r.log.appended())
	}
	reg := &region{seq: ri.Seq, slot: ri.Slot, first: ri.First, tail: tail}
	if tail > RegionHeaderSize {
		reg.bs = []boundary{{tail, end}}
	}
	r.log.regions = append(r.log.regions, reg)
	return nil
}

// Append records a local append whose bytes are in the leader's mapping.
// It may be replicated before it is persisted locally (see the package
// comment).
func (r *Replicator) Append(s Span) error {
	last := r.log.last()
	if last == nil || s.Seq != last.seq {
		return fmt.Errorf("%w: append to region %d", ErrNoRegion, s.Seq)
	}
	if s.Off != last.tail || s.Len <= 0 || s.End <= r.log.appended() {
		return fmt.Errorf("%w: append %+v at tail %d, end %d", ErrOrder, s, last.tail, r.log.appended())
	}
	last.tail += s.Len
	last.bs = append(last.bs, boundary{last.tail, s.End})
	return nil
}

// Persisted says the leader's local stream is durable up to index.
func (r *Replicator) Persisted(index uint64) {
	if index > r.persisted {
		r.persisted = min(index, r.log.appended())
		r.updateCommit()
	}
}

// AddReplica adds a replica (backup: a backup target); a Connect for it is
// in the next Ready.
func (r *Replicator) AddReplica(id ID, backup bool) error {
	if r.replica(id) != nil {
		return fmt.Errorf("%w: %s added twice", ErrReplica, id)
	}
	// Generations come from one counter, so that a replica removed and
	// added again never accepts a completion of its earlier incarnation.
	r.gens++
	p := &replica{id: id, backup: backup, state: StateConnecting, gen: r.gens, connect: true}
	i, _ := slices.BinarySearchFunc(r.replicas, id, func(p *replica, id ID) int { return strings.Compare(string(p.id), string(id)) })
	r.replicas = slices.Insert(r.replicas, i, p)
	return nil
}

// RemoveReplica forgets a replica; its completions are ignored from now.
func (r *Replicator) RemoveReplica(id ID) error {
	i := slices.IndexFunc(r.replicas, func(p *replica) bool { return p.id == id })
	if i < 0 {
		return fmt.Errorf("%w: %s", ErrReplica, id)
	}
	r.replicas = slices.Delete(r.replicas, i, i+1)
	r.updateCommit()
	return nil
}

// Restarted says a replica's process restarted (membership saw it come
// back): whatever was in flight is void, and it is reconnected at once.
func (r *Replicator) Restarted(id ID) error {
	p := r.replica(id)
	if p == nil {
		return fmt.Errorf("%w: %s", ErrReplica, id)
	}
	r.reset(p)
	p.state, p.connect = StateConnecting, true
	return nil
}

// Connected answers a Connect of generation gen: the replica is granted
// the epoch and holds every byte before durable (read from its region
// headers, commit and seal words, or a scan; Pos{} for an empty replica;
// less than it holds is always safe). Writing resumes from there. A stale
// gen is ignored.
//
// A replica may hold more than the leader: bytes a crashed leader never
// persisted, so never acknowledged. They are overwritten from the
// leader's end, but entries of them beyond what is overwritten would stay
// valid for the replica's recovery: before reporting such a replica, the
// I/O loop must cut it back (zero its bytes from the leader's end to its
// own in that region and free its regions after the leader's last), and
// report the leader's end. The Replicator clamps durable to its end
// either way. Before the leader's end, a replica may hold bytes of another
// epoch where this leader appended others: the I/O loop reports no more
// than the replica can hold of this leader's (Leader.startConnect).
func (r *Replicator) Connected(id ID, gen uint64, durable Pos) error {
	p := r.replica(id)
	if p == nil {
		return fmt.Errorf("%w: %s", ErrReplica, id)
	}
	if gen != p.gen || p.state != StateConnecting {
		return nil
	}
	if durable.Off < RegionHeaderSize {
		// Without line 0 the region is not there: allocate it (and zero
		// its line 1) again.
		durable.Off = 0
	}
	have := durable.Seq // its region durable.Seq exists if it holds any of it
	if durable.Off == 0 && have > 0 {
		have--
	}
	if first := r.log.first(); durable.Less(first) {
		durable = first
	}
	if end := r.log.end(); end.Less(durable) {
		// Bytes past the leader's end were never acknowledged (the
		// leader's persist is required): they will be overwritten.
		durable = end
	}
	// A word at the header's end says "no entry committed here", as a
	// freshly allocated region's zeroed word does.
	p.acked, p.next, p.published = durable, durable, Pos{durable.Seq, RegionHeaderSize}
	p.ackedIdx = r.log.indexAt(durable)
	p.have, p.alloc = have, nil
	p.sealNext = durable.Seq // earlier regions stay as they are (recovery scans what is not sealed)
	p.state = StateReplicate
	if r.lagging(p) {
		p.state = StateCatchUp
	}
	r.updateCommit()
	return nil
}

// Allocated says region seq now exists on the replica.
func (r *Replicator) Allocated(id ID, gen uint64, seq uint64) error {
	p := r.replica(id)
	if p == nil {
		return fmt.Errorf("%w: %s", ErrReplica, id)
	}
	if gen == p.gen && seq > p.have {
		if p.alloc == nil {
			p.alloc = map[uint64]bool{}
		}
		p.alloc[seq] = true
	}
	return nil
}

// Flushed says the write of generation gen ending at end was written and
// flushed to persistence on the replica. Completions may come in any
// order; the replica's durable position advances over the contiguous run
// of completed writes.
func (r *Replicator) Flushed(id ID, gen uint64, end Pos) error {
	p := r.replica(id)
	if p == nil {
		return fmt.Errorf("%w: %s", ErrReplica, id)
	}
	if gen != p.gen {
		return nil
	}
	i := slices.IndexFunc(p.inflight, func(f flight) bool { return f.end == end })
	if i < 0 {
		return fmt.Errorf("%w: no write to %s ends at %v", ErrOrder, id, end)
	}
	p.inflight[i].done = true
	n := 0
	for n < len(p.inflight) && p.inflight[n].done {
		p.acked = p.inflight[n].end
		n++
	}
	if n > 0 {
		p.inflight = slices.Delete(p.inflight, 0, n)
		p.ackedIdx = r.log.indexAt(p.acked)
		p.failures = 0
		r.updateCommit()
	}
	return nil
}

// Failed says an operation of generation gen on the replica failed (its
// connection is poisoned, a region could not be allocated...). Whatever
// was in flight is void; after a backoff of ticks a Connect is handed out
// and writing resumes from the replica's durable position. An err wrapping
// ErrFenced stops the Replicator.
func (r *Replicator) Failed(id ID, gen uint64, err error) error {
	p := r.replica(id)
	if p == nil {
		return fmt.Errorf("%w: %s", ErrReplica, id)
	}
	if gen != p.gen {
		return nil
	}
	if errors.Is(err, ErrFenced) {
		r.fenced = true
	}
	r.reset(p)
	p.state = StateRetry
	p.backoff = min(r.cfg.RetryTicks<<min(p.failures, 16), r.cfg.MaxRetryTicks)
	p.failures++
	if err != nil {
		p.lastErr = err.Error()
	}
	return nil
}

// reset voids what is in flight to p.
func (r *Replicator) reset(p *replica) {
	r.gens++
	p.gen = r.gens
	p.inflight = nil
	p.next = p.acked
	p.connect = false
	for s, ok := range p.alloc {
		if !ok {
			delete(p.alloc, s)
		}
	}
}

// SetEpoch moves the leader to a newer epoch (it was re-elected): every
// replica is reconnected and granted it. A lower epoch is refused.
func (r *Replicator) SetEpoch(epoch uint64) error {
	if epoch < r.epoch {
		return fmt.Errorf("%w: %d < %d", ErrStaleEpoch, epoch, r.epoch)
	}
	if epoch == r.epoch {
		return nil
	}
	r.epoch, r.fenced = epoch, false
	for _, p := range r.replicas {
		r.reset(p)
		p.state, p.connect = StateConnecting, true
	}
	return nil
}

// Tick advances logical time: backoffs run down and commit words waiting
// for a data write to ride on age.
func (r *Replicator) Tick() { r.TickN(1) }

// TickN advances logical time by n ticks at once: what n calls of Tick
// would do.
func (r *Replicator) TickN(n int) {
	for _, p := range r.replicas {
		switch p.state {
		case StateRetry:
			if p.backoff -= n; p.backoff <= 0 {
				r.gens++
				p.gen = r.gens
				p.state, p.connect = StateConnecting, true
			}
		case StateCatchUp, StateReplicate:
			if p.published.Less(r.wordTarget(p)) {
				p.wordAge += n
			}
		}
	}
}

// Ticking says whether Tick would change anything now: a replica waits out
// a retry backoff, or its published commit word lags. Otherwise the I/O
// loop need not tick until an event changes that: a node leads thousands
// of idle streams, and each ticking 100 times a second kept two cores busy.
func (r *Replicator) Ticking() bool { return r.TicksToNext() > 0 }

// TicksToNext is how many ticks can pass before ticking changes anything
// but counters (a backoff ends, a lagging commit word is due), or 0 if
// no tick would ever: the I/O loop then sleeps that long and calls TickN
// once. When thousands of streams wait out a retry backoff (a peer node
// lost), a tick every Tick for each of them was the cost of the wait.
func (r *Replicator) TicksToNext() int {
	next := 0
	for _, p := range r.replicas {
		k := 0
		switch p.state {
		case StateRetry:
			k = max(p.backoff, 1)
		case StateCatchUp, StateReplicate:
			if p.published.Less(r.wordTarget(p)) {
				k = max(r.cfg.CommitWordTicks-p.wordAge, 1)
			}
		}
		if k > 0 && (next == 0 || k < next) {
			next = k
		}
	}
	return next
}

// voter reports whether p's acknowledgements count.
func (r *Replicator) voter(p *replica) bool { return !p.backup || r.cfg.BackupsVote }

func (r *Replicator) updateCommit() {
	var stack [8]uint64
	vs := stack[:0]
	for _, p := range r.replicas {
		if r.voter(p) {
			vs = append(vs, p.ackedIdx)
		}
	}
	c := quorum.Committed(r.cfg.Policy, r.persisted, vs)
	if c > r.commit && c > r.cfg.EpochStart {
		r.commit = c
	}
}

// lagging reports whether more than LagEntries entries wait to be written
// to p: it is not keeping up within its in-flight bound.
func (r *Replicator) lagging(p *replica) bool {
	return r.log.indexAt(p.next)+r.cfg.LagEntries < r.log.appended()
}

// Committed is the commit point: entries before it are acknowledged.
func (r *Replicator) Committed() uint64 { return r.commit }

// Epoch is the current epoch.
func (r *Replicator) Epoch() uint64 { return r.epoch }
