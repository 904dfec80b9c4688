package rdmatest

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/rpstream/rpstream/rdma"
)

// testManyConns: many Conns between the same two Peers (as a node holds
// one per stream it replicates to another) are independent. Each carries
// its own writes to its own region concurrently; a violation on one
// poisons that one only; closing one ends it on both sides only; the rest
// keep working after both.
func testManyConns(t *testing.T, p rdma.Provider, addr string) {
	pr := Connect(t, p, addr, nil, nil)
	const n, size = 24, 4096
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ln, err := pr.PB.Listen(ctx, addr+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	as := make([]rdma.Conn, n)
	bs := make([]rdma.Conn, n)
	for i := range n { // one at a time: as[i] and bs[i] are the two ends
		if as[i], err = pr.PA.Dial(ctx, ln.Addr()); err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		if bs[i], err = ln.Accept(ctx); err != nil {
			t.Fatalf("accept %d: %v", i, err)
		}
	}
	var wg sync.WaitGroup
	defer func() {
		for i := range n {
			as[i].Close()
			bs[i].Close()
		}
	}()
	src := pr.Buffer(n * size)
	dst := pr.Buffer(n * size)
	fill(src, 11)
	lmr := Register(t, pr.PA, src, localUsage, nil)
	tmr := Register(t, pr.PB, dst, targetUsage, rdma.PersistFunc(func(int, int) error { return nil }))
	d := tmr.Descriptor()
	// Every Conn writes its own slot, all at once.
	writeAll := func(skip map[int]bool) {
		t.Helper()
		errs := make([]error, n)
		for i := range n {
			if skip[i] {
				continue
			}
			wg.Go(func() {
				for k := range 8 {
					off := i*size + k*(size/8)
					if err := wait(t, as[i].Write(d, off, lmr, off, size/8)); err != nil {
						errs[i] = err
						return
					}
				}
				errs[i] = wait(t, as[i].Flush(d, i*size, size, rdma.Persistence))
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("conn %d: %v", i, err)
			}
		}
		for i := range n {
			if !skip[i] && !bytes.Equal(dst[i*size:(i+1)*size], src[i*size:(i+1)*size]) {
				t.Fatalf("conn %d: target slot differs", i)
			}
		}
	}
	writeAll(nil)

	// A violation on conn 0 (a forged key) poisons conn 0 alone.
	bad := d
	bad.Key ^= 0x5a5a
	err = wait(t, as[0].Write(bad, 0, lmr, 0, 64))
	if err == nil {
		err = wait(t, as[0].Flush(bad, 0, 8, rdma.Visibility))
	}
	if !errors.Is(err, rdma.ErrRemoteAccess) {
		t.Fatalf("violation: %v, want ErrRemoteAccess", err)
	}
	waitEvent(t, as[0], rdma.Lost)
	waitEvent(t, bs[0], rdma.Lost)

	// Closing conn 1 ends it on both sides.
	as[1].Close()
	waitEvent(t, as[1], rdma.Closed)
	waitEvent(t, bs[1], rdma.Lost)

	clear(dst)
	writeAll(map[int]bool{0: true, 1: true})
	for i := 2; i < n; i++ {
		if as[i].Err() != nil || bs[i].Err() != nil {
			t.Fatalf("conn %d failed with another: %v / %v", i, as[i].Err(), bs[i].Err())
		}
	}
	// Messages still flow on the others, both ways.
	msg := Register(t, pr.PB, pr.Buffer(64), localUsage, nil)
	rcv := Register(t, pr.PA, pr.Buffer(64), localUsage, nil)
	r := as[n-1].Recv(rcv, 0, 64)
	mustOK(t, bs[n-1].Send(msg, 0, 16))
	mustOK(t, r)
}
