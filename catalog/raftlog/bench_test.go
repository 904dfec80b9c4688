package raftlog

import (
	"os"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
)

// benchDir is a fresh directory on the ordinary disk or on tmpfs.
func benchDir(b *testing.B, kind string) string {
	if kind == "disk" {
		return b.TempDir()
	}
	d, err := os.MkdirTemp("/dev/shm", "raftlogbench")
	if err != nil {
		b.Skip("no /dev/shm:", err)
	}
	b.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// BenchmarkSave: one Save of a hard state and one 200-byte entry, as a
// leader's Ready loop does under a steady load.
func BenchmarkSave(b *testing.B) {
	for _, kind := range []string{"disk", "tmpfs"} {
		b.Run(kind, func(b *testing.B) {
			l, err := Open(benchDir(b, kind), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			data := make([]byte, 200)
			i := uint64(0)
			b.SetBytes(200)
			b.ReportAllocs()
			for b.Loop() {
				i++
				e := &raftpb.Entry{Index: new(i), Term: new(uint64(1)), Type: new(raftpb.EntryNormal), Data: data}
				if err := l.Save(hs(1, 1, i), []*raftpb.Entry{e}, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkOpen10k: reopen a log of 10,000 entries with a snapshot of
// about 2 MB.
func BenchmarkOpen10k(b *testing.B) {
	for _, kind := range []string{"disk", "tmpfs"} {
		b.Run(kind, func(b *testing.B) {
			dir := benchDir(b, kind)
			l, err := Open(dir, Options{})
			if err != nil {
				b.Fatal(err)
			}
			const n, batch = 10_000, 100
			for i := uint64(1); i <= n; i += batch {
				if err := l.Save(hs(1, 1, i+batch-1), ents(i, i+batch-1, 1, 200), nil); err != nil {
					b.Fatal(err)
				}
			}
			// A snapshot near the end keeps the default 1000 catch-up
			// entries behind it; before it, the log is untrimmed.
			if err := l.CreateSnapshot(n-500, testConf, snapData(n, 2<<20)); err != nil {
				b.Fatal(err)
			}
			l.Close()
			b.ResetTimer()
			for b.Loop() {
				l, err := Open(dir, Options{})
				if err != nil {
					b.Fatal(err)
				}
				if last, _ := l.LastIndex(); last != n {
					b.Fatalf("last index %d", last)
				}
				l.Close()
			}
		})
	}
}
