package local_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/rpstream/rpstream/local"
	"github.com/rpstream/rpstream/pmem"
)

const copyRegionSize = local.MinRegionSize

// copyRig is a leader stream and a replica's copy of it, written by hand
// the way replication writes it: the superblock's persistent part, each
// region's line 0 and entries, and the copy's own commit and seal words.
type copyRig struct {
	t      *testing.T
	leader *local.Stream
	want   [][]byte
	rng    *rand.Rand
	path   string
	dst    *pmem.File // the writer's mapping of the copy
}

func newCopyRig(t *testing.T) *copyRig {
	t.Helper()
	dir := t.TempDir()
	s, err := local.Create(filepath.Join(dir, "leader"), local.Options{RegionSize: copyRegionSize, SpareRegions: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	path := filepath.Join(dir, "copy")
	dst, err := pmem.Create(path, local.SuperblockSize, pmem.Options{Reserve: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dst.Close() })
	return &copyRig{t: t, leader: s, rng: rand.New(rand.NewPCG(7, 8)), path: path, dst: dst}
}

func (r *copyRig) append(n int) {
	r.t.Helper()
	for i := 0; i < n; i++ {
		p := make([]byte, 1+r.rng.IntN(1500))
		for k := range p {
			p[k] = byte(r.rng.Uint32())
		}
		if _, err := r.leader.Append(p); err != nil {
			r.t.Fatal(err)
		}
		r.want = append(r.want, p)
	}
}

// entryEnd is the offset within its region after entry i.
func (r *copyRig) entryEnd(i uint64) int {
	for _, ri := range r.leader.Regions() {
		if i >= ri.First && i < ri.First+ri.Count {
			off := local.RegionHeaderSize
			for k := ri.First; k <= i; k++ {
				off += local.EntryHeaderSize + (len(r.want[k])+7)&^7
			}
			return off
		}
	}
	r.t.Fatalf("entry %d is in no region", i)
	return 0
}

func (r *copyRig) region(i int) local.RegionInfo {
	rs := r.leader.Regions()
	if i >= len(rs) {
		r.t.Fatalf("leader has %d regions, want %d", len(rs), i+1)
	}
	return rs[i]
}

// copySuper copies the superblock's persistent part.
func (r *copyRig) copySuper() {
	copy(r.dst.Bytes()[:2048], r.leader.Memory().Bytes()[:2048])
}

// copyRegion copies line 0 and entries [128, upTo) of the leader's region ri
// into the same slot of the copy, growing the file as needed.
func (r *copyRig) copyRegion(ri local.RegionInfo, upTo int) {
	r.t.Helper()
	if r.dst.Size() < ri.Offset+copyRegionSize {
		if err := r.dst.Allocate(ri.Offset, copyRegionSize); err != nil {
			r.t.Fatal(err)
		}
	}
	src := r.leader.Memory().Bytes()[ri.Offset:]
	dst := r.dst.Bytes()[ri.Offset:]
	copy(dst[local.RegionHeaderSize:upTo], src[local.RegionHeaderSize:upTo])
	copy(dst[:64], src[:64])
}

func (r *copyRig) word(ri local.RegionInfo, at int) *uint64 {
	return (*uint64)(unsafe.Pointer(&r.dst.Bytes()[ri.Offset+at]))
}

func (r *copyRig) setCommit(ri local.RegionInfo, end int) {
	atomic.StoreUint64(r.word(ri, local.RegionCommitOffset), uint64(end))
}

func (r *copyRig) setSeal(ri local.RegionInfo) {
	atomic.StoreUint64(r.word(ri, local.RegionSealOffset), ri.Count<<32|uint64(ri.Used))
}

func (r *copyRig) open() *local.Copy {
	r.t.Helper()
	c, err := local.OpenCopy(r.path, 64<<20)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { c.Close() })
	return c
}

// readAll reads from index from to the end of what c knows is committed
// and checks it against the leader's entries.
func (r *copyRig) readAll(c *local.Copy, from uint64) (uint64, error) {
	r.t.Helper()
	it := c.Iterator(from)
	for it.Next() {
		e := it.Entry()
		if e.Index >= uint64(len(r.want)) || !bytes.Equal(e.Data, r.want[e.Index]) {
			r.t.Fatalf("entry %d differs from the leader's", e.Index)
		}
	}
	return it.Pos(), it.Err()
}

// expect checks that reading from every index up to committed+1 ends at
// committed without error, and that Committed says so.
func (r *copyRig) expect(c *local.Copy, committed uint64) {
	r.t.Helper()
	if got := c.Committed(); got != committed {
		r.t.Fatalf("Committed %d, want %d", got, committed)
	}
	for from := c.Head(); from <= committed+1; from++ {
		end, err := r.readAll(c, from)
		if err != nil {
			r.t.Fatalf("from %d: %v", from, err)
		}
		if want := max(from, committed); end != want {
			r.t.Fatalf("from %d: read up to %d, want %d", from, end, want)
		}
	}
}

func TestCopyNothingBeforeWords(t *testing.T) {
	r := newCopyRig(t)
	r.append(30)
	c := r.open() // superblock not written yet
	r.expect(c, 0)
	r.copySuper()
	r.expect(c, 0)
	for _, ri := range r.leader.Regions() {
		r.copyRegion(ri, ri.Used)
	}
	r.expect(c, 0) // every entry there, no word: nothing committed
}

func TestCopyCommitWords(t *testing.T) {
	r := newCopyRig(t)
	r.append(70)
	if n := len(r.leader.Regions()); n < 3 {
		t.Fatalf("%d regions, want 3 or more", n)
	}
	r.copySuper()
	for _, ri := range r.leader.Regions() {
		r.copyRegion(ri, ri.Used)
	}
	c := r.open()
	r0, r1, r2 := r.region(0), r.region(1), r.region(2)

	// Mid-region: the first five entries.
	r.setCommit(r0, r.entryEnd(4))
	r.expect(c, 5)
	// The region's end, the next region's word not written yet.
	r.setCommit(r0, r0.Used)
	r.expect(c, r1.First)
	// A word that goes back (a new generation of the leader): what it
	// covers now, not what an earlier look walked.
	r.setCommit(r0, r.entryEnd(4))
	r.expect(c, 5)
	// The next region's word moves while the first's lags: the first is
	// committed whole.
	r.setCommit(r0, r.entryEnd(2))
	r.setCommit(r1, r.entryEnd(r1.First+1))
	r.expect(c, r1.First+2)
	// An empty word (the region entered, nothing in it yet).
	r.setCommit(r1, r1.Used)
	r.setCommit(r2, local.RegionHeaderSize)
	r.expect(c, r2.First)
	// Sealed regions, words lagging behind them.
	r.setSeal(r0)
	r.setSeal(r1)
	r.setCommit(r1, local.RegionHeaderSize)
	r.expect(c, r2.First)
	r.setCommit(r2, r.entryEnd(r2.First))
	r.expect(c, r2.First+1)
}

func TestCopySealedLastRegion(t *testing.T) {
	r := newCopyRig(t)
	r.append(25)
	r.copySuper()
	r0 := r.region(0)
	r.copyRegion(r0, r0.Used) // the successor's copy was lost
	r.setSeal(r0)
	c := r.open()
	r.expect(c, r0.Count)
}

func TestCopyTrimmed(t *testing.T) {
	r := newCopyRig(t)
	r.append(40)
	r.copySuper()
	rs := r.leader.Regions()
	for _, ri := range rs[1:] { // the first region is not on the copy
		r.copyRegion(ri, ri.Used)
	}
	last := rs[len(rs)-1]
	r.setCommit(last, last.Used)
	c := r.open()
	if c.Committed() != last.First+last.Count || c.Head() != rs[1].First {
		t.Fatalf("committed %d head %d, want %d, %d", c.Committed(), c.Head(), last.First+last.Count, rs[1].First)
	}
	r.expect(c, last.First+last.Count)
	if _, err := r.readAll(c, 0); !errors.Is(err, local.ErrTrimmed) {
		t.Fatalf("from 0: %v, want ErrTrimmed", err)
	}
}

func TestCopyDamage(t *testing.T) {
	for _, c := range []struct {
		name   string
		damage func(r *copyRig, ri local.RegionInfo)
	}{
		{"payload", func(r *copyRig, ri local.RegionInfo) {
			r.dst.Bytes()[ri.Offset+r.entryEnd(2)+local.EntryHeaderSize] ^= 1
		}},
		{"torn", func(r *copyRig, ri local.RegionInfo) {
			clear(r.dst.Bytes()[ri.Offset+r.entryEnd(2) : ri.Offset+r.entryEnd(3)])
		}},
		{"length", func(r *copyRig, ri local.RegionInfo) {
			binary.LittleEndian.PutUint32(r.dst.Bytes()[ri.Offset+r.entryEnd(2):], 1<<30)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newCopyRig(t)
			r.append(10)
			r.copySuper()
			r0 := r.region(0)
			r.copyRegion(r0, r0.Used)
			r.setCommit(r0, r.entryEnd(6))
			c.damage(r, r0)
			cp := r.open()
			if got := cp.Committed(); got != 3 {
				t.Fatalf("Committed %d, want 3 (the intact entries)", got)
			}
			end, err := r.readAll(cp, 0)
			if !errors.Is(err, local.ErrCorrupt) || end != 3 {
				t.Fatalf("read to %d: %v, want ErrCorrupt at 3", end, err)
			}
			// A tail at the damaged entry does not wait for ever: Wait
			// returns and Next reports the damage.
			it := cp.Iterator(3)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := it.Wait(ctx); err != nil {
				t.Fatal(err)
			}
			if it.Next() || !errors.Is(it.Err(), local.ErrCorrupt) {
				t.Fatalf("Next at the damage: %v, want ErrCorrupt", it.Err())
			}
		})
	}
}

func TestCopyBadWords(t *testing.T) {
	for _, w := range []uint64{8, 100, copyRegionSize + 8, 131} {
		r := newCopyRig(t)
		r.append(5)
		r.copySuper()
		r0 := r.region(0)
		r.copyRegion(r0, r0.Used)
		r.setCommit(r0, int(w))
		c := r.open()
		if _, err := r.readAll(c, 0); !errors.Is(err, local.ErrCorrupt) {
			t.Fatalf("commit word %d: %v, want ErrCorrupt", w, err)
		}
	}
}

func TestCopyBadFiles(t *testing.T) {
	dir := t.TempDir()
	if _, err := local.OpenCopy(filepath.Join(dir, "none"), 0); err == nil {
		t.Fatal("opened a missing file")
	}
	junk := filepath.Join(dir, "junk")
	if err := os.WriteFile(junk, bytes.Repeat([]byte("junk"), 2048), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := local.OpenCopy(junk, 0); !errors.Is(err, local.ErrNotStream) {
		t.Fatalf("junk: %v, want ErrNotStream", err)
	}
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, []byte("rpstream"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := local.OpenCopy(short, 0); !errors.Is(err, local.ErrNotStream) {
		t.Fatalf("short: %v, want ErrNotStream", err)
	}
}

// TestCopyFollows tails a copy while a writer appends to the leader and
// copies each append, then its commit word, the way replication does.
func TestCopyFollows(t *testing.T) {
	r := newCopyRig(t)
	c := r.open()
	const total = 120
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	want := make([][]byte, total)
	for i := range want {
		want[i] = make([]byte, 1+r.rng.IntN(1500))
		for k := range want[i] {
			want[i][k] = byte(r.rng.Uint32())
		}
	}
	done := make(chan error, 1)
	go func() {
		it := c.Iterator(0)
		for it.Pos() < total {
			if it.Next() {
				e := it.Entry()
				if !bytes.Equal(e.Data, want[e.Index]) {
					done <- errors.New("an entry differs from the leader's")
					return
				}
				continue
			}
			if it.Err() != nil {
				done <- it.Err()
				return
			}
			if err := it.Wait(ctx); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for i := 0; i < total; i++ {
		if _, err := r.leader.Append(want[i]); err != nil {
			t.Fatal(err)
		}
		r.copySuper()
		rs := r.leader.Regions()
		last := rs[len(rs)-1]
		if len(rs) > 1 {
			prev := rs[len(rs)-2]
			if i == int(last.First) { // entering a region: the final word of the one left
				r.copyRegion(prev, prev.Used)
				r.setCommit(prev, prev.Used)
			}
		}
		r.copyRegion(last, last.Used)
		if i%3 == 0 || i == total-1 { // lazy words
			r.setCommit(last, last.Used)
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatalf("the tail did not catch up: committed %d", c.Committed())
	}
}

// TestCopyDamageSweep flips bytes all over a copy (superblock, headers,
// words, entries): opening and reading it never panics and never returns
// an entry that differs from the leader's.
func TestCopyDamageSweep(t *testing.T) {
	r := newCopyRig(t)
	r.append(40)
	r.copySuper()
	rs := r.leader.Regions()
	for _, ri := range rs {
		r.copyRegion(ri, ri.Used)
	}
	r.setSeal(rs[0])
	last := rs[len(rs)-1]
	r.setCommit(last, r.entryEnd(last.First+last.Count/2))
	img := r.dst.Bytes()
	var offs []int
	for off := 0; off < 256; off++ {
		offs = append(offs, off)
	}
	for _, ri := range rs {
		for off := 0; off < ri.Used; off += 1 + off%13 {
			offs = append(offs, ri.Offset+off)
		}
	}
	for _, off := range offs {
		img[off] ^= 0x5a
		c, err := local.OpenCopy(r.path, 64<<20)
		if err == nil {
			c.Committed()
			it := c.Iterator(c.Head())
			for it.Next() {
				e := it.Entry()
				if e.Index >= uint64(len(r.want)) || !bytes.Equal(e.Data, r.want[e.Index]) {
					t.Fatalf("byte %d flipped: entry %d differs from the leader's", off, e.Index)
				}
			}
			c.Close()
		}
		img[off] ^= 0x5a
	}
}
