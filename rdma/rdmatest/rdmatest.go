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
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

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

// wait waits for op (30 s at most: a hung Op is an error). It may be
// called from any goroutine.
func wait(t testing.TB, op *rdma.Op) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := op.Wait(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%v did not complete in 30s", op.Kind())
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
		{"ManyConns", testManyConns},
		{"PersistenceFlush", testPersistence},
		{"PersistenceRefused", testPersistenceRefused},
		{"ArgumentErrorsDoNotPoison", testArgumentErrors},
		{"BadKeyPoisons", func(t *testing.T, p rdma.Provider, a string) { testViolation(t, p, a, "key") }},
		{"BoundsPoisons", func(t *testing.T, p rdma.Provider, a string) { testViolation(t, p, a, "bounds") }},
		{"AccessPoisons", func(t *testing.T, p rdma.Provider, a string) { testViolation(t, p, a, "access") }},
		{"DeregisterRevokes", testDeregister},
		{"DeregisterUnderLoad", testDeregisterUnderLoad},
		{"AccessSwitch", testAccessSwitch},
		{"DenyOnAccept", testDenyOnAccept},
		{"ManyInFlight", testManyInFlight},
		{"MixedConcurrent", testMixedConcurrent},
		{"CompletionQueue", testCQ},
		{"SendRecv", testSendRecv},
		{"MessagesBothWays", testMessagesBothWays},
		{"PeerClosesMidOp", testPeerCloses},
		{"LocalClose", testLocalClose},
		{"Bidirectional", testBidirectional},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.f(t, p, addr) })
	}
}
