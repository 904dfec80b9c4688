package remote

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/rpstream/rpstream/local"
	"github.com/rpstream/rpstream/rdma"
)

func allocated(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Blocks * 512
}

// TestTrimmedCopy: a copy given its leader's superblock after a trim
// frees the regions before the new head at its next Tail (oldest first,
// as local's recovery finishes a trim) and opens at the leader's head;
// Discard gives their slots' storage back, leaves slots holding a region
// alone, and a discarded slot is allocated again when reused. A copy cut
// back to no region at all answers Tail with nothing, not corruption.
func TestTrimmedCopy(t *testing.T) {
	e := newHubEnv(t)
	w := openReplica(t, e, "s", 1)
	l := newLeader(t)
	l.append(t, 200)
	if n := len(l.s.Regions()); n < 3 {
		t.Fatalf("%d regions: the test needs 3", n)
	}
	l.copyTo(t, w, 1)
	old := l.s.Regions()
	head, err := l.s.Trim(old[2].First)
	if err != nil || head != old[2].First {
		t.Fatalf("leader's trim: head %d, %v", head, err)
	}
	// The superblock (with the trim record) alone, as the leader's loop
	// writes it.
	src, err := w.peer.Register(l.s.Memory().Bytes(), rdma.UsageWriteSrc, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Deregister()
	hdr, err := w.cl.Region(ctx(t), 1, HeaderSlot)
	if err != nil {
		t.Fatal(err)
	}
	w.conn.Write(hdr.Desc, 0, src, 0, 2048)
	if err := w.conn.Flush(hdr.Desc, 0, 2048, rdma.Persistence).Wait(ctx(t)); err != nil {
		t.Fatal(err)
	}
	got, err := w.cl.Tail(ctx(t), l.end(1))
	if err != nil {
		t.Fatal(err)
	}
	if want := l.end(1); got.Seq != want.LeaderSeq || got.Off != want.LeaderOff || got.Index != *want.LeaderIndex {
		t.Fatalf("tail after the trim: %s, want %s", tailString(got), reqString(want))
	}
	path := filepath.Join(e.dir, "s")
	sc, err := local.Scan(mustRead(t, path))
	if err != nil {
		t.Fatal(err)
	}
	if sc.Regions[0].Seq != old[2].Seq || sc.Head != head {
		t.Fatalf("copy after the tail: first region %d, head %d; want %d, %d", sc.Regions[0].Seq, sc.Head, old[2].Seq, head)
	}

	before := allocated(t, path)
	slots := []int{old[0].Slot, old[1].Slot, old[2].Slot}
	done, err := w.cl.Discard(ctx(t), 1, slots)
	if err != nil {
		t.Fatal(err)
	}
	if len(done) != 2 || done[0] != old[0].Slot || done[1] != old[1].Slot {
		t.Fatalf("discarded %v of %v, want the two freed ones", done, slots)
	}
	if after := allocated(t, path); after > before-int64(regionSize) {
		t.Errorf("storage %d bytes before the discard, %d after", before, after)
	}
	if _, err := w.cl.Discard(ctx(t), 2, slots); err == nil {
		t.Error("a discard under another epoch was answered")
	}
	// Reused: allocated again.
	if _, err := w.cl.Region(ctx(t), 1, old[0].Slot); err != nil {
		t.Fatal(err)
	}
	if after := allocated(t, path); after < before-int64(regionSize) {
		t.Errorf("a reused slot was not allocated again: %d bytes", after)
	}

	// Cut back to nothing by a writer whose log shares nothing with it,
	// it still answers.
	for _, r := range sc.Regions {
		rr, err := w.cl.Region(ctx(t), 1, r.Slot)
		if err != nil {
			t.Fatal(err)
		}
		clearLine0(t, w, rr)
	}
	if got, err := w.cl.Tail(ctx(t), l.end(1)); err != nil || got.Seq != 0 || got.Index != 0 {
		t.Fatalf("tail of a copy without regions: %s, %v", tailString(got), err)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// clearLine0 zeroes line 0 of region r on w's target, durably.
func clearLine0(t *testing.T, w *writer, r Region) {
	t.Helper()
	if err := w.put(t, r, 0, make([]byte, 64)); err != nil {
		t.Fatal(err)
	}
}
