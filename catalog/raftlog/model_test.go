package raftlog

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// The model: what a sequence of Saves and CreateSnapshots means, kept
// apart from the implementation, and a generator of Ready-like sequences
// that obey Raft's rules (terms never go back, committed entries are never
// replaced, snapshots are of committed state or come from a leader).

// seeds returns n seeds, or the one in RPSTREAM_RAFTLOG_SEED.
func seeds(t testing.TB, n int) []uint64 {
	if v := os.Getenv("RPSTREAM_RAFTLOG_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("RPSTREAM_RAFTLOG_SEED=%q: %v", v, err)
		}
		return []uint64{s}
	}
	base := rand.Uint64() >> 1
	out := make([]uint64, n)
	for i := range out {
		out[i] = base + uint64(i)
	}
	return out
}

type hardState struct{ term, vote, commit uint64 }

func hsOf(h *raftpb.HardState) hardState {
	return hardState{h.GetTerm(), h.GetVote(), h.GetCommit()}
}

func (h hardState) pb() *raftpb.HardState {
	return &raftpb.HardState{Term: new(h.term), Vote: new(h.vote), Commit: new(h.commit)}
}

// modelState is the durable state after some operations: the log after
// base (everything before base is in snap), the hard state and the newest
// snapshot. Its slices are never modified once the state is recorded.
type modelState struct {
	hs       hardState
	base     uint64
	baseTerm uint64
	ents     []*raftpb.Entry
	snap     *raftpb.Snapshot // nil: none yet
	received bool             // snap came from a Save
}

func (m modelState) last() uint64 { return m.base + uint64(len(m.ents)) }

func (m modelState) term(i uint64) uint64 {
	if i == m.base {
		return m.baseTerm
	}
	return m.ents[i-m.base-1].GetTerm()
}

func (m modelState) snapIndex() uint64 { return m.snap.GetMetadata().GetIndex() }

// override is m with ents replacing everything from their first index.
func (m modelState) override(ents []*raftpb.Entry) modelState {
	if len(ents) == 0 {
		return m
	}
	k := ents[0].GetIndex() - m.base - 1
	m.ents = append(m.ents[:k:k], ents...)
	return m
}

// applySnap is m after a snapshot received from the leader.
func (m modelState) applySnap(s *raftpb.Snapshot) modelState {
	m.base, m.baseTerm, m.ents = s.GetMetadata().GetIndex(), s.GetMetadata().GetTerm(), nil
	m.snap, m.received = s, true
	return m
}

type opKind int

const (
	opSave opKind = iota
	opCreate
	opReopen
)

// op is one operation on a Log.
type op struct {
	kind  opKind
	hs    *raftpb.HardState
	ents  []*raftpb.Entry
	snap  *raftpb.Snapshot
	index uint64 // opCreate
	cs    *raftpb.ConfState
	data  []byte
}

func (o op) String() string {
	switch o.kind {
	case opSave:
		s := "save"
		if o.snap != nil {
			s += fmt.Sprintf(" snap@%d/%d", o.snap.GetMetadata().GetIndex(), o.snap.GetMetadata().GetTerm())
		}
		if len(o.ents) > 0 {
			s += fmt.Sprintf(" ents %d..%d", o.ents[0].GetIndex(), o.ents[len(o.ents)-1].GetIndex())
		}
		if o.hs != nil {
			s += fmt.Sprintf(" hs %v", hsOf(o.hs))
		}
		return s
	case opCreate:
		return fmt.Sprintf("create snapshot %d", o.index)
	}
	return "reopen"
}

// run applies o to l.
func (o op) run(l *Log) error {
	switch o.kind {
	case opSave:
		return l.Save(o.hs, o.ents, o.snap)
	case opCreate:
		return l.CreateSnapshot(o.index, o.cs, o.data)
	}
	return fmt.Errorf("op %v cannot run on a log", o)
}

// gen generates Ready-like operations and keeps the model state.
type gen struct {
	rng     *rand.Rand
	maxData int  // largest entry payload that still fits a record
	reopen  bool // emit opReopen now and then
	m       modelState
}

func newGen(rng *rand.Rand, maxEntry int) *gen {
	return &gen{rng: rng, maxData: maxEntry - 40}
}

func (g *gen) payload() []byte {
	var n int
	switch x := g.rng.IntN(100); {
	case x < 60:
		n = g.rng.IntN(100)
	case x < 85:
		n = 100 + g.rng.IntN(1900)
	case x < 95:
		n = g.rng.IntN(g.maxData / 2)
	default:
		n = g.maxData - g.rng.IntN(40)
	}
	b := make([]byte, n)
	for k := range b {
		b[k] = byte(g.rng.Uint32())
	}
	return b
}

func (g *gen) entries(from, term uint64, n int) []*raftpb.Entry {
	out := make([]*raftpb.Entry, n)
	for k := range out {
		typ := raftpb.EntryNormal
		if g.rng.IntN(20) == 0 {
			typ = raftpb.EntryConfChange
		}
		out[k] = &raftpb.Entry{Index: new(from + uint64(k)), Term: new(term), Type: new(typ), Data: g.payload()}
	}
	return out
}

var testConf = &raftpb.ConfState{Voters: []uint64{1, 2, 3}, AutoLeave: new(false)}

// snapData is the application's snapshot at index: known from the index.
func snapData(index uint64, n int) []byte {
	b := make([]byte, n)
	x := index*0x9E3779B97F4A7C15 + 1
	for k := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[k] = byte(x)
	}
	return b
}

// next returns the next operation; the model moves to the state after it.
func (g *gen) next() op {
	m := g.m
	if m.hs.term == 0 { // the first Ready: a bootstrap at term 1
		g.m.hs = hardState{term: 1, commit: 0}
		ents := g.entries(1, 1, 1+g.rng.IntN(3))
		g.m = g.m.override(ents)
		return op{kind: opSave, hs: g.m.hs.pb(), ents: ents}
	}
	switch x := g.rng.IntN(100); {
	case x < 40 || (x < 58 && m.last() == m.hs.commit): // the leader appends
		ents := g.entries(m.last()+1, m.hs.term, 1+g.rng.IntN(5))
		g.m = m.override(ents)
		var hs *raftpb.HardState
		if g.rng.IntN(2) == 0 {
			g.m.hs.commit += g.rng.Uint64N(g.m.last() - m.hs.commit + 1)
			hs = g.m.hs.pb()
		}
		return op{kind: opSave, hs: hs, ents: ents}
	case x < 58: // a new leader replaces the uncommitted tail
		from := m.hs.commit + 1 + g.rng.Uint64N(m.last()-m.hs.commit)
		g.m.hs = hardState{term: m.hs.term + 1 + g.rng.Uint64N(2), vote: g.rng.Uint64N(4)}
		ents := g.entries(from, g.m.hs.term, 1+g.rng.IntN(6))
		g.m = g.m.override(ents)
		g.m.hs.commit = m.hs.commit + g.rng.Uint64N(g.m.last()-m.hs.commit+1)
		return op{kind: opSave, hs: g.m.hs.pb(), ents: ents}
	case x < 68: // the hard state alone
		if g.rng.IntN(2) == 0 && m.last() > m.hs.commit {
			g.m.hs.commit += 1 + g.rng.Uint64N(m.last()-m.hs.commit)
		} else {
			g.m.hs = hardState{term: m.hs.term + 1, vote: g.rng.Uint64N(4), commit: m.hs.commit}
		}
		return op{kind: opSave, hs: g.m.hs.pb()}
	case x < 74: // a snapshot from a new leader, past our commit point
		si := max(m.hs.commit, m.snapIndex()) + 1 + g.rng.Uint64N(30)
		term := m.hs.term + 1
		snap := &raftpb.Snapshot{Data: snapData(si, g.rng.IntN(3000)), Metadata: &raftpb.SnapshotMetadata{
			Index: new(si), Term: new(term), ConfState: proto.Clone(testConf).(*raftpb.ConfState),
		}}
		g.m = m.applySnap(snap)
		ents := g.entries(si+1, term, g.rng.IntN(4))
		g.m = g.m.override(ents)
		g.m.hs = hardState{term: term, vote: g.rng.Uint64N(2), commit: si + g.rng.Uint64N(uint64(len(ents))+1)}
		return op{kind: opSave, hs: g.m.hs.pb(), ents: ents, snap: snap}
	case x < 88 && m.hs.commit > m.snapIndex(): // the application snapshots
		index := m.snapIndex() + 1 + g.rng.Uint64N(m.hs.commit-m.snapIndex())
		data := snapData(index, g.rng.IntN(3000))
		g.m.snap = &raftpb.Snapshot{Data: data, Metadata: &raftpb.SnapshotMetadata{
			Index: new(index), Term: new(m.term(index)), ConfState: proto.Clone(testConf).(*raftpb.ConfState),
		}}
		g.m.received = false
		return op{kind: opCreate, index: index, cs: testConf, data: data}
	case x >= 97 && g.reopen:
		return op{kind: opReopen}
	}
	return g.next()
}

// observed is what a Log holds, read through its raft.Storage methods.
type observed struct {
	hs          hardState
	first, last uint64
	ents        []*raftpb.Entry
	snap        *raftpb.Snapshot
}

func observe(l *Log) (observed, error) {
	var o observed
	o.hs = hsOf(l.HardState())
	ihs, _, err := l.InitialState()
	if err != nil {
		return o, err
	}
	if hsOf(ihs) != o.hs {
		return o, fmt.Errorf("InitialState hard state %v, HardState %v", hsOf(ihs), o.hs)
	}
	o.first, _ = l.FirstIndex()
	o.last, _ = l.LastIndex()
	if o.last >= o.first {
		if o.ents, err = l.Entries(o.first, o.last+1, math.MaxUint64); err != nil {
			return o, err
		}
	}
	o.snap, err = l.Snapshot()
	return o, err
}

// expect is what a log holding cand's records and the snapshot file snap
// must show after Open, by the rules of the package comment; ok is false
// where Open must fail (the log needs a snapshot it does not have).
func expect(cand modelState, snap *raftpb.Snapshot, received bool, catchUp uint64) (observed, bool) {
	m := cand
	si, st := snap.GetMetadata().GetIndex(), snap.GetMetadata().GetTerm()
	if snap == nil {
		if m.base > 0 {
			return observed{}, false
		}
	} else {
		if m.base > si {
			return observed{}, false
		}
		if si > m.last() || m.term(si) != st {
			if !received {
				return observed{}, false
			}
			m.base, m.baseTerm, m.ents = si, st, nil
		}
	}
	c := m.base
	if si > catchUp && si-catchUp > c {
		c = si - catchUp
	}
	o := observed{first: c + 1, last: m.last(), snap: snap, hs: m.hs}
	o.ents = m.ents[c-m.base:]
	o.hs.commit = max(o.hs.commit, si)
	if t := max(m.term(m.last()), st); o.hs.term < t {
		o.hs.term, o.hs.vote = t, 0
	}
	return o, true
}

// diff says how o differs from want ("" if it does not).
func (o observed) diff(want observed) string {
	if o.hs != want.hs {
		return fmt.Sprintf("hard state %+v, want %+v", o.hs, want.hs)
	}
	if o.first != want.first || o.last != want.last {
		return fmt.Sprintf("entries %d..%d, want %d..%d", o.first, o.last, want.first, want.last)
	}
	for k := range o.ents {
		if !proto.Equal(o.ents[k], want.ents[k]) {
			return fmt.Sprintf("entry %d: term %d, %d bytes; want term %d, %d bytes", o.first+uint64(k),
				o.ents[k].GetTerm(), len(o.ents[k].GetData()), want.ents[k].GetTerm(), len(want.ents[k].GetData()))
		}
	}
	a, b := o.snap.GetMetadata(), want.snap.GetMetadata()
	if a.GetIndex() != b.GetIndex() || a.GetTerm() != b.GetTerm() || !bytes.Equal(o.snap.GetData(), want.snap.GetData()) {
		return fmt.Sprintf("snapshot %d/%d (%d bytes), want %d/%d (%d bytes)", a.GetIndex(), a.GetTerm(), len(o.snap.GetData()),
			b.GetIndex(), b.GetTerm(), len(want.snap.GetData()))
	}
	if b.GetIndex() > 0 && !proto.Equal(raftpb.EnsureConfState(a.GetConfState()), raftpb.EnsureConfState(proto.Clone(b.GetConfState()).(*raftpb.ConfState))) {
		return fmt.Sprintf("snapshot conf state %v, want %v", a.GetConfState(), b.GetConfState())
	}
	return ""
}

// partials are the states a crash during o, which takes a to b, may leave
// (a and b included): a Save may leave its snapshot alone, then any
// prefix of its entries under the old or the new term and vote.
func partials(a, b modelState, o op) []modelState {
	out := []modelState{a, b}
	switch o.kind {
	case opSave:
		pre := a
		if o.snap != nil {
			pre = a.applySnap(o.snap)
			out = append(out, pre)
		}
		hss := []hardState{a.hs}
		if o.hs != nil {
			hss = append(hss, hardState{o.hs.GetTerm(), o.hs.GetVote(), a.hs.commit})
		}
		for p := 0; p <= len(o.ents); p++ {
			s := pre.override(o.ents[:p])
			for _, h := range hss {
				s.hs = h
				out = append(out, s)
			}
		}
	case opCreate:
		// The snapshot file alone: a's log with b's snapshot.
		s := a
		s.snap, s.received = b.snap, b.received
		out = append(out, s)
	}
	return out
}

// matchAny reports whether o is what Open shows for one of cands, each
// with its own snapshot (snap nil) or with snap in its place.
func matchAny(o observed, cands []modelState, snap *raftpb.Snapshot, received bool, catchUp uint64) (string, bool) {
	var why string
	for _, c := range cands {
		s, r := c.snap, c.received
		if snap != nil {
			s, r = snap, received
		}
		want, ok := expect(c, s, r, catchUp)
		if !ok {
			continue
		}
		d := o.diff(want)
		if d == "" {
			return "", true
		}
		if why == "" {
			why = d
		}
	}
	return why, false
}

// invariants are what any recovered log must satisfy whatever happened.
func (o observed) invariants() error {
	si := o.snap.GetMetadata().GetIndex()
	if o.hs.commit > o.last {
		return fmt.Errorf("commit %d past the last entry %d", o.hs.commit, o.last)
	}
	if o.first-1 > si {
		return fmt.Errorf("entries from %d, but the snapshot is at %d: entries above it are lost", o.first, si)
	}
	if o.hs.commit < si {
		return fmt.Errorf("commit %d behind the snapshot %d", o.hs.commit, si)
	}
	for k, e := range o.ents {
		if e.GetIndex() != o.first+uint64(k) {
			return fmt.Errorf("entry %d has index %d", o.first+uint64(k), e.GetIndex())
		}
		if e.GetTerm() > o.hs.term {
			return fmt.Errorf("entry %d has term %d, past the hard state's %d", e.GetIndex(), e.GetTerm(), o.hs.term)
		}
		if k > 0 && e.GetTerm() < o.ents[k-1].GetTerm() {
			return fmt.Errorf("entry %d has term %d, after term %d", e.GetIndex(), e.GetTerm(), o.ents[k-1].GetTerm())
		}
	}
	return nil
}
