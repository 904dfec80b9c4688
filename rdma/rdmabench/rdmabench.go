// Package rdmabench measures the rdma tcp provider on loopback beside raw
// loopback TCP of the same sizes, in the same run: write + persistence
// flush round trips (latency p50/p99) and throughput with several
// operations in flight. `streamcli bench rdma` calls Run; `go test -bench`
// runs the same code.
//
// One "op" is what replication does per batch: a Write of Size bytes
// followed by a persistence Flush of the same range, complete when the
// flush completes. The raw baselines are a ping-pong (Size bytes out, an
// 8-byte answer back, one at a time) and a one-way stream of Size-byte
// writes.
package rdmabench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"time"

	"github.com/rpstream/rpstream/pmem"
	"github.com/rpstream/rpstream/rdma"
	"github.com/rpstream/rpstream/rdma/tcp"
)

// Config of one measurement.
type Config struct {
	// Size of each write, 1 B to 64 MiB.
	Size int
	// Inflight is how many ops are in flight at once.
	Inflight int
	// Duration of each of the three measurements (rdma, raw ping-pong,
	// raw stream).
	Duration time.Duration
	// Visibility flushes to visibility instead of persistence.
	Visibility bool
	// Persister, if set, is run by the target on each persistence flush;
	// the default does nothing (memory as fast as tmpfs).
	Persister rdma.Persister
	// Dir, if set, puts the target memory in a pmem file created there
	// (and removed after) and persists with its Persist: on /dev/shm the
	// stand-in for real persistent memory, elsewhere msync. It overrides
	// Persister.
	Dir string
	// Provider is the rdma provider measured; nil means tcp. Addr is the
	// local IP address both peers use (for verbs, an address of the RDMA
	// device's interface); empty means 127.0.0.1. With a provider other
	// than tcp the target declares DirectWriteToPmem, so that a
	// persistence flush is allowed: over verbs it is a read after the
	// writes (placement in the target's memory), as on a platform whose
	// NIC writes straight into persistent memory.
	Provider rdma.Provider
	Addr     string
}

// DefaultConfig is 4 KiB, 16 in flight, one second each.
func DefaultConfig() Config {
	return Config{Size: 4096, Inflight: 16, Duration: time.Second}
}

// ErrConfig is returned for an invalid Config.
var ErrConfig = errors.New("rdmabench: invalid config")

// Validate checks c.
func (c *Config) Validate() error {
	switch {
	case c.Size < 1 || c.Size > 64<<20:
		return fmt.Errorf("%w: size %d not in [1, 64 MiB]", ErrConfig, c.Size)
	case c.Inflight < 1 || c.Inflight > 1024:
		return fmt.Errorf("%w: inflight %d not in [1, 1024]", ErrConfig, c.Inflight)
	case c.Duration <= 0 || c.Duration > time.Hour:
		return fmt.Errorf("%w: duration %v", ErrConfig, c.Duration)
	case c.Size*c.Inflight > 1<<30:
		return fmt.Errorf("%w: size x inflight above 1 GiB", ErrConfig)
	}
	return nil
}

// Result of Run. Latencies are per op, from posting the write to the
// flush's completion.
type Result struct {
	Provider   string  `json:"provider"`
	Size       int     `json:"size"`
	Inflight   int     `json:"inflight"`
	Ops        int     `json:"ops"`
	P50us      float64 `json:"p50_us"`
	P99us      float64 `json:"p99_us"`
	MBPerSec   float64 `json:"mb_per_sec"`
	RawP50us   float64 `json:"raw_p50_us"`
	RawP99us   float64 `json:"raw_p99_us"`
	RawMBPerS  float64 `json:"raw_mb_per_sec"`
	LatRatio   float64 `json:"p50_vs_raw"`        // P50us / RawP50us
	BwFraction float64 `json:"mb_per_sec_vs_raw"` // MBPerSec / RawMBPerS
}

// String is the human form, one line:
//
//	tcp 4096 B x 16 in flight: write+flush p50 43.4 us p99 171 us (raw ping-pong p50 7.9 us, 5.49x); 1111 MB/s (raw stream 1696 MB/s, 0.66x)
func (r Result) String() string {
	return fmt.Sprintf("%s %d B x %d in flight: write+flush p50 %.1f us p99 %.0f us (raw ping-pong p50 %.1f us, %.2fx); %.0f MB/s (raw stream %.0f MB/s, %.2fx)",
		r.Provider, r.Size, r.Inflight, r.P50us, r.P99us, r.RawP50us, r.LatRatio, r.MBPerSec, r.RawMBPerS, r.BwFraction)
}

// Run measures the rdma path, then the raw ping-pong, then the raw stream.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	if cfg.Provider == nil {
		cfg.Provider = tcp.Provider{}
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1"
	}
	r := Result{Provider: cfg.Provider.Name(), Size: cfg.Size, Inflight: cfg.Inflight}
	lat, bytes, el, err := runRDMA(ctx, cfg)
	if err != nil {
		return r, err
	}
	r.Ops = len(lat)
	r.P50us, r.P99us = pct(lat, 50), pct(lat, 99)
	r.MBPerSec = float64(bytes) / el.Seconds() / 1e6
	rawLat, err := rawPingPong(ctx, cfg)
	if err != nil {
		return r, err
	}
	r.RawP50us, r.RawP99us = pct(rawLat, 50), pct(rawLat, 99)
	if r.RawMBPerS, err = rawStream(ctx, cfg); err != nil {
		return r, err
	}
	if r.RawP50us > 0 {
		r.LatRatio = r.P50us / r.RawP50us
	}
	if r.RawMBPerS > 0 {
		r.BwFraction = r.MBPerSec / r.RawMBPerS
	}
	return r, nil
}

func pct(d []time.Duration, p int) float64 {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	i = min(max(i-1, 0), len(s)-1)
	return float64(s[i]) / float64(time.Microsecond)
}

// Pair is a connected tcp initiator and target for benchmarks.
type Pair struct {
	pa, pb   rdma.Peer
	a, b     rdma.Conn
	src, dst *rdma.Buffer
	Local    rdma.MR
	Remote   rdma.Descriptor
	Conn     rdma.Conn
}

// NewPair connects two tcp peers over loopback with srcSize bytes of
// local and dstSize bytes of target memory (anonymous mappings).
func NewPair(ctx context.Context, srcSize, dstSize, inflight int, pers rdma.Persister) (*Pair, error) {
	dst, err := rdma.Alloc(dstSize)
	if err != nil {
		return nil, err
	}
	p, err := NewPairOn(ctx, srcSize, dst.Bytes(), inflight, pers)
	if err != nil {
		dst.Free()
		return nil, err
	}
	p.dst = dst
	return p, nil
}

// NewPairOn is NewPair with the target memory given (it must stay mapped
// until Close) and persisted by pers (nil: nothing to do).
func NewPairOn(ctx context.Context, srcSize int, dst []byte, inflight int, pers rdma.Persister) (*Pair, error) {
	return newPair(ctx, tcp.Provider{}, "127.0.0.1", srcSize, dst, inflight, pers)
}

// newPair connects two peers of provider on the local address addr.
func newPair(ctx context.Context, provider rdma.Provider, addr string, srcSize int, dst []byte, inflight int, pers rdma.Persister) (*Pair, error) {
	cfg := rdma.LoopbackConfig("rdmabench loopback secret")
	cfg.MaxInflight = max(2*inflight, 64)
	tcfg := cfg
	dev := ""
	if provider.Name() != "tcp" {
		tcfg.DirectWriteToPmem = true
		dev = addr
	}
	p := &Pair{}
	var err error
	fail := func(e error) (*Pair, error) { p.Close(); return nil, e }
	if p.pa, err = provider.NewPeer(dev, cfg); err != nil {
		return fail(err)
	}
	if p.pb, err = provider.NewPeer(dev, tcfg); err != nil {
		return fail(err)
	}
	if p.src, err = rdma.Alloc(srcSize); err != nil {
		return fail(err)
	}
	if pers == nil {
		pers = rdma.PersistFunc(func(int, int) error { return nil })
	}
	if p.Local, err = p.pa.Register(p.src.Bytes(), rdma.UsageWriteSrc|rdma.UsageReadDst, nil); err != nil {
		return fail(err)
	}
	tmr, err := p.pb.Register(dst, rdma.RemoteUsage, pers)
	if err != nil {
		return fail(err)
	}
	p.Remote = tmr.Descriptor()
	ln, err := p.pb.Listen(ctx, net.JoinHostPort(addr, "0"))
	if err != nil {
		return fail(err)
	}
	defer ln.Close()
	ch := make(chan error, 1)
	go func() {
		var err error
		p.b, err = ln.Accept(ctx)
		ch <- err
	}()
	p.a, err = p.pa.Dial(ctx, ln.Addr())
	if aerr := <-ch; err == nil {
		err = aerr
	}
	if err != nil {
		return fail(err)
	}
	p.Conn = p.a
	return p, nil
}

// Close closes everything.
func (p *Pair) Close() {
	for _, c := range []rdma.Conn{p.a, p.b} {
		if c != nil {
			c.Close()
		}
	}
	for _, x := range []rdma.Peer{p.pa, p.pb} {
		if x != nil {
			x.Close()
		}
	}
	for _, b := range []*rdma.Buffer{p.src, p.dst} {
		if b != nil {
			b.Free()
		}
	}
}

// WriteFlush posts one op into slot of the target and returns its flush.
func (p *Pair) WriteFlush(slot, size int, t rdma.FlushType) *rdma.Op {
	off := slot * size
	p.Conn.Write(p.Remote, off, p.Local, off, size)
	return p.Conn.Flush(p.Remote, off, size, t)
}

func runRDMA(ctx context.Context, cfg Config) ([]time.Duration, int64, time.Duration, error) {
	n := cfg.Inflight
	var (
		p   *Pair
		err error
	)
	if cfg.Dir != "" {
		f, ferr := os.CreateTemp(cfg.Dir, "rdmabench-*.stream")
		if ferr != nil {
			return nil, 0, 0, ferr
		}
		path := f.Name()
		f.Close()
		os.Remove(path)
		defer os.Remove(path)
		mem, merr := pmem.Create(path, cfg.Size*n, pmem.Options{Reserve: cfg.Size * n})
		if merr != nil {
			return nil, 0, 0, merr
		}
		defer mem.Close()
		p, err = newPair(ctx, cfg.Provider, cfg.Addr, cfg.Size*n, mem.Bytes(), n, mem)
	} else {
		var dst *rdma.Buffer
		if dst, err = rdma.Alloc(cfg.Size * n); err != nil {
			return nil, 0, 0, err
		}
		if p, err = newPair(ctx, cfg.Provider, cfg.Addr, cfg.Size*n, dst.Bytes(), n, cfg.Persister); err != nil {
			dst.Free()
		} else {
			p.dst = dst
		}
	}
	if err != nil {
		return nil, 0, 0, err
	}
	defer p.Close()
	ft := rdma.Persistence
	if cfg.Visibility {
		ft = rdma.Visibility
	}
	type slot struct {
		op    *rdma.Op
		start time.Time
	}
	ring := make([]slot, n)
	var lat []time.Duration
	start := time.Now()
	end := start.Add(cfg.Duration)
	for i := range ring {
		ring[i] = slot{p.WriteFlush(i, cfg.Size, ft), time.Now()}
	}
	for i := 0; ; i = (i + 1) % n {
		s := ring[i]
		if err := s.op.Wait(ctx); err != nil {
			return nil, 0, 0, err
		}
		now := time.Now()
		lat = append(lat, now.Sub(s.start))
		if now.After(end) {
			// Drain the rest so that every op counted has completed.
			for j := 1; j < n; j++ {
				if err := ring[(i+j)%n].op.Wait(ctx); err != nil {
					return nil, 0, 0, err
				}
				lat = append(lat, time.Since(ring[(i+j)%n].start))
			}
			el := time.Since(start)
			return lat, int64(len(lat)) * int64(cfg.Size), el, nil
		}
		ring[i] = slot{p.WriteFlush(i, cfg.Size, ft), time.Now()}
	}
}

// loopback returns two ends of a loopback TCP connection.
func loopback(ctx context.Context) (net.Conn, net.Conn, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	var d net.Dialer
	a, err := d.DialContext(ctx, "tcp", ln.Addr().String())
	b := <-ch
	if err != nil || b == nil {
		if a != nil {
			a.Close()
		}
		if b != nil {
			b.Close()
		}
		return nil, nil, fmt.Errorf("rdmabench: loopback: %v", err)
	}
	return a, b, nil
}

// rawPingPong: Size bytes out, 8 bytes back, one at a time.
func rawPingPong(ctx context.Context, cfg Config) ([]time.Duration, error) {
	a, b, err := loopback(ctx)
	if err != nil {
		return nil, err
	}
	defer a.Close()
	srvDone := make(chan struct{})
	go func() {
		defer close(srvDone)
		defer b.Close()
		buf := make([]byte, cfg.Size)
		var ack [8]byte
		for {
			if _, err := io.ReadFull(b, buf); err != nil {
				return
			}
			if _, err := b.Write(ack[:]); err != nil {
				return
			}
		}
	}()
	buf := make([]byte, cfg.Size)
	var ack [8]byte
	var lat []time.Duration
	end := time.Now().Add(cfg.Duration)
	for time.Now().Before(end) && ctx.Err() == nil {
		t0 := time.Now()
		if _, err := a.Write(buf); err != nil {
			return nil, err
		}
		if _, err := io.ReadFull(a, ack[:]); err != nil {
			return nil, err
		}
		lat = append(lat, time.Since(t0))
	}
	a.Close()
	<-srvDone
	return lat, ctx.Err()
}

// rawStream: Size-byte writes one way for Duration; the receiver reports
// the bytes it got.
func rawStream(ctx context.Context, cfg Config) (float64, error) {
	a, b, err := loopback(ctx)
	if err != nil {
		return 0, err
	}
	defer a.Close()
	got := make(chan int64, 1)
	go func() {
		defer b.Close()
		buf := make([]byte, max(cfg.Size, 64<<10))
		var total int64
		for {
			n, err := b.Read(buf)
			total += int64(n)
			if err != nil {
				break
			}
		}
		var t [8]byte
		binary.LittleEndian.PutUint64(t[:], uint64(total))
		b.Write(t[:])
		got <- total
	}()
	buf := make([]byte, cfg.Size)
	start := time.Now()
	end := start.Add(cfg.Duration)
	for time.Now().Before(end) && ctx.Err() == nil {
		if _, err := a.Write(buf); err != nil {
			return 0, err
		}
	}
	a.(*net.TCPConn).CloseWrite()
	var t [8]byte
	if _, err := io.ReadFull(a, t[:]); err != nil {
		return 0, err
	}
	el := time.Since(start)
	<-got
	return float64(binary.LittleEndian.Uint64(t[:])) / el.Seconds() / 1e6, nil
}
