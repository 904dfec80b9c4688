package replicate

import (
	"slices"

	"github.com/rpstream/rpstream/replicate/quorum"
)

// OpKind is what an Op asks of the I/O loop.
type OpKind uint8

const (
	// OpWrite: rdma Write of [Off, Off+Len) of the leader's region slot
	// into the same bytes of the replica's, then a persistence Flush of
	// that range on the same Conn; report Flushed(Replica, Gen, End) when
	// the Flush completes, Failed if either fails.
	//
	// The first write of a region is its line 0 alone, [0, 64), and
	// reports End {Seq, RegionHeaderSize}: line 1 is never copied from the
	// leader (its seal word would claim entries the replica lacks), so a
	// region's replicated bytes are [0, 64) and [RegionHeaderSize, tail).
	OpWrite OpKind = iota
	// OpCommitWord: rdma AtomicWrite of Value (little-endian) at
	// CommitWordOffset of the replica's slot, then a persistence Flush of
	// those 8 bytes. No completion is reported (the word only ever
	// names bytes the replica already holds durably, so a lost word
	// costs recovery nothing); a failure is reported with Failed.
	OpCommitWord
	// OpSealWord: rdma AtomicWrite of Value at SealWordOffset of the
	// replica's slot, then a persistence Flush of it; reported like
	// OpCommitWord. Value is local/'s seal, count<<32 | end: the region is
	// complete and committed, and the replica holds all of it and the next
	// region's line 0, so its recovery may trust the count instead of
	// scanning.
	OpSealWord
)

// Op is one unit of rdma work on one replica. Ops of one replica must be
// posted in the order given, on its one Conn.
type Op struct {
	Replica ID
	Gen     uint64
	Kind    OpKind
	Slot    int
	Off     int    // OpWrite: offset within the region slot
	Len     int    // OpWrite
	End     Pos    // OpWrite: the position Flushed reports
	Value   uint64 // OpCommitWord, OpSealWord: the word
}

// Alloc asks for region Seq to be allocated in slot Slot on a replica
// (remote: Client.Region, which makes the target EnsureRegion) and for its
// line 1, [CommitWordOffset, RegionHeaderSize), to be zeroed and flushed
// to persistence there (an rdma Write from a registered zero buffer, then
// a Flush), as local/ does before a region's line 0 makes it valid: a
// reused slot's old commit and seal words must never come back to life
// under a new header. Only line 1: an Alloc may come again for a region
// the replica already holds (after a reconnect), and zeroing its words
// then only makes them older, while its entries must stay (a reused
// slot's old entries are rejected anyway: their checksums cover the old
// region's sequence number). Report Allocated(Replica, Gen, Seq) once
// that flush completed, or Failed.
type Alloc struct {
	Replica ID
	Gen     uint64
	Seq     uint64
	Slot    int
}

// Connect asks for a connection to a replica and a Grant of Epoch on it,
// then for the replica's durable position (from its region headers and
// commit words). Report Connected(Replica, Gen, pos), or Failed.
type Connect struct {
	Replica ID
	Gen     uint64
	Epoch   uint64
}

// ReplicaStatus is the health of one replica.
type ReplicaStatus struct {
	ID      ID
	Backup  bool
	State   State
	Lagging bool // not connected, or catching up
}

// Status is the health of the stream's replication.
type Status struct {
	// UnderReplicated: some replica is not connected and keeping up.
	UnderReplicated bool
	// QuorumLost: too few voters are connected for the policy; the
	// commit point cannot advance until one comes back.
	QuorumLost bool
	// Fenced: a replica refused this leader's epoch.
	Fenced   bool
	Replicas []ReplicaStatus
}

func (s Status) equal(t Status) bool {
	return s.UnderReplicated == t.UnderReplicated && s.QuorumLost == t.QuorumLost &&
		s.Fenced == t.Fenced && slices.Equal(s.Replicas, t.Replicas)
}

// Ready is the work the I/O loop must do now, and what changed. Like
// etcd-io/raft's Ready, taking one hands its work to the caller: the
// Replicator counts its writes as in flight.
type Ready struct {
	Connects []Connect
	Allocs   []Alloc
	Ops      []Op
	// Commit is the commit point; CommitAdvanced says it moved since the
	// last Ready: acknowledge the appends before it.
	Commit         uint64
	CommitAdvanced bool
	// Status is non-nil when it changed since the last Ready.
	Status *Status
}

// Empty reports whether rd holds nothing to do or report.
func (rd *Ready) Empty() bool {
	return len(rd.Connects) == 0 && len(rd.Allocs) == 0 && len(rd.Ops) == 0 &&
		!rd.CommitAdvanced && rd.Status == nil
}

// Ready returns the work to do now and hands it to the caller.
func (r *Replicator) Ready() Ready {
	rd := Ready{Commit: r.commit, CommitAdvanced: r.commit > r.reported}
	r.reported = r.commit
	for _, p := range r.replicas {
		if r.fenced {
			continue // a Connect would only be refused again
		}
		if p.connect {
			p.connect = false
			rd.Connects = append(rd.Connects, Connect{p.id, p.gen, r.epoch})
		}
		if p.state != StateCatchUp && p.state != StateReplicate {
			continue
		}
		wrote := r.writes(p, &rd)
		if wrote || p.wordAge >= r.cfg.CommitWordTicks {
			r.commitWords(p, &rd)
		}
	}
	if s := r.Status(); !s.equal(r.status) {
		r.status = s
		rd.Status = &s
	}
	r.compact()
	if checkInvariants {
		r.verify()
	}
	return rd
}

// compact bounds the leader's map of append boundaries: only those a
// replica's durable position or the commit point may still need are kept,
// so memory follows the slowest replica's backlog, not the stream's age.
func (r *Replicator) compact() {
	floor := r.log.posOf(r.commit)
	for _, p := range r.replicas {
		if p.acked.Less(floor) {
			floor = p.acked
		}
	}
	r.log.compact(floor)
}

// writes hands out p's next writes, batched up to the in-flight and size
// limits of its state, and region allocations they wait for.
func (r *Replicator) writes(p *replica, rd *Ready) bool {
	limit, chunk := r.cfg.MaxInflight, r.cfg.MaxBatch
	if p.state == StateCatchUp {
		limit, chunk = r.cfg.CatchUpInflight, r.cfg.CatchUpChunk
	}
	wrote := false
	end := r.log.end()
	for len(p.inflight) < limit && p.next.Less(end) {
		reg := r.log.region(p.next.Seq)
		if reg == nil { // before the first region
			p.next = r.log.first()
			continue
		}
		if p.next.Off >= reg.tail { // finished; a later region exists
			p.next = Pos{reg.seq + 1, 0}
			continue
		}
		if r.holdBack(p, end) {
			break // accumulates until the write in flight completes (MinBatch)
		}
		if !r.allocate(p, reg, rd) {
			break
		}
		n := min(reg.tail-p.next.Off, chunk)
		e := Pos{reg.seq, p.next.Off + n}
		if p.next.Off == 0 {
			// Line 0 alone: line 1 (commit and seal words) is the
			// replica's own, zeroed by the allocation.
			n, e = headerLine, Pos{reg.seq, RegionHeaderSize}
		}
		rd.Ops = append(rd.Ops, Op{Replica: p.id, Gen: p.gen, Kind: OpWrite, Slot: reg.slot, Off: p.next.Off, Len: n, End: e})
		p.inflight = append(p.inflight, flight{end: e})
		p.next = e
		wrote = true
	}
	// A replica that could not be handed all but LagEntries of the
	// backlog within its in-flight bound is not keeping up: it is caught
	// up in chunks until it has been handed everything.
	switch {
	case p.state == StateReplicate && r.lagging(p):
		p.state = StateCatchUp
	case p.state == StateCatchUp && p.next == end:
		p.state = StateReplicate
	}
	if p.state == StateReplicate {
		// Allocate the newest region ahead of the writes that need it.
		if last := r.log.last(); last != nil {
			r.allocate(p, last, rd)
		}
	}
	return wrote
}

// holdBack reports whether p's backlog up to end waits for p's write in
// flight (Config.MinBatch): p keeps up, the backlog is in the tail region,
// under MinBatch bytes, and too few entries to count as lagging (entries
// of a few bytes each must not turn a held-back replica into a lagging
// one).
func (r *Replicator) holdBack(p *replica, end Pos) bool {
	return p.state == StateReplicate && len(p.inflight) > 0 && p.next.Seq == end.Seq &&
		end.Off-p.next.Off < r.cfg.MinBatch && r.log.indexAt(p.next)+r.cfg.LagEntries/2 >= r.log.appended()
}

// allocate reports whether reg exists on p, asking for it if not yet.
func (r *Replicator) allocate(p *replica, reg *region, rd *Ready) bool {
	if reg.seq <= p.have {
		return true
	}
	done, asked := p.alloc[reg.seq]
	if !asked {
		if p.alloc == nil {
			p.alloc = map[uint64]bool{}
		}
		p.alloc[reg.seq] = false
		rd.Allocs = append(rd.Allocs, Alloc{p.id, p.gen, reg.seq, reg.slot})
	}
	return done
}

// wordTarget is the furthest commit word p may hold: the end of entries
// both committed and durable on p, on an append boundary.
func (r *Replicator) wordTarget(p *replica) Pos {
	t := r.log.posOf(min(r.commit, p.ackedIdx))
	if p.acked.Less(t) || t.Off < RegionHeaderSize {
		return p.published
	}
	return t
}

// commitWords publishes p's commit point: the final word of every region
// it has passed since the last one, then the word of the region it is in.
func (r *Replicator) commitWords(p *replica, rd *Ready) {
	t := r.wordTarget(p)
	if !p.published.Less(t) {
		r.sealWords(p, rd)
		return
	}
	for seq := max(p.published.Seq, r.log.first().Seq); seq <= t.Seq; seq++ {
		reg := r.log.region(seq)
		v := reg.tail
		if seq == t.Seq {
			v = t.Off
		}
		if seq == p.published.Seq && v <= p.published.Off {
			continue
		}
		rd.Ops = append(rd.Ops, Op{Replica: p.id, Gen: p.gen, Kind: OpCommitWord, Slot: reg.slot, Value: uint64(v)})
	}
	p.published, p.wordAge = t, 0
	r.sealWords(p, rd)
}

// sealWords seals, on p, the regions it holds completely and whose entries
// are all committed (so no leader will ever write them differently), once
// the next region's line 0 is durable there too.
func (r *Replicator) sealWords(p *replica, rd *Ready) {
	p.sealNext = max(p.sealNext, r.log.first().Seq)
	for {
		reg, next := r.log.region(p.sealNext), r.log.region(p.sealNext+1)
		if reg == nil || next == nil || next.first > r.commit || p.acked.Less(Pos{next.seq, RegionHeaderSize}) {
			return
		}
		v := (next.first-reg.first)<<32 | uint64(uint32(reg.tail))
		rd.Ops = append(rd.Ops, Op{Replica: p.id, Gen: p.gen, Kind: OpSealWord, Slot: reg.slot, Value: v})
		p.sealNext++
	}
}

// Status is the health of replication now.
func (r *Replicator) Status() Status {
	s := Status{Fenced: r.fenced}
	voters, live := 0, 0
	for _, p := range r.replicas {
		up := p.state == StateCatchUp || p.state == StateReplicate
		lag := p.state != StateReplicate
		s.Replicas = append(s.Replicas, ReplicaStatus{p.id, p.backup, p.state, lag})
		if lag {
			s.UnderReplicated = true
		}
		if r.voter(p) {
			voters++
			if up {
				live++
			}
		}
	}
	s.QuorumLost = live+1 < quorum.Needed(r.cfg.Policy, voters)
	return s
}

// Progress is one replica's replication position, for status reports.
type Progress struct {
	ID       ID
	State    State
	Acked    Pos    // durable up to here
	AckedIdx uint64 // entries durable there
	Next     Pos    // written up to here
	Inflight int
	LastErr  string
}

// Progress returns every replica's position, in ID order.
func (r *Replicator) Progress() []Progress {
	var ps []Progress
	for _, p := range r.replicas {
		ps = append(ps, Progress{p.id, p.state, p.acked, p.ackedIdx, p.next, len(p.inflight), p.lastErr})
	}
	return ps
}

// Appended is the number of entries appended locally.
func (r *Replicator) Appended() uint64 { return r.log.appended() }
