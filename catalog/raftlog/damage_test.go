package raftlog

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
)

// Damage: bytes flipped in the stream file or in snapshot files, and
// snapshot files cut short. Open must recover a state that a prefix of the
// operations could leave (checked as in the crash test) or fail with an
// error wrapping ErrCorrupt that says what; never a panic, never an entry
// that was not saved. A damaged snapshot file must never cost data the
// log still holds: with the other file intact, Open recovers everything.

// damageLog builds a log with a seeded workload and returns its files,
// the model states after each operation and the operations.
func damageLog(t *testing.T, rng *rand.Rand, ops int) (files map[string][]byte, states []modelState, opl []op) {
	dir := t.TempDir()
	l := mustOpen(t, dir, smallOpts)
	g := newGen(rng, l.maxEntry)
	states = []modelState{{}}
	for k := 0; k < ops; k++ {
		o := g.next()
		if err := o.run(l); err != nil {
			t.Fatalf("op %d (%v): %v", k, o, err)
		}
		opl = append(opl, o)
		states = append(states, g.m)
	}
	if l.s.Head() == 0 {
		t.Fatal("the workload never trimmed the log")
	}
	l.Close()
	files = map[string][]byte{}
	names, _ := osDir{dir}.List()
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		files[n] = b
	}
	return files, states, opl
}

// writeFiles makes a fresh directory holding files.
func writeFiles(t *testing.T, files map[string][]byte) string {
	dir := t.TempDir()
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// snapFilesOf returns the snapshot files, oldest first.
func snapFilesOf(files map[string][]byte) []string {
	var out []string
	for n := range files {
		if _, _, ok := parseSnapName(n); ok {
			out = append(out, n)
		}
	}
	slices.SortFunc(out, func(a, b string) int {
		_, i, _ := parseSnapName(a)
		_, j, _ := parseSnapName(b)
		return int(i) - int(j)
	})
	return out
}

func flip(rng *rand.Rand, b []byte, nonZero bool) int {
	off := rng.IntN(len(b))
	if nonZero {
		var nz []int
		for k := 0; k < 64 && len(nz) == 0; k++ {
			if o := rng.IntN(len(b)); b[o] != 0 {
				nz = append(nz, o)
			}
		}
		if len(nz) > 0 {
			off = nz[0]
		}
	}
	b[off] ^= byte(1 + rng.IntN(255))
	return off
}

func TestDamage(t *testing.T) {
	for _, seed := range seeds(t, 1) {
		t.Logf("seed %d (rerun with RPSTREAM_RAFTLOG_SEED=%d go test -run TestDamage ./catalog/raftlog/)", seed, seed)
		rng := rand.New(rand.NewPCG(seed, 0xda))
		files, states, opl := damageLog(t, rng, 160)
		snaps := snapFilesOf(files)
		if len(snaps) != 2 {
			t.Fatalf("snapshot files %v, want two", snaps)
		}
		decode := func(name string) (*raftpb.Snapshot, bool) {
			s, r, err := decodeSnapFile(name, files[name])
			if err != nil {
				t.Fatal(err)
			}
			return s, r
		}
		newest, newestRecv := decode(snaps[1])
		prev, prevRecv := decode(snaps[0])
		final := states[len(states)-1]
		var cands []modelState
		for k := range opl {
			cands = append(cands, partials(states[k], states[k+1], opl[k])...)
		}

		t.Run("stream", func(t *testing.T) {
			failed, recovered := 0, 0
			for it := 0; it < 40; it++ {
				fs := maps.Clone(files)
				b := bytes.Clone(fs[streamName])
				var offs []int
				for n := 1 + rng.IntN(3); n > 0; n-- {
					offs = append(offs, flip(rng, b, rng.IntN(2) == 0))
				}
				fs[streamName] = b
				dir := writeFiles(t, fs)
				l, err := Open(dir, smallOpts)
				if err != nil {
					if !errors.Is(err, ErrCorrupt) {
						t.Fatalf("bytes %v flipped: error not of the corruption class: %v", offs, err)
					}
					if failed++; failed <= 3 {
						t.Logf("bytes %v flipped: %v", offs, err)
					}
					continue
				}
				o, err := observe(l)
				l.Close()
				if err != nil {
					t.Fatal(err)
				}
				if err := o.invariants(); err != nil {
					t.Fatalf("bytes %v flipped: %v", offs, err)
				}
				if why, ok := matchAny(o, cands, newest, newestRecv, smallOpts.SnapshotCatchUp); !ok {
					t.Fatalf("bytes %v flipped: recovered a state no prefix of the saves leaves: %s", offs, why)
				}
				recovered++
			}
			t.Logf("stream damage: %d recovered a prefix, %d refused as corrupt", recovered, failed)
		})

		t.Run("snapshot", func(t *testing.T) {
			recovered, refused := 0, 0
			for it := 0; it < 24; it++ {
				fs := maps.Clone(files)
				k := rng.IntN(2)
				name := snaps[k]
				b := bytes.Clone(fs[name])
				what := "cut short"
				if it%3 == 0 {
					b = b[:rng.IntN(len(b))]
				} else {
					what = fmt.Sprintf("byte %d flipped", flip(rng, b, false))
				}
				fs[name] = b
				dir := writeFiles(t, fs)
				snap, recv := newest, newestRecv
				if k == 1 {
					snap, recv = prev, prevRecv
				}
				// The log reaches back to the older file; but a snapshot
				// received from the leader replaced the log, so if it is
				// the newest file its state is nowhere else.
				want, ok := expect(final, snap, recv, smallOpts.SnapshotCatchUp)
				l, err := Open(dir, smallOpts)
				if !ok {
					if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), name) {
						t.Fatalf("%s %s, the log needs it: %v", name, what, err)
					}
					refused++
					continue
				}
				if err != nil {
					t.Fatalf("%s %s: Open failed though the log reaches the other file: %v", name, what, err)
				}
				o, err := observe(l)
				warnings := l.Warnings()
				l.Close()
				if err != nil {
					t.Fatal(err)
				}
				if len(warnings) != 1 || !errors.Is(warnings[0], ErrCorrupt) || !strings.Contains(warnings[0].Error(), name) {
					t.Fatalf("%s %s: warnings %v", name, what, warnings)
				}
				if d := o.diff(want); d != "" {
					t.Fatalf("%s %s: %s", name, what, d)
				}
				recovered++
			}
			t.Logf("snapshot damage: %d recovered everything, %d refused (a received snapshot lost)", recovered, refused)
		})

		t.Run("both snapshots", func(t *testing.T) {
			fs := maps.Clone(files)
			for _, n := range snaps {
				fs[n] = bytes.Clone(fs[n])
				flip(rng, fs[n], false)
			}
			dir := writeFiles(t, fs)
			_, err := Open(dir, smallOpts)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), snaps[0]) || !strings.Contains(err.Error(), snaps[1]) {
				t.Fatalf("both snapshot files damaged: %v", err)
			}
			t.Logf("both damaged: %v", err)
			after, _ := os.ReadFile(filepath.Join(dir, streamName))
			if !bytes.Equal(after, fs[streamName]) {
				t.Fatal("a failed Open changed the stream file")
			}
		})
	}
}

// TestSnapshotFileDecode feeds every truncation of a snapshot file and
// many damaged copies to the decoder: each is refused, none panics.
func TestSnapshotFileDecode(t *testing.T) {
	snap := &raftpb.Snapshot{Data: snapData(7, 3000), Metadata: &raftpb.SnapshotMetadata{Index: new(uint64(70)), Term: new(uint64(3)), ConfState: testConf}}
	b, err := encodeSnapFile(snap, true)
	if err != nil {
		t.Fatal(err)
	}
	name := snapName(3, 70)
	got, recv, err := decodeSnapFile(name, b)
	if err != nil || !recv || got.GetMetadata().GetIndex() != 70 {
		t.Fatalf("decode: %v", err)
	}
	if _, _, err := decodeSnapFile(snapName(3, 71), b); err == nil {
		t.Fatal("a file under another snapshot's name was accepted")
	}
	for n := 0; n < len(b); n++ {
		if _, _, err := decodeSnapFile(name, b[:n]); err == nil {
			t.Fatalf("cut to %d of %d bytes: accepted", n, len(b))
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for k := 0; k < 2000; k++ {
		d := bytes.Clone(b)
		off := flip(rng, d, false)
		if _, _, err := decodeSnapFile(name, d); err == nil {
			t.Fatalf("byte %d flipped: accepted", off)
		}
	}
	for _, n := range []string{"snap-1-2.snap", "snap-000000000000000G-0000000000000001.snap", "snap-0000000000000001_0000000000000001.snap", "x"} {
		if _, _, ok := parseSnapName(n); ok {
			t.Fatalf("%q parsed as a snapshot file name", n)
		}
	}
}
