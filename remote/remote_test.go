package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/rpstream/rpstream/pmem"
	"github.com/rpstream/rpstream/pmem/simpmem"
	"github.com/rpstream/rpstream/rdma"
	"github.com/rpstream/rpstream/rdma/tcp"
	"github.com/rpstream/rpstream/remote/remotepb"
)

const (
	secret     = "remote test shared secret"
	regionSize = 64 << 10
	maxRegions = 4
)

// env is a Target over a simulated stream file.
type env struct {
	t      *testing.T
	sim    *simpmem.Memory
	target *Target
	done   chan error
}

func newEnv(t *testing.T, mem pmem.Memory) *env {
	t.Helper()
	e := &env{t: t, done: make(chan error, 1)}
	if mem == nil {
		e.sim = simpmem.New(SuperblockSize + maxRegions*regionSize)
		mem = e.sim
	}
	store, err := NewFileStore(mem, regionSize, maxRegions)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Provider: tcp.Provider{}, RDMA: rdma.LoopbackConfig(secret), Addr: "127.0.0.1:0"}
	e.target, err = NewTarget(context.Background(), store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	go func() { e.done <- e.target.Serve(context.Background()) }()
	t.Cleanup(func() {
		e.target.Close()
		if err := <-e.done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if e.sim != nil {
			e.sim.Release()
		}
	})
	return e
}

// writer is one writer connection with a local source buffer.
type writer struct {
	peer rdma.Peer
	conn rdma.Conn
	cl   *Client
	src  rdma.MR
	buf  *rdma.Buffer
}

func (e *env) dial() *writer {
	e.t.Helper()
	return dialAddr(e.t, e.target.Addr())
}

// dialAddr connects a writer to a Target or Hub at addr.
func dialAddr(t *testing.T, addr string) *writer {
	t.Helper()
	p, err := tcp.Provider{}.NewPeer("", rdma.LoopbackConfig(secret))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := p.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := NewClient(p, c)
	if err != nil {
		t.Fatal(err)
	}
	buf, err := rdma.Alloc(regionSize)
	if err != nil {
		t.Fatal(err)
	}
	src, err := p.Register(buf.Bytes(), rdma.UsageWriteSrc|rdma.UsageReadDst, nil)
	if err != nil {
		t.Fatal(err)
	}
	w := &writer{peer: p, conn: c, cl: cl, src: src, buf: buf}
	t.Cleanup(func() {
		c.Close()
		cl.Close()
		p.Close()
		buf.Free()
	})
	return w
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// put writes b at off of region r and flushes it to persistence.
func (w *writer) put(t *testing.T, r Region, off int, b []byte) error {
	copy(w.buf.Bytes(), b)
	w.conn.Write(r.Desc, off, w.src, 0, len(b))
	return w.conn.Flush(r.Desc, off, len(b), rdma.Persistence).Wait(ctx(t))
}

func TestWriteFlushPersists(t *testing.T) {
	e := newEnv(t, nil)
	w := e.dial()
	info, err := w.cl.Info(ctx(t))
	if err != nil || info.RegionSize != regionSize || info.SuperblockSize != SuperblockSize || !info.Persistent {
		t.Fatalf("info %v %v", info, err)
	}
	if err := w.cl.Grant(ctx(t), 1, "a"); err != nil {
		t.Fatal(err)
	}
	for _, k := range []int{0, 2} {
		r, err := w.cl.Region(ctx(t), 1, k)
		if err != nil {
			t.Fatal(err)
		}
		if r.Offset != RegionOffset(k, regionSize) || r.Desc.Len != regionSize {
			t.Fatalf("region %d: %+v", k, r)
		}
		data := bytes.Repeat([]byte{byte(k + 1)}, 1000)
		if err := w.put(t, r, 100, data); err != nil {
			t.Fatal(err)
		}
		media := e.sim.Media()
		if got := media[r.Offset+100 : r.Offset+1100]; !bytes.Equal(got, data) {
			t.Fatalf("region %d: not durable after the flush", k)
		}
	}
	if e.sim.Persists() == 0 {
		t.Fatal("the store's Persist was never called")
	}
}

func TestEpochSwitchRevokesOldWriter(t *testing.T) {
	e := newEnv(t, nil)
	a, b := e.dial(), e.dial()
	if err := a.cl.Grant(ctx(t), 1, "a"); err != nil {
		t.Fatal(err)
	}
	ra, err := a.cl.Region(ctx(t), 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.put(t, ra, 0, []byte("from a")); err != nil {
		t.Fatal(err)
	}
	if err := b.cl.Grant(ctx(t), 2, "b"); err != nil {
		t.Fatal(err)
	}
	if e.target.Epoch() != 2 {
		t.Fatalf("epoch %d", e.target.Epoch())
	}
	// The stale writer's next write fails and poisons its connection.
	err = a.put(t, ra, 0, []byte("stale!"))
	if !errors.Is(err, rdma.ErrRemoteAccess) && !errors.Is(err, rdma.ErrPoisoned) {
		t.Fatalf("stale write: %v, want a remote access error", err)
	}
	if a.conn.Err() == nil {
		t.Fatal("stale writer's connection not poisoned")
	}
	if got := e.sim.Cache()[ra.Offset : ra.Offset+6]; string(got) != "from a" {
		t.Fatalf("stale write landed: %q", got)
	}
	// A new connection of the old writer cannot regain epoch 1 or take 2.
	a2 := e.dial()
	if err := a2.cl.Grant(ctx(t), 1, "a"); !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("grant of an old epoch: %v", err)
	}
	if err := a2.cl.Grant(ctx(t), 2, "a"); !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("grant of the current epoch held by another writer: %v", err)
	}
	if _, err := a2.cl.Region(ctx(t), 2, 0); !errors.Is(err, ErrNotWriter) {
		t.Fatalf("region for a non-writer: %v", err)
	}
	// The new writer works, and re-granting its own epoch is idempotent.
	if err := b.cl.Grant(ctx(t), 2, "b"); err != nil {
		t.Fatal(err)
	}
	rb, err := b.cl.Region(ctx(t), 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	if rb.Desc.Key == ra.Desc.Key {
		t.Fatal("new epoch reuses the old key")
	}
	if err := b.put(t, rb, 0, []byte("from b")); err != nil {
		t.Fatal(err)
	}
	if got := e.sim.Media()[rb.Offset : rb.Offset+6]; string(got) != "from b" {
		t.Fatalf("new writer's data %q", got)
	}
	if _, err := b.cl.Region(ctx(t), 1, 0); !errors.Is(err, ErrNotWriter) {
		t.Fatalf("region with an old epoch: %v", err)
	}
}

func TestMalformedControlMessages(t *testing.T) {
	e := newEnv(t, nil)
	w := e.dial()
	if err := w.cl.Grant(ctx(t), 5, "w"); err != nil {
		t.Fatal(err)
	}
	grant0, _ := proto.Marshal(&remotepb.Request{Id: 9, Body: &remotepb.Request_Grant{Grant: &remotepb.GrantRequest{}}})
	noID, _ := proto.Marshal(&remotepb.Request{Body: &remotepb.Request_Grant{Grant: &remotepb.GrantRequest{Epoch: 6}}})
	nobody, _ := proto.Marshal(&remotepb.Request{Id: 3})
	openEmpty, _ := proto.Marshal(&remotepb.Request{Id: 4, Body: &remotepb.Request_Open{}})
	openNoName, _ := proto.Marshal(&remotepb.Request{Id: 5, Body: &remotepb.Request_Open{Open: &remotepb.OpenRequest{RegionSize: regionSize}}})
	openOddSize, _ := proto.Marshal(&remotepb.Request{Id: 6, Body: &remotepb.Request_Open{Open: &remotepb.OpenRequest{Stream: "s", RegionSize: 100}}})
	tail0, _ := proto.Marshal(&remotepb.Request{Id: 7, Body: &remotepb.Request_Tail{Tail: &remotepb.TailRequest{LeaderSeq: 1, LeaderOff: 128}}})
	tailOff, _ := proto.Marshal(&remotepb.Request{Id: 8, Body: &remotepb.Request_Tail{Tail: &remotepb.TailRequest{Epoch: 5, LeaderSeq: 1, LeaderOff: 3}}})
	tailBeyond, _ := proto.Marshal(&remotepb.Request{Id: 9, Body: &remotepb.Request_Tail{Tail: &remotepb.TailRequest{Epoch: 5, LeaderSeq: 1, LeaderOff: regionSize + 8}}})
	for name, raw := range map[string][]byte{
		"garbage":               []byte("\xff\xff\xff\xff not a protobuf"),
		"empty":                 {},
		"grant epoch 0":         grant0,
		"id 0":                  noID,
		"no body":               nobody,
		"open without a body":   openEmpty,
		"open without a name":   openNoName,
		"open odd region size":  openOddSize,
		"tail epoch 0":          tail0,
		"tail unaligned offset": tailOff,
		"tail beyond a region":  tailBeyond,
	} {
		resp, err := w.cl.Call(ctx(t), raw)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if resp.GetError().GetCode() != remotepb.Code_CODE_MALFORMED || resp.GetError().GetMessage() == "" {
			t.Fatalf("%s: response %v, want CODE_MALFORMED with a message", name, resp)
		}
	}
	if e.target.Epoch() != 5 {
		t.Fatalf("malformed messages changed the epoch to %d", e.target.Epoch())
	}
	r, err := w.cl.Region(ctx(t), 5, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.put(t, r, 0, []byte("still the writer")); err != nil {
		t.Fatal(err)
	}
}

func TestNoRegion(t *testing.T) {
	e := newEnv(t, nil)
	w := e.dial()
	if err := w.cl.Grant(ctx(t), 1, "w"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.cl.Region(ctx(t), 1, maxRegions); !errors.Is(err, ErrNoRegion) {
		t.Fatalf("slot beyond the store: %v", err)
	}
	e.sim.FailAllocate(errors.New("disk full"))
	if _, err := w.cl.Region(ctx(t), 1, 3); !errors.Is(err, ErrNoRegion) {
		t.Fatalf("slot that cannot be allocated: %v", err)
	}
	e.sim.FailAllocate(nil)
	if _, err := w.cl.Region(ctx(t), 1, 3); err != nil {
		t.Fatal(err)
	}
}

// TestBackupTargetAlone runs a Target over a real file, as a backup node
// with no stream of its own, and reads the file back after closing.
func TestBackupTargetAlone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stream")
	store, err := OpenFileStore(path, regionSize, maxRegions)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, store.Memory())
	w := e.dial()
	if err := w.cl.Grant(ctx(t), 1, "leader"); err != nil {
		t.Fatal(err)
	}
	r, err := w.cl.Region(ctx(t), 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.put(t, r, 10, []byte("replicated bytes")); err != nil {
		t.Fatal(err)
	}
	e.target.Close()
	store.Close()
	g, err := pmem.Open(path, pmem.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	off := RegionOffset(1, regionSize) + 10
	if got := g.Bytes()[off : off+16]; string(got) != "replicated bytes" {
		t.Fatalf("file holds %q", got)
	}
}

// FuzzHandle: no control message panics the target, and one that is
// refused changes nothing.
func FuzzHandle(f *testing.F) {
	for _, r := range []*remotepb.Request{
		{Id: 1, Body: &remotepb.Request_Info{Info: &remotepb.InfoRequest{}}},
		{Id: 2, Body: &remotepb.Request_Grant{Grant: &remotepb.GrantRequest{Epoch: 3}}},
		{Id: 3, Body: &remotepb.Request_Region{Region: &remotepb.RegionRequest{Epoch: 3, Index: 1}}},
		{Id: 4, Body: &remotepb.Request_Open{Open: &remotepb.OpenRequest{Stream: "s", RegionSize: regionSize, StreamId: 9}}},
		{Id: 5, Body: &remotepb.Request_Tail{Tail: &remotepb.TailRequest{Epoch: 7, LeaderSeq: 2, LeaderOff: 256}}},
	} {
		b, _ := proto.Marshal(r)
		f.Add(b)
	}
	sim := simpmem.New(SuperblockSize + maxRegions*regionSize)
	defer sim.Release()
	store, err := NewFileStore(sim, regionSize, maxRegions)
	if err != nil {
		f.Fatal(err)
	}
	p, err := tcp.Provider{}.NewPeer("", rdma.LoopbackConfig(secret))
	if err != nil {
		f.Fatal(err)
	}
	defer p.Close()
	f.Fuzz(func(t *testing.T, raw []byte) {
		tg := &Target{store: store, peer: p, mrs: map[int]rdma.MR{}, epoch: 7}
		resp := tg.Handle(nil, raw)
		if resp == nil {
			t.Fatal("nil response")
		}
		if resp.Error != nil && (tg.epoch != 7 || len(tg.mrs) != 0) {
			t.Fatal("refused request changed the target")
		}
	})
}

// TestUngrantedConnectionCannotWrite: a connection that was never granted
// an epoch has no one-sided access even with the writer's descriptor (a
// leaked key), and its rejected attempt does not disturb the writer.
func TestUngrantedConnectionCannotWrite(t *testing.T) {
	e := newEnv(t, nil)
	w, x := e.dial(), e.dial()
	if err := w.cl.Grant(ctx(t), 1, "writer"); err != nil {
		t.Fatal(err)
	}
	r, err := w.cl.Region(ctx(t), 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	err = x.put(t, r, 0, []byte("intruder"))
	if !errors.Is(err, rdma.ErrRemoteAccess) && !errors.Is(err, rdma.ErrPoisoned) {
		t.Fatalf("write by an ungranted connection: %v, want an access error", err)
	}
	if err := w.put(t, r, 0, []byte("writer!!")); err != nil {
		t.Fatal(err)
	}
	if got := e.sim.Media()[r.Offset : r.Offset+8]; string(got) != "writer!!" {
		t.Fatalf("region holds %q", got)
	}
}

// TestWriterReconnects: the holder of the current epoch whose connection
// died regains the epoch on a new connection under its name; another name
// cannot take it, and nor can anyone while the holder's connection lives.
func TestWriterReconnects(t *testing.T) {
	e := newEnv(t, nil)
	a := e.dial()
	if err := a.cl.Grant(ctx(t), 3, "node-a"); err != nil {
		t.Fatal(err)
	}
	a2 := e.dial()
	if err := a2.cl.Grant(ctx(t), 3, "node-a"); !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("same epoch while the holder's connection lives: %v", err)
	}
	a.conn.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		// The target notices the closed connection asynchronously.
		err := a2.cl.Grant(ctx(t), 3, "node-b")
		if !errors.Is(err, ErrStaleEpoch) {
			t.Fatalf("another name took the epoch: %v", err)
		}
		if err := a2.cl.Grant(ctx(t), 3, "node-a"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the holder could not reconnect")
		}
		time.Sleep(10 * time.Millisecond)
	}
	r, err := a2.cl.Region(ctx(t), 3, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := a2.put(t, r, 0, []byte("again")); err != nil {
		t.Fatal(err)
	}
}

// TestAsymmetricMessageLimits: a writer allowing smaller messages than the
// target (and the other way round) still talks to it.
func TestAsymmetricMessageLimits(t *testing.T) {
	for _, writerMax := range []int{256, 64 << 10} {
		e := newEnv(t, nil)
		cfg := rdma.LoopbackConfig(secret)
		cfg.MaxMessage = writerMax
		p, err := tcp.Provider{}.NewPeer("", cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		c, err := p.Dial(ctx(t), e.target.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		cl, err := NewClient(p, c)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		if err := cl.Grant(ctx(t), 1, "w"); err != nil {
			t.Fatalf("writer MaxMessage %d: %v", writerMax, err)
		}
		if _, err := cl.Region(ctx(t), 1, 0); err != nil {
			t.Fatalf("writer MaxMessage %d: %v", writerMax, err)
		}
		// An error response with a long message still arrives.
		if _, err := cl.Region(ctx(t), 1, maxRegions+1000); !errors.Is(err, ErrNoRegion) {
			t.Fatalf("writer MaxMessage %d: %v", writerMax, err)
		}
	}
}

func TestAuthorizeAndDropRegion(t *testing.T) {
	sim := simpmem.New(SuperblockSize + maxRegions*regionSize)
	defer sim.Release()
	store, err := NewFileStore(sim, regionSize, maxRegions)
	if err != nil {
		t.Fatal(err)
	}
	leader := map[uint64]string{1: "node-a", 2: "node-b"} // the cluster layer's view
	cfg := Config{Provider: tcp.Provider{}, RDMA: rdma.LoopbackConfig(secret), Addr: "127.0.0.1:0",
		Authorize: func(epoch uint64, writer string) error {
			if leader[epoch] != writer {
				return fmt.Errorf("%s does not lead epoch %d", writer, epoch)
			}
			return nil
		}}
	tg, err := NewTarget(context.Background(), store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, target: tg, done: make(chan error, 1)}
	go func() { e.done <- tg.Serve(context.Background()) }()
	defer func() { tg.Close(); <-e.done }()

	a, b := e.dial(), e.dial()
	if err := a.cl.Grant(ctx(t), 1, "node-a"); err != nil {
		t.Fatal(err)
	}
	// A writer claiming an epoch the cluster did not give it is refused
	// and deposes no one.
	if err := b.cl.Grant(ctx(t), 3, "node-b"); !errors.Is(err, ErrNotWriter) {
		t.Fatalf("unauthorised epoch: %v", err)
	}
	if tg.Epoch() != 1 {
		t.Fatalf("epoch %d after a refused grant", tg.Epoch())
	}
	r, err := a.cl.Region(ctx(t), 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.put(t, r, 0, []byte("kept")); err != nil {
		t.Fatal(err)
	}
	// The store recycles slot 0: the writer's next write there fails.
	if err := tg.DropRegion(0); err != nil {
		t.Fatal(err)
	}
	if err := tg.DropRegion(0); !errors.Is(err, ErrNoRegion) {
		t.Fatalf("second drop: %v", err)
	}
	if err := a.put(t, r, 0, []byte("late")); err == nil {
		t.Fatal("write to a dropped slot succeeded")
	}
	if got := sim.Cache()[r.Offset : r.Offset+4]; string(got) != "kept" {
		t.Fatalf("dropped slot holds %q", got)
	}
}
