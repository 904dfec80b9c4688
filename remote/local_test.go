package remote_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/rpstream/rpstream/local"
	"github.com/rpstream/rpstream/pmem/simpmem"
	"github.com/rpstream/rpstream/rdma"
	"github.com/rpstream/rpstream/rdma/tcp"
	"github.com/rpstream/rpstream/remote"
)

// A leader's stream (package local) copied byte for byte into a backup
// target over rdma, header and regions at the same offsets, opens on the
// target's side as the same stream: the same head, the same entries. This
// is what makes a replica usable after a failover with no replica code on
// the data path.
func TestLocalStreamReplicatesByteForByte(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const regionSize = 64 << 10

	// The leader: a real stream file with several regions, some trimmed.
	leader, err := local.Create(filepath.Join(t.TempDir(), "s.stream"), local.Options{RegionSize: regionSize, SpareRegions: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer leader.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	var want [][]byte
	for i := 0; i < 400; i++ {
		p := make([]byte, rng.IntN(1000))
		for k := range p {
			p[k] = byte(rng.Uint32())
		}
		if _, err := leader.Append(p); err != nil {
			t.Fatal(err)
		}
		want = append(want, p)
	}
	head, err := leader.Trim(200)
	if err != nil || head == 0 {
		t.Fatalf("trim: head %d, %v", head, err)
	}

	// The backup target, on a simulated persistence domain so that only
	// what was flushed to persistence counts.
	mem := simpmem.New(remote.SuperblockSize + 16*regionSize)
	defer mem.Release()
	store, err := remote.NewFileStore(mem, regionSize, 16)
	if err != nil {
		t.Fatal(err)
	}
	cfg := rdma.LoopbackConfig("replication test secret")
	cfg.DirectWriteToPmem = true
	target, err := remote.NewTarget(ctx, store, remote.Config{Provider: tcp.Provider{}, RDMA: cfg, Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- target.Serve(ctx) }()
	defer func() { target.Close(); <-served }()

	peer, err := tcp.Provider{}.NewPeer("", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	conn, err := peer.Dial(ctx, target.Addr())
	if err != nil {
		t.Fatal(err)
	}
	client, err := remote.NewClient(peer, conn)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if err := client.Grant(ctx, 1, "leader"); err != nil {
		t.Fatal(err)
	}
	// The leader's mapping is the source of every write: no copy.
	src, err := peer.Register(leader.Memory().Bytes(), rdma.UsageWriteSrc, nil)
	if err != nil {
		t.Fatal(err)
	}
	copyRange := func(slot, off, n int) {
		t.Helper()
		r, err := client.Region(ctx, 1, slot)
		if err != nil {
			t.Fatalf("region %d: %v", slot, err)
		}
		if r.Offset != off {
			t.Fatalf("slot %d at offset %d on the target, %d on the leader", slot, r.Offset, off)
		}
		conn.Write(r.Desc, 0, src, off, n)
		if err := conn.Flush(r.Desc, 0, n, rdma.Persistence).Wait(ctx); err != nil {
			t.Fatalf("flush slot %d: %v", slot, err)
		}
	}
	copyRange(remote.HeaderSlot, 0, remote.SuperblockSize)
	for _, ri := range leader.Regions() {
		copyRange(ri.Slot, ri.Offset, regionSize)
	}

	// What survives on the target opens as the leader's stream.
	img := mem.Media()
	replica, err := local.OpenOn(simpmem.FromImage(img, len(img)), local.Options{})
	if err != nil {
		t.Fatalf("the replica does not open as a stream: %v", err)
	}
	defer replica.Close()
	if replica.Head() != leader.Head() || replica.Committed() != leader.Committed() || replica.StreamID() != leader.StreamID() {
		t.Fatalf("replica head %d next %d id %x; leader head %d next %d id %x",
			replica.Head(), replica.Committed(), replica.StreamID(), leader.Head(), leader.Committed(), leader.StreamID())
	}
	it := replica.Iterator(replica.Head())
	n := 0
	for it.Next() {
		e := it.Entry()
		if !bytes.Equal(e.Data, want[e.Index]) {
			t.Fatalf("replica entry %d differs", e.Index)
		}
		n++
	}
	if it.Err() != nil || uint64(n) != leader.Committed()-leader.Head() {
		t.Fatalf("replica read %d entries (%v), want %d", n, it.Err(), leader.Committed()-leader.Head())
	}
	t.Logf("replicated %d regions, %d entries from index %d", len(leader.Regions()), n, replica.Head())
}
