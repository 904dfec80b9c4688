package tcp_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rpstream/rpstream/pki"
	"github.com/rpstream/rpstream/rdma"
	"github.com/rpstream/rpstream/rdma/rdmatest"
	"github.com/rpstream/rpstream/rdma/tcp"
)

// nodeKeys issues a node certificate for name from ca into a fresh
// directory and loads it.
func nodeKeys(t testing.TB, ca *pki.CA, name string) *pki.Keys {
	t.Helper()
	f, err := ca.WriteFiles(t.TempDir(), pki.Request{Name: name, Node: true, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	k, err := pki.Load(f)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

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

// connectErr dials a listener of target from dialer and returns the
// dialling side's error, or the accepting side's if the dial succeeded.
func connectErr(t *testing.T, dialer, target *rdma.Config) error {
	t.Helper()
	pa, err := tcp.Provider{}.NewPeer("", *dialer)
	if err != nil {
		t.Fatal(err)
	}
	defer pa.Close()
	pb, err := tcp.Provider{}.NewPeer("", *target)
	if err != nil {
		t.Fatal(err)
	}
	defer pb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ln, err := pb.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
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
