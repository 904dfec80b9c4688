package remote

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/rpstream/rpstream/local"
	"github.com/rpstream/rpstream/rdma"
	"github.com/rpstream/rpstream/remote/remotepb"
)

// leaderStream is a real stream file with entries, as a leader holds it.
type leaderStream struct {
	s    *local.Stream
	want [][]byte
	rng  *rand.Rand
}

func newLeader(t *testing.T) *leaderStream {
	t.Helper()
	s, err := local.Create(filepath.Join(t.TempDir(), "leader"), local.Options{RegionSize: regionSize, SpareRegions: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &leaderStream{s: s, rng: rand.New(rand.NewPCG(3, 4))}
}

func (l *leaderStream) append(t *testing.T, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		p := make([]byte, 1+l.rng.IntN(1500))
		for k := range p {
			p[k] = byte(l.rng.Uint32())
		}
		if _, err := l.s.Append(p); err != nil {
			t.Fatal(err)
		}
		l.want = append(l.want, p) // Append returns once it is durable
	}
}

// end is the leader's durable end as a TailRequest states it.
func (l *leaderStream) end(epoch uint64) *remotepb.TailRequest {
	rs := l.s.Regions()
	last := rs[len(rs)-1]
	idx := l.s.Committed()
	return &remotepb.TailRequest{Epoch: epoch, LeaderSeq: last.Seq, LeaderOff: uint64(last.Used), LeaderIndex: &idx}
}

// copyTo writes the leader's header and every region into w's target, as
// replication does, at the same offsets.
func (l *leaderStream) copyTo(t *testing.T, w *writer, epoch uint64) {
	t.Helper()
	src, err := w.peer.Register(l.s.Memory().Bytes(), rdma.UsageWriteSrc, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Deregister()
	put := func(slot, off, n int) {
		r, err := w.cl.Region(ctx(t), epoch, slot)
		if err != nil {
			t.Fatalf("region %d: %v", slot, err)
		}
		w.conn.Write(r.Desc, 0, src, off, n)
		if err := w.conn.Flush(r.Desc, 0, n, rdma.Persistence).Wait(ctx(t)); err != nil {
			t.Fatalf("copy slot %d: %v", slot, err)
		}
	}
	put(HeaderSlot, 0, SuperblockSize)
	for _, r := range l.s.Regions() {
		put(r.Slot, r.Offset, regionSize)
	}
}

// openReplica opens stream on the hub for w, grants epoch and returns w.
func openReplica(t *testing.T, e *hubEnv, stream string, epoch uint64) *writer {
	t.Helper()
	w := dialAddr(t, e.hub.Addr())
	if _, err := w.cl.Open(ctx(t), openReq(stream, true)); err != nil {
		t.Fatal(err)
	}
	if err := w.cl.Grant(ctx(t), epoch, "leader"); err != nil {
		t.Fatal(err)
	}
	return w
}

func tailString(r *remotepb.TailResponse) string {
	return fmt.Sprintf("seq %d off %d index %d", r.GetSeq(), r.GetOff(), r.GetIndex())
}

func reqString(q *remotepb.TailRequest) string {
	return fmt.Sprintf("seq %d off %d index %d", q.LeaderSeq, q.LeaderOff, q.GetLeaderIndex())
}

// checkReplica opens the replica file read-only with local/ and compares
// its entries with want.
func checkReplica(t *testing.T, path string, want [][]byte) {
	t.Helper()
	s, err := local.Open(path, local.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("the replica does not open: %v", err)
	}
	defer s.Close()
	if s.Committed() != uint64(len(want)) {
		t.Fatalf("the replica holds %d entries, want %d", s.Committed(), len(want))
	}
	it := s.Iterator(0)
	n := 0
	for it.Next() {
		e := it.Entry()
		if !bytes.Equal(e.Data, want[e.Index]) {
			t.Fatalf("replica entry %d differs", e.Index)
		}
		n++
	}
	if it.Err() != nil || n != len(want) {
		t.Fatalf("read %d entries: %v", n, it.Err())
	}
}

func TestTailEmptyReplica(t *testing.T) {
	e := newHubEnv(t)
	w := openReplica(t, e, "s", 1)
	l := newLeader(t)
	l.append(t, 10)
	got, err := w.cl.Tail(ctx(t), l.end(1))
	if err != nil {
		t.Fatal(err)
	}
	if got.Seq != 0 || got.Off != 0 || got.Index != 0 {
		t.Fatalf("empty replica: %s", tailString(got))
	}
	// A replica with a superblock but no region yet.
	src, err := w.peer.Register(l.s.Memory().Bytes(), rdma.UsageWriteSrc, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := w.cl.Region(ctx(t), 1, HeaderSlot)
	if err != nil {
		t.Fatal(err)
	}
	w.conn.Write(r.Desc, 0, src, 0, SuperblockSize)
	if err := w.conn.Flush(r.Desc, 0, SuperblockSize, rdma.Persistence).Wait(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if got, err = w.cl.Tail(ctx(t), l.end(1)); err != nil || got.Seq != 0 || got.Off != 0 || got.Index != 0 {
		t.Fatalf("replica with only a superblock: %s, %v", tailString(got), err)
	}
}

// TestTailCopiedPrefix: a replica holding the leader's copy ends where the
// leader does; only the current writer may ask.
func TestTailCopiedPrefix(t *testing.T) {
	e := newHubEnv(t)
	w := openReplica(t, e, "s", 2)
	l := newLeader(t)
	l.append(t, 150)
	l.copyTo(t, w, 2)
	q := l.end(2)
	got, err := w.cl.Tail(ctx(t), q)
	if err != nil {
		t.Fatal(err)
	}
	if tailString(got) != reqString(q) {
		t.Fatalf("replica ends at %s, the leader at %s", tailString(got), reqString(q))
	}
	// A leader whose count disagrees is told so.
	bad := *q.LeaderIndex + 1
	q.LeaderIndex = &bad
	if _, err := w.cl.Tail(ctx(t), q); !errors.Is(err, ErrMismatch) {
		t.Fatalf("tail with another count: %v", err)
	}
	if _, err := w.cl.Tail(ctx(t), &remotepb.TailRequest{Epoch: 1, LeaderSeq: q.LeaderSeq, LeaderOff: q.LeaderOff}); !errors.Is(err, ErrNotWriter) {
		t.Fatalf("tail with an old epoch: %v", err)
	}
	x := dialAddr(t, e.hub.Addr())
	if _, err := x.cl.Open(ctx(t), openReq("s", false)); err != nil {
		t.Fatal(err)
	}
	if _, err := x.cl.Tail(ctx(t), l.end(2)); !errors.Is(err, ErrNotWriter) {
		t.Fatalf("tail from another connection: %v", err)
	}
	// A leader's end that contradicts the replica (region 1 longer on the
	// leader, though the replica has regions after it) is refused and cuts
	// nothing.
	if r1 := l.s.Regions()[0]; r1.Used < regionSize {
		odd := &remotepb.TailRequest{Epoch: 2, LeaderSeq: 1, LeaderOff: uint64(r1.Used + 8)}
		if _, err := w.cl.Tail(ctx(t), odd); !errors.Is(err, ErrMismatch) {
			t.Fatalf("tail with a contradicting end: %v", err)
		}
	}
	if got, err := w.cl.Tail(ctx(t), &remotepb.TailRequest{Epoch: 2}); err != nil || tailString(got) != reqString(l.end(2)) {
		t.Fatalf("tail without the leader's end: %s, %v", tailString(got), err)
	}
	checkReplica(t, filepath.Join(e.dir, "s"), l.want)
}

// TestTailCutsBack: a replica holding more than the leader (entries the
// leader replicated, then lost in a crash) is cut back to the leader's
// end, within the tail region or across regions.
func TestTailCutsBack(t *testing.T) {
	for _, extra := range []int{2, 120} {
		t.Run(fmt.Sprintf("extra%d", extra), func(t *testing.T) {
			e := newHubEnv(t)
			w := openReplica(t, e, "s", 3)
			l := newLeader(t)
			l.append(t, 100)
			q := l.end(3)
			kept := len(l.want)
			l.append(t, extra) // replicated, then lost by the leader
			l.copyTo(t, w, 3)
			if n := len(l.s.Regions()); extra > 100 && n <= int(q.LeaderSeq) {
				t.Fatalf("the extra entries stayed in region %d", n)
			}
			got, err := w.cl.Tail(ctx(t), q)
			if err != nil {
				t.Fatal(err)
			}
			if tailString(got) != reqString(q) {
				t.Fatalf("replica ends at %s after the cut, the leader at %s", tailString(got), reqString(q))
			}
			// Asking again finds the same end and cuts nothing more.
			if got, err = w.cl.Tail(ctx(t), q); err != nil || tailString(got) != reqString(q) {
				t.Fatalf("second tail: %s, %v", tailString(got), err)
			}
			if err := e.hub.Drop("s"); err != nil {
				t.Fatal(err)
			}
			// The regions after the leader's are freed (line 0 zeroed), so
			// that the leader may allocate their successors elsewhere.
			img, err := os.ReadFile(filepath.Join(e.dir, "s"))
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range l.s.Regions() {
				if r.Seq > q.LeaderSeq && !bytes.Equal(img[r.Offset:r.Offset+64], make([]byte, 64)) {
					t.Fatalf("region %d (slot %d) is still valid on the replica", r.Seq, r.Slot)
				}
			}
			checkReplica(t, filepath.Join(e.dir, "s"), l.want[:kept])
		})
	}
}

// TestTailDamagedEntry: a replica whose last entry is damaged ends before
// it, and cuts nothing.
func TestTailDamagedEntry(t *testing.T) {
	e := newHubEnv(t)
	w := openReplica(t, e, "s", 4)
	l := newLeader(t)
	l.append(t, 80)
	l.copyTo(t, w, 4)
	q := l.end(4)
	last := l.want[len(l.want)-1]
	start := int(q.LeaderOff) - (local.EntryHeaderSize + (len(last)+7)&^7)
	tail := l.s.Regions()[len(l.s.Regions())-1]
	r, err := w.cl.Region(ctx(t), 4, tail.Slot)
	if err != nil {
		t.Fatal(err)
	}
	flipped := []byte{^last[0]}
	if err := w.put(t, r, start+local.EntryHeaderSize, flipped); err != nil {
		t.Fatal(err)
	}
	got, err := w.cl.Tail(ctx(t), q)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("seq %d off %d index %d", q.LeaderSeq, start, *q.LeaderIndex-1)
	if tailString(got) != want {
		t.Fatalf("damaged replica ends at %s, want %s", tailString(got), want)
	}
	if err := e.hub.Drop("s"); err != nil {
		t.Fatal(err)
	}
	checkReplica(t, filepath.Join(e.dir, "s"), l.want[:len(l.want)-1])
}

// TestTailDamagedMiddleRegion: a replica whose first region lost an entry
// that its successors need ends in that region, and frees the regions
// after it (which recovery would drop) so that no stale copy remains.
func TestTailDamagedMiddleRegion(t *testing.T) {
	e := newHubEnv(t)
	w := openReplica(t, e, "s", 4)
	l := newLeader(t)
	l.append(t, 200)
	l.copyTo(t, w, 4)
	rs := l.s.Regions()
	if len(rs) < 3 {
		t.Fatalf("only %d regions", len(rs))
	}
	// Damage the second entry of region 1.
	first := l.want[0]
	start := local.RegionHeaderSize + local.EntryHeaderSize + (len(first)+7)&^7
	r, err := w.cl.Region(ctx(t), 4, rs[0].Slot)
	if err != nil {
		t.Fatal(err)
	}
	// Unseal region 1 too: a sealed region is trusted without a scan.
	if err := w.put(t, r, local.RegionSealOffset, make([]byte, 8)); err != nil {
		t.Fatal(err)
	}
	if err := w.put(t, r, start+local.EntryHeaderSize, []byte{^l.want[1][0]}); err != nil {
		t.Fatal(err)
	}
	got, err := w.cl.Tail(ctx(t), l.end(4))
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("seq 1 off %d index 1", start); tailString(got) != want {
		t.Fatalf("replica ends at %s, want %s", tailString(got), want)
	}
	if err := e.hub.Drop("s"); err != nil {
		t.Fatal(err)
	}
	img, err := os.ReadFile(filepath.Join(e.dir, "s"))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs[1:] {
		if !bytes.Equal(img[r.Offset:r.Offset+64], make([]byte, 64)) {
			t.Fatalf("region %d (slot %d) is still valid on the replica", r.Seq, r.Slot)
		}
	}
	checkReplica(t, filepath.Join(e.dir, "s"), l.want[:1])
}

// TestTailSealedLastRegion: a replica whose last region is sealed (the
// leader's copy of the next region never arrived) ends at that region's
// end; the seal, which recovery would call corrupt, is cleared.
func TestTailSealedLastRegion(t *testing.T) {
	e := newHubEnv(t)
	w := openReplica(t, e, "s", 5)
	l := newLeader(t)
	l.append(t, 200)
	rs := l.s.Regions()
	if len(rs) < 3 || !rs[len(rs)-2].Sealed {
		t.Fatalf("regions %+v: want three or more, the one before the tail sealed", rs)
	}
	l.copyTo(t, w, 5)
	// The replica loses the tail region (its line 0).
	tail := rs[len(rs)-1]
	r, err := w.cl.Region(ctx(t), 5, tail.Slot)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.put(t, r, 0, make([]byte, 64)); err != nil {
		t.Fatal(err)
	}
	prev := rs[len(rs)-2]
	got, err := w.cl.Tail(ctx(t), l.end(5))
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("seq %d off %d index %d", prev.Seq, prev.Used, tail.First); tailString(got) != want {
		t.Fatalf("replica ends at %s, want %s", tailString(got), want)
	}
	if err := e.hub.Drop("s"); err != nil {
		t.Fatal(err)
	}
	checkReplica(t, filepath.Join(e.dir, "s"), l.want[:tail.First])
}
