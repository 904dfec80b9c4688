package local_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rpstream/rpstream/internal/testutil"
	"github.com/rpstream/rpstream/local"
)

// payload returns the deterministic content of entry i of a test, of a
// size that varies with i.
func payload(i uint64, max int) []byte {
	rng := rand.New(rand.NewPCG(i, 77))
	n := rng.IntN(max + 1)
	b := make([]byte, n)
	for k := range b {
		b[k] = byte(rng.Uint32())
	}
	return b
}

func readAll(t *testing.T, s *local.Stream, from uint64) [][]byte {
	t.Helper()
	var out [][]byte
	it := s.Iterator(from)
	for it.Next() {
		e := it.Entry()
		if e.Index != from+uint64(len(out)) {
			t.Fatalf("entry index %d, want %d", e.Index, from+uint64(len(out)))
		}
		out = append(out, bytes.Clone(e.Data))
	}
	if err := it.Err(); err != nil {
		t.Fatalf("iterate from %d: %v", from, err)
	}
	return out
}

func TestAppendIterateReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	s, err := local.Create(path, local.Options{RegionSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	const n = 3000
	for i := uint64(0); i < n; i++ {
		got, err := s.Append(payload(i, 200))
		if err != nil {
			t.Fatal(err)
		}
		if got != i {
			t.Fatalf("append %d returned index %d", i, got)
		}
	}
	// One entry of the largest size a region holds.
	big := bytes.Repeat([]byte{7}, local.MaxEntrySize(64<<10))
	if _, err := s.Append(big); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(make([]byte, local.MaxEntrySize(64<<10)+1)); !errors.Is(err, local.ErrTooLarge) {
		t.Fatalf("oversized append: %v, want ErrTooLarge", err)
	}
	if s.Committed() != n+1 || s.Persisted() != n+1 {
		t.Fatalf("committed %d persisted %d, want %d", s.Committed(), s.Persisted(), n+1)
	}
	check := func(s *local.Stream) {
		got := readAll(t, s, 0)
		if len(got) != n+1 {
			t.Fatalf("read %d entries, want %d", len(got), n+1)
		}
		for i := uint64(0); i < n; i++ {
			if !bytes.Equal(got[i], payload(i, 200)) {
				t.Fatalf("entry %d differs", i)
			}
		}
		if !bytes.Equal(got[n], big) {
			t.Fatal("big entry differs")
		}
		// Reading from the middle.
		mid := readAll(t, s, 1234)
		if len(mid) != n+1-1234 || !bytes.Equal(mid[0], payload(1234, 200)) {
			t.Fatal("iterating from 1234 went wrong")
		}
	}
	check(s)
	if len(s.Regions()) < 3 {
		t.Fatalf("expected several regions, got %d", len(s.Regions()))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = local.Open(path, local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	check(s)
	// Appends continue after the recovered tail.
	if i, err := s.Append([]byte("after")); err != nil || i != n+1 {
		t.Fatalf("append after reopen: %d %v", i, err)
	}
	s.Close()
}

func TestConcurrentAppendersAndReserve(t *testing.T) {
	s, err := local.Create(filepath.Join(t.TempDir(), "s"), local.Options{RegionSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const writers, each = 8, 300
	var mu sync.Mutex
	seen := map[uint64]string{}
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < each; k++ {
				msg := fmt.Sprintf("w%d-%d", w, k)
				var i uint64
				var err error
				if k%2 == 0 {
					i, err = s.Append([]byte(msg))
				} else {
					var r *local.Reservation
					r, err = s.Reserve(len(msg))
					if err == nil {
						copy(r.Bytes(), msg)
						i, err = r.Publish()
						if err == nil {
							err = s.Sync(i)
						}
					}
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				seen[i] = msg
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	got := readAll(t, s, 0)
	if len(got) != writers*each {
		t.Fatalf("%d entries, want %d", len(got), writers*each)
	}
	for i, g := range got {
		if seen[uint64(i)] != string(g) {
			t.Fatalf("entry %d is %q, appender got that index for %q", i, g, seen[uint64(i)])
		}
	}
}

func TestTrimAndTrimmedReads(t *testing.T) {
	s, err := local.Create(filepath.Join(t.TempDir(), "s"), local.Options{RegionSize: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := uint64(0); i < 2000; i++ {
		if _, err := s.Append(payload(i, 60)); err != nil {
			t.Fatal(err)
		}
	}
	before := len(s.Regions())
	head, err := s.Trim(1000)
	if err != nil {
		t.Fatal(err)
	}
	if head == 0 || head > 1000 || len(s.Regions()) >= before {
		t.Fatalf("trim to 1000: head %d, regions %d -> %d", head, before, len(s.Regions()))
	}
	it := s.Iterator(0)
	if it.Next() || !errors.Is(it.Err(), local.ErrTrimmed) {
		t.Fatalf("read of a trimmed position: %v, want ErrTrimmed", it.Err())
	}
	got := readAll(t, s, head)
	if len(got) != int(2000-head) || !bytes.Equal(got[0], payload(head, 60)) {
		t.Fatal("entries after the head changed by Trim")
	}
	// Freed slots are reused by later regions.
	for i := uint64(2000); i < 4000; i++ {
		if _, err := s.Append(payload(i, 60)); err != nil {
			t.Fatal(err)
		}
	}
	got = readAll(t, s, head)
	for k, g := range got {
		if !bytes.Equal(g, payload(head+uint64(k), 60)) {
			t.Fatalf("entry %d differs after slot reuse", head+uint64(k))
		}
	}
}

func TestWaitForNewEntries(t *testing.T) {
	s, err := local.Create(filepath.Join(t.TempDir(), "s"), local.Options{RegionSize: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	done := make(chan []string)
	go func() {
		var got []string
		it := s.Iterator(0)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		for len(got) < 500 {
			for it.Next() {
				got = append(got, string(it.Entry().Data))
			}
			if it.Err() != nil {
				break
			}
			if err := it.Wait(ctx); err != nil {
				break
			}
		}
		done <- got
	}()
	for i := 0; i < 500; i++ {
		if _, err := s.AppendNoSync([]byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	got := <-done
	if len(got) != 500 || got[499] != "499" {
		t.Fatalf("follower saw %d entries", len(got))
	}
}

func TestSecondWriterRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	s, err := local.Create(path, local.Options{RegionSize: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := local.Open(path, local.Options{}); !errors.Is(err, local.ErrLocked) {
		t.Fatalf("second writer: %v, want ErrLocked", err)
	}
	r, err := local.OpenReader(path, local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	s.Append([]byte("x"))
	if c := r.Committed(); c != 1 {
		t.Fatalf("reader sees committed %d, want 1", c)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := local.Open(filepath.Join(dir, "missing"), local.Options{}); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	p := filepath.Join(dir, "other")
	os.WriteFile(p, bytes.Repeat([]byte("not a stream "), 1000), 0o644)
	if _, err := local.Open(p, local.Options{}); !errors.Is(err, local.ErrNotStream) {
		t.Fatalf("other format: %v, want ErrNotStream", err)
	}
	if _, err := local.Create(filepath.Join(dir, "x"), local.Options{RegionSize: 1000}); err == nil {
		t.Fatal("bad region size accepted")
	}
}

func TestFullDisk(t *testing.T) {
	dir := testutil.SmallFS(t, "512k")
	s, err := local.Create(filepath.Join(dir, "s"), local.Options{RegionSize: 64 << 10, MaxSize: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	for i := uint64(0); ; i++ {
		if i > 100000 {
			t.Fatal("disk never filled")
		}
		_, err := s.Append(payload(i, 1000))
		if err != nil {
			if !errors.Is(err, local.ErrNoSpace) {
				t.Fatalf("append on a full disk: %v, want ErrNoSpace", err)
			}
			last = i
			break
		}
	}
	// Nothing appended before is lost, after a close and reopen too.
	s.Close()
	s, err = local.Open(filepath.Join(dir, "s"), local.Options{MaxSize: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := readAll(t, s, 0)
	if uint64(len(got)) != last {
		t.Fatalf("after a full disk: %d entries, want %d", len(got), last)
	}
}

// A reader process's view: Regions must not deadlock (it once held the
// stream's lock while refreshing the view, which takes it again).
func TestReaderRegions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	w, err := local.Create(path, local.Options{RegionSize: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 300; i++ {
		w.Append(payload(uint64(i), 100))
	}
	want := w.Regions()
	r, err := local.OpenReader(path, local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	done := make(chan []local.RegionInfo, 1)
	go func() { done <- r.Regions() }()
	select {
	case got := <-done:
		if len(got) != len(want) || got[len(got)-1].Count != want[len(want)-1].Count || got[0].First != want[0].First {
			t.Errorf("reader regions %+v, writer %+v", got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Regions on a reader deadlocked")
	}
	w.Close()
}

// Appends allocate nothing on the hot path.
func TestAppendAllocs(t *testing.T) {
	s, err := local.Create(filepath.Join(shmDir(t), "s"), local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p := make([]byte, 64)
	if n := testing.AllocsPerRun(1000, func() { s.Append(p) }); n != 0 {
		t.Errorf("Append allocates %.0f times per call, want 0", n)
	}
}

// Many writers syncing tiny appends make persist rounds short, which once
// exposed a lost wake-up in group commit: a waiter arriving as the leader
// finished slept forever. On a disk file (msync rounds, found there) and on
// tmpfs (fence rounds). Bounded in count and time.
func TestGroupCommitNoLostWakeup(t *testing.T) {
	for _, tc := range []struct {
		dir           string
		writers, each int
	}{{t.TempDir(), 4, 400}, {shmDir(t), 16, 3000}} {
		s, err := local.Create(filepath.Join(tc.dir, "s"), local.Options{})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			var wg sync.WaitGroup
			for g := 0; g < tc.writers; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for k := 0; k < tc.each; k++ {
						if _, err := s.Append([]byte{byte(k)}); err != nil {
							t.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
		}()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			t.Fatalf("%s: appenders hung in Sync", tc.dir)
		}
		if want := uint64(tc.writers * tc.each); s.Persisted() != want {
			t.Fatalf("persisted %d, want %d", s.Persisted(), want)
		}
		s.Close()
	}
}

// A reader sees what writers that came and went appended, after each.
func TestReaderAcrossWriters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	w, err := local.Create(path, local.Options{RegionSize: 16 << 10, SpareRegions: -1})
	if err != nil {
		t.Fatal(err)
	}
	w.Append([]byte("a"))
	w.Close()
	r, err := local.OpenReader(path, local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for k := 2; k <= 4; k++ {
		w, err := local.Open(path, local.Options{SpareRegions: -1})
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 200; i++ { // into new regions too
			w.Append(make([]byte, 100))
		}
		w.Close()
		if got, want := r.Committed(), uint64(1+200*(k-1)); got != want {
			t.Fatalf("after writer %d: reader sees %d entries, want %d", k, got, want)
		}
	}
	n := 0
	it := r.Iterator(0)
	for it.Next() {
		n++
	}
	if it.Err() != nil || n != 601 {
		t.Fatalf("reader iterated %d entries (%v), want 601", n, it.Err())
	}
}
