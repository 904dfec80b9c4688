package remote_test

import (
	"context"
	"fmt"

	"github.com/rpstream/rpstream/pmem/simpmem"
	"github.com/rpstream/rpstream/rdma"
	"github.com/rpstream/rpstream/rdma/tcp"
	"github.com/rpstream/rpstream/remote"
)

// A backup target serving one stream file, and a writer (the leader)
// replicating bytes into region 2 and making them durable.
func Example() {
	ctx := context.Background()
	const regionSize = 1 << 20
	mem := simpmem.New(remote.SuperblockSize + 4*regionSize) // pmem.Create/Open in production
	defer mem.Release()
	store, _ := remote.NewFileStore(mem, regionSize, 4)

	cfg := rdma.DefaultConfig()
	cfg.Secret = []byte("shared by the cluster's nodes")
	cfg.DirectWriteToPmem = true // the target persists on flush
	target, err := remote.NewTarget(ctx, store, remote.Config{Provider: tcp.Provider{}, RDMA: cfg, Addr: "127.0.0.1:0"})
	if err != nil {
		fmt.Println(err)
		return
	}
	served := make(chan error, 1)
	go func() { served <- target.Serve(ctx) }()
	defer func() { target.Close(); <-served }()

	// The writer side.
	peer, _ := tcp.Provider{}.NewPeer("", cfg)
	defer peer.Close()
	conn, err := peer.Dial(ctx, target.Addr())
	if err != nil {
		fmt.Println(err)
		return
	}
	client, _ := remote.NewClient(peer, conn)
	defer client.Close()
	if err := client.Grant(ctx, 7, "leader-a"); err != nil { // epoch 7 from the cluster layer
		fmt.Println(err)
		return
	}
	region, _ := client.Region(ctx, 7, 2)

	src, _ := rdma.Alloc(4096)
	defer src.Free()
	local, _ := peer.Register(src.Bytes(), rdma.UsageWriteSrc, nil)
	n := copy(src.Bytes(), "entry 1")
	conn.Write(region.Desc, 0, local, 0, n)
	if err := conn.Flush(region.Desc, 0, n, rdma.Persistence).Wait(ctx); err != nil {
		fmt.Println(err)
		return
	}
	durable := mem.Media()[region.Offset : region.Offset+n]
	fmt.Printf("region %d at offset %d holds %q durably\n", region.Index, region.Offset, durable)
	// Output: region 2 at offset 2101248 holds "entry 1" durably
}
