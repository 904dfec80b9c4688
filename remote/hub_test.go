package remote

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/rpstream/rpstream/local"
	"github.com/rpstream/rpstream/pmem/simpmem"
	"github.com/rpstream/rpstream/rdma"
	"github.com/rpstream/rpstream/rdma/tcp"
	"github.com/rpstream/rpstream/remote/remotepb"
)

const hubMaxRegions = 16

// hubEnv is a Hub whose streams are FileStores in dir, one file per
// stream name.
type hubEnv struct {
	hub  *Hub
	dir  string
	mu   sync.Mutex
	auth []string // "stream epoch writer" of every Authorize call
	// full, if set, makes Open refuse with ErrFull while the Hub holds
	// that many streams (a node at its open-streams limit).
	full int
}

func newHubEnv(t *testing.T) *hubEnv {
	t.Helper()
	e := &hubEnv{dir: t.TempDir()}
	cfg := HubConfig{Provider: tcp.Provider{}, RDMA: rdma.LoopbackConfig(secret), Addr: "127.0.0.1:0",
		Open: func(req *remotepb.OpenRequest) (RegionStore, error) {
			if e.full > 0 && e.hub.Len() >= e.full {
				return nil, fmt.Errorf("%w: %d open", ErrFull, e.hub.Len())
			}
			path := filepath.Join(e.dir, req.Stream)
			if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) && !req.Create {
				return nil, fmt.Errorf("%w: %s", ErrNoStream, req.Stream)
			}
			return OpenFileStore(path, int(req.RegionSize), hubMaxRegions)
		},
		Authorize: func(stream string, epoch uint64, writer string) error {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.auth = append(e.auth, fmt.Sprintf("%s %d %s", stream, epoch, writer))
			if writer == "intruder" {
				return errors.New("not a leader")
			}
			return nil
		}}
	h, err := NewHub(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.hub = h
	done := make(chan error, 1)
	go func() { done <- h.Serve(context.Background()) }()
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Errorf("Hub.Close: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Hub.Serve: %v", err)
		}
	})
	return e
}

func openReq(stream string, create bool) *remotepb.OpenRequest {
	return &remotepb.OpenRequest{Stream: stream, RegionSize: regionSize, Create: create, Leader: "test"}
}

// TestHubTwoStreamsIndependentEpochs: two streams on one address have
// their own epochs; a newer epoch on one revokes only that stream's old
// writer, and dropping one leaves the other alone.
func TestHubTwoStreamsIndependentEpochs(t *testing.T) {
	e := newHubEnv(t)
	a, b := dialAddr(t, e.hub.Addr()), dialAddr(t, e.hub.Addr())
	if _, err := a.cl.Open(ctx(t), openReq("s1", true)); err != nil {
		t.Fatal(err)
	}
	resp, err := b.cl.Open(ctx(t), openReq("s2", true))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Stream != "s2" || resp.RegionSize != regionSize || resp.StreamId != 0 || resp.Epoch != 0 {
		t.Fatalf("open response %v", resp)
	}
	if err := a.cl.Grant(ctx(t), 5, "node-a"); err != nil {
		t.Fatal(err)
	}
	if err := b.cl.Grant(ctx(t), 1, "node-b"); err != nil {
		t.Fatal(err)
	}
	ra, err := a.cl.Region(ctx(t), 5, 0)
	if err != nil {
		t.Fatal(err)
	}
	rb, err := b.cl.Region(ctx(t), 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.put(t, ra, 0, []byte("s1 by a")); err != nil {
		t.Fatal(err)
	}
	if err := b.put(t, rb, 0, []byte("s2 by b")); err != nil {
		t.Fatal(err)
	}
	if got := e.hub.Streams(); !reflect.DeepEqual(got, []string{"s1", "s2"}) {
		t.Fatalf("streams %v", got)
	}

	// A newer writer of s1 deposes a, not b.
	a2 := dialAddr(t, e.hub.Addr())
	if _, err := a2.cl.Open(ctx(t), openReq("s1", false)); err != nil {
		t.Fatal(err)
	}
	if err := a2.cl.Grant(ctx(t), 6, "node-a2"); err != nil {
		t.Fatal(err)
	}
	if err := a.put(t, ra, 0, []byte("stale!!")); err == nil {
		t.Fatal("the deposed writer of s1 still writes")
	}
	if err := b.put(t, rb, 0, []byte("s2 again")); err != nil {
		t.Fatalf("the writer of s2 was disturbed: %v", err)
	}
	if e.hub.Epoch("s1") != 6 || e.hub.Epoch("s2") != 1 {
		t.Fatalf("epochs %d %d", e.hub.Epoch("s1"), e.hub.Epoch("s2"))
	}
	// Epochs are per stream: epoch 1 of s2 is no rival of s1's.
	if err := b.cl.Grant(ctx(t), 1, "node-b"); err != nil {
		t.Fatal(err)
	}
	// Authorize is asked per stream, and can refuse.
	x := dialAddr(t, e.hub.Addr())
	if _, err := x.cl.Open(ctx(t), openReq("s2", false)); err != nil {
		t.Fatal(err)
	}
	if err := x.cl.Grant(ctx(t), 9, "intruder"); !errors.Is(err, ErrNotWriter) {
		t.Fatalf("unauthorised grant: %v", err)
	}
	e.mu.Lock()
	auth := append([]string(nil), e.auth...)
	e.mu.Unlock()
	if want := []string{"s1 5 node-a", "s2 1 node-b", "s1 6 node-a2", "s2 9 intruder"}; !reflect.DeepEqual(auth, want) {
		t.Fatalf("authorize calls %q, want %q", auth, want)
	}

	// Dropping s2 cuts its writer off and leaves s1 alone.
	if err := e.hub.Drop("s2"); err != nil {
		t.Fatal(err)
	}
	if err := e.hub.Drop("s2"); !errors.Is(err, ErrNoStream) {
		t.Fatalf("second drop: %v", err)
	}
	if err := b.put(t, rb, 0, []byte("dropped")); err == nil {
		t.Fatal("the writer of a dropped stream still writes")
	}
	ra2, err := a2.cl.Region(ctx(t), 6, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := a2.put(t, ra2, 0, []byte("s1 by a2")); err != nil {
		t.Fatal(err)
	}
	if got := e.hub.Streams(); !reflect.DeepEqual(got, []string{"s1"}) {
		t.Fatalf("streams after drop %v", got)
	}
	// The dropped stream's file holds what its writer wrote.
	b2, err := os.ReadFile(filepath.Join(e.dir, "s2"))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(b2[rb.Offset : rb.Offset+8]); got != "s2 again" {
		t.Fatalf("s2 holds %q", got)
	}
}

// TestHubOpenErrors: every wrong Open is refused with its own error and
// changes nothing; the connection may then open correctly.
func TestHubOpenErrors(t *testing.T) {
	e := newHubEnv(t)
	w := dialAddr(t, e.hub.Addr())
	// Requests before Open.
	if err := w.cl.Grant(ctx(t), 1, "w"); !errors.Is(err, ErrNoStream) {
		t.Fatalf("grant before open: %v", err)
	}
	if _, err := w.cl.Region(ctx(t), 1, 0); !errors.Is(err, ErrNoStream) {
		t.Fatalf("region before open: %v", err)
	}
	if _, err := w.cl.Tail(ctx(t), &remotepb.TailRequest{Epoch: 1}); !errors.Is(err, ErrNoStream) {
		t.Fatalf("tail before open: %v", err)
	}
	if _, err := w.cl.Info(ctx(t)); !errors.Is(err, ErrNoStream) {
		t.Fatalf("info before open: %v", err)
	}
	// An unknown stream without create.
	if _, err := w.cl.Open(ctx(t), openReq("nope", false)); !errors.Is(err, ErrNoStream) {
		t.Fatalf("open of an unknown stream: %v", err)
	}
	if len(e.hub.Streams()) != 0 {
		t.Fatalf("refused requests made streams %v", e.hub.Streams())
	}
	if _, err := os.Stat(filepath.Join(e.dir, "nope")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("open without create made a file: %v", err)
	}
	// Malformed opens.
	for name, o := range map[string]*remotepb.OpenRequest{
		"no name":          {RegionSize: regionSize},
		"region size 0":    {Stream: "s"},
		"odd region size":  {Stream: "s", RegionSize: regionSize + 1},
		"long name":        {Stream: string(make([]byte, MaxStreamName+1)), RegionSize: regionSize},
		"huge region size": {Stream: "s", RegionSize: 1 << 40},
	} {
		if _, err := w.cl.Open(ctx(t), o); !errors.Is(err, ErrMalformed) {
			t.Fatalf("%s: %v", name, err)
		}
	}
	nobody, _ := proto.Marshal(&remotepb.Request{Id: 3, Body: &remotepb.Request_Open{}})
	noID, _ := proto.Marshal(&remotepb.Request{Body: &remotepb.Request_Open{Open: openReq("s", true)}})
	for name, raw := range map[string][]byte{
		"open without a body": nobody,
		"garbage":             []byte("\xff\xff\xff\xff not a protobuf"),
		"empty":               {},
		"id 0":                noID,
	} {
		if resp, err := w.cl.Call(ctx(t), raw); err != nil || resp.GetError().GetCode() != remotepb.Code_CODE_MALFORMED {
			t.Fatalf("%s: %v %v", name, resp, err)
		}
	}
	if len(e.hub.Streams()) != 0 {
		t.Fatalf("malformed requests made streams %v", e.hub.Streams())
	}

	// A real stream file with a valid superblock.
	ls, err := local.Create(filepath.Join(e.dir, "real"), local.Options{RegionSize: regionSize, SpareRegions: -1})
	if err != nil {
		t.Fatal(err)
	}
	id := ls.StreamID()
	if _, err := ls.Append([]byte("one")); err != nil { // its first region
		t.Fatal(err)
	}
	ls.Close()
	o := openReq("real", false)
	o.StreamId = id + 1
	if _, err := w.cl.Open(ctx(t), o); !errors.Is(err, ErrMismatch) {
		t.Fatalf("open with another stream id: %v", err)
	}
	if len(e.hub.Streams()) != 0 {
		t.Fatalf("a refused open kept stream %v", e.hub.Streams())
	}
	o.StreamId = id
	resp, err := w.cl.Open(ctx(t), o)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StreamId != id || resp.Regions != 1 {
		t.Fatalf("open response %v, want stream id %x and 1 region", resp, id)
	}
	// A second open on the connection.
	if _, err := w.cl.Open(ctx(t), o); !errors.Is(err, ErrMalformed) {
		t.Fatalf("second open: %v", err)
	}
	// Another writer with another region size, or another id.
	x := dialAddr(t, e.hub.Addr())
	o2 := openReq("real", false)
	o2.RegionSize = 2 * regionSize
	if _, err := x.cl.Open(ctx(t), o2); !errors.Is(err, ErrMismatch) {
		t.Fatalf("open with another region size: %v", err)
	}
	o2 = openReq("real", false)
	o2.StreamId = id + 1
	if _, err := x.cl.Open(ctx(t), o2); !errors.Is(err, ErrMismatch) {
		t.Fatalf("open of an open stream with another id: %v", err)
	}
	if _, err := x.cl.Open(ctx(t), openReq("real", false)); err != nil {
		t.Fatalf("open without an id to check: %v", err)
	}
	// The bound connection works as a Target's.
	if err := w.cl.Grant(ctx(t), 2, "w"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.cl.Region(ctx(t), 2, 1); err != nil {
		t.Fatal(err)
	}
}

// TestTargetAcceptsOpen: a standalone Target takes an Open of any name
// whose region size matches, once per connection.
func TestTargetAcceptsOpen(t *testing.T) {
	e := newEnv(t, nil)
	w := e.dial()
	bad := openReq("any", false)
	bad.RegionSize = 2 * regionSize
	if _, err := w.cl.Open(ctx(t), bad); !errors.Is(err, ErrMismatch) {
		t.Fatalf("open with another region size: %v", err)
	}
	resp, err := w.cl.Open(ctx(t), openReq("any", false))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Stream != "any" || resp.StreamId != 0 || resp.Regions != 0 {
		t.Fatalf("open response %v", resp)
	}
	if _, err := w.cl.Open(ctx(t), openReq("any", false)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("second open: %v", err)
	}
	if err := w.cl.Grant(ctx(t), 1, "w"); err != nil {
		t.Fatal(err)
	}
	// Without an Open, as before.
	x := e.dial()
	if _, err := x.cl.Info(ctx(t)); err != nil {
		t.Fatal(err)
	}
}

// noClose hides a store's Close from the Hub.
type noClose struct{ RegionStore }

// FuzzHubFirst: no first request panics a Hub; a refused one binds
// nothing and leaves no stream behind.
func FuzzHubFirst(f *testing.F) {
	for _, r := range []*remotepb.Request{
		{Id: 1, Body: &remotepb.Request_Open{Open: openReq("s", true)}},
		{Id: 2, Body: &remotepb.Request_Open{Open: openReq("s", false)}},
		{Id: 3, Body: &remotepb.Request_Grant{Grant: &remotepb.GrantRequest{Epoch: 3}}},
		{Id: 4, Body: &remotepb.Request_Tail{Tail: &remotepb.TailRequest{Epoch: 3}}},
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
		h := &Hub{peer: p, streams: map[string]*Target{}, conns: map[rdma.Conn]struct{}{},
			cfg: HubConfig{Open: func(req *remotepb.OpenRequest) (RegionStore, error) {
				if !req.Create {
					return nil, ErrNoStream
				}
				return noClose{store}, nil
			}}}
		resp, tg := h.first(nil, raw)
		if resp == nil {
			t.Fatal("nil response")
		}
		if resp.Error != nil {
			if tg != nil || len(h.Streams()) != 0 {
				t.Fatal("a refused first request bound a stream")
			}
			return
		}
		if tg == nil || len(h.Streams()) != 1 {
			t.Fatalf("an accepted open bound %v, streams %v", tg, h.Streams())
		}
		tg.detach(nil)
		if err := h.Drop(h.Streams()[0]); err != nil {
			t.Fatal(err)
		}
	})
}

// TestHubFullClosesIdle: when the owner refuses an Open for its limit of
// open copies, the Hub closes the copies no writer is connected to and
// opens again; with none idle the Open fails and the open copy stays.
func TestHubFullClosesIdle(t *testing.T) {
	e := newHubEnv(t)
	e.full = 1
	a := dialAddr(t, e.hub.Addr())
	if _, err := a.cl.Open(ctx(t), openReq("s1", true)); err != nil {
		t.Fatal(err)
	}
	b := dialAddr(t, e.hub.Addr())
	if resp, err := b.cl.Open(ctx(t), openReq("s2", true)); err == nil {
		t.Fatalf("an open past the limit, with the only copy connected, succeeded: %v; streams %v", resp, e.hub.Streams())
	}
	if got := e.hub.Streams(); !reflect.DeepEqual(got, []string{"s1"}) {
		t.Fatalf("streams %v after a refused open", got)
	}
	a.conn.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := dialAddr(t, e.hub.Addr())
		_, err := c.cl.Open(ctx(t), openReq("s2", true))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("open of s2 once s1 has no writer: %v", err)
		}
		time.Sleep(10 * time.Millisecond) // the Hub sees a's close
	}
	if got := e.hub.Streams(); !reflect.DeepEqual(got, []string{"s2"}) {
		t.Fatalf("streams %v, want s1 closed for s2", got)
	}
}
