package local_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/rpstream/rpstream/local"
	"github.com/rpstream/rpstream/pmem/simpmem"
)

// testdata/v1-stream.img.gz is a stream file of format version 1, written
// by the build before version 2 (commit 802a64d) with regions of
// MinRegionSize under epoch 3: entries 0 to 74 of v1Payload, then trimmed
// to 25, so that it holds regions 2 and 3 (sealed, region 3 in the slot
// region 1 left) and region 4 (the tail, 6 entries).
const (
	v1Head = 25
	v1Next = 75
)

func v1Payload(i uint64) []byte {
	return bytes.Repeat([]byte(fmt.Sprintf("v1 entry %d;", i)), int(i*37%120))
}

func loadV1Image(t *testing.T) []byte {
	t.Helper()
	f, err := os.Open("testdata/v1-stream.img.gz")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	img, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// readFrom reads s from its head and checks each entry against want.
func readFrom(t *testing.T, s *local.Stream, want func(i uint64) []byte) uint64 {
	t.Helper()
	it := s.Iterator(s.Head())
	n := s.Head()
	for ; it.Next(); n++ {
		if e := it.Entry(); e.Index != n || !bytes.Equal(e.Data, want(n)) {
			t.Fatalf("entry %d: index %d, %d bytes, want %d bytes", n, e.Index, len(e.Data), len(want(n)))
		}
	}
	if it.Err() != nil {
		t.Fatalf("reading at %d: %v", n, it.Err())
	}
	return n
}

// A file of today's format before version 2 still opens, reads, appends
// (in its own format), recovers from crashes, reads as a replica's copy
// and starts epochs.
func TestV1FileStillWorks(t *testing.T) {
	img := loadV1Image(t)
	sc, err := local.Scan(img)
	if err != nil {
		t.Fatal(err)
	}
	if sc.Version != local.FormatVersion1 || sc.Next != v1Next || len(sc.Regions) != 3 || sc.Regions[0].Seq != 2 || sc.Regions[1].Slot != 0 {
		t.Fatalf("scan of the v1 image: %+v", sc)
	}
	for _, r := range sc.Regions {
		if r.Epoch != 3 {
			t.Fatalf("region %d has epoch %d, want 3", r.Seq, r.Epoch)
		}
	}
	scanAgrees(t, img)

	want := map[uint64][]byte{}
	look := func(i uint64) []byte {
		if p, ok := want[i]; ok {
			return p
		}
		return v1Payload(i)
	}
	mem := simpmem.FromImage(bytes.Clone(img), len(img)+16*local.MinRegionSize)
	defer mem.Release()
	s, err := local.OpenOn(mem, local.Options{Epoch: 3})
	if err != nil {
		t.Fatal(err)
	}
	if s.Head() != v1Head || s.Committed() != v1Next {
		t.Fatalf("head %d, committed %d; want %d, %d", s.Head(), s.Committed(), v1Head, v1Next)
	}
	readFrom(t, s, look)

	// Appends into two more regions, with crash images at persists.
	rng := rand.New(rand.NewPCG(1, 1))
	var images []image
	var synced uint64 = v1Next
	mem.BeforePersist = func(m *simpmem.Memory) {
		if rng.IntN(3) == 0 {
			acked := synced
			images = append(images, image{img: m.Crash(rng, simpmem.Granularity(rng.IntN(2)), rng.Float64()), label: fmt.Sprintf("v1 crash at persist %d", m.Persists()),
				acked: func(i uint64) bool { return i < acked }, trimTo: v1Head, reserved: uint64(v1Next+len(want)) + 1})
		}
	}
	for k := 0; k < 40; k++ {
		p := make([]byte, rng.IntN(1500))
		for j := range p {
			p[j] = byte(rng.Uint32())
		}
		want[uint64(v1Next+k)] = p
		if i, err := s.Append(p); err != nil || i != uint64(v1Next+k) {
			t.Fatalf("append %d: index %d, %v", k, i, err)
		}
		synced = uint64(v1Next + k + 1)
	}
	mem.BeforePersist = nil
	end := readFrom(t, s, look)
	s.Close()
	contents := func(i uint64) ([]byte, bool) {
		if i >= end {
			return nil, false
		}
		return look(i), true
	}
	for _, im := range images {
		if err := checkImage(im, contents, rng); err != nil {
			t.Fatal(err)
		}
	}

	// Reopened, it is still version 1, whole, and every region written
	// since says the opener's epoch.
	after := mem.Media()
	sc, err = local.Scan(after)
	if err != nil || sc.Version != local.FormatVersion1 || sc.Next != end || len(sc.Regions) != 4 {
		t.Fatalf("scan after appends: %+v, %v", sc, err)
	}
	scanAgrees(t, after)
	mem2 := simpmem.FromImage(bytes.Clone(after), len(after)+16*local.MinRegionSize)
	defer mem2.Release()
	s2, err := local.OpenOn(mem2, local.Options{Epoch: 3})
	if err != nil {
		t.Fatal(err)
	}
	if got := readFrom(t, s2, look); got != end {
		t.Fatalf("reopened with %d entries, want %d", got, end)
	}
	// A new epoch starts a region in a version 1 file too.
	if err := s2.StartEpoch(context.Background(), 4); err != nil {
		t.Fatal(err)
	}
	want[end] = []byte("under epoch 4")
	if _, err := s2.Append(want[end]); err != nil {
		t.Fatal(err)
	}
	if tr := s2.TailRegion(); tr.Epoch != 4 || tr.Count != 1 {
		t.Fatalf("tail after StartEpoch: %+v", tr)
	}
	s2.Close()
	scanAgrees(t, mem2.Media())

	// A replica's copy of the v1 file reads through its commit word.
	path := filepath.Join(t.TempDir(), "copy")
	cimg := bytes.Clone(mem2.Media())
	sc, _ = local.Scan(cimg)
	tail := sc.Regions[len(sc.Regions)-1]
	binary.LittleEndian.PutUint64(cimg[tail.Offset+local.RegionCommitOffset:], uint64(tail.End))
	if err := os.WriteFile(path, cimg, 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := local.OpenCopy(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.Committed(); got != end+1 {
		t.Fatalf("copy committed %d, want %d", got, end+1)
	}
	it := c.Iterator(v1Head)
	n := uint64(v1Head)
	for ; it.Next(); n++ {
		if !bytes.Equal(it.Entry().Data, look(n)) {
			t.Fatalf("copy's entry %d differs", n)
		}
	}
	if it.Err() != nil || n != end+1 {
		t.Fatalf("copy read to %d: %v", n, it.Err())
	}
}
