package local_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/rpstream/rpstream/local"
	"github.com/rpstream/rpstream/pmem"
	"github.com/rpstream/rpstream/pmem/simpmem"
)

var bg = context.Background()

func epochPayload(i uint64) []byte {
	return bytes.Repeat([]byte(fmt.Sprintf("entry %d;", i)), 1+int(i*13%50))
}

// reopen recovers the media of mem as a new writer with opts.
func reopen(t *testing.T, mem *simpmem.Memory, opts local.Options) (*simpmem.Memory, *local.Stream) {
	t.Helper()
	img := mem.Media()
	m := simpmem.FromImage(img, len(img)+8*local.MinRegionSize)
	t.Cleanup(m.Release)
	s, err := local.OpenOn(m, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

func TestStartEpoch(t *testing.T) {
	mem := simpmem.New(local.SuperblockSize + 8*local.MinRegionSize)
	defer mem.Release()
	s, err := local.CreateOn(mem, local.Options{RegionSize: local.MinRegionSize, Epoch: 1})
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(0); i < 5; i++ {
		if _, err := s.AppendNoSync(epochPayload(i)); err != nil {
			t.Fatal(err)
		}
	}
	// The same epoch, or an older one, starts nothing.
	if err := s.StartEpoch(bg, 1); err != nil {
		t.Fatal(err)
	}
	if err := s.StartEpoch(bg, 0); !errors.Is(err, local.ErrEpoch) {
		t.Fatalf("StartEpoch(0) under epoch 1: %v", err)
	}
	if tr := s.TailRegion(); tr.Seq != 1 || tr.Epoch != 1 || tr.Count != 5 {
		t.Fatalf("tail %+v", tr)
	}
	used := s.TailRegion().Used
	// A new epoch ends region 1 where it stands, durably, with the
	// entries before it (appended without a sync).
	if err := s.StartEpoch(bg, 2); err != nil {
		t.Fatal(err)
	}
	if s.Persisted() != 5 || s.Epoch() != 2 {
		t.Fatalf("after StartEpoch: persisted %d, epoch %d", s.Persisted(), s.Epoch())
	}
	rs := s.Regions()
	if len(rs) != 2 || rs[0].Epoch != 1 || !rs[0].Sealed || rs[0].Used != used || rs[0].Count != 5 ||
		rs[1].Seq != 2 || rs[1].Epoch != 2 || rs[1].First != 5 || rs[1].Count != 0 || rs[1].Used != local.RegionHeaderSize {
		t.Fatalf("regions after StartEpoch: %+v", rs)
	}
	if tr := s.TailRegion(); tr != rs[1] {
		t.Fatalf("TailRegion %+v, Regions' last %+v", tr, rs[1])
	}
	// Epochs twice in a row leave an empty region between: sealed, kept.
	if err := s.StartEpoch(bg, 3); err != nil {
		t.Fatal(err)
	}
	if err := s.StartEpoch(bg, 2); !errors.Is(err, local.ErrEpoch) {
		t.Fatalf("StartEpoch(2) under epoch 3: %v", err)
	}
	for i := uint64(5); i < 8; i++ {
		if _, err := s.Append(epochPayload(i)); err != nil {
			t.Fatal(err)
		}
	}
	rs = s.Regions()
	if len(rs) != 3 || !rs[1].Sealed || rs[1].Count != 0 || rs[2].Epoch != 3 || rs[2].First != 5 || rs[2].Count != 3 {
		t.Fatalf("regions: %+v", rs)
	}
	s.Close()
	scanAgrees(t, mem.Media())

	// Reopened: the same regions and epochs; an opener of a lower epoch
	// allocates regions of the tail's epoch, and cannot start its own.
	_, s2 := reopen(t, mem, local.Options{Epoch: 1})
	if got := readFrom(t, s2, epochPayload); got != 8 {
		t.Fatalf("reopened with %d entries", got)
	}
	if s2.Epoch() != 3 {
		t.Fatalf("epoch %d after reopening, want the tail's 3", s2.Epoch())
	}
	if err := s2.StartEpoch(bg, 2); !errors.Is(err, local.ErrEpoch) {
		t.Fatalf("StartEpoch(2) with a tail of epoch 3: %v", err)
	}
	for i := uint64(8); i < 90; i++ { // into a new region
		if _, err := s2.AppendNoSync(epochPayload(i)); err != nil {
			t.Fatal(err)
		}
	}
	rs = s2.Regions()
	for i, r := range rs {
		if want := []uint64{1, 2, 3}[min(i, 2)]; r.Epoch != want {
			t.Fatalf("region %d has epoch %d, want %d: %+v", r.Seq, r.Epoch, want, rs)
		}
	}
	if len(rs) < 4 {
		t.Fatalf("no region allocated: %+v", rs)
	}

	// An opener of a higher epoch appends into the tail region until
	// StartEpoch; StartEpoch below the opener's epoch is refused.
	s2.Close()
	_, s3 := reopen(t, s2.Memory().(*simpmem.Memory), local.Options{Epoch: 5})
	if s3.TailRegion().Epoch != 3 || s3.Epoch() != 5 {
		t.Fatalf("tail %+v, epoch %d", s3.TailRegion(), s3.Epoch())
	}
	if err := s3.StartEpoch(bg, 4); !errors.Is(err, local.ErrEpoch) {
		t.Fatalf("StartEpoch(4) by an opener of epoch 5: %v", err)
	}
	if err := s3.StartEpoch(bg, 5); err != nil {
		t.Fatal(err)
	}
	if tr := s3.TailRegion(); tr.Epoch != 5 || tr.First != 90 {
		t.Fatalf("tail %+v", tr)
	}

	// Read-only streams cannot start epochs.
	ro := simpmem.FromImage(mem.Media(), len(mem.Media()))
	defer ro.Release()
	rs4, err := local.OpenOn(ro, local.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer rs4.Close()
	if err := rs4.StartEpoch(bg, 9); !errors.Is(err, local.ErrReadOnly) {
		t.Fatalf("read-only StartEpoch: %v", err)
	}
	if tr := rs4.TailRegion(); tr.Seq != 3 || tr.Epoch != 3 || tr.Count != 3 {
		t.Fatalf("read-only tail %+v", tr)
	}
}

// An observer hears of a region StartEpoch starts at once, and of every
// empty region it leaves, in sequence.
func TestStartEpochObserved(t *testing.T) {
	s, err := local.Create(filepath.Join(t.TempDir(), "s"), local.Options{RegionSize: local.MinRegionSize, Epoch: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := uint64(0); i < 3; i++ {
		if _, err := s.Append(epochPayload(i)); err != nil {
			t.Fatal(err)
		}
	}
	rec := &recorder{}
	var seen []local.ObservedRegion
	st, err := s.SetObserver(&epochRecorder{recorder: rec, seen: &seen})
	if err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	rec.seq, rec.end, rec.tail, rec.slot = 1, st.Committed, st.Regions[0].Used, st.Regions[0].Slot
	rec.mu.Unlock()
	if err := s.StartEpoch(bg, 2); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 1 || seen[0].Seq != 2 || seen[0].Epoch != 2 || seen[0].First != 3 {
		t.Fatalf("observed %+v", seen)
	}
	// Two regions started before any entry commits: both announced.
	if _, err := s.AppendNoSync(epochPayload(3)); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for k := 0; k < 4; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				if _, err := s.Append(epochPayload(uint64(i))); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for e := uint64(3); e < 8; e++ {
		if err := s.StartEpoch(bg, e); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.err != nil {
		t.Fatal(rec.err)
	}
	rs := s.Regions()
	if last := rs[len(rs)-1]; rec.seq != last.Seq || rec.end != s.Committed() {
		t.Fatalf("observer at region %d index %d; stream at %+v, committed %d", rec.seq, rec.end, last, s.Committed())
	}
	for i := 1; i < len(rs); i++ {
		if rs[i].Epoch < rs[i-1].Epoch {
			t.Fatalf("epochs go back: %+v", rs)
		}
	}
}

type epochRecorder struct {
	*recorder
	seen *[]local.ObservedRegion
}

func (r *epochRecorder) RegionStarted(g local.ObservedRegion) {
	r.recorder.RegionStarted(g)
	r.mu.Lock()
	*r.seen = append(*r.seen, g)
	r.mu.Unlock()
}

// staleImage builds what a copy holds after a failover: two leaders wrote
// the same entries 0..2 in region 1 under epoch 1; the old leader then
// started region 2 under epoch 2 and appended entries 3..6, the new one
// region 2 (same slot, same first index) under epoch 3 and entries 3..4
// at the same offsets with the same bytes. The image is the new leader's
// with the old leader's entries 5 and 6 left after its entry 4. It
// returns the image and region 2's (file offset, new end, old end).
func staleImage(t *testing.T, create func(pmem.Memory, local.Options) (*local.Stream, error)) (img []byte, base, newEnd, oldEnd int) {
	t.Helper()
	build := func(epoch uint64, n uint64) []byte {
		mem := simpmem.New(local.SuperblockSize + 4*local.MinRegionSize)
		defer mem.Release()
		s, err := create(mem, local.Options{RegionSize: local.MinRegionSize, Epoch: 1, StreamID: 0x57a1e})
		if err != nil {
			t.Fatal(err)
		}
		for i := uint64(0); i < n; i++ {
			if i == 3 {
				if err := s.StartEpoch(bg, epoch); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := s.Append(epochPayload(i)); err != nil {
				t.Fatal(err)
			}
		}
		s.Close()
		return mem.Media()
	}
	old, img := build(2, 7), build(3, 5)
	so, err1 := local.Scan(old)
	sn, err2 := local.Scan(img)
	if err1 != nil || err2 != nil || len(so.Regions) != 2 || len(sn.Regions) != 2 || so.Regions[1].Offset != sn.Regions[1].Offset {
		t.Fatalf("scans: %+v %v, %+v %v", so, err1, sn, err2)
	}
	if so.Regions[1].Epoch != 2 || sn.Regions[1].Epoch != 3 {
		t.Fatalf("region 2 epochs %d and %d", so.Regions[1].Epoch, sn.Regions[1].Epoch)
	}
	base, newEnd, oldEnd = sn.Regions[1].Offset, sn.Regions[1].End, so.Regions[1].End
	// The same entries at the same offsets: only their checksums differ.
	if int(binary.LittleEndian.Uint32(old[base+newEnd:])) != len(epochPayload(5)) {
		t.Fatal("the old leader's entry 5 is not where the new leader's entries end: the test proves nothing")
	}
	copy(img[base+newEnd:base+oldEnd], old[base+newEnd:base+oldEnd])
	return img, base, newEnd, oldEnd
}

// Stale bytes never validate: the old leader's entries, at the same
// sequence number, slot and offsets, fail their check in the region the
// new leader started under a new epoch: in recovery, Scan, a reader and a
// replica's copy. In a version 1 file they validate (the hazard version 2
// removes).
func TestStaleEntryOfOlderEpochFails(t *testing.T) {
	img, base, newEnd, oldEnd := staleImage(t, local.CreateOn)
	sc, err := local.Scan(img)
	if err != nil {
		t.Fatal(err)
	}
	if tail := sc.Regions[1]; sc.Next != 5 || tail.End != newEnd || tail.Count != 2 || sc.DirtyTo != oldEnd {
		t.Fatalf("scan: next %d, tail %+v, dirty to %d; want next 5, end %d, dirty to %d", sc.Next, tail, sc.DirtyTo, newEnd, oldEnd)
	}
	scanAgrees(t, img)

	// Recovery keeps entries 0..4 and zeroes the stale ones.
	mem := simpmem.FromImage(bytes.Clone(img), len(img)+4*local.MinRegionSize)
	defer mem.Release()
	s, err := local.OpenOn(mem, local.Options{Epoch: 3})
	if err != nil {
		t.Fatal(err)
	}
	if got := readFrom(t, s, epochPayload); got != 5 {
		t.Fatalf("recovered %d entries, want 5", got)
	}
	if i, err := s.Append([]byte("new 5")); err != nil || i != 5 {
		t.Fatalf("append: %d, %v", i, err)
	}
	s.Close()
	if sc, _ := local.Scan(mem.Media()); sc.Next != 6 || sc.DirtyTo != sc.Regions[1].End {
		t.Fatalf("after recovery: %+v", sc)
	}

	// A replica's copy: up to the new leader's commit word, entries 0..4;
	// a commit word over the stale entries is damage, never their bytes.
	dir := t.TempDir()
	for _, c := range []struct {
		commit  int
		corrupt bool
	}{{newEnd, false}, {oldEnd, true}} {
		cimg := bytes.Clone(img)
		binary.LittleEndian.PutUint64(cimg[base+local.RegionCommitOffset:], uint64(c.commit))
		path := filepath.Join(dir, fmt.Sprint("copy", c.commit))
		if err := os.WriteFile(path, cimg, 0o644); err != nil {
			t.Fatal(err)
		}
		if sc, _ := local.Scan(cimg); sc.Regions[1].Commit != uint64(c.commit) {
			t.Fatalf("scan's commit word %d, want %d", sc.Regions[1].Commit, c.commit)
		}
		cp, err := local.OpenCopy(path, 0)
		if err != nil {
			t.Fatal(err)
		}
		if got := cp.Committed(); got != 5 {
			t.Fatalf("commit word %d: copy committed %d, want 5", c.commit, got)
		}
		it := cp.Iterator(0)
		n := uint64(0)
		for ; it.Next(); n++ {
			if !bytes.Equal(it.Entry().Data, epochPayload(n)) {
				t.Fatalf("copy's entry %d differs", n)
			}
		}
		if n != 5 || errors.Is(it.Err(), local.ErrCorrupt) != c.corrupt {
			t.Fatalf("commit word %d: copy read %d entries, then %v", c.commit, n, it.Err())
		}
		cp.Close()
	}

	// Version 1 cannot tell: the stale entries come back.
	img1, _, _, _ := staleImage(t, local.CreateV1On)
	if sc, err := local.Scan(img1); err != nil || sc.Next != 7 {
		t.Fatalf("v1 scan: next %d, %v; want the stale 7", sc.Next, err)
	}
}

// Crash images at every persist of StartEpoch recover every acknowledged
// entry, with a tail region either of the old epoch (the start did not
// happen: it can be done again) or of the new one with the old tail
// sealed before it; after StartEpoch returns, always the new one.
func TestStartEpochCrash(t *testing.T) {
	n := 40
	if testing.Short() {
		n = 8
	}
	for _, seed := range seeds(t, n) {
		rng := rand.New(rand.NewPCG(seed, 0xe90c))
		mem := simpmem.New(SuperAndSlots(16))
		s, err := local.CreateOn(mem, local.Options{RegionSize: crashRegion, Epoch: 1})
		if err != nil {
			t.Fatal(err)
		}
		contents := map[uint64][]byte{}
		var synced uint64
		// Up to two regions of entries, the last ones not synced; or none.
		for k, n := 0, rng.IntN(4)*rng.IntN(12); k < n; k++ {
			p := make([]byte, rng.IntN(3000))
			for j := range p {
				p[j] = byte(rng.Uint32())
			}
			var i uint64
			if rng.IntN(3) == 0 {
				i, err = s.AppendNoSync(p)
			} else {
				i, err = s.Append(p)
				synced = i + 1
			}
			if err != nil {
				t.Fatal(err)
			}
			contents[i] = p
		}
		reserved := uint64(len(contents))
		before := s.TailRegion()
		var images []image
		mem.BeforePersist = func(m *simpmem.Memory) {
			for k := 0; k < 3; k++ {
				acked := synced
				images = append(images, image{
					img:   m.Crash(rng, simpmem.Granularity(k%2), []float64{0, 1, rng.Float64()}[k]),
					label: fmt.Sprintf("seed %d: crash at persist %d of StartEpoch", seed, m.Persists()),
					acked: func(i uint64) bool { return i < acked }, reserved: reserved,
				})
			}
		}
		if err := s.StartEpoch(bg, 2); err != nil {
			t.Fatal(err)
		}
		mem.BeforePersist = nil
		done := len(images)
		images = append(images, image{img: mem.Crash(rng, simpmem.Lines, 0), label: fmt.Sprintf("seed %d: crash after StartEpoch", seed),
			acked: func(i uint64) bool { return i < reserved }, reserved: reserved})
		s.Close()
		mem.Release()
		look := func(i uint64) ([]byte, bool) { p, ok := contents[i]; return p, ok }
		for k, im := range images {
			if err := checkImage(im, look, rng); err != nil {
				t.Fatal(err)
			}
			if err := checkEpochImage(im, before, k >= done); err != nil {
				t.Fatalf("%s: %v", im.label, err)
			}
		}
	}
}

// checkEpochImage recovers a crash image of StartEpoch(2) from a tail
// region before (epoch 1) and checks its regions; started: StartEpoch had
// returned.
func checkEpochImage(im image, before local.RegionInfo, started bool) error {
	mem := simpmem.FromImage(im.img, len(im.img)+8*crashRegion)
	defer mem.Release()
	s, err := local.OpenOn(mem, local.Options{Epoch: 2})
	if err != nil {
		return err
	}
	defer s.Close()
	rs := s.Regions()
	if len(rs) == 0 {
		// Nothing was appended: the stream has no region, before
		// StartEpoch or after, and the first append makes one of epoch 2.
		if before.Seq != 0 {
			return fmt.Errorf("no region after StartEpoch from %+v", before)
		}
		rs = []local.RegionInfo{{Epoch: 2}}
	}
	tail := rs[len(rs)-1]
	switch {
	case before.Seq == 0:
		if len(rs) != 1 || rs[0].Seq != 0 {
			return fmt.Errorf("regions %+v after StartEpoch of a stream without one", rs)
		}
	case tail.Epoch == 1 && !started:
		// The start did not happen; entries not yet durable may be
		// lost, and with them whole regions.
		if tail.Seq > before.Seq {
			return fmt.Errorf("tail region %+v, before StartEpoch %+v", tail, before)
		}
	case tail.Epoch == 2 && len(rs) == 1:
		// The old tail held nothing and started the stream: recovery
		// frees it as wholly below the head.
		if before.Count != 0 || before.First != 0 || tail.Seq != before.Seq+1 || tail.First != 0 {
			return fmt.Errorf("regions %+v after StartEpoch from %+v", rs, before)
		}
	case tail.Epoch == 2:
		prev := rs[len(rs)-2]
		// The seal is advisory: a crash may lose it, never the entries.
		if tail.Seq != before.Seq+1 || tail.Count != 0 || prev.Seq != before.Seq || (started && !prev.Sealed) || prev.Count != tail.First-prev.First {
			return fmt.Errorf("regions %+v after StartEpoch from %+v", rs, before)
		}
		if started && tail.First != before.First+before.Count {
			return fmt.Errorf("new region starts at %d, the old one held %d from %d", tail.First, before.Count, before.First)
		}
	default:
		return fmt.Errorf("tail region %+v (started %v)", tail, started)
	}
	// Starting again (or anew) works, and the next entry lands under 2.
	if err := s.StartEpoch(bg, 2); err != nil {
		return err
	}
	c := s.Committed()
	if _, err := s.Append([]byte("epoch 2")); err != nil {
		return err
	}
	if tr := s.TailRegion(); tr.Epoch != 2 || tr.First != c || tr.Count != 1 {
		return fmt.Errorf("after StartEpoch again: tail %+v", tr)
	}
	return nil
}

// A takeover retried under the epoch it took (node: the same process,
// the catalog still granting it) reopens the stream with that epoch,
// calls StartEpoch with it again and appends another marker: no region
// is allocated, and a crash anywhere in it recovers a prefix whose tail
// is still the region the first start allocated.
func TestStartEpochAgainAfterReopenCrash(t *testing.T) {
	n := 40
	if testing.Short() {
		n = 8
	}
	for _, seed := range seeds(t, n) {
		rng := rand.New(rand.NewPCG(seed, 0xa9a1))
		mem := simpmem.New(SuperAndSlots(16))
		s, err := local.CreateOn(mem, local.Options{RegionSize: crashRegion, Epoch: 1})
		if err != nil {
			t.Fatal(err)
		}
		contents := map[uint64][]byte{}
		for k, n := 0, 1+rng.IntN(12); k < n; k++ {
			p := make([]byte, rng.IntN(3000))
			for j := range p {
				p[j] = byte(rng.Uint32())
			}
			i, err := s.Append(p)
			if err != nil {
				t.Fatal(err)
			}
			contents[i] = p
		}
		// The first attempt: its region and its marker, durable.
		if err := s.StartEpoch(bg, 2); err != nil {
			t.Fatal(err)
		}
		i, err := s.Append([]byte("marker 2"))
		if err != nil {
			t.Fatal(err)
		}
		contents[i] = []byte("marker 2")
		started := s.TailRegion()
		s.Close()
		mem2 := simpmem.FromImage(mem.Media(), len(mem.Media())+8*crashRegion)
		mem.Release()

		// The retry: reopened under 2, started again, a second marker.
		s, err = local.OpenOn(mem2, local.Options{Epoch: 2})
		if err != nil {
			t.Fatal(err)
		}
		synced := s.Committed()
		var images []image
		mem2.BeforePersist = func(m *simpmem.Memory) {
			for k := 0; k < 3; k++ {
				acked := synced
				images = append(images, image{
					img:   m.Crash(rng, simpmem.Granularity(k%2), []float64{0, 1, rng.Float64()}[k]),
					label: fmt.Sprintf("seed %d: crash at persist %d of the retried start", seed, m.Persists()),
					acked: func(i uint64) bool { return i < acked }, reserved: synced + 1,
				})
			}
		}
		if err := s.StartEpoch(bg, 2); err != nil {
			t.Fatal(err)
		}
		if i, err = s.Append([]byte("marker 2 again")); err != nil {
			t.Fatal(err)
		}
		contents[i] = []byte("marker 2 again")
		mem2.BeforePersist = nil
		if len(images) == 0 {
			t.Fatalf("seed %d: the retried start persisted nothing", seed)
		}
		images = append(images, image{img: mem2.Crash(rng, simpmem.Lines, 0), label: fmt.Sprintf("seed %d: crash after the retried start", seed),
			acked: func(j uint64) bool { return j <= i }, reserved: i + 1})
		if rs := s.Regions(); len(rs) != int(started.Seq) || rs[len(rs)-1].Seq != started.Seq || rs[len(rs)-1].Count != 2 {
			t.Fatalf("seed %d: regions %+v after the retried start, the first made %+v", seed, rs, started)
		}
		s.Close()
		mem2.Release()
		look := func(i uint64) ([]byte, bool) { p, ok := contents[i]; return p, ok }
		for _, im := range images {
			if err := checkImage(im, look, rng); err != nil {
				t.Fatal(err)
			}
			m := simpmem.FromImage(im.img, len(im.img)+8*crashRegion)
			r, err := local.OpenOn(m, local.Options{Epoch: 2})
			if err != nil {
				t.Fatalf("%s: %v", im.label, err)
			}
			if tail := r.TailRegion(); tail.Seq != started.Seq || tail.Epoch != 2 || tail.First != started.First || tail.Count < 1 {
				t.Errorf("%s: tail region %+v, the first start made %+v", im.label, tail, started)
			}
			r.Close()
			m.Release()
		}
	}
}

// StartEpoch waits for entries reserved before it; if its context ends
// first, the new region stands, and a second call finishes the start.
func TestStartEpochWaitsForReservations(t *testing.T) {
	mem := simpmem.New(local.SuperblockSize + 4*local.MinRegionSize)
	defer mem.Release()
	s, err := local.CreateOn(mem, local.Options{RegionSize: local.MinRegionSize, Epoch: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v, err := s.Reserve(10)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(bg)
	cancel()
	if err := s.StartEpoch(ctx, 2); !errors.Is(err, context.Canceled) {
		t.Fatalf("StartEpoch with an unpublished reservation and a cancelled context: %v", err)
	}
	if tr := s.TailRegion(); tr.Seq != 2 || tr.Epoch != 2 || tr.First != 1 {
		t.Fatalf("tail %+v", tr)
	}
	copy(v.Bytes(), "reserved 0")
	if _, err := v.Publish(); err != nil {
		t.Fatal(err)
	}
	if err := s.StartEpoch(bg, 2); err != nil {
		t.Fatal(err)
	}
	if rs := s.Regions(); s.Persisted() != 1 || len(rs) != 2 || !rs[0].Sealed || rs[0].Count != 1 {
		t.Fatalf("persisted %d, regions %+v", s.Persisted(), rs)
	}
}
