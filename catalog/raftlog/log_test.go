package raftlog

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

func mustMarshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var smallOpts = Options{RegionSize: 16 << 10, SnapshotCatchUp: 10}

func ent(index, term uint64, data string) *raftpb.Entry {
	return &raftpb.Entry{Index: new(index), Term: new(term), Type: new(raftpb.EntryNormal), Data: []byte(data)}
}

func ents(from, to, term uint64, size int) []*raftpb.Entry {
	var out []*raftpb.Entry
	for i := from; i <= to; i++ {
		out = append(out, &raftpb.Entry{Index: new(i), Term: new(term), Type: new(raftpb.EntryNormal), Data: snapData(i*1000+term, size)})
	}
	return out
}

func hs(term, vote, commit uint64) *raftpb.HardState {
	return hardState{term, vote, commit}.pb()
}

func mustOpen(t testing.TB, dir string, opts Options) *Log {
	t.Helper()
	l, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func reopen(t testing.TB, l *Log, dir string, opts Options) *Log {
	t.Helper()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return mustOpen(t, dir, opts)
}

func mustObserve(t testing.TB, l *Log) observed {
	t.Helper()
	o, err := observe(l)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.invariants(); err != nil {
		t.Fatal(err)
	}
	return o
}

// sameLog fails unless a and b hold the same state.
func sameLog(t testing.TB, what string, a, b observed) {
	t.Helper()
	if d := a.diff(b); d != "" {
		t.Fatalf("%s: %s", what, d)
	}
}

func TestSaveReopen(t *testing.T) {
	dir := t.TempDir()
	l := mustOpen(t, dir, smallOpts)
	if !l.Empty() {
		t.Fatal("a new log is not empty")
	}
	if err := l.Save(nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if !l.Empty() {
		t.Fatal("an empty Save made the log non-empty")
	}
	if err := l.Save(hs(1, 1, 0), ents(1, 3, 1, 10), nil); err != nil {
		t.Fatal(err)
	}
	if err := l.Save(hs(1, 1, 3), ents(4, 5, 1, 100), nil); err != nil {
		t.Fatal(err)
	}
	if err := l.Save(hs(2, 0, 3), nil, nil); err != nil {
		t.Fatal(err)
	}
	before := mustObserve(t, l)
	if before.first != 1 || before.last != 5 || before.hs != (hardState{2, 0, 3}) {
		t.Fatalf("before reopen: %+v", before)
	}
	l = reopen(t, l, dir, smallOpts)
	defer l.Close()
	if l.Empty() {
		t.Fatal("a reopened log is empty")
	}
	sameLog(t, "after reopen", mustObserve(t, l), before)
	if _, err := os.Stat(filepath.Join(dir, streamName)); err != nil {
		t.Fatal(err)
	}
}

func TestOverrideSuffix(t *testing.T) {
	dir := t.TempDir()
	l := mustOpen(t, dir, smallOpts)
	if err := l.Save(hs(1, 1, 3), ents(1, 10, 1, 50), nil); err != nil {
		t.Fatal(err)
	}
	// A new leader replaces the uncommitted tail from 6 on.
	if err := l.Save(hs(2, 2, 3), ents(6, 7, 2, 60), nil); err != nil {
		t.Fatal(err)
	}
	// And another, with a batch bigger than a region (several records).
	big := ents(7, 12, 3, 6000)
	if err := l.Save(hs(3, 0, 6), big, nil); err != nil {
		t.Fatal(err)
	}
	want := slices.Concat(ents(1, 6, 1, 50)[:5], ents(6, 6, 2, 60), big)
	o := mustObserve(t, l)
	check := func(what string, o observed) {
		t.Helper()
		if o.last != 12 || o.hs != (hardState{3, 0, 6}) {
			t.Fatalf("%s: last %d, hard state %+v", what, o.last, o.hs)
		}
		sameLog(t, what, o, observed{hs: o.hs, first: 1, last: 12, ents: want})
	}
	check("in memory", o)
	l = reopen(t, l, dir, smallOpts)
	defer l.Close()
	check("after reopen", mustObserve(t, l))
}

func TestSnapshotsCompactionReopen(t *testing.T) {
	dir := t.TempDir()
	l := mustOpen(t, dir, smallOpts)
	defer func() { l.Close() }()
	var all []*raftpb.Entry
	save := func(from, to uint64) {
		t.Helper()
		e := ents(from, to, 1, 700)
		all = append(all, e...)
		if err := l.Save(hs(1, 1, to), e, nil); err != nil {
			t.Fatal(err)
		}
	}
	snapFiles := func() []string {
		t.Helper()
		var out []string
		names, _ := osDir{dir}.List()
		for _, n := range names {
			if _, _, ok := parseSnapName(n); ok {
				out = append(out, n)
			}
		}
		return out
	}
	for i := uint64(1); i <= 100; i += 10 {
		save(i, i+9)
	}
	if err := l.CreateSnapshot(50, testConf, snapData(50, 500)); err != nil {
		t.Fatal(err)
	}
	if first, _ := l.FirstIndex(); first != 41 {
		t.Fatalf("first index %d after a snapshot at 50 with 10 catch-up entries, want 41", first)
	}
	if _, err := l.Term(39); !errors.Is(err, raft.ErrCompacted) {
		t.Fatalf("Term(39): %v, want ErrCompacted", err)
	}
	if l.s.Head() != 0 {
		t.Fatalf("the log was trimmed (head %d) with only one snapshot", l.s.Head())
	}
	heads := []uint64{}
	for k, at := range []uint64{150, 250, 350} {
		for i := at - 50; i < at+50; i += 10 {
			save(i+1, i+10)
		}
		if err := l.CreateSnapshot(at, testConf, snapData(at, 500)); err != nil {
			t.Fatal(err)
		}
		if got := snapFiles(); len(got) != 2 {
			t.Fatalf("snapshot %d: files %v, want the newest two", k, got)
		}
		heads = append(heads, l.s.Head())
	}
	if heads[2] <= heads[0] || heads[2] == 0 {
		t.Fatalf("stream heads %v: the log is not trimmed", heads)
	}
	o := mustObserve(t, l)
	want := observed{hs: hardState{1, 1, 400}, first: 341, last: 400, ents: all[340:], snap: o.snap}
	sameLog(t, "in memory", o, want)
	if o.snap.GetMetadata().GetIndex() != 350 || string(o.snap.GetData()) != string(snapData(350, 500)) {
		t.Fatalf("snapshot %v", o.snap.GetMetadata())
	}
	l = reopen(t, l, dir, smallOpts)
	sameLog(t, "after reopen", mustObserve(t, l), want)

	// The older file alone (the newest lost) recovers the same log, with
	// the entries after it.
	os.Remove(filepath.Join(dir, snapName(1, 350)))
	l = reopen(t, l, dir, smallOpts)
	o = mustObserve(t, l)
	if o.snap.GetMetadata().GetIndex() != 250 || o.last != 400 || o.first != 241 {
		t.Fatalf("from the older snapshot: snapshot %d, entries %d..%d", o.snap.GetMetadata().GetIndex(), o.first, o.last)
	}
	sameLog(t, "from the older snapshot", o, observed{hs: want.hs, first: 241, last: 400, ents: all[240:], snap: o.snap})
}

func TestReceivedSnapshot(t *testing.T) {
	dir := t.TempDir()
	l := mustOpen(t, dir, smallOpts)
	if err := l.Save(hs(1, 1, 2), ents(1, 5, 1, 10), nil); err != nil {
		t.Fatal(err)
	}
	snap := &raftpb.Snapshot{Data: []byte("state at 40"), Metadata: &raftpb.SnapshotMetadata{Index: new(uint64(40)), Term: new(uint64(3)), ConfState: testConf}}
	if err := l.Save(hs(3, 0, 40), ents(41, 42, 3, 10), snap); err != nil {
		t.Fatal(err)
	}
	check := func(what string) {
		t.Helper()
		o := mustObserve(t, l)
		if o.first != 41 || o.last != 42 || o.snap.GetMetadata().GetIndex() != 40 || string(o.snap.GetData()) != "state at 40" {
			t.Fatalf("%s: entries %d..%d, snapshot %d", what, o.first, o.last, o.snap.GetMetadata().GetIndex())
		}
		if term, err := l.Term(40); err != nil || term != 3 {
			t.Fatalf("%s: Term(40) = %d, %v", what, term, err)
		}
	}
	check("in memory")
	l = reopen(t, l, dir, smallOpts)
	defer l.Close()
	check("after reopen")
	if err := l.Save(nil, nil, snap); !errors.Is(err, raft.ErrSnapOutOfDate) {
		t.Fatalf("an old snapshot again: %v", err)
	}
}

func TestTooLarge(t *testing.T) {
	dir := t.TempDir()
	l := mustOpen(t, dir, smallOpts)
	defer l.Close()
	// The largest entry that fits, and one byte more.
	e := ent(1, 1, "")
	for n := l.maxEntry - 40; ; n++ {
		e.Data = make([]byte, n)
		if sz := len(mustMarshal(t, e)); sz == l.maxEntry {
			break
		} else if sz > l.maxEntry {
			t.Fatalf("no payload size encodes to exactly %d bytes", l.maxEntry)
		}
	}
	over := ent(2, 1, "")
	over.Data = make([]byte, len(e.Data)+1)
	if err := l.Save(hs(1, 0, 0), []*raftpb.Entry{e, over}, nil); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Save of an entry too large: %v", err)
	}
	if last, _ := l.LastIndex(); last != 0 || l.s.Committed() != 0 {
		t.Fatalf("a refused Save wrote: last index %d, %d records", last, l.s.Committed())
	}
	if err := l.Save(hs(1, 0, 0), []*raftpb.Entry{e}, nil); err != nil {
		t.Fatalf("Save of the largest entry: %v", err)
	}
	l2 := reopen(t, l, dir, smallOpts)
	defer l2.Close()
	if o := mustObserve(t, l2); o.last != 1 || len(o.ents[0].GetData()) != len(e.Data) {
		t.Fatalf("the largest entry did not survive a reopen: %+v", o)
	}
	l = l2
}

func TestInvalid(t *testing.T) {
	l := mustOpen(t, t.TempDir(), smallOpts)
	defer l.Close()
	if err := l.Save(hs(2, 1, 3), ents(1, 5, 2, 10), nil); err != nil {
		t.Fatal(err)
	}
	bad := []struct {
		name string
		err  error
		f    func() error
	}{
		{"gap", ErrInvalid, func() error { return l.Save(nil, ents(7, 8, 2, 1), nil) }},
		{"not contiguous", ErrInvalid, func() error {
			return l.Save(nil, []*raftpb.Entry{ent(6, 2, ""), ent(8, 2, "")}, nil)
		}},
		{"committed replaced", ErrInvalid, func() error { return l.Save(nil, ents(3, 4, 3, 1), nil) }},
		{"term back", ErrInvalid, func() error { return l.Save(hs(1, 0, 3), nil, nil) }},
		{"commit back", ErrInvalid, func() error { return l.Save(hs(2, 1, 2), nil, nil) }},
		{"commit past the end", ErrInvalid, func() error { return l.Save(hs(2, 1, 6), nil, nil) }},
		{"snapshot of uncommitted", ErrInvalid, func() error { return l.CreateSnapshot(4, nil, nil) }},
		{"received snapshot not past the commit index", ErrInvalid, func() error {
			return l.Save(nil, nil, &raftpb.Snapshot{Metadata: &raftpb.SnapshotMetadata{Index: new(uint64(3)), Term: new(uint64(2))}})
		}},
		{"snapshot at 0", raft.ErrSnapOutOfDate, func() error { return l.CreateSnapshot(0, nil, nil) }},
	}
	for _, b := range bad {
		if err := b.f(); !errors.Is(err, b.err) {
			t.Errorf("%s: %v, want %v", b.name, err, b.err)
		}
	}
	if o := mustObserve(t, l); o.last != 5 || o.hs != (hardState{2, 1, 3}) {
		t.Fatalf("refused calls changed the log: %+v", o)
	}
	if err := l.CreateSnapshot(3, nil, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := l.CreateSnapshot(3, nil, []byte("x")); !errors.Is(err, raft.ErrSnapOutOfDate) {
		t.Fatalf("the same snapshot twice: %v", err)
	}
}

func TestClosed(t *testing.T) {
	l := mustOpen(t, t.TempDir(), smallOpts)
	if err := l.Save(hs(1, 0, 1), ents(1, 1, 1, 1), nil); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	if err := l.Save(hs(1, 0, 1), ents(2, 2, 1, 1), nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Save after Close: %v", err)
	}
	if err := l.CreateSnapshot(1, nil, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("CreateSnapshot after Close: %v", err)
	}
	// Reads still answer from memory.
	if last, _ := l.LastIndex(); last != 1 {
		t.Fatalf("LastIndex after Close: %d", last)
	}
}

func TestOrphanSnapshotFiles(t *testing.T) {
	dir := t.TempDir()
	l := mustOpen(t, dir, smallOpts)
	l.Save(hs(1, 0, 5), ents(1, 5, 1, 10), nil)
	if err := l.CreateSnapshot(5, nil, []byte("x")); err != nil {
		t.Fatal(err)
	}
	l.Close()
	os.Remove(filepath.Join(dir, streamName))
	if _, err := Open(dir, smallOpts); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("snapshot files without a stream: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, streamName)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Open created a stream beside orphan snapshot files: %v", err)
	}
}

func TestLeftoverTempFiles(t *testing.T) {
	dir := t.TempDir()
	// A crash while creating the log, then one while writing a snapshot.
	os.WriteFile(filepath.Join(dir, streamName+tmpSuffix), []byte("half a stream"), 0o644)
	l := mustOpen(t, dir, smallOpts)
	l.Save(hs(1, 0, 5), ents(1, 5, 1, 10), nil)
	l.Close()
	tmp := filepath.Join(dir, snapName(1, 5)+tmpSuffix)
	os.WriteFile(tmp, []byte("half a snapshot"), 0o644)
	l = mustOpen(t, dir, smallOpts)
	defer l.Close()
	if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a temporary snapshot file was left: %v", err)
	}
	if len(l.Warnings()) != 0 {
		t.Fatalf("warnings: %v", l.Warnings())
	}
	if last, _ := l.LastIndex(); last != 5 {
		t.Fatalf("last index %d", last)
	}
}

func TestEntriesMaxSize(t *testing.T) {
	l := mustOpen(t, t.TempDir(), smallOpts)
	defer l.Close()
	l.Save(hs(1, 0, 0), ents(1, 10, 1, 100), nil)
	got, err := l.Entries(1, 11, 1)
	if err != nil || len(got) != 1 {
		t.Fatalf("Entries with maxSize 1: %d entries, %v", len(got), err)
	}
	got, err = l.Entries(1, 11, math.MaxUint64)
	if err != nil || len(got) != 10 {
		t.Fatalf("Entries: %d entries, %v", len(got), err)
	}
}

func TestNoSpace(t *testing.T) {
	dir := t.TempDir()
	opts := Options{RegionSize: 16 << 10, MaxSize: 4096 + 8*(16<<10), SnapshotCatchUp: 5}
	l := mustOpen(t, dir, opts)
	defer func() { l.Close() }()
	last := uint64(0)
	save := func() error {
		e := ents(last+1, last+1, 1, 3000)
		if err := l.Save(hs(1, 1, last+1), e, nil); err != nil {
			return err
		}
		last++
		return nil
	}
	for last < 12 {
		if err := save(); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.CreateSnapshot(last, testConf, []byte("one")); err != nil {
		t.Fatal(err)
	}
	var err error
	for k := 0; k < 1000 && err == nil; k++ {
		err = save()
	}
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("filling the log: %v, want ErrNoSpace", err)
	}
	if got, _ := l.LastIndex(); got != last {
		t.Fatalf("a Save refused for space changed the log: last index %d, want %d", got, last)
	}
	// The second snapshot trims the log: there is room again.
	if err := l.CreateSnapshot(last, testConf, []byte("two")); err != nil {
		t.Fatal(err)
	}
	for k := 0; k < 3; k++ {
		if err := save(); err != nil {
			t.Fatalf("save after a snapshot freed space: %v", err)
		}
	}
	want := mustObserve(t, l)
	l = reopen(t, l, dir, opts)
	sameLog(t, "after reopen", mustObserve(t, l), want)
}

// TestMarkerKeepsVote: snapshots received without a hard state trim the
// record that saved the vote; the marker must carry it.
func TestMarkerKeepsVote(t *testing.T) {
	dir := t.TempDir()
	l := mustOpen(t, dir, smallOpts)
	defer func() { l.Close() }()
	if err := l.Save(hs(5, 2, 3), ents(1, 3, 5, 6000), nil); err != nil {
		t.Fatal(err)
	}
	for _, at := range []uint64{10, 20, 30} {
		snap := &raftpb.Snapshot{Data: snapData(at, 6000), Metadata: &raftpb.SnapshotMetadata{Index: new(at), Term: new(uint64(5)), ConfState: testConf}}
		if err := l.Save(nil, nil, snap); err != nil {
			t.Fatal(err)
		}
	}
	if l.s.Head() == 0 {
		t.Fatal("the log was not trimmed")
	}
	l = reopen(t, l, dir, smallOpts)
	if got := hsOf(l.HardState()); got != (hardState{5, 2, 30}) {
		t.Fatalf("hard state after trims and a reopen: %+v, want term 5, vote 2, commit 30", got)
	}
}
