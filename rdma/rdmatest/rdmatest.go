// Package rdmatest is the conformance suite every rdma provider must pass:
// Run(t, provider, addr) with addr a local IP the provider can listen on
// (127.0.0.1 for tcp, the IP of an RDMA-capable netdev for verbs).
//
// It checks the contracts of package rdma: the handshake and its
// authentication, transfers from 1 byte to 64 MiB, ordering of writes
// before flushes and atomic writes, persistence into a simulated
// persistence domain (pmem/simpmem), key, bounds and access violations
// rejected with the connection poisoned, revocation by Deregister, many
// operations in flight from many goroutines, completion queues, messages,
// and a peer that closes or dies mid-operation. Every test talks to
// 127.0.0.1 (or addr), bounds its loops and closes what it opens.
package rdmatest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/rpstream/rpstream/pmem/simpmem"
	"github.com/rpstream/rpstream/rdma"
)

// Secret is the shared secret of the suite's peers.
const Secret = "rdmatest shared secret"

// Pair is two connected peers: A dials (the initiator in most tests), B
// accepts (the target).
type Pair struct {
	PA, PB rdma.Peer
	A, B   rdma.Conn
	t      testing.TB
	bufs   []*rdma.Buffer
}

// Connect makes a Pair with cfgA and cfgB (LoopbackConfig when nil) and
// closes it when the test ends.
func Connect(t testing.TB, p rdma.Provider, addr string, cfgA, cfgB *rdma.Config) *Pair {
	t.Helper()
	if cfgA == nil {
		c := rdma.LoopbackConfig(Secret)
		cfgA = &c
	}
	if cfgB == nil {
		c := rdma.LoopbackConfig(Secret)
		cfgB = &c
	}
	pa, err := p.NewPeer(addr, *cfgA)
	if err != nil {
		t.Fatalf("NewPeer A: %v", err)
	}
	t.Cleanup(func() { pa.Close() })
	pb, err := p.NewPeer(addr, *cfgB)
	if err != nil {
		t.Fatalf("NewPeer B: %v", err)
	}
	t.Cleanup(func() { pb.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ln, err := pb.Listen(ctx, addr+":0")
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	defer ln.Close()
	type res struct {
		c   rdma.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept(ctx)
		ch <- res{c, err}
	}()
	a, err := pa.Dial(ctx, ln.Addr())
	r := <-ch
	if err != nil || r.err != nil {
		if a != nil {
			a.Close()
		}
		if r.c != nil {
			r.c.Close()
		}
		t.Fatalf("connect: dial: %v, accept: %v", err, r.err)
	}
	pr := &Pair{PA: pa, PB: pb, A: a, B: r.c, t: t}
	t.Cleanup(func() {
		a.Close()
		r.c.Close()
		pa.Close()
		pb.Close()
		for _, b := range pr.bufs {
			b.Free()
		}
	})
	return pr
}

// Buffer allocates n bytes outside the Go heap, freed when the test ends
// after the peers have closed (so no provider goroutine touches it).
func (pr *Pair) Buffer(n int) []byte {
	pr.t.Helper()
	b, err := rdma.Alloc(n)
	if err != nil {
		pr.t.Fatal(err)
	}
	pr.bufs = append(pr.bufs, b)
	return b.Bytes()
}

// Register registers mem with p or fails the test.
func Register(t testing.TB, p rdma.Peer, mem []byte, u rdma.Usage, pers rdma.Persister) rdma.MR {
	t.Helper()
	mr, err := p.Register(mem, u, pers)
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	return mr
}

func wait(t testing.TB, op *rdma.Op) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := op.Wait(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%v did not complete in 30s", op.Kind())
	}
	return err
}

func mustOK(t testing.TB, op *rdma.Op) {
	t.Helper()
	if err := wait(t, op); err != nil {
		t.Fatalf("%v: %v", op.Kind(), err)
	}
}

// waitEvent waits for an event of kind on c.
func waitEvent(t testing.TB, c rdma.Conn, kind rdma.EventKind) rdma.Event {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev := <-c.Events():
			if ev.Kind == kind {
				return ev
			}
		case <-timeout:
			t.Fatalf("no %v event in 10s", kind)
		}
	}
}

func fill(b []byte, seed uint64) {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
}

const (
	targetUsage = rdma.UsageWriteDst | rdma.UsageReadSrc | rdma.UsageFlushVisibility |
		rdma.UsageFlushPersistence | rdma.UsageAtomicWrite
	localUsage = rdma.UsageWriteSrc | rdma.UsageReadDst | rdma.UsageSend | rdma.UsageRecv
)

// Run runs the suite.
func Run(t *testing.T, p rdma.Provider, addr string) {
	tests := []struct {
		name string
		f    func(*testing.T, rdma.Provider, string)
	}{
		{"Handshake", testHandshake},
		{"WrongSecret", testWrongSecret},
		{"Sizes", testSizes},
		{"OrderingBeforeAtomicWrite", testOrderingAtomic},
		{"OrderingBeforeFlush", testOrderingFlush},
		{"PersistenceFlush", testPersistence},
		{"PersistenceRefused", testPersistenceRefused},
		{"ArgumentErrorsDoNotPoison", testArgumentErrors},
		{"BadKeyPoisons", func(t *testing.T, p rdma.Provider, a string) { testViolation(t, p, a, "key") }},
		{"BoundsPoisons", func(t *testing.T, p rdma.Provider, a string) { testViolation(t, p, a, "bounds") }},
		{"AccessPoisons", func(t *testing.T, p rdma.Provider, a string) { testViolation(t, p, a, "access") }},
		{"DeregisterRevokes", testDeregister},
		{"ManyInFlight", testManyInFlight},
		{"CompletionQueue", testCQ},
		{"SendRecv", testSendRecv},
		{"PeerClosesMidOp", testPeerCloses},
		{"LocalClose", testLocalClose},
		{"Bidirectional", testBidirectional},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.f(t, p, addr) })
	}
}

func testHandshake(t *testing.T, p rdma.Provider, addr string) {
	cfgB := rdma.LoopbackConfig(Secret)
	cfgB.MaxMessage = 1024
	pr := Connect(t, p, addr, nil, &cfgB)
	if ev := waitEvent(t, pr.A, rdma.Established); ev.Err != nil {
		t.Fatal(ev.Err)
	}
	waitEvent(t, pr.B, rdma.Established)
	r := pr.A.Remote()
	if r.Version != rdma.ProtocolVersion || !r.DirectWriteToPmem || r.MaxMessage != 1024 || r.Provider != p.Name() {
		t.Fatalf("A sees %+v", r)
	}
	if err := pr.A.Err(); err != nil {
		t.Fatal(err)
	}
}

func testWrongSecret(t *testing.T, p rdma.Provider, addr string) {
	ca := rdma.LoopbackConfig("a different secret, same length?")
	pa, err := p.NewPeer(addr, ca)
	if err != nil {
		t.Fatal(err)
	}
	defer pa.Close()
	pb, err := p.NewPeer(addr, rdma.LoopbackConfig(Secret))
	if err != nil {
		t.Fatal(err)
	}
	defer pb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ln, err := pb.Listen(ctx, addr+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	errc := make(chan error, 1)
	go func() {
		c, err := ln.Accept(ctx)
		if c != nil {
			c.Close()
		}
		errc <- err
	}()
	c, err := pa.Dial(ctx, ln.Addr())
	if c != nil {
		c.Close()
	}
	if !errors.Is(err, rdma.ErrAuth) {
		t.Errorf("Dial with the wrong secret: %v, want ErrAuth", err)
	}
	if err := <-errc; !errors.Is(err, rdma.ErrAuth) {
		t.Errorf("Accept of a peer with the wrong secret: %v, want ErrAuth", err)
	}
	bad := rdma.LoopbackConfig("short")
	if _, err := p.NewPeer(addr, bad); !errors.Is(err, rdma.ErrConfig) {
		t.Errorf("NewPeer with a short secret: %v, want ErrConfig", err)
	}
}

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

// testOrderingAtomic: a reader that sees the atomic write's value must see
// every write before it.
func testOrderingAtomic(t *testing.T, p rdma.Provider, addr string) {
	pr := Connect(t, p, addr, nil, nil)
	const blocks, bs = 64, 512
	src := pr.Buffer(blocks * bs)
	dst := pr.Buffer(blocks*bs + 8)
	lmr := Register(t, pr.PA, src, localUsage, nil)
	tmr := Register(t, pr.PB, dst, targetUsage, rdma.PersistFunc(func(int, int) error { return nil }))
	d := tmr.Descriptor()
	for round := 1; round <= 8; round++ {
		fill(src, uint64(round))
		for b := 0; b < blocks; b++ {
			pr.A.Write(d, 8+b*bs, lmr, b*bs, bs)
		}
		var v [8]byte
		v[0] = byte(round)
		mustOK(t, pr.A.AtomicWrite(d, 0, v))
		if dst[0] != byte(round) {
			t.Fatalf("round %d: atomic value %d", round, dst[0])
		}
		if !bytes.Equal(dst[8:], src) {
			t.Fatalf("round %d: the atomic write completed before earlier writes", round)
		}
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
		if !bytes.Equal(sim.Media()[base+off:base+off+n], src[:n]) {
			t.Fatalf("%d bytes at %d: not in the persistence domain after the flush completed", n, off)
		}
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

func testPersistenceRefused(t *testing.T, p rdma.Provider, addr string) {
	cfgB := rdma.LoopbackConfig(Secret)
	cfgB.DirectWriteToPmem = false
	pr := Connect(t, p, addr, nil, &cfgB)
	dst := pr.Buffer(4096)
	tmr := Register(t, pr.PB, dst, targetUsage, rdma.PersistFunc(func(int, int) error { return nil }))
	err := wait(t, pr.A.Flush(tmr.Descriptor(), 0, 64, rdma.Persistence))
	if !errors.Is(err, rdma.ErrPersistUnsupported) {
		t.Fatalf("persistence flush to a target without pmem: %v, want ErrPersistUnsupported", err)
	}
	mustOK(t, pr.A.Flush(tmr.Descriptor(), 0, 64, rdma.Visibility))
	// A registration without the usage bit is refused as well.
	vis := Register(t, pr.PB, dst, rdma.UsageFlushVisibility, nil)
	pr2 := Connect(t, p, addr, nil, nil)
	if err := wait(t, pr2.A.Flush(vis.Descriptor(), 0, 8, rdma.Persistence)); !errors.Is(err, rdma.ErrPersistUnsupported) {
		t.Fatalf("persistence flush of a visibility-only registration: %v", err)
	}
}

func testArgumentErrors(t *testing.T, p rdma.Provider, addr string) {
	pr := Connect(t, p, addr, nil, nil)
	src := pr.Buffer(4096)
	dst := pr.Buffer(4096)
	lmr := Register(t, pr.PA, src, localUsage, nil)
	tmr := Register(t, pr.PB, dst, targetUsage, rdma.PersistFunc(func(int, int) error { return nil }))
	d := tmr.Descriptor()
	roOnly := Register(t, pr.PA, src, rdma.UsageReadDst, nil)
	cases := []struct {
		op   *rdma.Op
		want error
	}{
		{pr.A.Write(d, 4000, lmr, 0, 100), rdma.ErrBounds},
		{pr.A.Write(d, -1, lmr, 0, 1), rdma.ErrBounds},
		{pr.A.Write(d, 0, lmr, 4000, 100), rdma.ErrBounds},
		{pr.A.Write(d, 0, roOnly, 0, 8), rdma.ErrUsage},
		{pr.A.AtomicWrite(d, 4, [8]byte{}), rdma.ErrAlign},
		{pr.A.AtomicWrite(d, 4096, [8]byte{}), rdma.ErrBounds},
		{pr.A.Send(lmr, 0, 1<<20), rdma.ErrBounds},
		{pr.A.Write(rdma.Descriptor{Provider: 99, Usage: rdma.UsageWriteDst, Len: 8}, 0, lmr, 0, 8), rdma.ErrBadDescriptor},
	}
	for i, c := range cases {
		if err := wait(t, c.op); !errors.Is(err, c.want) {
			t.Errorf("case %d: %v, want %v", i, err, c.want)
		}
	}
	fill(src[:64], 5)
	mustOK(t, pr.A.Write(d, 0, lmr, 0, 64))
	mustOK(t, pr.A.Flush(d, 0, 64, rdma.Visibility))
	if !bytes.Equal(dst[:64], src[:64]) {
		t.Fatal("write after argument errors lost")
	}
}

func testViolation(t *testing.T, p rdma.Provider, addr, kind string) {
	pr := Connect(t, p, addr, nil, nil)
	src := pr.Buffer(8192)
	dst := pr.Buffer(8192)
	lmr := Register(t, pr.PA, src, localUsage, nil)
	// The target registers only the first page, read-only for "access".
	usage := targetUsage
	if kind == "access" {
		usage = rdma.UsageReadSrc
	}
	tmr := Register(t, pr.PB, dst[:4096], usage, rdma.PersistFunc(func(int, int) error { return nil }))
	d := tmr.Descriptor() // forged below: the initiator's own checks pass
	switch kind {
	case "key":
		d.Key ^= 0x5a5a
	case "bounds":
		d.Len = 8192
	case "access":
		d.Usage |= rdma.UsageWriteDst
	}
	fill(src, 3)
	off := 0
	if kind == "bounds" {
		off = 4096
	}
	err := wait(t, pr.A.Write(d, off, lmr, 0, 4096))
	if err == nil {
		// A provider may report the violation on the next operation that
		// needs a response (RDMA writes complete when sent on some NICs).
		err = wait(t, pr.A.Flush(d, 0, 8, rdma.Visibility))
	}
	if !errors.Is(err, rdma.ErrRemoteAccess) {
		t.Fatalf("%s violation: %v, want ErrRemoteAccess", kind, err)
	}
	if kind == "bounds" && !bytes.Equal(dst[4096:], make([]byte, 4096)) {
		t.Fatal("bytes beyond the registration were written")
	}
	if kind == "access" && !bytes.Equal(dst[:4096], make([]byte, 4096)) {
		t.Fatal("read-only registration was written")
	}
	if err := wait(t, pr.A.Write(d, 0, lmr, 0, 8)); !errors.Is(err, rdma.ErrPoisoned) {
		t.Fatalf("op after a violation: %v, want ErrPoisoned", err)
	}
	if pr.A.Err() == nil {
		t.Fatal("Err() nil after a violation")
	}
	if ev := waitEvent(t, pr.A, rdma.Lost); ev.Err == nil {
		t.Fatal("Lost event without a cause")
	}
	waitEvent(t, pr.B, rdma.Lost)
}

func testDeregister(t *testing.T, p rdma.Provider, addr string) {
	pr := Connect(t, p, addr, nil, nil)
	src := pr.Buffer(4096)
	dst := pr.Buffer(4096)
	lmr := Register(t, pr.PA, src, localUsage, nil)
	tmr := Register(t, pr.PB, dst, targetUsage, rdma.PersistFunc(func(int, int) error { return nil }))
	d := tmr.Descriptor()
	mustOK(t, pr.A.Write(d, 0, lmr, 0, 8))
	mustOK(t, pr.A.Flush(d, 0, 8, rdma.Visibility))
	if err := tmr.Deregister(); err != nil {
		t.Fatal(err)
	}
	if err := tmr.Deregister(); !errors.Is(err, rdma.ErrRegistered) {
		t.Fatalf("second Deregister: %v", err)
	}
	clear(dst)
	fill(src, 1)
	err := wait(t, pr.A.Write(d, 0, lmr, 0, 64))
	if err == nil {
		err = wait(t, pr.A.Flush(d, 0, 8, rdma.Visibility))
	}
	if !errors.Is(err, rdma.ErrRemoteAccess) {
		t.Fatalf("write with a revoked key: %v, want ErrRemoteAccess", err)
	}
	if !bytes.Equal(dst, make([]byte, 4096)) {
		t.Fatal("revoked memory was written")
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

func testSendRecv(t *testing.T, p rdma.Provider, addr string) {
	pr := Connect(t, p, addr, nil, nil)
	abuf := pr.Buffer(8192)
	bbuf := pr.Buffer(8192)
	amr := Register(t, pr.PA, abuf, localUsage, nil)
	bmr := Register(t, pr.PB, bbuf, localUsage, nil)
	// Posted before the message arrives.
	r1 := pr.B.Recv(bmr, 0, 1024)
	copy(abuf, "hello")
	mustOK(t, pr.A.Send(amr, 0, 5))
	mustOK(t, r1)
	if r1.Len() != 5 || string(bbuf[:5]) != "hello" {
		t.Fatalf("recv %d bytes %q", r1.Len(), bbuf[:r1.Len()])
	}
	// Arriving before the Recv is posted.
	copy(abuf[100:], "world!")
	mustOK(t, pr.A.Send(amr, 100, 6))
	r2 := pr.B.Recv(bmr, 2048, 1024)
	mustOK(t, r2)
	if r2.Len() != 6 || string(bbuf[2048:2054]) != "world!" {
		t.Fatalf("early message: %d bytes %q", r2.Len(), bbuf[2048:2048+r2.Len()])
	}
	// Both directions, in order.
	for i := 0; i < 10; i++ {
		r := pr.A.Recv(amr, 4096, 64)
		bbuf[4096] = byte(i)
		mustOK(t, pr.B.Send(bmr, 4096, 1))
		mustOK(t, r)
		if abuf[4096] != byte(i) {
			t.Fatalf("message %d out of order", i)
		}
	}
	if err := wait(t, pr.A.Send(amr, 0, pr.A.Remote().MaxMessage+1)); !errors.Is(err, rdma.ErrTooLarge) {
		t.Fatalf("oversized send: %v", err)
	}
}

func testPeerCloses(t *testing.T, p rdma.Provider, addr string) {
	pr := Connect(t, p, addr, nil, nil)
	src := pr.Buffer(1 << 20)
	dst := pr.Buffer(1 << 20)
	lmr := Register(t, pr.PA, src, localUsage, nil)
	tmr := Register(t, pr.PB, dst, targetUsage, rdma.PersistFunc(func(int, int) error { return nil }))
	d := tmr.Descriptor()
	var ops []*rdma.Op
	for i := 0; i < 64; i++ {
		ops = append(ops, pr.A.Write(d, 0, lmr, 0, 1<<20))
	}
	pr.B.Close() // the target goes away with writes in flight
	for _, op := range ops {
		wait(t, op) // every Op completes, one way or the other
	}
	err := wait(t, pr.A.Flush(d, 0, 8, rdma.Visibility))
	if err == nil {
		t.Fatal("flush succeeded on a connection whose peer closed")
	}
	if !errors.Is(err, rdma.ErrPoisoned) {
		t.Fatalf("flush after the peer closed: %v, want ErrPoisoned", err)
	}
	ev := waitEvent(t, pr.A, rdma.Lost)
	if !errors.Is(ev.Err, rdma.ErrConnLost) {
		t.Fatalf("Lost event: %v, want ErrConnLost", ev.Err)
	}
	waitEvent(t, pr.B, rdma.Closed)
	// A pending Recv completes too.
	pr2 := Connect(t, p, addr, nil, nil)
	buf := pr2.Buffer(64)
	rmr := Register(t, pr2.PA, buf, localUsage, nil)
	r := pr2.A.Recv(rmr, 0, 64)
	pr2.PB.Close()
	if err := wait(t, r); err == nil {
		t.Fatal("recv succeeded after the peer closed")
	}
}

func testLocalClose(t *testing.T, p rdma.Provider, addr string) {
	pr := Connect(t, p, addr, nil, nil)
	src := pr.Buffer(1 << 20)
	dst := pr.Buffer(1 << 20)
	lmr := Register(t, pr.PA, src, localUsage, nil)
	tmr := Register(t, pr.PB, dst, targetUsage, rdma.PersistFunc(func(int, int) error { return nil }))
	d := tmr.Descriptor()
	var ops []*rdma.Op
	for i := 0; i < 32; i++ {
		ops = append(ops, pr.A.Write(d, 0, lmr, 0, 1<<20))
	}
	pr.A.Close()
	for _, op := range ops {
		if err := wait(t, op); err != nil && !errors.Is(err, rdma.ErrClosed) {
			t.Fatalf("op aborted by Close: %v, want ErrClosed", err)
		}
	}
	if err := wait(t, pr.A.Write(d, 0, lmr, 0, 8)); !errors.Is(err, rdma.ErrClosed) {
		t.Fatalf("op after Close: %v, want ErrClosed", err)
	}
	waitEvent(t, pr.A, rdma.Closed)
	waitEvent(t, pr.B, rdma.Lost)
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
