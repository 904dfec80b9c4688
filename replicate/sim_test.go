package replicate

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/rpstream/rpstream/replicate/quorum"
)

// TestSimulation drives the Replicator with random, seeded schedules of
// appends, persists, out-of-order completions, failures, reconnects and
// ticks against simulated replicas that keep every byte written to them,
// and checks the package invariants after every step; then it heals every
// replica and checks that all of them converge on the leader's bytes and
// that everything appended is committed.
func TestSimulation(t *testing.T) {
	seeds := 200
	if testing.Short() {
		seeds = 50
	}
	for seed := range uint64(seeds) {
		for _, p := range []quorum.Policy{quorum.Majority, quorum.All, quorum.LeaderOnly} {
			if err := simulate(seed, p); err != nil {
				t.Fatalf("seed %d policy %v: %v", seed, p, err)
			}
		}
	}
	if simSeals == 0 {
		t.Error("no region was ever sealed on a replica")
	}
}

const simRegionSize = 1024

var simSeals int // seal words executed, across runs: the path must run

type simReplica struct {
	id       ID
	gen      uint64 // generation of its live connection, 0 when down
	mem      map[int][]byte
	words    map[int]uint64 // by slot
	alloc    map[uint64]bool
	durable  Pos // contiguous durable prefix, never lost
	cursor   Pos // where the next write of this connection must start
	queue    []Op
	done     []Pos // executed, not reported
	pending  []Alloc
	connects []Connect
	seals    int
}

type sim struct {
	rng       *rand.Rand
	r         *Replicator
	policy    quorum.Policy
	leader    map[int][]byte
	reps      []*simReplica
	persisted uint64
	commit    uint64
	bounds    map[Pos]bool // every append's end, kept here as the log compacts its own
}

func slotOf(seq uint64) int { return int(seq) + 2 }

func simulate(seed uint64, policy quorum.Policy) error {
	rng := rand.New(rand.NewPCG(seed, uint64(policy)))
	r, err := New(Config{Policy: policy, MaxInflight: 1 + rng.IntN(3), MaxBatch: 8 * (1 + rng.IntN(40)),
		CatchUpChunk: 64 * (1 + rng.IntN(8)), LagEntries: uint64(1 + rng.IntN(10)), CommitWordTicks: 1 + rng.IntN(3),
		RetryTicks: 1, MaxRetryTicks: 4}, 1)
	if err != nil {
		return err
	}
	s := &sim{rng: rng, r: r, policy: policy, leader: map[int][]byte{}, bounds: map[Pos]bool{}}
	s.newRegion()
	for i := range 2 + rng.IntN(2) {
		sr := &simReplica{id: ID(fmt.Sprintf("r%d", i+1)), mem: map[int][]byte{}, words: map[int]uint64{}, alloc: map[uint64]bool{}}
		s.reps = append(s.reps, sr)
		if err := r.AddReplica(sr.id, false); err != nil {
			return err
		}
	}
	for step := range 400 {
		if err := s.step(false); err != nil {
			return fmt.Errorf("step %d: %w", step, err)
		}
	}
	// Heal: no more failures; everything completes.
	s.persisted = r.log.appended()
	r.Persisted(s.persisted)
	for step := range 50000 {
		if err := s.step(true); err != nil {
			return fmt.Errorf("healing step %d: %w", step, err)
		}
		if s.converged() {
			simSeals += s.reps[0].seals
			return nil
		}
	}
	return fmt.Errorf("no convergence: commit %d of %d; %+v end %v regions %d have %v alloc %v", r.Committed(), r.log.appended(), r.Progress(), r.log.end(), len(r.log.regions), r.replicas[0].have, r.replicas[0].alloc)
}

// down voids the replica's connection: what was queued on it is lost.
func (sr *simReplica) down() {
	sr.gen, sr.queue, sr.done, sr.pending, sr.connects = 0, nil, nil, nil, nil
}

func (s *sim) newRegion() {
	seq := uint64(1)
	if l := s.r.log.last(); l != nil {
		seq = l.seq + 1
	}
	m := make([]byte, simRegionSize)
	for i := range RegionHeaderSize {
		m[i] = byte(s.rng.Uint32()) // line 1 too: the leader's own words
	}
	s.leader[slotOf(seq)] = m
	if err := s.r.NewRegion(RegionInfo{Seq: seq, Slot: slotOf(seq), First: s.r.log.appended()}); err != nil {
		panic(err)
	}
}

func (s *sim) converged() bool {
	if s.r.Committed() != s.r.log.appended() {
		return false
	}
	for _, sr := range s.reps {
		if sr.durable != s.r.log.end() {
			return false
		}
	}
	return true
}

func (s *sim) rep(id ID) *simReplica {
	for _, sr := range s.reps {
		if sr.id == id {
			return sr
		}
	}
	panic(id)
}

func (s *sim) step(healing bool) error {
	r, rng := s.r, s.rng
	switch k := rng.IntN(20); {
	case k < 3 && !healing:
		n := 8 * (1 + rng.IntN(12))
		last := r.log.last()
		if last.tail+n > simRegionSize {
			s.newRegion()
			last = r.log.last()
		}
		m := s.leader[last.slot]
		for i := range n {
			m[last.tail+i] = byte(rng.Uint32())
		}
		if err := r.Append(Span{Seq: last.seq, Off: last.tail, Len: n, End: r.log.appended() + uint64(1+rng.IntN(3))}); err != nil {
			return err
		}
		s.bounds[r.log.end()] = true
	case k < 5 && !healing:
		if a := r.log.appended(); a > s.persisted {
			s.persisted += 1 + rng.Uint64N(a-s.persisted)
			r.Persisted(s.persisted)
		}
	case k < 6 && !healing:
		sr := s.reps[rng.IntN(len(s.reps))]
		if sr.gen != 0 {
			if err := r.Failed(sr.id, sr.gen, errors.New("link down")); err != nil {
				return err
			}
			sr.down()
		}
	case k < 7 && !healing:
		sr := s.reps[rng.IntN(len(s.reps))]
		switch rng.IntN(8) {
		case 0: // a new epoch: every replica is reconnected
			if err := r.SetEpoch(r.Epoch() + 1); err != nil {
				return err
			}
			for _, sr := range s.reps {
				sr.down()
			}
		default: // membership saw the replica restart
			if err := r.Restarted(sr.id); err != nil {
				return err
			}
			sr.down()
		}
	case k < 8:
		r.Tick()
	case k < 11:
		return s.ready()
	default:
		return s.deliver()
	}
	return s.check()
}

// ready takes a Ready and queues its work on the simulated replicas.
func (s *sim) ready() error {
	rd := s.r.Ready()
	if rd.Commit < s.commit {
		return fmt.Errorf("commit went back from %d to %d", s.commit, rd.Commit)
	}
	s.commit = rd.Commit
	for _, c := range rd.Connects {
		sr := s.rep(c.Replica)
		sr.connects = append(sr.connects, c)
	}
	for _, a := range rd.Allocs {
		sr := s.rep(a.Replica)
		sr.pending = append(sr.pending, a)
	}
	for _, o := range rd.Ops {
		sr := s.rep(o.Replica)
		if o.Gen != sr.gen {
			return fmt.Errorf("op of generation %d for %s at %d", o.Gen, sr.id, sr.gen)
		}
		sr.queue = append(sr.queue, o)
	}
	return s.check()
}

// deliver carries out one piece of work on one replica.
func (s *sim) deliver() error {
	r, rng := s.r, s.rng
	sr := s.reps[rng.IntN(len(s.reps))]
	switch k := rng.IntN(4); {
	case len(sr.connects) > 0 && k == 0:
		c := sr.connects[0]
		sr.connects = sr.connects[1:]
		if c.Epoch != r.Epoch() {
			return fmt.Errorf("connect under epoch %d, current %d", c.Epoch, r.Epoch())
		}
		if rng.IntN(5) == 0 { // the replica is still down
			return r.Failed(sr.id, c.Gen, errors.New("connection refused"))
		}
		sr.gen, sr.queue, sr.done, sr.pending = c.Gen, nil, nil, nil
		pos := sr.durable
		switch rng.IntN(6) { // a replica may report less, from its commit words
		case 0, 1:
			if w := sr.words[slotOf(pos.Seq)]; w >= RegionHeaderSize && pos.Off > 0 {
				pos.Off = int(w)
			}
		case 2:
			if w := sr.words[slotOf(pos.Seq-1)]; w >= RegionHeaderSize && pos.Seq > 1 {
				pos = Pos{pos.Seq - 1, int(w)}
			}
		}
		sr.cursor = pos
		return r.Connected(sr.id, c.Gen, pos)
	case len(sr.pending) > 0 && k == 1:
		a := sr.pending[0]
		sr.pending = sr.pending[1:]
		m := sr.mem[a.Slot]
		if m == nil {
			m = make([]byte, simRegionSize)
			for i := range m {
				m[i] = 0xee // what an earlier use of the slot left
			}
			sr.mem[a.Slot] = m
		}
		clear(m[CommitWordOffset:RegionHeaderSize])
		sr.alloc[a.Seq] = true
		return r.Allocated(sr.id, a.Gen, a.Seq)
	case len(sr.done) > 0 && k == 2:
		i := rng.IntN(len(sr.done))
		e := sr.done[i]
		sr.done = append(sr.done[:i], sr.done[i+1:]...)
		return r.Flushed(sr.id, sr.gen, e)
	case len(sr.queue) > 0:
		o := sr.queue[0]
		sr.queue = sr.queue[1:]
		return s.execute(sr, o)
	}
	return nil
}

func (s *sim) execute(sr *simReplica, o Op) error {
	reg := s.r.log.region(uint64(o.Slot) - 2)
	if reg == nil || slotOf(reg.seq) != o.Slot {
		return fmt.Errorf("op on unknown slot %d", o.Slot)
	}
	switch o.Kind {
	case OpWrite:
		start := Pos{reg.seq, o.Off}
		if start != sr.cursor && !(o.Off == 0 && reg.seq == sr.cursor.Seq+1) {
			return fmt.Errorf("write to %s at %v, its next byte is %v", sr.id, start, sr.cursor)
		}
		if !sr.alloc[reg.seq] && !(reg.seq == sr.cursor.Seq && sr.cursor.Off > 0) {
			return fmt.Errorf("write to %s in region %d before allocation", sr.id, reg.seq)
		}
		if o.Off+o.Len > reg.tail {
			return fmt.Errorf("write past the leader's tail")
		}
		if o.Off < RegionHeaderSize && o.Off+o.Len > CommitWordOffset {
			return fmt.Errorf("write [%d,%d) touches line 1", o.Off, o.Off+o.Len)
		}
		m := sr.mem[o.Slot]
		if m == nil {
			return fmt.Errorf("write to %s slot %d, never allocated", sr.id, o.Slot)
		}
		copy(m[o.Off:o.Off+o.Len], s.leader[o.Slot][o.Off:o.Off+o.Len])
		sr.cursor = o.End
		sr.alloc[reg.seq] = true
		if sr.durable.Less(o.End) {
			sr.durable = o.End
		}
		sr.done = append(sr.done, o.End)
	case OpCommitWord:
		p := Pos{reg.seq, int(o.Value)}
		if sr.durable.Less(p) || o.Value < RegionHeaderSize {
			return fmt.Errorf("commit word %v on %s, durable to %v", p, sr.id, sr.durable)
		}
		if i := s.r.log.indexAt(p); i > s.r.Committed() {
			return fmt.Errorf("commit word %v names %d entries, %d committed", p, i, s.r.Committed())
		}
		if o.Value != RegionHeaderSize && !s.bounds[p] {
			return fmt.Errorf("commit word %v not on an append boundary", p)
		}
		sr.words[o.Slot] = o.Value
	case OpSealWord:
		next := s.r.log.region(reg.seq + 1)
		if next == nil || next.first > s.r.Committed() || sr.durable.Less(Pos{next.seq, RegionHeaderSize}) {
			return fmt.Errorf("seal of region %d on %s, durable to %v, commit %d", reg.seq, sr.id, sr.durable, s.r.Committed())
		}
		if want := (next.first-reg.first)<<32 | uint64(reg.tail); o.Value != want {
			return fmt.Errorf("seal %#x of region %d, want %#x", o.Value, reg.seq, want)
		}
		binary.LittleEndian.PutUint64(sr.mem[o.Slot][SealWordOffset:], o.Value)
		sr.seals++
	}
	return nil
}

// check: the commit point is held by enough durable copies, and every
// replica's durable bytes are the leader's.
func (s *sim) check() error {
	c := s.r.Committed()
	if c > s.persisted {
		return fmt.Errorf("commit %d beyond the leader's persist %d", c, s.persisted)
	}
	holders := 1
	for _, sr := range s.reps {
		if s.r.log.indexAt(sr.durable) >= c {
			holders++
		}
	}
	if need := quorum.Needed(s.policy, len(s.reps)); holders < need {
		return fmt.Errorf("commit %d held by %d, %d needed", c, holders, need)
	}
	for _, sr := range s.reps {
		for seq := s.r.log.first().Seq; seq <= sr.durable.Seq; seq++ {
			reg := s.r.log.region(seq)
			end := reg.tail
			if seq == sr.durable.Seq {
				end = sr.durable.Off
			}
			m, l := sr.mem[reg.slot], s.leader[reg.slot]
			if end == 0 {
				continue
			}
			if m == nil || !bytes.Equal(m[:CommitWordOffset], l[:CommitWordOffset]) ||
				!bytes.Equal(m[RegionHeaderSize:end], l[RegionHeaderSize:end]) {
				return fmt.Errorf("%s region %d differs from the leader's before %d", sr.id, seq, end)
			}
			if !bytes.Equal(m[SealWordOffset+8:RegionHeaderSize], make([]byte, RegionHeaderSize-SealWordOffset-8)) {
				return fmt.Errorf("%s region %d: line 1 is not its own", sr.id, seq)
			}
		}
	}
	return nil
}
