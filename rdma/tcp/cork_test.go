package tcp_test

import (
	"context"
	"testing"
	"time"

	"github.com/rpstream/rpstream/rdma"
	"github.com/rpstream/rpstream/rdma/tcp"
)

// TestCork: posts between Cork and Uncork are held back (nothing reaches
// the target, nothing completes), nested corks hold until the last
// Uncork, and the last Uncork sends them all, in order.
func TestCork(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := rdma.LoopbackConfig("cork test secret")
	target, err := tcp.Provider{}.NewPeer("", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	mem, _ := rdma.Alloc(4096)
	defer mem.Free()
	region, err := target.Register(mem.Bytes(), rdma.RemoteUsage, rdma.PersistFunc(func(off, n int) error { return nil }))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := target.Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan rdma.Conn, 1)
	go func() { c, _ := ln.Accept(ctx); accepted <- c }()
	init, err := tcp.Provider{}.NewPeer("", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer init.Close()
	conn, err := init.Dial(ctx, ln.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if tc := <-accepted; tc != nil {
		defer tc.Close()
	}
	src, _ := rdma.Alloc(4096)
	defer src.Free()
	local, err := init.Register(src.Bytes(), rdma.UsageWriteSrc, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 256 {
		src.Bytes()[i] = byte(i + 1)
	}
	ck, ok := conn.(rdma.Corker)
	if !ok {
		t.Fatal("tcp Conn is not an rdma.Corker")
	}
	desc := region.Descriptor()
	ck.Cork()
	ck.Cork()
	var flushes []*rdma.Op
	for k := range 4 {
		conn.Write(desc, 64*k, local, 64*k, 64)
		flushes = append(flushes, conn.Flush(desc, 64*k, 64, rdma.Persistence))
	}
	ck.Uncork() // still corked once
	time.Sleep(100 * time.Millisecond)
	for k, f := range flushes {
		select {
		case <-f.Done():
			t.Fatalf("flush %d completed while corked (err %v)", k, f.Err())
		default:
		}
	}
	if mem.Bytes()[0] != 0 {
		t.Fatal("a corked write reached the target")
	}
	ck.Uncork()
	for k, f := range flushes {
		if err := f.Wait(ctx); err != nil {
			t.Fatalf("flush %d after Uncork: %v", k, err)
		}
	}
	for i := range 256 {
		if mem.Bytes()[i] != byte(i+1) {
			t.Fatalf("byte %d: %d, want %d", i, mem.Bytes()[i], i+1)
		}
	}
	// Uncorked, posts go out at once again; an extra Uncork changes nothing.
	ck.Uncork()
	if err := conn.AtomicWrite(desc, 512, [8]byte{7}).Wait(ctx); err != nil {
		t.Fatal(err)
	}
}
