package rdmatest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/rpstream/rpstream/rdma"
)

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
	// Sent before the Recv is posted (tcp keeps it; verbs holds the send
	// in receive-not-ready retries until the Recv arrives).
	copy(abuf[100:], "world!")
	s2 := pr.A.Send(amr, 100, 6)
	time.Sleep(10 * time.Millisecond)
	r2 := pr.B.Recv(bmr, 2048, 1024)
	mustOK(t, s2)
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

// testMessagesBothWays: both sides exchange messages at once, so requests
// and responses interleave on the wire; every message must arrive and
// every Send complete (an ack owed behind a response frame must not be
// forgotten).
func testMessagesBothWays(t *testing.T, p rdma.Provider, addr string) {
	pr := Connect(t, p, addr, nil, nil)
	const rounds = 300
	run := func(c rdma.Conn, mr rdma.MR, errs chan<- error) {
		for i := 0; i < rounds; i++ {
			r := c.Recv(mr, 64, 64)
			mr.Bytes()[0] = byte(i)
			if err := wait(t, c.Send(mr, 0, 1)); err != nil {
				errs <- fmt.Errorf("round %d send: %w", i, err)
				return
			}
			if err := wait(t, r); err != nil {
				errs <- fmt.Errorf("round %d recv: %w", i, err)
				return
			}
			if mr.Bytes()[64] != byte(i) {
				errs <- fmt.Errorf("round %d: got message %d", i, mr.Bytes()[64])
				return
			}
		}
		errs <- nil
	}
	errs := make(chan error, 2)
	go run(pr.A, Register(t, pr.PA, pr.Buffer(128), localUsage, nil), errs)
	go run(pr.B, Register(t, pr.PB, pr.Buffer(128), localUsage, nil), errs)
	for i := 0; i < 2; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
