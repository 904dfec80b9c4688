package tcp

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/rpstream/rpstream/rdma"
	"github.com/rpstream/rpstream/rdma/internal/hs"
)

// TestFrozenPeer: a peer that completes the handshake and then never
// answers (alive, socket open) costs the Conn after AckTimeout, as an RC
// queue pair gives up after its retries.
func TestFrozenPeer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	frozen := make(chan net.Conn, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			frozen <- nil
			return
		}
		cfg := rdma.LoopbackConfig(secret)
		hs.Server(nc, cfg.Secret, hs.NewHello(rdma.ProviderTCP, caps, cfg))
		frozen <- nc // reads nothing more, answers nothing
	}()
	cfg := rdma.LoopbackConfig(secret)
	cfg.AckTimeout = 200 * time.Millisecond
	p, err := Provider{}.NewPeer("", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := p.Dial(context.Background(), ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if nc := <-frozen; nc != nil {
		defer nc.Close()
	}
	buf, _ := rdma.Alloc(4096)
	defer buf.Free()
	mr, _ := p.Register(buf.Bytes(), rdma.UsageWriteSrc, nil)
	d := rdma.Descriptor{Provider: rdma.ProviderTCP, Usage: rdma.UsageWriteDst | rdma.UsageFlushVisibility, Len: 4096, Key: 1}
	c.Write(d, 0, mr, 0, 64)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = c.Flush(d, 0, 64, rdma.Visibility).Wait(ctx)
	if !errors.Is(err, rdma.ErrConnLost) {
		t.Fatalf("flush to a frozen peer: %v, want ErrConnLost", err)
	}
}

// helperEnv makes the test binary act as a target process for TestPeerKilled.
const helperEnv = "RPSTREAM_TCP_TARGET_HELPER"

// TestHelperTarget is not a test: run by TestPeerKilled in a child process,
// it serves one registration until it is killed (or 30 s pass).
func TestHelperTarget(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		t.Skip("helper process for TestPeerKilled")
	}
	p, err := Provider{}.NewPeer("", rdma.LoopbackConfig(secret))
	if err != nil {
		t.Fatal(err)
	}
	buf, _ := rdma.Alloc(1 << 20)
	mr, err := p.Register(buf.Bytes(), rdma.UsageWriteDst|rdma.UsageFlushVisibility, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := p.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d, _ := mr.Descriptor().MarshalBinary()
	fmt.Printf("TARGET %s %s\n", ln.Addr(), hex.EncodeToString(d))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		ln.Accept(ctx)
	}
}

// TestPeerKilled: the target process dies (SIGKILL) with writes in
// flight; every Op completes with an error, the Conn reports Lost, and
// nothing hangs.
func TestPeerKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a process")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperTarget$", "-test.v")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(out)
	var addr string
	var desc rdma.Descriptor
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 3 && f[0] == "TARGET" {
			addr = f[1]
			b, _ := hex.DecodeString(f[2])
			if desc, err = rdma.ParseDescriptor(b); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	if addr == "" {
		t.Fatal("helper did not start")
	}
	go func() {
		for sc.Scan() {
		}
	}()
	p, err := Provider{}.NewPeer("", rdma.LoopbackConfig(secret))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := p.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf, _ := rdma.Alloc(1 << 20)
	defer buf.Free()
	mr, _ := p.Register(buf.Bytes(), rdma.UsageWriteSrc, nil)
	if err := c.Flush(desc, 0, 8, rdma.Visibility).Wait(ctx); err != nil {
		t.Fatal(err)
	}
	var ops []*rdma.Op
	for i := 0; i < 200; i++ {
		ops = append(ops, c.Write(desc, 0, mr, 0, 1<<20))
		if i == 20 {
			cmd.Process.Kill()
		}
	}
	failed := 0
	for _, op := range ops {
		if err := op.Wait(ctx); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				t.Fatal("an Op hung after the peer died")
			}
			failed++
		}
	}
	if failed == 0 {
		t.Fatal("every write succeeded to a killed process")
	}
	select {
	case <-c.Events(): // Established
	default:
	}
	select {
	case ev := <-c.Events():
		if ev.Kind != rdma.Lost || !errors.Is(ev.Err, rdma.ErrConnLost) {
			t.Fatalf("event %v %v, want Lost with ErrConnLost", ev.Kind, ev.Err)
		}
	case <-ctx.Done():
		t.Fatal("no Lost event")
	}
}

// TestSilentClientDoesNotBlockAccept: a client that connects and never
// says hello must not delay other peers' handshakes.
func TestSilentClientDoesNotBlockAccept(t *testing.T) {
	cfg := rdma.LoopbackConfig(secret)
	cfg.HandshakeTimeout = 10 * time.Second
	p, err := Provider{}.NewPeer("", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ln, err := p.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for i := 0; i < 3; i++ {
		silent, err := net.Dial("tcp", ln.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer silent.Close()
	}
	q, err := Provider{}.NewPeer("", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	dialed := make(chan error, 1)
	go func() {
		c, err := q.Dial(ctx, ln.Addr())
		if c != nil {
			defer c.Close()
		}
		dialed <- err
	}()
	c, err := ln.Accept(ctx)
	if err != nil {
		t.Fatalf("accept behind silent clients: %v", err)
	}
	c.Close()
	if err := <-dialed; err != nil {
		t.Fatal(err)
	}
}

// TestPeerStopsReading: a peer that stops reading while large writes are
// queued fills the socket; the writer gives up after AckTimeout and Close
// returns promptly instead of waiting for the peer forever.
func TestPeerStopsReading(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	frozen := make(chan net.Conn, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			frozen <- nil
			return
		}
		cfg := rdma.LoopbackConfig(secret)
		hs.Server(nc, cfg.Secret, hs.NewHello(rdma.ProviderTCP, caps, cfg))
		frozen <- nc // never reads again
	}()
	cfg := rdma.LoopbackConfig(secret)
	cfg.AckTimeout = 300 * time.Millisecond
	p, err := Provider{}.NewPeer("", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := p.Dial(context.Background(), ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if nc := <-frozen; nc != nil {
		defer nc.Close()
	}
	buf, _ := rdma.Alloc(4 << 20)
	defer buf.Free()
	mr, _ := p.Register(buf.Bytes(), rdma.UsageWriteSrc, nil)
	d := rdma.Descriptor{Provider: rdma.ProviderTCP, Usage: rdma.UsageWriteDst, Len: 4 << 20, Key: 1}
	var ops []*rdma.Op
	for i := 0; i < 16; i++ { // 64 MiB: far more than the socket buffers
		ops = append(ops, c.Write(d, 0, mr, 0, 4<<20))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, op := range ops {
		if err := op.Wait(ctx); err == nil {
			t.Fatal("a write to a peer that reads nothing succeeded")
		} else if errors.Is(err, context.DeadlineExceeded) {
			t.Fatal("writes hung on a peer that stopped reading")
		}
	}
	start := time.Now()
	c.Close()
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Close took %v", d)
	}
}

// TestTricklingWriter: a peer that starts a large write and then sends its
// payload too slowly loses the connection after AckTimeout, which releases
// the registration so that Deregister returns.
func TestTricklingWriter(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := rdma.LoopbackConfig(secret)
	cfg.AckTimeout = 300 * time.Millisecond
	slow, err := Provider{}.NewPeer("", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	ln, err := slow.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan rdma.Conn, 1)
	go func() {
		c, _ := ln.Accept(ctx)
		accepted <- c
	}()
	nc, err := net.Dial("tcp", ln.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := hs.Client(nc, cfg.Secret, hs.NewHello(rdma.ProviderTCP, 0, cfg)); err != nil {
		t.Fatal(err)
	}
	nc.Write(openFrame())
	c := <-accepted
	if c == nil {
		t.Fatal("accept failed")
	}
	defer c.Close()
	<-c.Events()
	// Register on the slow peer's side and start a 4 KiB write with 3 bytes.
	buf, _ := rdma.Alloc(8192)
	defer buf.Free()
	mr, err := slow.Register(buf.Bytes(), rdma.UsageWriteDst, nil)
	if err != nil {
		t.Fatal(err)
	}
	nc.Write(frame(header{typ: frameWrite, id: 1, key: mr.Descriptor().Key, n: 4096}, 1, 2, 3))
	done := make(chan error, 1)
	go func() {
		time.Sleep(50 * time.Millisecond) // the write is being served
		done <- mr.Deregister()
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("Deregister blocked behind a trickling writer")
	}
	select {
	case ev := <-c.Events():
		if ev.Kind != rdma.Lost {
			t.Fatalf("event %v", ev.Kind)
		}
	case <-ctx.Done():
		t.Fatal("no Lost event")
	}
}
