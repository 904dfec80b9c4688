package rdmatest

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/rpstream/rpstream/pmem/simpmem"
	"github.com/rpstream/rpstream/rdma"
)

func testSizes(t *testing.T, p rdma.Provider, addr string) {
	pr := Connect(t, p, addr, nil, nil)
	const max = 64 << 20
	src := pr.Buffer(max + 16)
	dstMem := pr.Buffer(max + 16)
	back := pr.Buffer(max + 16)
	lmr := Register(t, pr.PA, src, localUsage, nil)
	bmr := Register(t, pr.PA, back, localUsage, nil)
	tmr := Register(t, pr.PB, dstMem, targetUsage, rdma.PersistFunc(func(int, int) error { return nil }))
	d := tmr.Descriptor()
	for i, n := range []int{1, 7, 64, 4095, 4096, 65537, 1 << 20, max} {
		off := i // odd offsets on both sides
		fill(src[off:off+n], uint64(n))
		mustOK(t, pr.A.Write(d, 1, lmr, off, n))
		mustOK(t, pr.A.Flush(d, 1, n, rdma.Visibility))
		mustOK(t, pr.A.Read(bmr, 0, d, 1, n))
		if !bytes.Equal(back[:n], src[off:off+n]) {
			t.Fatalf("%d bytes: read back differs", n)
		}
		if !bytes.Equal(dstMem[1:1+n], src[off:off+n]) {
			t.Fatalf("%d bytes: target memory differs", n)
		}
	}
}

// testOrderingAtomic: an observer on the target that sees the atomic
// write's value must see every write posted before it. Each round writes
// its own area, then publishes the round number with an AtomicWrite; the
// observer polls the word and checks the area of every round it sees.
func testOrderingAtomic(t *testing.T, p rdma.Provider, addr string) {
	pr := Connect(t, p, addr, nil, nil)
	const rounds, blocks, bs = 16, 32, 512
	area := blocks * bs
	src := pr.Buffer(rounds * area)
	dst := pr.Buffer(8 + rounds*area)
	fill(src, 77)
	lmr := Register(t, pr.PA, src, localUsage, nil)
	tmr := Register(t, pr.PB, dst, targetUsage, rdma.PersistFunc(func(int, int) error { return nil }))
	d := tmr.Descriptor()
	word := (*uint64)(unsafe.Pointer(unsafe.SliceData(dst))) // the published round
	stop := make(chan struct{})
	bad := make(chan string, 1)
	go func() {
		checked := uint64(0)
		for {
			r := atomic.LoadUint64(word)
			for ; checked < r; checked++ { // rounds 1..r are published
				off := int(checked) * area
				if !bytes.Equal(dst[8+off:8+off+area], src[off:off+area]) {
					bad <- fmt.Sprintf("round %d published before its writes landed", checked+1)
					return
				}
			}
			select {
			case <-stop:
				bad <- ""
				return
			default:
			}
		}
	}()
	for round := 1; round <= rounds; round++ {
		off := (round - 1) * area
		for b := 0; b < blocks; b++ {
			pr.A.Write(d, 8+off+b*bs, lmr, off+b*bs, bs)
		}
		var v [8]byte
		binary.NativeEndian.PutUint64(v[:], uint64(round))
		pr.A.AtomicWrite(d, 0, v)
	}
	mustOK(t, pr.A.Flush(d, 0, 8, rdma.Visibility))
	close(stop)
	if msg := <-bad; msg != "" {
		t.Fatal(msg)
	}
	if got := atomic.LoadUint64(word); got != rounds {
		t.Fatalf("published round %d, want %d", got, rounds)
	}
}

func testOrderingFlush(t *testing.T, p rdma.Provider, addr string) {
	pr := Connect(t, p, addr, nil, nil)
	src := pr.Buffer(64 << 10)
	dst := pr.Buffer(64 << 10)
	lmr := Register(t, pr.PA, src, localUsage, nil)
	tmr := Register(t, pr.PB, dst, targetUsage, rdma.PersistFunc(func(int, int) error { return nil }))
	d := tmr.Descriptor()
	for round := 0; round < 20; round++ {
		fill(src, uint64(round+100))
		for off := 0; off < len(src); off += 1024 {
			pr.A.Write(d, off, lmr, off, 1024)
		}
		mustOK(t, pr.A.Flush(d, 0, len(dst), rdma.Visibility))
		if !bytes.Equal(dst, src) {
			t.Fatalf("round %d: flush completed before earlier writes", round)
		}
	}
}

func testPersistence(t *testing.T, p rdma.Provider, addr string) {
	pr := Connect(t, p, addr, nil, nil)
	const size = 1 << 20
	sim := simpmem.New(size)
	defer func() { pr.PB.Close(); sim.Release() }() // no provider goroutine may touch it after
	if err := sim.Allocate(0, size); err != nil {
		t.Fatal(err)
	}
	// Only where the target's CPU runs the persister (tcp) can the
	// simulated domain see the flush.
	cpuPersists := pr.A.Remote().Caps&rdma.CapPersistOnFlush != 0
	// Register a sub-range, as remote/ registers one region of a file.
	const base = 4096
	tmr := Register(t, pr.PB, sim.Bytes()[base:], targetUsage, rdma.PersisterAt(sim, base))
	src := pr.Buffer(64 << 10)
	lmr := Register(t, pr.PA, src, localUsage, nil)
	d := tmr.Descriptor()
	for i, n := range []int{1, 100, 4096, 64 << 10} {
		off := i * 70000
		fill(src[:n], uint64(i+7))
		mustOK(t, pr.A.Write(d, off, lmr, 0, n))
		if bytes.Equal(sim.Media()[base+off:base+off+n], src[:n]) && n > 1 {
			t.Fatalf("%d bytes durable before any flush: the test cannot tell", n)
		}
		mustOK(t, pr.A.Flush(d, off, n, rdma.Persistence))
		if !cpuPersists {
			continue // a NIC flush bypasses the simulated domain
		}
		if !bytes.Equal(sim.Media()[base+off:base+off+n], src[:n]) {
			t.Fatalf("%d bytes at %d: not in the persistence domain after the flush completed", n, off)
		}
	}
	if !cpuPersists {
		t.Skip("the target's CPU takes no part in a flush with this provider: the simulated persistence domain cannot observe it")
	}
	// An atomic write followed by a persistence flush is durable too.
	var v [8]byte
	fill(v[:], 99)
	mustOK(t, pr.A.AtomicWrite(d, 8*1000, v))
	mustOK(t, pr.A.Flush(d, 8*1000, 8, rdma.Persistence))
	if !bytes.Equal(sim.Media()[base+8000:base+8008], v[:]) {
		t.Fatal("atomic write not durable after a persistence flush")
	}
}

func testManyInFlight(t *testing.T, p rdma.Provider, addr string) {
	cfgA := rdma.LoopbackConfig(Secret)
	cfgA.MaxInflight = 32 // fewer slots than ops: posting must block and resume
	pr := Connect(t, p, addr, &cfgA, nil)
	const workers, perWorker, bs = 8, 200, 256
	src := pr.Buffer(workers * perWorker * bs)
	dst := pr.Buffer(workers * perWorker * bs)
	fill(src, 11)
	lmr := Register(t, pr.PA, src, localUsage, nil)
	tmr := Register(t, pr.PB, dst, targetUsage, rdma.PersistFunc(func(int, int) error { return nil }))
	d := tmr.Descriptor()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ops := make([]*rdma.Op, 0, perWorker)
			for i := 0; i < perWorker; i++ {
				off := (w*perWorker + i) * bs
				ops = append(ops, pr.A.Write(d, off, lmr, off, bs))
			}
			fl := pr.A.Flush(d, w*perWorker*bs, perWorker*bs, rdma.Persistence)
			if err := wait(t, fl); err != nil {
				errs <- err
				return
			}
			for _, op := range ops {
				select {
				case <-op.Done():
				default:
					errs <- fmt.Errorf("write not done when a later flush completed")
					return
				}
				if err := op.Err(); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if !bytes.Equal(dst, src) {
		t.Fatal("target memory differs after many concurrent writes")
	}
}

func testCQ(t *testing.T, p rdma.Provider, addr string) {
	pr := Connect(t, p, addr, nil, nil)
	src := pr.Buffer(4096)
	dst := pr.Buffer(4096)
	lmr := Register(t, pr.PA, src, localUsage, nil)
	tmr := Register(t, pr.PB, dst, targetUsage, rdma.PersistFunc(func(int, int) error { return nil }))
	d := tmr.Descriptor()
	cq := rdma.NewCQ()
	const n = 50
	for i := 0; i < n; i++ {
		pr.A.Write(d, i*8, lmr, i*8, 8).Notify(cq, i)
	}
	pr.A.Flush(d, 0, 4096, rdma.Visibility).Notify(cq, "flush")
	seen := map[any]bool{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for len(seen) < n+1 {
		c, err := cq.Wait(ctx)
		if err != nil {
			t.Fatalf("CQ after %d completions: %v", len(seen), err)
		}
		if c.Op.Err() != nil {
			t.Fatal(c.Op.Err())
		}
		seen[c.Context] = true
	}
	if _, ok := cq.Poll(); ok {
		t.Fatal("extra completion")
	}
}

// testBidirectional: both sides are initiator and target at once, with
// reads, which exercises a connection carrying requests and responses both
// ways.
func testBidirectional(t *testing.T, p rdma.Provider, addr string) {
	pr := Connect(t, p, addr, nil, nil)
	const size = 256 << 10
	amem, bmem := pr.Buffer(size), pr.Buffer(size)
	aloc, bloc := pr.Buffer(size), pr.Buffer(size)
	fill(amem, 1)
	fill(bmem, 2)
	all := targetUsage | localUsage
	amr := Register(t, pr.PA, amem, all, rdma.PersistFunc(func(int, int) error { return nil }))
	bmr := Register(t, pr.PB, bmem, all, rdma.PersistFunc(func(int, int) error { return nil }))
	alr := Register(t, pr.PA, aloc, localUsage, nil)
	blr := Register(t, pr.PB, bloc, localUsage, nil)
	var wg sync.WaitGroup
	run := func(c rdma.Conn, local rdma.MR, remote rdma.Descriptor) {
		defer wg.Done()
		var ops []*rdma.Op
		for off := 0; off < size; off += 4096 {
			ops = append(ops, c.Read(local, off, remote, off, 4096))
		}
		for _, op := range ops {
			mustOK(t, op)
		}
	}
	wg.Add(2)
	go run(pr.A, alr, bmr.Descriptor())
	go run(pr.B, blr, amr.Descriptor())
	wg.Wait()
	if !bytes.Equal(aloc, bmem) || !bytes.Equal(bloc, amem) {
		t.Fatal("bidirectional reads differ")
	}
}

// testMixedConcurrent: goroutines on both sides each own a slot of the
// other side's memory and loop over write, flush, read back, atomic write,
// so that requests, acks and read responses interleave both ways on one
// connection; every read must return what its goroutine wrote.
func testMixedConcurrent(t *testing.T, p rdma.Provider, addr string) {
	pr := Connect(t, p, addr, nil, nil)
	const workers, iters, slot = 4, 60, 8192
	type side struct {
		c      rdma.Conn
		local  rdma.MR
		remote rdma.Descriptor
	}
	mk := func(lp, rp rdma.Peer, c rdma.Conn) side {
		l := Register(t, lp, pr.Buffer(2*workers*slot), localUsage, nil)
		r := Register(t, rp, pr.Buffer(workers*slot), targetUsage, rdma.PersistFunc(func(int, int) error { return nil }))
		return side{c, l, r.Descriptor()}
	}
	sides := []side{mk(pr.PA, pr.PB, pr.A), mk(pr.PB, pr.PA, pr.B)}
	errs := make(chan error, 2*workers)
	var wg sync.WaitGroup
	for si, s := range sides {
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(si), uint64(w)))
				src := s.local.Bytes()[2*w*slot : 2*w*slot+slot]
				back := 2*w*slot + slot
				for i := 0; i < iters; i++ {
					n := 8 + rng.IntN(slot-8)
					off := rng.IntN(slot - n + 1)
					for j := range src[:n] {
						src[j] = byte(rng.Uint32())
					}
					s.c.Write(s.remote, w*slot+off, s.local, 2*w*slot, n)
					fl := s.c.Flush(s.remote, w*slot+off, n, rdma.Visibility)
					rd := s.c.Read(s.local, back, s.remote, w*slot+off, n)
					if err := wait(t, fl); err != nil {
						errs <- err
						return
					}
					if err := wait(t, rd); err != nil {
						errs <- err
						return
					}
					if !bytes.Equal(s.local.Bytes()[back:back+n], src[:n]) {
						errs <- fmt.Errorf("side %d worker %d iteration %d: read back differs", si, w, i)
						return
					}
					var v [8]byte
					binary.NativeEndian.PutUint64(v[:], uint64(i))
					if err := wait(t, s.c.AtomicWrite(s.remote, w*slot, v)); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
