package raftlog

import (
	"bytes"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"testing"

	"go.etcd.io/raft/v3/raftpb"

	"github.com/rpstream/rpstream/local"
	"github.com/rpstream/rpstream/pmem/simpmem"
)

// The crash-consistency harness, after local/crash_test.go. A Ready-like
// workload runs on a simulated persistence domain (simpmem) and an
// in-memory snapshot directory. Every persist, every snapshot file write
// (its start and its end) and every gap between operations is a crash
// point; a uniform sample of them becomes crash images: the stream with any subset
// of its unflushed lines (or 8-byte words) lost, and the directory with
// each snapshot file either fully renamed in (once its Write began to
// return) or absent, and each removal either done or not. Each image is
// recovered and checked:
//   - it is exactly the state after the operations acknowledged before
//     the crash, or after a part of the one in progress (its snapshot,
//     then a prefix of its entries, under the old or the new term and
//     vote; the old hard state or the new one), as Open must show it:
//     nothing never saved appears, nothing a completed Save returned for
//     is missing, no entry above the snapshot is lost, the catch-up
//     entries behind the snapshot are there;
//   - term, vote and commit never go back from a completed Save; commit
//     is within the log;
//   - the log goes on: a Save after recovery, then a reopen, shows both.
//
// RPSTREAM_RAFTLOG_SEED=N reruns one seed.

const crashRegion = local.MinRegionSize

var crashOpts = Options{RegionSize: crashRegion, SnapshotCatchUp: 10}

// crashReserve is room for the workload's stream, which snapshots keep
// within a few hundred KiB.
const crashReserve = local.SuperblockSize + 128*crashRegion

// memDir is a snapDir in memory with a crash model: Write is atomic and
// durable when it returns (with every removal before it: the directory
// fsync); a Remove is durable only once a later Write returns.
type memDir struct {
	mu      sync.Mutex
	files   map[string][]byte
	durable map[string][]byte
	// onWrite, if set, is called at the start and at the end of Write,
	// without the lock: tests take crash images there.
	onWrite func(name string, done bool)
}

var _ snapDir = (*memDir)(nil)

func newMemDir(files map[string][]byte) *memDir {
	d := &memDir{files: maps.Clone(files), durable: maps.Clone(files)}
	if d.files == nil {
		d.files, d.durable = map[string][]byte{}, map[string][]byte{}
	}
	return d
}

func (d *memDir) List() ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	names := slices.Collect(maps.Keys(d.files))
	sort.Strings(names)
	return names, nil
}

func (d *memDir) Read(name string) ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	b, ok := d.files[name]
	if !ok {
		return nil, fmt.Errorf("memdir: %s: no such file", name)
	}
	return bytes.Clone(b), nil
}

func (d *memDir) Write(name string, data []byte) error {
	if h := d.onWrite; h != nil {
		h(name, false)
	}
	d.mu.Lock()
	d.files[name] = bytes.Clone(data)
	d.durable = maps.Clone(d.files)
	d.mu.Unlock()
	if h := d.onWrite; h != nil {
		h(name, true)
	}
	return nil
}

func (d *memDir) Remove(name string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.files, name)
	return nil
}

// crash returns the files that survive a crash now.
func (d *memDir) crash(rng *rand.Rand) map[string][]byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := maps.Clone(d.durable)
	for name := range d.durable {
		if _, ok := d.files[name]; !ok && rng.IntN(2) == 0 {
			delete(out, name) // the removal reached the disk anyway
		}
	}
	return out
}

// crashImage is one crash and what the workload knew when it happened.
type crashImage struct {
	label   string
	stream  []byte
	files   map[string][]byte
	acked   int // operations completed before the crash
	started int // operations started (acked or acked+1)
}

// crashRun is one seeded workload with its crash images.
type crashRun struct {
	rng     *rand.Rand
	mem     *simpmem.Memory
	dir     *memDir
	states  []modelState // states[k]: after k operations
	ops     []op
	acked   int
	started int
	images  []crashImage
	maxImgs int
	points  int // crash points so far
}

// point is a crash point. Every point is equally likely to be among the
// images checked (reservoir sampling), so they spread over the whole run.
func (r *crashRun) point(label string) {
	r.points++
	k := len(r.images)
	if k >= r.maxImgs {
		if k = r.rng.IntN(r.points); k >= r.maxImgs {
			return
		}
	}
	keep := []float64{0, 0.5, 1, r.rng.Float64()}[r.rng.IntN(4)]
	im := crashImage{
		label:   fmt.Sprintf("%s (op %d)", label, r.started),
		stream:  r.mem.Crash(r.rng, simpmem.Granularity(r.rng.IntN(2)), keep),
		files:   r.dir.crash(r.rng),
		acked:   r.acked,
		started: r.started,
	}
	if k == len(r.images) {
		r.images = append(r.images, im)
	} else {
		r.images[k] = im
	}
}

func reserveFor(img []byte) int { return len(img) + 16*crashRegion }

// recoverImage opens a crash image.
func recoverImage(stream []byte, files map[string][]byte) (*simpmem.Memory, *memDir, *Log, error) {
	mem := simpmem.FromImage(stream, reserveFor(stream))
	dir := newMemDir(files)
	l, err := openOn(mem, dir, crashOpts)
	if err != nil {
		mem.Release()
		return nil, nil, nil, err
	}
	return mem, dir, l, nil
}

// check recovers one image and checks it (see the top of the file).
func (r *crashRun) check(im crashImage) error {
	mem, dir, l, err := recoverImage(im.stream, im.files)
	if err != nil {
		return fmt.Errorf("%s: recovery failed: %w", im.label, err)
	}
	defer mem.Release()
	o, err := observe(l)
	if err != nil {
		return fmt.Errorf("%s: %w", im.label, err)
	}
	if err := o.invariants(); err != nil {
		return fmt.Errorf("%s: %w", im.label, err)
	}
	a := r.states[im.acked]
	cands := []modelState{a}
	if im.started > im.acked {
		cands = partials(a, r.states[im.started], r.ops[im.acked])
	}
	if why, ok := matchAny(o, cands, nil, false, crashOpts.SnapshotCatchUp); !ok {
		return fmt.Errorf("%s: recovered state is none that the operations could leave: %s (after %d ops, op in progress: %v)",
			im.label, why, im.acked, r.opAt(im))
	}
	if o.hs.term < a.hs.term || (o.hs.term == a.hs.term && o.hs.vote != a.hs.vote) || o.hs.commit < a.hs.commit {
		return fmt.Errorf("%s: hard state %+v went back from %+v", im.label, o.hs, a.hs)
	}
	// The log goes on after recovery: entries and two snapshots (which
	// trim the stream to points the recovered records chose); a reopen
	// shows all of it.
	term := max(o.hs.term, 1)
	baseTerm, err := l.Term(o.first - 1)
	if err != nil {
		return fmt.Errorf("%s: Term(%d): %w", im.label, o.first-1, err)
	}
	m := modelState{hs: o.hs, base: o.first - 1, baseTerm: baseTerm, ents: slices.Clip(o.ents), snap: o.snap}
	for k := 0; k < 3; k++ {
		next := m.last() + 1
		e := &raftpb.Entry{Index: new(next), Term: new(term), Type: new(raftpb.EntryNormal), Data: []byte("after recovery")}
		m.hs = hardState{term, m.hs.vote, next}
		m = m.override([]*raftpb.Entry{e})
		if err := l.Save(m.hs.pb(), []*raftpb.Entry{e}, nil); err != nil {
			return fmt.Errorf("%s: save after recovery: %w", im.label, err)
		}
		if k < 2 {
			data := snapData(next, 100)
			if err := l.CreateSnapshot(next, testConf, data); err != nil {
				return fmt.Errorf("%s: snapshot after recovery: %w", im.label, err)
			}
			m.snap = &raftpb.Snapshot{Data: data, Metadata: &raftpb.SnapshotMetadata{Index: new(next), Term: new(term), ConfState: testConf}}
			m.received = false
		}
	}
	l.Close()
	l2, err := openOn(simpmem.FromImage(mem.Media(), reserveFor(mem.Media())), dir, crashOpts)
	if err != nil {
		return fmt.Errorf("%s: reopen after saves and a snapshot after recovery: %w", im.label, err)
	}
	defer l2.s.Memory().(*simpmem.Memory).Release()
	defer l2.Close()
	o2, err := observe(l2)
	if err != nil {
		return fmt.Errorf("%s: %w", im.label, err)
	}
	want, _ := expect(m, m.snap, false, crashOpts.SnapshotCatchUp)
	if d := o2.diff(want); d != "" {
		return fmt.Errorf("%s: after recovery, saves, a snapshot and a reopen: %s", im.label, d)
	}
	return nil
}

func (r *crashRun) opAt(im crashImage) string {
	if im.started > im.acked {
		return r.ops[im.acked].String()
	}
	return "none"
}

func TestCrashConsistency(t *testing.T) {
	n, ops := 6, 250
	if testing.Short() {
		n, ops = 3, 150
	}
	for _, seed := range seeds(t, n) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Logf("seed %d (rerun with RPSTREAM_RAFTLOG_SEED=%d go test -run TestCrashConsistency ./catalog/raftlog/)", seed, seed)
			rng := rand.New(rand.NewPCG(seed, seed^0x7af7))
			r := &crashRun{rng: rng, mem: simpmem.New(crashReserve), dir: newMemDir(nil), maxImgs: 40}
			defer func() { r.mem.Release() }()
			l, err := openOn(r.mem, r.dir, crashOpts)
			if err != nil {
				t.Fatal(err)
			}
			g := newGen(rng, l.maxEntry)
			g.reopen = true
			r.states = []modelState{{}}
			hook := func() {
				r.mem.BeforePersist = func(*simpmem.Memory) {
					r.point(fmt.Sprintf("at persist %d", r.mem.Persists()))
				}
			}
			hook()
			r.dir.onWrite = func(name string, done bool) {
				r.point(fmt.Sprintf("snapshot file %s written %v", name, done))
			}
			for k := 0; k < ops; k++ {
				r.point("between ops")
				o := g.next()
				r.ops = append(r.ops, o)
				r.started = k + 1
				if o.kind == opReopen {
					// A clean restart: everything durable, nothing lost.
					r.mem.BeforePersist = nil
					if err := l.Close(); err != nil {
						t.Fatal(err)
					}
					img := r.mem.Media()
					r.mem.Release()
					r.mem = simpmem.FromImage(img, crashReserve)
					if l, err = openOn(r.mem, r.dir, crashOpts); err != nil {
						t.Fatalf("op %d: reopen: %v", k, err)
					}
					hook()
					ob, err := observe(l)
					if err != nil {
						t.Fatal(err)
					}
					want, _ := expect(g.m, g.m.snap, g.m.received, crashOpts.SnapshotCatchUp)
					if d := ob.diff(want); d != "" {
						t.Fatalf("op %d: reopened log: %s", k, d)
					}
				} else if err := o.run(l); err != nil {
					t.Fatalf("op %d (%v): %v", k, o, err)
				}
				r.acked = k + 1
				r.states = append(r.states, g.m)
			}
			r.mem.BeforePersist = nil
			r.dir.onWrite = nil
			l.Close()
			for _, im := range r.images {
				if err := r.check(im); err != nil {
					t.Fatalf("seed %d: %v", seed, err)
				}
			}
			t.Logf("seed %d: %d ops, last index %d, snapshot %d, %d crash images of %d crash points checked, stream %d bytes",
				seed, ops, g.m.last(), g.m.snapIndex(), len(r.images), r.points, r.mem.Size())
		})
	}
}
