package rdmatest

import (
	"bytes"
	"errors"
	"testing"

	"github.com/rpstream/rpstream/rdma"
)

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

// testDeregisterUnderLoad: once Deregister returns, no request touches the
// memory, so the target may unmap it at once although writes keep coming.
func testDeregisterUnderLoad(t *testing.T, p rdma.Provider, addr string) {
	pr := Connect(t, p, addr, nil, nil)
	src := pr.Buffer(64 << 10)
	lmr := Register(t, pr.PA, src, localUsage, nil)
	target, err := rdma.Alloc(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	tmr := Register(t, pr.PB, target.Bytes(), targetUsage, rdma.PersistFunc(func(int, int) error { return nil }))
	d := tmr.Descriptor()
	done := make(chan error, 1)
	go func() {
		var last *rdma.Op
		for i := 0; i < 2000; i++ {
			last = pr.A.Write(d, (i%16)*(64<<10), lmr, 0, 64<<10)
			if i%64 == 0 {
				if err := wait(t, last); err != nil {
					done <- err
					return
				}
			}
		}
		done <- wait(t, pr.A.Flush(d, 0, 8, rdma.Visibility))
	}()
	mustOK(t, pr.A.Write(d, 0, lmr, 0, 8)) // traffic has started
	if err := tmr.Deregister(); err != nil {
		t.Fatal(err)
	}
	if err := target.Free(); err != nil { // a late store would now fault
		t.Fatal(err)
	}
	err = <-done
	if err != nil && !errors.Is(err, rdma.ErrRemoteAccess) && !errors.Is(err, rdma.ErrPoisoned) {
		t.Fatalf("writes racing Deregister: %v", err)
	}
}

// testAccessSwitch: a target that switches a connection's remote access
// off rejects the peer's next write (poisoning it); switched back on, a
// new connection's writes work. Providers without the ability skip.
func testAccessSwitch(t *testing.T, p rdma.Provider, addr string) {
	pr := Connect(t, p, addr, nil, nil)
	sw, ok := pr.B.(rdma.AccessSwitcher)
	if !ok {
		t.Skipf("provider %s has no rdma.AccessSwitcher", p.Name())
	}
	src := pr.Buffer(4096)
	dst := pr.Buffer(4096)
	lmr := Register(t, pr.PA, src, localUsage, nil)
	tmr := Register(t, pr.PB, dst, targetUsage, rdma.PersistFunc(func(int, int) error { return nil }))
	d := tmr.Descriptor()
	if err := sw.SetRemoteAccess(false); err != nil {
		t.Fatal(err)
	}
	if err := sw.SetRemoteAccess(true); err != nil {
		t.Fatal(err)
	}
	mustOK(t, pr.A.Write(d, 0, lmr, 0, 8))
	mustOK(t, pr.A.Flush(d, 0, 8, rdma.Visibility))
	if err := sw.SetRemoteAccess(false); err != nil {
		t.Fatal(err)
	}
	clear(dst)
	fill(src, 9)
	err := wait(t, pr.A.Write(d, 0, lmr, 0, 64))
	if err == nil {
		err = wait(t, pr.A.Flush(d, 0, 8, rdma.Visibility))
	}
	if !errors.Is(err, rdma.ErrRemoteAccess) {
		t.Fatalf("write with access switched off: %v, want ErrRemoteAccess", err)
	}
	if !bytes.Equal(dst[:64], make([]byte, 64)) {
		t.Fatal("a write landed after access was switched off")
	}
}

// testDenyOnAccept: with Config.DenyOnAccept an accepted Conn serves no
// one-sided request until its access is switched on.
func testDenyOnAccept(t *testing.T, p rdma.Provider, addr string) {
	cfgB := rdma.LoopbackConfig(Secret)
	cfgB.DenyOnAccept = true
	for _, enable := range []bool{false, true} {
		pr := Connect(t, p, addr, nil, &cfgB)
		sw, ok := pr.B.(rdma.AccessSwitcher)
		if !ok {
			t.Skipf("provider %s has no rdma.AccessSwitcher", p.Name())
		}
		src := pr.Buffer(4096)
		dst := pr.Buffer(4096)
		lmr := Register(t, pr.PA, src, localUsage, nil)
		tmr := Register(t, pr.PB, dst, targetUsage, rdma.PersistFunc(func(int, int) error { return nil }))
		if enable {
			if err := sw.SetRemoteAccess(true); err != nil {
				t.Fatal(err)
			}
		}
		pr.A.Write(tmr.Descriptor(), 0, lmr, 0, 8)
		err := wait(t, pr.A.Flush(tmr.Descriptor(), 0, 8, rdma.Visibility))
		if enable && err != nil {
			t.Fatalf("write after access was switched on: %v", err)
		}
		if !enable && !errors.Is(err, rdma.ErrRemoteAccess) && !errors.Is(err, rdma.ErrPoisoned) {
			t.Fatalf("write to a Conn accepted without access: %v, want an access error", err)
		}
	}
}
