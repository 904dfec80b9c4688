package tcp_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rpstream/rpstream/pki"
	"github.com/rpstream/rpstream/rdma"
	"github.com/rpstream/rpstream/rdma/rdmatest"
	"github.com/rpstream/rpstream/rdma/tcp"
)

// nodeKeys issues a node certificate for name from ca and loads it.
var nodeKeys = tcp.NodeKeys

func tlsConfig(k *pki.Keys) *rdma.Config {
	c := rdma.LoopbackConfig(rdmatest.Secret)
	c.TLS = k.PeerConfig()
	return &c
}

func newCA(t testing.TB) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// TestTLSTransfers moves data both ways, one-sided and by messages, over
// connections inside TLS.
func TestTLSTransfers(t *testing.T) {
	ca := newCA(t)
	pr := rdmatest.Connect(t, tcp.Provider{}, "127.0.0.1", tlsConfig(nodeKeys(t, ca, "a")), tlsConfig(nodeKeys(t, ca, "b")))
	for _, n := range []int{1, 100, 70 << 10, 3 << 20} {
		src := pr.Buffer(n)
		for i := range src {
			src[i] = byte(i*7 + n)
		}
		dst := pr.Buffer(n)
		smr := rdmatest.Register(t, pr.PA, src, rdma.UsageWriteSrc|rdma.UsageReadDst, nil)
		dmr := rdmatest.Register(t, pr.PB, dst, rdma.UsageWriteDst|rdma.UsageReadSrc|rdma.UsageFlushVisibility, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := pr.A.Write(dmr.Descriptor(), 0, smr, 0, n).Wait(ctx); err != nil {
			t.Fatalf("write %d: %v", n, err)
		}
		if err := pr.A.Flush(dmr.Descriptor(), 0, n, rdma.Visibility).Wait(ctx); err != nil {
			t.Fatalf("flush %d: %v", n, err)
		}
		cancel()
		for i := range dst {
			if dst[i] != src[i] {
				t.Fatalf("%d bytes: byte %d is %d, want %d", n, i, dst[i], src[i])
			}
		}
	}
}

// TestTLSOtherCARefused: a peer whose certificate another CA issued
// cannot connect, either way round, and the error says authentication.
func TestTLSOtherCARefused(t *testing.T) {
	ca, other := newCA(t), newCA(t)
	good, bad := tlsConfig(nodeKeys(t, ca, "a")), tlsConfig(nodeKeys(t, other, "intruder"))
	for _, tc := range []struct {
		name   string
		dialer *rdma.Config
		target *rdma.Config
	}{{"dialer from another CA", bad, good}, {"target from another CA", good, bad}, {"plain dialer", func() *rdma.Config { c := rdma.LoopbackConfig(rdmatest.Secret); return &c }(), good}} {
		t.Run(tc.name, func(t *testing.T) {
			err := connectErr(t, tc.dialer, tc.target)
			if err == nil {
				t.Fatal("connected")
			}
			if !errors.Is(err, rdma.ErrAuth) && !errors.Is(err, rdma.ErrHandshake) {
				t.Fatalf("error %v: want ErrAuth or ErrHandshake", err)
			}
			t.Logf("refused: %v", err)
		})
	}
}

// peersListening makes a peer of each config, closed at the test's end,
// and a listener of the second, closed with ctx's test too.
func peersListening(t *testing.T, ctx context.Context, a, b *rdma.Config) (pa, pb rdma.Peer, ln rdma.Listener) {
	t.Helper()
	pa, err := tcp.Provider{}.NewPeer("", *a)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pa.Close() })
	pb, err = tcp.Provider{}.NewPeer("", *b)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pb.Close() })
	ln, err = pb.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return pa, pb, ln
}

// connectErr dials a listener of target from dialer and returns the
// dialling side's error, or the accepting side's if the dial succeeded.
func connectErr(t *testing.T, dialer, target *rdma.Config) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pa, _, ln := peersListening(t, ctx, dialer, target)
	acc := make(chan error, 1)
	go func() {
		c, err := ln.Accept(ctx)
		if c != nil {
			c.Close()
		}
		acc <- err
	}()
	c, err := pa.Dial(ctx, ln.Addr())
	aerr := <-acc
	if c != nil {
		c.Close()
	}
	if err != nil {
		return err
	}
	return aerr
}

// BenchmarkWriteFlush measures one-sided writes of 128 B and 64 KiB, 64
// in flight and a visibility flush after each 16, over plain TCP and
// inside TLS (docs/design-notes.md, "Security", has the numbers).
func BenchmarkWriteFlush(b *testing.B) {
	ca := newCA(b)
	for _, mode := range []string{"plain", "tls"} {
		for _, size := range []int{128, 64 << 10} {
			b.Run(mode+"/"+sizeName(size), func(b *testing.B) {
				var ca1, cb *rdma.Config
				if mode == "tls" {
					ca1, cb = tlsConfig(nodeKeys(b, ca, "a")), tlsConfig(nodeKeys(b, ca, "b"))
				}
				pr := rdmatest.Connect(b, tcp.Provider{}, "127.0.0.1", ca1, cb)
				const slots = 64
				src := pr.Buffer(size * slots)
				dst := pr.Buffer(size * slots)
				smr := rdmatest.Register(b, pr.PA, src, rdma.UsageWriteSrc, nil)
				dmr := rdmatest.Register(b, pr.PB, dst, rdma.UsageWriteDst|rdma.UsageFlushVisibility, nil)
				ctx := context.Background()
				ops := make([]*rdma.Op, 0, slots+slots/16)
				b.SetBytes(int64(size))
				b.ResetTimer()
				for i := 0; i < b.N; i += slots {
					ops = ops[:0]
					for j := 0; j < slots; j++ {
						ops = append(ops, pr.A.Write(dmr.Descriptor(), j*size, smr, j*size, size))
						if j%16 == 15 {
							ops = append(ops, pr.A.Flush(dmr.Descriptor(), (j-15)*size, 16*size, rdma.Visibility))
						}
					}
					for _, op := range ops {
						if err := op.Wait(ctx); err != nil {
							b.Fatal(err)
						}
					}
				}
			})
		}
	}
}

func sizeName(n int) string {
	if n >= 1<<10 {
		return itoa(n>>10) + "KiB"
	}
	return itoa(n) + "B"
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

// tamperProxy forwards one TCP connection to target, keeping a copy of
// every byte in both directions; once tamper is set it flips a bit of the
// next chunk from the dialer.
type tamperProxy struct {
	ln     net.Listener
	mu     sync.Mutex
	seen   []byte
	tamper atomic.Bool
	wg     sync.WaitGroup
}

func startTamperProxy(t *testing.T, target string) *tamperProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tamperProxy{ln: ln}
	p.wg.Go(func() {
		a, err := ln.Accept()
		if err != nil {
			return
		}
		b, err := net.Dial("tcp", target)
		if err != nil {
			a.Close()
			return
		}
		pipe := func(dst, src net.Conn, fromDialer bool) {
			defer dst.Close()
			defer src.Close()
			buf := make([]byte, 64<<10)
			for {
				n, err := src.Read(buf)
				if n > 0 {
					p.mu.Lock()
					p.seen = append(p.seen, buf[:n]...)
					p.mu.Unlock()
					if fromDialer && p.tamper.CompareAndSwap(true, false) {
						buf[n/2] ^= 0x10
					}
					if _, err := dst.Write(buf[:n]); err != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}
		p.wg.Go(func() { pipe(b, a, true) })
		pipe(a, b, false)
	})
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	return p
}

func (p *tamperProxy) captured() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return bytes.Clone(p.seen)
}

// TestTLSWireSealed: with TLS, nothing written or read crosses the
// network in clear (the frames after the handshake are sealed records),
// and a record altered on the way ends the connection with an error on
// both sides instead of storing what it carried.
func TestTLSWireSealed(t *testing.T) {
	ca := newCA(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pa, pb, ln := peersListening(t, ctx, tlsConfig(nodeKeys(t, ca, "a")), tlsConfig(nodeKeys(t, ca, "b")))
	proxy := startTamperProxy(t, ln.Addr())
	acc := make(chan rdma.Conn, 1)
	go func() {
		c, err := ln.Accept(ctx)
		if err != nil {
			t.Error(err)
		}
		acc <- c
	}()
	a, err := pa.Dial(ctx, proxy.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b := <-acc
	if b == nil {
		t.FailNow()
	}
	defer b.Close()

	const n = 200 << 10
	src := make([]byte, n)
	for i := range src {
		src[i] = "the quick brown fox jumps over the lazy dog "[i%44]
	}
	dst := make([]byte, n)
	back := make([]byte, n)
	smr := rdmatest.Register(t, pa, src, rdma.UsageWriteSrc|rdma.UsageReadDst, nil)
	bmr := rdmatest.Register(t, pa, back, rdma.UsageReadDst, nil)
	dmr := rdmatest.Register(t, pb, dst, rdma.UsageWriteDst|rdma.UsageReadSrc|rdma.UsageFlushVisibility, nil)
	if err := a.Write(dmr.Descriptor(), 0, smr, 0, n).Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Read(bmr, 0, dmr.Descriptor(), 0, n).Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dst, src) || !bytes.Equal(back, src) {
		t.Fatal("data differs after a write and a read back")
	}
	if wire := proxy.captured(); bytes.Contains(wire, []byte("over the lazy dog")) {
		t.Fatalf("the data crossed the network in clear (%d bytes seen)", len(wire))
	}

	// One bit flipped on the way: the target refuses the record, the
	// write is not stored, and both sides end the connection.
	clear(src[:64])
	copy(src, "ALTERED")
	proxy.tamper.Store(true)
	err = a.Write(dmr.Descriptor(), 0, smr, 0, 64).Wait(ctx)
	if err == nil {
		err = a.Flush(dmr.Descriptor(), 0, 64, rdma.Visibility).Wait(ctx)
	}
	if err == nil {
		t.Fatal("a write altered on the way was acknowledged")
	}
	if bytes.HasPrefix(dst, []byte("ALTERED")) {
		t.Fatal("the target stored what an altered record carried")
	}
	for _, c := range []rdma.Conn{a, b} {
		select {
		case ev := <-waitEnd(c):
			t.Logf("%s: %v", c.RemoteAddr(), ev.Err)
		case <-ctx.Done():
			t.Fatalf("%s: still up after an altered record", c.RemoteAddr())
		}
	}
}

// waitEnd delivers c's first event that ends it.
func waitEnd(c rdma.Conn) <-chan rdma.Event {
	ch := make(chan rdma.Event, 1)
	go func() {
		for ev := range c.Events() {
			if ev.Kind == rdma.Lost || ev.Kind == rdma.Closed {
				ch <- ev
				return
			}
		}
	}()
	return ch
}
