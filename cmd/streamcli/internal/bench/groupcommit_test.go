package bench

// An experiment behind the report on "bench local --writers 64 --dir
// /tmp": two ways for many goroutines to share msyncs of one mapped file,
// outside package local so that they can be compared.
//
//	queue:     every writer whose entry is not yet durable takes the sync
//	           mutex in turn (what local.Stream.Sync does); writers whose
//	           entry the previous holder already made durable still queue
//	           for the mutex, one wake-up after the other.
//	broadcast: one writer (TryLock) persists; the others wait for the
//	           persisted position to move and are all woken at once.

import (
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

type groupFile struct {
	mem       []byte
	mu        sync.Mutex // appends
	next      uint64
	off       int
	syncMu    sync.Mutex
	persisted atomic.Uint64
	persOff   int
	// broadcast: closed and replaced when persisted moves
	chMu sync.Mutex
	ch   chan struct{}
}

func newGroupFile(b *testing.B) *groupFile {
	dir := b.TempDir()
	if d := os.Getenv("GROUPCOMMIT_DIR"); d != "" {
		dir = d
	}
	f, err := os.Create(filepath.Join(dir, "gc"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close(); os.Remove(f.Name()) })
	const size = 64 << 20
	if err := unix.Fallocate(int(f.Fd()), 0, 0, size); err != nil {
		b.Fatal(err)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unix.Munmap(mem) })
	return &groupFile{mem: mem, ch: make(chan struct{})}
}

func (g *groupFile) append(p []byte) (uint64, int) {
	g.mu.Lock()
	i, off := g.next, g.off
	copy(g.mem[off:], p)
	g.next++
	g.off += 72
	g.mu.Unlock()
	return i, off + 72
}

// persistLocked makes everything appended durable; syncMu is held.
func (g *groupFile) persistLocked() {
	g.mu.Lock()
	target, end := g.next, g.off
	g.mu.Unlock()
	if target <= g.persisted.Load() {
		return
	}
	lo := g.persOff &^ 4095
	hi := (end + 4095) &^ 4095
	if err := unix.Msync(g.mem[lo:hi], unix.MS_SYNC); err != nil {
		panic(err)
	}
	g.persOff = end
	g.persisted.Store(target)
}

func (g *groupFile) syncQueue(i uint64) {
	for g.persisted.Load() <= i {
		g.syncMu.Lock()
		g.persistLocked()
		g.syncMu.Unlock()
	}
}

func (g *groupFile) syncBroadcast(i uint64) {
	for g.persisted.Load() <= i {
		g.chMu.Lock()
		ch := g.ch
		g.chMu.Unlock()
		if g.persisted.Load() > i {
			return
		}
		if g.syncMu.TryLock() {
			g.persistLocked()
			g.syncMu.Unlock()
			g.chMu.Lock()
			close(g.ch)
			g.ch = make(chan struct{})
			g.chMu.Unlock()
			continue
		}
		<-ch
	}
}

func benchGroup(b *testing.B, broadcast bool) {
	g := newGroupFile(b)
	p := make([]byte, 64)
	b.SetParallelism(32) // 64 goroutines on 2 CPUs
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i, _ := g.append(p)
			if broadcast {
				g.syncBroadcast(i)
			} else {
				g.syncQueue(i)
			}
		}
	})
}

// Run with: go test -run '^$' -bench GroupCommit -benchtime 20000x
// (GROUPCOMMIT_DIR=/tmp for a disk where t.TempDir is elsewhere).
func BenchmarkGroupCommitQueue(b *testing.B)     { benchGroup(b, false) }
func BenchmarkGroupCommitBroadcast(b *testing.B) { benchGroup(b, true) }
