package node

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/local"
)

// positionsOf lists the positions and data of es as "pos:data".
func positionsOf(es []*api.Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, fmt.Sprintf("%d:%s", e.Position, e.Data))
	}
	return out
}

// TestEntryReaderBatches: a reader shows a batch's entries at the
// positions of its slots and record, from any position inside it, split
// across reads by the limits, never before its record is within the
// limit, and skips slots whose record never came.
func TestEntryReaderBatches(t *testing.T) {
	ls, err := local.Create(filepath.Join(t.TempDir(), "s"), local.Options{RegionSize: local.MinRegionSize, MaxSize: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	st := bareStream(ls, time.Now)
	must := func(_ uint64, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(storeIn(st, nil, false, false, 0, 0, [][]byte{[]byte("a")}, nil))  // 0
	must(storeIn(st, nil, false, false, 0, 0, batchOf("b", 0, 4), nil))     // 1..4
	must(ls.AppendNoSync(batchSlot))                                        // 5: a failed batch's slots
	must(ls.AppendNoSync(batchSlot))                                        // 6
	must(ls.AppendNoSync(marker(3)))                                        // 7
	must(storeIn(st, nil, false, true, 9, 100, [][]byte{[]byte("c")}, nil)) // 8
	must(storeIn(st, nil, false, true, 9, 101, batchOf("d", 0, 3), nil))    // 9..11
	read := func(from, limit uint64, maxEntries int) ([]string, uint64) {
		t.Helper()
		r := newEntryReader(ls.Iterator(from), from, true)
		es, err := r.read(limit, maxEntries, maxReadBytes)
		if err != nil {
			t.Fatal(err)
		}
		return positionsOf(es), r.next()
	}
	all := []string{"0:a", "1:b-0", "2:b-1", "3:b-2", "4:b-3", "8:c", "9:d-0", "10:d-1", "11:d-2"}
	if got, next := read(0, 12, 100); !slices.Equal(got, all) || next != 12 {
		t.Fatalf("read all: %v, next %d", got, next)
	}
	if got, next := read(2, 12, 2); !slices.Equal(got, all[2:4]) || next != 4 {
		t.Fatalf("from inside a batch, 2 entries: %v, next %d", got, next)
	}
	if got, next := read(4, 12, 1); !slices.Equal(got, all[4:5]) || next != 5 {
		t.Fatalf("from a batch's record: %v, next %d", got, next)
	}
	// The record of batch d (11) is beyond the limit: none of d shows,
	// and the next read starts at its first slot.
	if got, next := read(5, 11, 100); !slices.Equal(got, all[5:6]) || next != 9 {
		t.Fatalf("up to a batch's record: %v, next %d", got, next)
	}
	if got, next := read(10, 11, 100); len(got) != 0 || next != 10 {
		t.Fatalf("inside a batch, before its record: %v, next %d", got, next)
	}
	// A reader that goes on (as Tail does) shows the batch once its
	// record is within the limit.
	r := newEntryReader(ls.Iterator(9), 9, true)
	if es, err := r.read(11, 100, maxReadBytes); err != nil || len(es) != 0 {
		t.Fatalf("before the record: %v, %v", es, err)
	}
	if es, err := r.read(12, 100, maxReadBytes); err != nil || !slices.Equal(positionsOf(es), all[6:]) {
		t.Fatalf("with the record: %v, %v", positionsOf(es), err)
	}
}

// TestBatchTooLargeForARecord: a batch must fit in one record (a little
// under a region): a larger one is refused whole, unless coalesced (a
// client.Appender's), which is stored in runs that fit, at consecutive
// positions.
func TestBatchTooLargeForARecord(t *testing.T) {
	ctx := testCtx(t)
	n := startNode(t, t.TempDir(), func(c *Config) { c.RegionSize = local.MinRegionSize })
	if _, err := n.c.CreateStream(ctx, &api.CreateStreamRequest{Stream: "s"}); err != nil {
		t.Fatal(err)
	}
	big := make([][]byte, 8)
	for k := range big {
		big[k] = fmt.Appendf(make([]byte, 0, 4000), "%d%04000d", k, 0)[:4000]
	}
	_, err := n.c.Append(ctx, &api.AppendRequest{Stream: "s", Batch: big, ProducerId: "p", Sequence: 1})
	wantCode(t, err, codes.ResourceExhausted)
	if got := readAll(t, n, "s"); len(got) != 0 {
		t.Fatalf("%d entries after a refused batch", len(got))
	}
	r, err := n.c.Append(ctx, &api.AppendRequest{Stream: "s", Batch: big, ProducerId: "p", Sequence: 1, Coalesced: true})
	if err != nil {
		t.Fatal(err)
	}
	for k, p := range r.Positions {
		if p != r.Positions[0]+uint64(k) {
			t.Fatalf("coalesced batch at %v: not consecutive", r.Positions)
		}
	}
	got := readAll(t, n, "s")
	if len(got) != len(big) {
		t.Fatalf("%d entries, want %d", len(got), len(big))
	}
	for k := range big {
		if got[k] != string(big[k]) {
			t.Fatalf("entry %d differs", k)
		}
	}
	// A retry finds every entry stored.
	r, err = n.c.Append(ctx, &api.AppendRequest{Stream: "s", Batch: big, ProducerId: "p", Sequence: 1, Coalesced: true})
	if err != nil || !r.Duplicate || slices.Contains(r.Duplicates, false) {
		t.Fatalf("retry: %v, %v", r, err)
	}
}
