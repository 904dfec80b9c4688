package tcp_test

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/rpstream/rpstream/rdma"
	"github.com/rpstream/rpstream/rdma/tcp"
)

// A target exposes memory; an initiator writes into it, makes the write
// durable with a persistence flush, and publishes with an atomic write.
func Example() {
	ctx := context.Background()
	cfg := rdma.LoopbackConfig("example shared secret")

	// Target.
	target, _ := tcp.Provider{}.NewPeer("", cfg)
	defer target.Close()
	mem, _ := rdma.Alloc(4096) // a pmem mapping in production
	defer mem.Free()
	var persists atomic.Int32 // the target's reader goroutine calls the persister
	region, _ := target.Register(mem.Bytes(), rdma.RemoteUsage,
		rdma.PersistFunc(func(off, n int) error { persists.Add(1); return nil })) // pmem.Memory.Persist
	ln, _ := target.Listen(ctx, "127.0.0.1:0")
	defer ln.Close()
	accepted := make(chan rdma.Conn, 1)
	go func() { c, _ := ln.Accept(ctx); accepted <- c }()

	// Initiator: it learns the descriptor out of band (here, directly).
	desc := region.Descriptor()
	init, _ := tcp.Provider{}.NewPeer("", cfg)
	defer init.Close()
	conn, err := init.Dial(ctx, ln.Addr())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close()
	defer (<-accepted).Close()
	src, _ := rdma.Alloc(4096)
	defer src.Free()
	local, _ := init.Register(src.Bytes(), rdma.UsageWriteSrc, nil)

	n := copy(src.Bytes(), "hello, replica")
	conn.Write(desc, 64, local, 0, n) // no need to wait: the flush covers it
	if err := conn.Flush(desc, 64, n, rdma.Persistence).Wait(ctx); err != nil {
		fmt.Println(err)
		return
	}
	if err := conn.AtomicWrite(desc, 0, [8]byte{byte(n)}).Wait(ctx); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%q, length word %d, persisted %d time(s)\n", mem.Bytes()[64:64+n], mem.Bytes()[0], persists.Load())
	// Output: "hello, replica", length word 14, persisted 1 time(s)
}
