package tcp

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rpstream/rpstream/rdma"
	"github.com/rpstream/rpstream/rdma/internal/hs"
)

// linkPair is a dialling and an accepting peer with a listener and a
// registration on the accepting side.
type linkPair struct {
	a, b *peer
	ln   rdma.Listener
	mem  *rdma.Buffer
	src  *rdma.Buffer
	dst  rdma.MR
	lmr  rdma.MR
}

func newLinkPair(t *testing.T) *linkPair {
	t.Helper()
	cfg := rdma.LoopbackConfig(secret)
	pa, err := Provider{}.NewPeer("", cfg)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := Provider{}.NewPeer("", cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := pb.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lp := &linkPair{a: pa.(*peer), b: pb.(*peer), ln: ln}
	lp.mem, _ = rdma.Alloc(1 << 16)
	lp.src, _ = rdma.Alloc(1 << 16)
	if lp.dst, err = pb.Register(lp.mem.Bytes(), rdma.RemoteUsage, rdma.PersistFunc(func(int, int) error { return nil })); err != nil {
		t.Fatal(err)
	}
	if lp.lmr, err = pa.Register(lp.src.Bytes(), rdma.UsageWriteSrc, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ln.Close()
		pa.Close()
		pb.Close()
		lp.mem.Free()
		lp.src.Free()
	})
	return lp
}

// links counts the links of p whose goroutines run.
func (p *peer) linkCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.all)
}

// use writes and flushes 8 bytes on c at off and waits.
func (lp *linkPair) use(ctx context.Context, c rdma.Conn, off int) error {
	c.Write(lp.dst.Descriptor(), off, lp.lmr, off, 8)
	return c.Flush(lp.dst.Descriptor(), off, 8, rdma.Persistence).Wait(ctx)
}

// TestConnsShareOneConnection: Conns dialled to one address, at once,
// travel on one TCP connection with one handshake; once the last is
// closed the connection goes, and the next Dial makes a new one.
func TestConnsShareOneConnection(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	lp := newLinkPair(t)
	const n = 200
	conns := make([]rdma.Conn, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { conns[i], errs[i] = lp.a.Dial(ctx, lp.ln.Addr()) })
	}
	accepted := make([]rdma.Conn, 0, n)
	for range n {
		c, err := lp.ln.Accept(ctx)
		if err != nil {
			t.Fatalf("accept: %v", err)
		}
		accepted = append(accepted, c)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
	}
	if a, b := lp.a.linkCount(), lp.b.linkCount(); a != 1 || b != 1 {
		t.Fatalf("%d Conns on %d connections (dialler) and %d (acceptor), want 1", n, a, b)
	}
	for i, c := range conns {
		wg.Go(func() { errs[i] = lp.use(ctx, c, 8*i) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("conn %d: %v", i, err)
		}
	}
	for _, c := range conns {
		c.Close()
	}
	for _, c := range accepted {
		waitLost(t, c)
		c.Close()
	}
	waitLinks(t, lp.a, 0)
	waitLinks(t, lp.b, 0)
	c, err := lp.a.Dial(ctx, lp.ln.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b, err := lp.ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := lp.use(ctx, c, 0); err != nil {
		t.Fatal(err)
	}
	if a := lp.a.linkCount(); a != 1 {
		t.Fatalf("%d connections after a new Dial, want 1", a)
	}
}

// TestChannelNumbersWrap: channel numbers run out at 65535 and start
// again at 1, skipping those still open; a number is used again only
// after both sides closed it.
func TestChannelNumbersWrap(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	lp := newLinkPair(t)
	first, err := lp.a.Dial(ctx, lp.ln.Addr()) // channel 1, kept open
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	firstB, err := lp.ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer firstB.Close()
	l := first.(*conn).l
	l.mu.Lock()
	l.nextCh = maxChannels - 2
	l.mu.Unlock()
	var chans []uint16
	for i := range 5 {
		c, err := lp.a.Dial(ctx, lp.ln.Addr())
		if err != nil {
			t.Fatal(err)
		}
		b, err := lp.ln.Accept(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := lp.use(ctx, c, 8*i); err != nil {
			t.Fatalf("channel %d: %v", c.(*conn).ch, err)
		}
		chans = append(chans, c.(*conn).ch)
		c.Close()
		waitLost(t, b)
		b.Close()
	}
	want := []uint16{maxChannels - 1, maxChannels, 2, 3, 4}
	for i := range want {
		if chans[i] != want[i] {
			t.Fatalf("channels %v, want %v", chans, want)
		}
	}
	if err := lp.use(ctx, first, 0); err != nil {
		t.Fatalf("the channel kept open: %v", err)
	}
}

// TestClosedListenerRefusesChannels: after its Listener closes, an
// accepted connection keeps its Conns but refuses new ones, which end
// at once on the dialling side.
func TestClosedListenerRefusesChannels(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	lp := newLinkPair(t)
	c, err := lp.a.Dial(ctx, lp.ln.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b, err := lp.ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	lp.ln.Close()
	late, err := lp.a.Dial(ctx, lp.ln.Addr())
	if err != nil {
		t.Fatal(err) // the connection exists: the Dial itself succeeds
	}
	defer late.Close()
	if ev := waitLost(t, late); !errors.Is(ev.Err, rdma.ErrConnLost) {
		t.Fatalf("refused channel: %v", ev.Err)
	}
	if err := lp.use(ctx, c, 0); err != nil {
		t.Fatalf("the accepted Conn after its listener closed: %v", err)
	}
}

// rawPeer starts a tcp Peer of cfg (closed when the test ends) and a
// listener that runs the handshake with the first connection and then
// hands it to serve, a peer of the test's own making; it returns the
// Peer and the listener's address.
func rawPeer(t *testing.T, cfg rdma.Config, serve func(net.Conn)) (*peer, string) {
	t.Helper()
	p, err := Provider{}.NewPeer("", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	go func() {
		nc, err := raw.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		if _, err := hs.Server(nc, cfg.Secret, hs.NewHello(rdma.ProviderTCP, caps, cfg)); err != nil {
			return
		}
		serve(nc)
	}()
	return p.(*peer), raw.Addr().String()
}

func waitLost(t *testing.T, c rdma.Conn) rdma.Event {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev := <-c.Events():
			if ev.Kind == rdma.Lost {
				return ev
			}
		case <-timeout:
			t.Fatal("no Lost event in 10s")
		}
	}
}

func waitLinks(t *testing.T, p *peer, n int) {
	t.Helper()
	for range 500 {
		if p.linkCount() == n {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%d connections, want %d", p.linkCount(), n)
}

// TestCloseWaitsForPayloads: a Conn's Close returns only once the shared
// writer is done with its posts' payloads (the caller may unmap them
// then). Against a peer that stops reading, the writer cannot finish
// until its deadline (AckTimeout) ends the connection: Close waits for
// that rather than return with the payload still being written.
func TestCloseWaitsForPayloads(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cfg := rdma.LoopbackConfig(secret)
	cfg.AckTimeout = time.Second
	// A peer that handshakes, then never reads again.
	pa, addr := rawPeer(t, cfg, func(net.Conn) { <-ctx.Done() })
	c, err := pa.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	src, _ := rdma.Alloc(32 << 20)
	defer src.Free()
	lmr, err := pa.Register(src.Bytes(), rdma.UsageWriteSrc, nil)
	if err != nil {
		t.Fatal(err)
	}
	dst := rdma.Descriptor{Provider: rdma.ProviderTCP, Usage: rdma.RemoteUsage, Len: 32 << 20, Key: 7}
	c.Write(dst, 0, lmr, 0, 32<<20) // more than the socket buffers hold
	// Wait until the writer has taken the write and is stuck sending it
	// (a write still queued at Close is dropped, and proves nothing).
	w := &c.(*conn).l.w
	taken := false
	for deadline := time.Now().Add(5 * time.Second); !taken && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		w.mu.Lock()
		taken = w.busy && len(w.items) == 0
		w.mu.Unlock()
	}
	if !taken || c.(*conn).payloads.Load() == 0 {
		t.Fatal("the write's payload is not in the writer's hands: the test proves nothing")
	}
	start := time.Now()
	c.Close()
	if n := c.(*conn).payloads.Load(); n != 0 {
		t.Fatalf("Close returned with %d payloads in the writer", n)
	}
	if d := time.Since(start); d < cfg.AckTimeout/2 {
		t.Fatalf("Close returned after %v, before the writer could have given up", d)
	}
	// The writer gave up by its deadline: it hands the payload back,
	// then fails the connection.
	select {
	case <-c.(*conn).l.dead:
	case <-time.After(5 * time.Second):
		t.Fatal("the connection to a peer that stopped reading did not fail")
	}
	l := c.(*conn).l
	l.mu.Lock()
	err = l.err
	l.mu.Unlock()
	if !errors.Is(err, rdma.ErrConnLost) {
		t.Fatalf("connection after the stuck Close: %v, want lost", err)
	}
}

// TestWatchdogEndsTheSilentChannelOnly: a peer that answers one channel
// and not another costs the silent one its Conn after AckTimeout; the
// other, on the same connection, keeps working.
func TestWatchdogEndsTheSilentChannelOnly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cfg := rdma.LoopbackConfig(secret)
	cfg.AckTimeout = 300 * time.Millisecond
	// A peer that acknowledges the requests of channel 1 only.
	pa, addr := rawPeer(t, cfg, func(nc net.Conn) {
		var hb [hdrSize]byte
		for {
			if _, err := io.ReadFull(nc, hb[:]); err != nil {
				return
			}
			h := parseHeader(&hb)
			if h.typ == frameFlush && h.ch == 1 {
				nc.Write(frame(header{typ: frameAck, ch: 1, id: h.id}))
			}
		}
	})
	one, err := pa.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	two, err := pa.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer two.Close()
	dst := rdma.Descriptor{Provider: rdma.ProviderTCP, Usage: rdma.RemoteUsage, Len: 4096, Key: 7}
	silent := two.Flush(dst, 0, 8, rdma.Visibility)
	deadline := time.Now().Add(4 * cfg.AckTimeout)
	for time.Now().Before(deadline) { // channel 1 keeps answering meanwhile
		if err := one.Flush(dst, 0, 8, rdma.Visibility).Wait(ctx); err != nil {
			t.Fatalf("the answered channel: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := silent.Wait(ctx); !errors.Is(err, rdma.ErrConnLost) {
		t.Fatalf("the silent channel's flush: %v, want lost", err)
	}
	if err := one.Flush(dst, 0, 8, rdma.Visibility).Wait(ctx); err != nil {
		t.Fatalf("the answered channel after the other failed: %v", err)
	}
}

// TestCloseDuringPost: a Close while a post on the channel is between its
// check that the channel is alive and the queueing of its frame: the
// frame goes before the channel's close or not at all, never after (the
// peer would end the whole connection for it). Two things see to it: the
// close is queued under the post lock, and the writer drops a failed
// channel's frames; it fails with neither.
func TestCloseDuringPost(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	lp := newLinkPair(t)
	keeper, err := lp.a.Dial(ctx, lp.ln.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer keeper.Close()
	c, err := lp.a.Dial(ctx, lp.ln.Addr())
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		b, err := lp.ln.Accept(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
	}
	held, release := make(chan struct{}), make(chan struct{})
	testHookPost = func(p *conn) {
		if p == c.(*conn) {
			close(held)
			<-release
		}
	}
	defer func() { testHookPost = nil }()
	go c.Flush(lp.dst.Descriptor(), 0, 8, rdma.Visibility)
	<-held
	closed := make(chan struct{})
	go func() { c.Close(); close(closed) }()
	time.Sleep(50 * time.Millisecond) // Close has failed the channel, or waits to
	close(release)
	<-closed
	if err := lp.use(ctx, keeper, 8); err != nil {
		t.Fatalf("the other channel after the close: %v", err)
	}
	l := keeper.(*conn).l
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failed {
		t.Fatalf("the connection failed: %v", l.err)
	}
}

// TestCloseRacesPosts: channels closed while other goroutines post on
// them and the peer answers: no frame of a channel may follow its close
// (the peer would end the whole connection for it), so a channel kept
// open through it all still works at the end, on the same connection.
// The windows are narrow (TestCloseDuringPost holds one open); this is
// the same under the race detector with real timing.
func TestCloseRacesPosts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lp := newLinkPair(t)
	keeper, err := lp.a.Dial(ctx, lp.ln.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer keeper.Close()
	go func() { // accept and close the accepted ends when the test ends
		for {
			c, err := lp.ln.Accept(ctx)
			if err != nil {
				return
			}
			go func() { <-ctx.Done(); c.Close() }()
		}
	}()
	first := keeper.(*conn).l
	var wg sync.WaitGroup
	for round := range 300 {
		c, err := lp.a.Dial(ctx, lp.ln.Addr())
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			for k := range 20 {
				off := 8 * ((round*20 + k) % 4096)
				c.Write(lp.dst.Descriptor(), off, lp.lmr, off, 8)
				if k%4 == 3 {
					c.Flush(lp.dst.Descriptor(), off, 8, rdma.Visibility)
				}
			}
		})
		if round%3 == 0 {
			time.Sleep(time.Duration(round%7) * 50 * time.Microsecond)
		}
		wg.Go(func() { c.Close() })
	}
	wg.Wait()
	if err := lp.use(ctx, keeper, 0); err != nil {
		t.Fatalf("the channel kept open: %v", err)
	}
	if l := keeper.(*conn).l; l != first {
		t.Fatal("the kept channel moved to another connection")
	}
	first.mu.Lock()
	defer first.mu.Unlock()
	if first.failed {
		t.Fatalf("the connection failed: %v", first.err)
	}
}

// TestCloseWaitsForLocalFill: a Conn's Close returns only once the
// link's reader is done filling local memory of the channel, a posted
// receive or a read's destination (the caller may unmap it then; the
// reader outlives the channel, and wrote into freed memory before:
// replicate's TestLeaderCloseWhileHelpersRun died of a fault in it). The
// peer sends half of a message or read response, Close starts, and the
// rest arrives a while later: Close must not return before it has.
func TestCloseWaitsForLocalFill(t *testing.T) {
	const size = 4096
	cases := []struct {
		name  string
		typ   uint8
		usage rdma.Usage
		post  func(c rdma.Conn, mr rdma.MR) *rdma.Op
		taken func(c *conn) bool // the reader is filling the buffer
	}{
		{"receive", frameSend, rdma.UsageRecv,
			func(c rdma.Conn, mr rdma.MR) *rdma.Op { return c.Recv(mr, 0, size) },
			func(c *conn) bool { return len(c.posted) == 0 }},
		{"read", frameReadResp, rdma.UsageReadDst,
			func(c rdma.Conn, mr rdma.MR) *rdma.Op {
				src := rdma.Descriptor{Provider: rdma.ProviderTCP, Usage: rdma.RemoteUsage, Len: size, Key: 7}
				return c.Read(mr, 0, src, 0, size)
			},
			func(c *conn) bool { return c.inRead != 0 }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			msg := make([]byte, size)
			for i := range msg {
				msg[i] = byte(i*7 + 1)
			}
			start, half, closing := make(chan struct{}), make(chan struct{}), make(chan struct{})
			var restSent atomic.Bool
			pa, addr := rawPeer(t, rdma.LoopbackConfig(secret), func(nc net.Conn) {
				<-start
				b := append(frame(header{typ: tc.typ, n: size, id: 1}), msg[:size/2]...)
				if _, err := nc.Write(b); err != nil {
					return
				}
				close(half)
				<-closing
				time.Sleep(200 * time.Millisecond) // Close would have returned by now
				restSent.Store(true)
				if _, err := nc.Write(msg[size/2:]); err != nil {
					return
				}
				io.Copy(io.Discard, nc)
			})
			c, err := pa.Dial(ctx, addr)
			if err != nil {
				t.Fatal(err)
			}
			buf, _ := rdma.Alloc(size)
			defer buf.Free()
			mr, err := pa.Register(buf.Bytes(), tc.usage, nil)
			if err != nil {
				t.Fatal(err)
			}
			op := tc.post(c, mr)
			close(start)
			<-half
			cc := c.(*conn)
			taken := false
			for deadline := time.Now().Add(5 * time.Second); !taken && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
				cc.pendMu.Lock()
				taken = tc.taken(cc)
				cc.pendMu.Unlock()
			}
			if !taken {
				t.Fatal("the reader did not start filling the buffer: the test proves nothing")
			}
			close(closing)
			c.Close()
			if !restSent.Load() {
				t.Fatal("Close returned while the reader was still filling the buffer")
			}
			if !bytes.Equal(buf.Bytes(), msg) {
				t.Fatal("the buffer being filled at Close does not hold the whole message")
			}
			// The Op ends either way (a receive filled before the close
			// counts; a read completes with the close).
			if err := op.Wait(ctx); err != nil && !errors.Is(err, rdma.ErrClosed) {
				t.Fatalf("the Op being filled at Close: %v", err)
			}
		})
	}
}
