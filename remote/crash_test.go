package remote

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/rpstream/rpstream/pmem/simpmem"
	"github.com/rpstream/rpstream/rdma"
)

// TestCrashKeepsFlushedPrefix appends entries into a region the way a
// leader replicates (write, persistence flush, then the next), and after
// every flush takes crash images of the target: whatever subset of the
// unflushed cache lines is lost, every flushed byte is there.
func TestCrashKeepsFlushedPrefix(t *testing.T) {
	e := newEnv(t, nil)
	w := e.dial()
	if err := w.cl.Grant(ctx(t), 1, "leader"); err != nil {
		t.Fatal(err)
	}
	r, err := w.cl.Region(ctx(t), 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	want := make([]byte, 0, regionSize)
	for i := 0; i < 40; i++ {
		entry := make([]byte, 1+rng.IntN(300))
		for j := range entry {
			entry[j] = byte(rng.Uint32())
		}
		off := len(want)
		copy(w.buf.Bytes(), entry)
		w.conn.Write(r.Desc, off, w.src, 0, len(entry))
		// A second, unflushed write after the flushed one: a crash may
		// keep or lose it, never the flushed bytes before it.
		if err := w.conn.Flush(r.Desc, off, len(entry), rdma.Persistence).Wait(ctx(t)); err != nil {
			t.Fatal(err)
		}
		w.conn.Write(r.Desc, off+len(entry), w.src, 0, 16)
		want = append(want, entry...)
		for k := 0; k < 3; k++ {
			g := simpmem.Lines
			if k == 2 {
				g = simpmem.Torn
			}
			img := e.sim.Crash(rng, g, rng.Float64())
			if got := img[r.Offset : r.Offset+len(want)]; !bytes.Equal(got, want) {
				t.Fatalf("entry %d: a crash image lost flushed bytes", i)
			}
		}
	}
}
