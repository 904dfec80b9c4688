package node

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/local"
)

// bareStream is a stream with envelopes on a local stream of its own,
// appended to by the node's append path (store) without a server.
func bareStream(ls *local.Stream, clock func() time.Time) *stream {
	return &stream{name: "s", meta: meta{Envelope: true}, ls: ls, prod: newProducers(64, 16), clock: clock, ctx: context.Background()}
}

// timedEntries is what a reader sees of st: each client entry's position
// and time, in order (the reference findSince is checked against).
func timedEntries(t testing.TB, st *stream) (pos []uint64, times []int64) {
	t.Helper()
	end := st.ls.Committed()
	r := newEntryReader(st.ls.Iterator(st.ls.Head()), st.ls.Head(), true)
	for {
		es, err := r.read(end, maxReadEntries, maxReadBytes)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) == 0 {
			return pos, times
		}
		for _, e := range es {
			pos = append(pos, e.Position)
			times = append(times, e.TimeUnixNano)
		}
	}
}

// TestFindSinceMatchesScan is a property test: in streams of small
// regions holding single entries, batches, failed batches' slots, epoch
// markers, entries from before times and trimmed heads, appended with a
// clock that jumps and steps back, findSince answers what a scan of
// every entry does, for times before, between, on and after the entries'.
func TestFindSinceMatchesScan(t *testing.T) {
	for seed := range uint64(12) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			ls, err := local.Create(filepath.Join(t.TempDir(), "s"), local.Options{RegionSize: local.MinRegionSize, MaxSize: 64 << 20})
			if err != nil {
				t.Fatal(err)
			}
			defer ls.Close()
			now := int64(1e18)
			st := bareStream(ls, func() time.Time {
				switch rng.IntN(6) {
				case 0:
					now -= rng.Int64N(1e9) // steps back
				case 1:
					now += rng.Int64N(1e12) // jumps
				default:
					now += rng.Int64N(1000)
				}
				return time.Unix(0, now)
			})
			// Entries from before times.
			for range rng.IntN(300) {
				if _, err := ls.AppendNoSync(envelope([]byte("old"), false, 0, 0)); err != nil {
					t.Fatal(err)
				}
			}
			ops := 200 + rng.IntN(2000)
			for range ops {
				switch x := rng.IntN(100); {
				case x < 2:
					if _, err := ls.AppendNoSync(marker(7)); err != nil {
						t.Fatal(err)
					}
				case x < 4:
					for range 1 + rng.IntN(40) {
						if _, err := ls.AppendNoSync(batchSlot); err != nil {
							t.Fatal(err)
						}
					}
				case x < 20:
					if _, err := storeIn(st, nil, false, false, 0, 0, batchOf("b", 0, 2+rng.IntN(30)), nil); err != nil {
						t.Fatal(err)
					}
				default:
					if _, err := storeIn(st, nil, false, true, 1, uint64(x), [][]byte{make([]byte, rng.IntN(200))}, nil); err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := ls.Sync(ls.Committed() - 1); err != nil {
				t.Fatal(err)
			}
			if rng.IntN(2) == 0 {
				if _, err := ls.Trim(ls.Committed() / 3); err != nil {
					t.Fatal(err)
				}
			}
			pos, times := timedEntries(t, st)
			if len(ls.Regions()) < 3 {
				t.Fatalf("only %d regions", len(ls.Regions()))
			}
			end := ls.Committed()
			check := func(since int64) {
				t.Helper()
				want, wantT := end, int64(0)
				for k, tm := range times {
					if tm != 0 && tm >= since {
						want, wantT = pos[k], tm
						break
					}
				}
				got, gotT, err := findSince(ls, end, since)
				if err != nil || got != want || gotT != wantT {
					t.Fatalf("since %d: position %d at %d, %v; a scan says %d at %d", since, got, gotT, err, want, wantT)
				}
			}
			check(0)
			check(times[len(times)-1] + 1)
			for range 300 {
				k := rng.IntN(len(times))
				check(times[k])
				check(times[k] - 1)
				check(times[k] + 1)
			}
		})
	}
}

// TestFindPositionAPI: the RPC answers by the leader's times, and a
// stream's entries read back carry them.
func TestFindPositionAPI(t *testing.T) {
	ctx := testCtx(t)
	base := time.Unix(1_700_000_000, 0)
	var tick int64
	n := startNode(t, t.TempDir(), func(c *Config) {
		c.Clock = func() time.Time { tick++; return base.Add(time.Duration(tick) * time.Minute) }
	})
	if _, err := n.c.CreateStream(ctx, &api.CreateStreamRequest{Stream: "s"}); err != nil {
		t.Fatal(err)
	}
	for i := range 10 { // entry i at base + i+1 minutes
		if _, err := n.c.Append(ctx, &api.AppendRequest{Stream: "s", Data: fmt.Appendf(nil, "e%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		since time.Time
		pos   uint64
	}{{base, 0}, {base.Add(4 * time.Minute), 3}, {base.Add(4*time.Minute + 1), 4}, {base.Add(10 * time.Minute), 9}, {base.Add(11 * time.Minute), 10}} {
		r, err := n.c.FindPosition(ctx, &api.FindPositionRequest{Stream: "s", SinceUnixNano: c.since.UnixNano()})
		if err != nil || r.Position != c.pos || r.Committed != 10 {
			t.Errorf("since %v: %v, %v; want position %d", c.since, r, err, c.pos)
		}
	}
	_, err := n.c.FindPosition(ctx, &api.FindPositionRequest{Stream: "nope"})
	wantCode(t, err, 5) // NotFound
}

// BenchmarkFindSince10M looks up random times in a stream of 10 million
// entries (16-byte payloads, 4 MiB regions) on /dev/shm, as FindPosition
// does at the node. Building the stream takes a while; it is skipped
// without /dev/shm or in -short mode.
//
//	go test ./node -run '^$' -bench FindSince10M -benchtime 2000x
func BenchmarkFindSince10M(b *testing.B) {
	if testing.Short() {
		b.Skip("-short")
	}
	dir, err := os.MkdirTemp("/dev/shm", "findsince")
	if err != nil {
		b.Skip("no /dev/shm:", err)
	}
	defer os.RemoveAll(dir)
	const entries = 10_000_000
	ls, err := local.Create(filepath.Join(dir, "s"), local.Options{RegionSize: local.DefaultRegionSize, MaxSize: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	defer ls.Close()
	now := time.Unix(1_700_000_000, 0)
	st := bareStream(ls, func() time.Time { now = now.Add(time.Millisecond); return now })
	payload := make([]byte, 16)
	for i := range entries {
		if _, err := storeIn(st, nil, false, false, 0, 0, [][]byte{payload}, nil); err != nil {
			b.Fatal(err)
		}
		if i%(1<<20) == 0 {
			ls.Sync(ls.Committed() - 1)
		}
	}
	end := ls.Committed()
	first := time.Unix(1_700_000_000, 0).Add(time.Millisecond).UnixNano()
	rng := rand.New(rand.NewPCG(1, 2))
	b.ReportMetric(float64(len(ls.Regions())), "regions")
	runtime.GC() // not the building's garbage collected while timing
	b.ResetTimer()
	for range b.N {
		k := rng.Int64N(entries)
		pos, _, err := findSince(ls, end, first+k*int64(time.Millisecond))
		if err != nil || pos != uint64(k) {
			b.Fatalf("entry %d found at %d, %v", k, pos, err)
		}
	}
}

// storeIn is st.store without the count of entries stored on an error.
func storeIn(st *stream, expected *uint64, coalesced, hasProducer bool, key, seq0 uint64, entries [][]byte, idx []int) (uint64, error) {
	first, _, err := st.store(expected, coalesced, hasProducer, key, seq0, entries, idx)
	return first, err
}
