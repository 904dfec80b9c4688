package node

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/rpstream/rpstream/api"
)

// batchOf is n entries named from "prefix-first".
func batchOf(prefix string, first, n int) [][]byte {
	var b [][]byte
	for i := range n {
		b = append(b, fmt.Appendf(nil, "%s-%d", prefix, first+i))
	}
	return b
}

// readAll reads every committed entry of stream.
func readAll(t *testing.T, n *testNode, stream string) []string {
	t.Helper()
	ctx := testCtx(t)
	var out []string
	for from := uint64(0); ; {
		r, err := n.c.Read(ctx, &api.ReadRequest{Stream: stream, From: from, MaxEntries: 1000})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Entries) == 0 {
			return out
		}
		for _, e := range r.Entries {
			if e.Position != uint64(len(out)) {
				t.Fatalf("entry at %d read as %d", e.Position, len(out))
			}
			out = append(out, string(e.Data))
		}
		from = r.Next
	}
}

func TestAppendBatch(t *testing.T) {
	ctx := testCtx(t)
	n := startNode(t, t.TempDir())
	if _, err := n.c.CreateStream(ctx, &api.CreateStreamRequest{Stream: "s"}); err != nil {
		t.Fatal(err)
	}
	// Uncontended: consecutive positions, in order.
	r, err := n.c.Append(ctx, &api.AppendRequest{Stream: "s", Batch: batchOf("a", 0, 10), ProducerId: "p", Sequence: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Positions) != 10 || len(r.Duplicates) != 10 || r.Position != 9 || r.Duplicate {
		t.Fatalf("answer %v", r)
	}
	for i, pos := range r.Positions {
		if pos != uint64(i) || r.Duplicates[i] {
			t.Fatalf("entry %d: position %d duplicate %v", i, pos, r.Duplicates[i])
		}
	}
	// A retry overlapping the first batch (sequence numbers 6..15): the
	// first five are duplicates with their original positions, the rest
	// new.
	r, err = n.c.Append(ctx, &api.AppendRequest{Stream: "s", Batch: batchOf("a", 5, 10), ProducerId: "p", Sequence: 6})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		wantPos, wantDup := uint64(5+i), i < 5
		if i >= 5 {
			wantPos = uint64(10 + i - 5)
		}
		if r.Positions[i] != wantPos || r.Duplicates[i] != wantDup {
			t.Fatalf("retry entry %d: position %d duplicate %v, want %d %v", i, r.Positions[i], r.Duplicates[i], wantPos, wantDup)
		}
	}
	// Duplicates within one batch are impossible (one number per entry),
	// but a batch may repeat a single append's number.
	if _, err := n.c.Append(ctx, &api.AppendRequest{Stream: "s", Data: []byte("a-15"), ProducerId: "p", Sequence: 16}); err != nil {
		t.Fatal(err)
	}
	r, err = n.c.Append(ctx, &api.AppendRequest{Stream: "s", Batch: batchOf("a", 15, 2), ProducerId: "p", Sequence: 16})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(r.Positions, []uint64{15, 16}) || !slices.Equal(r.Duplicates, []bool{true, false}) {
		t.Fatalf("answer %v", r)
	}
	// Without a producer every entry is stored.
	if r, err = n.c.Append(ctx, &api.AppendRequest{Stream: "s", Batch: batchOf("a", 17, 3)}); err != nil || !slices.Equal(r.Positions, []uint64{17, 18, 19}) {
		t.Fatalf("answer %v, %v", r, err)
	}
	got := readAll(t, n, "s")
	if len(got) != 20 {
		t.Fatalf("%d entries stored: %q", len(got), got)
	}
	for i, e := range got {
		if e != fmt.Sprintf("a-%d", i) {
			t.Fatalf("entry %d is %q", i, e)
		}
	}

	// Limits and bad requests.
	for name, req := range map[string]*api.AppendRequest{
		"data and batch": {Stream: "s", Data: []byte("x"), Batch: [][]byte{[]byte("y")}},
		"too many":       {Stream: "s", Batch: make([][]byte, MaxBatch+1)},
		"too many bytes": {Stream: "s", Batch: [][]byte{make([]byte, MaxBatchBytes/2), make([]byte, MaxBatchBytes/2+1)}},
		"overflow":       {Stream: "s", Batch: make([][]byte, 2), ProducerId: "p", Sequence: ^uint64(0)},
	} {
		_, err := n.c.Append(ctx, req)
		if err != nil && !strings.Contains(err.Error(), "batch") {
			t.Errorf("%s: %v does not say why", name, err)
		}
		wantCode(t, err, codes.InvalidArgument)
	}
	// The largest batch count is fine.
	if r, err = n.c.Append(ctx, &api.AppendRequest{Stream: "s", Batch: make([][]byte, MaxBatch)}); err != nil || r.Positions[MaxBatch-1] != 20+MaxBatch-1 {
		t.Fatalf("a batch of %d: %v", MaxBatch, err)
	}
	if got := readAll(t, n, "s"); len(got) != 20+MaxBatch {
		t.Fatalf("%d entries after the refused batches", len(got))
	}
}

// TestAppendStreamBatch sends batches and single appends mixed on one
// call, retries included: each request gets one answer, in order, and
// every entry is stored once.
func TestAppendStreamBatch(t *testing.T) {
	ctx := testCtx(t)
	n := startNode(t, t.TempDir())
	if _, err := n.c.CreateStream(ctx, &api.CreateStreamRequest{Stream: "s"}); err != nil {
		t.Fatal(err)
	}
	call, err := n.c.AppendStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Request i carries i%7+1 entries (one: a single append), from
	// sequence number seq; every fifth repeats the previous request.
	type sentReq struct {
		seq   uint64
		n     int
		retry bool
	}
	var reqs []sentReq
	seq := uint64(1)
	for i := range 600 {
		k := i%7 + 1
		if i%5 == 4 {
			prev := reqs[len(reqs)-1]
			reqs = append(reqs, sentReq{prev.seq, prev.n, true})
			continue
		}
		reqs = append(reqs, sentReq{seq, k, false})
		seq += uint64(k)
	}
	sent := make(chan error, 1)
	go func() {
		for _, r := range reqs {
			req := &api.AppendRequest{Stream: "s", ProducerId: "p", Sequence: r.seq}
			if r.n == 1 {
				req.Data = fmt.Appendf(nil, "e-%d", r.seq)
			} else {
				req.Batch = batchOf("e", int(r.seq), r.n)
			}
			if err := call.Send(req); err != nil {
				sent <- err
				return
			}
		}
		sent <- call.CloseSend()
	}()
	var next uint64
	var prev []uint64
	for i, want := range reqs {
		r, err := call.Recv()
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		pos := r.Positions
		dups := r.Duplicates
		if want.n == 1 {
			if len(pos) != 0 {
				t.Fatalf("answer %d to a single append has positions %v", i, pos)
			}
			pos, dups = []uint64{r.Position}, []bool{r.Duplicate}
		}
		if len(pos) != want.n || len(dups) != want.n {
			t.Fatalf("answer %d: %v for %d entries", i, r, want.n)
		}
		if want.retry {
			if !slices.Equal(pos, prev) || slices.Contains(dups, false) {
				t.Fatalf("answer %d to a retry: %v, want duplicates at %v", i, r, prev)
			}
			continue
		}
		for j := range pos {
			if pos[j] != next || dups[j] {
				t.Fatalf("answer %d entry %d: %v, want position %d", i, j, r, next)
			}
			next++
		}
		prev = pos
	}
	if _, err := call.Recv(); err != io.EOF {
		t.Fatalf("after the last answer: %v", err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	got := readAll(t, n, "s")
	if uint64(len(got)) != next || next != seq-1 {
		t.Fatalf("%d entries stored, %d answered, %d numbers", len(got), next, seq-1)
	}
	for i, e := range got {
		if e != fmt.Sprintf("e-%d", i+1) {
			t.Fatalf("entry %d is %q", i, e)
		}
	}

	// A bad batch ends the call with InvalidArgument after the answers
	// before it.
	call, err = n.c.AppendStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	call.Send(&api.AppendRequest{Stream: "s", Batch: batchOf("x", 0, 2)})
	call.Send(&api.AppendRequest{Stream: "s", Data: []byte("x"), Batch: batchOf("x", 0, 2)})
	if r, err := call.Recv(); err != nil || !slices.Equal(r.Positions, []uint64{next, next + 1}) {
		t.Fatalf("%v %v", r, err)
	}
	_, err = call.Recv()
	wantCode(t, err, codes.InvalidArgument)
}
