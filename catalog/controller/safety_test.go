package controller

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/rpstream/rpstream/catalog"
	pb "github.com/rpstream/rpstream/catalog/catalogpb"
)

// safetySeeds are the runs of TestSafety; RPSTREAM_CONTROLLER_SEED=N
// runs seed N alone.
var safetySeeds = []uint64{1, 2, 3, 4, 5}

// safetyChaos is how long each run injects faults.
const safetyChaos = 2500 * time.Millisecond

// TestSafety runs the catalog's Raft group (three voters, two followers)
// on an in-process network that drops 10% of messages, forwarded
// requests and answers, delays them, partitions a random minority or
// isolates the controller, heals, and stops and restarts random members
// on their directories (the durable log brings them back), while workers
// create, delete, grant and drop from random members. It checks that:
//
//   - applied catalogs never diverge: whenever two members (or one
//     member before and after a restart) have applied the same index,
//     their catalogs encode to the same bytes (sampled every few
//     milliseconds, and at the end);
//   - after healing, every member reaches the same applied index and the
//     same catalog;
//   - every create that returned success is in the final catalog with
//     its id, unless a delete of that id was asked; every delete that
//     returned success left a tombstone or a newer stream;
//   - no stream id is given to two names, no epoch of a stream is
//     granted twice, and a stream's final epoch is at least every epoch
//     granted;
//   - every error a request returns is one of the documented classes.
//
// The faults and the workers' choices follow the seed, printed on
// failure; the interleaving of goroutines does not.
func TestSafety(t *testing.T) {
	seeds := safetySeeds
	if s := os.Getenv("RPSTREAM_CONTROLLER_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("RPSTREAM_CONTROLLER_SEED=%q: %v", s, err)
		}
		seeds = []uint64{n}
	}
	if testing.Short() {
		seeds = seeds[:1]
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Logf("seed %d (rerun alone with RPSTREAM_CONTROLLER_SEED=%d)", seed, seed)
			runSafety(t, seed)
		})
	}
}

// history is what the workers were told, and what the samplers saw.
type history struct {
	mu       sync.Mutex
	failures []string
	// byIndex: the hash of the catalog applied at each index, and who
	// saw it first.
	byIndex map[uint64]seenCatalog
	samples int
	// creates and deletes that returned success; deletes asked (any
	// result) by stream id.
	created    map[uint64]string // stream id → name
	deleted    map[uint64]string
	deleteAsks map[uint64]bool
	// epochs granted (successfully) per stream id, and the stream's name.
	epochs     map[uint64]map[uint64]bool
	grantNames map[uint64]string
	// outcomes counts results by operation and class.
	outcomes map[string]int
}

type seenCatalog struct {
	sum [32]byte
	by  string
}

func (h *history) fail(format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.failures) < 20 {
		h.failures = append(h.failures, fmt.Sprintf(format, args...))
	}
}

// sample records the catalog c applied and checks it against what any
// member applied at the same index.
func (h *history) sample(c *Controller) {
	idx, snap := c.catalogState()
	sum := sha256.Sum256(snap)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.samples++
	seen, ok := h.byIndex[idx]
	if !ok {
		h.byIndex[idx] = seenCatalog{sum, fmt.Sprintf("%s (incarnation %016x)", c.Name(), c.Incarnation())}
		return
	}
	if seen.sum != sum && len(h.failures) < 20 {
		h.failures = append(h.failures, fmt.Sprintf("catalogs diverge at applied index %d: %s and %s", idx, seen.by, c.Name()))
	}
}

// classOf names the documented class of a request's error, "" if none.
func classOf(err error) string {
	for _, e := range []error{ErrNoController, ErrStopped, ErrTimeout, ErrPlacement, catalog.ErrExists,
		catalog.ErrNoStream, catalog.ErrNotLeader, catalog.ErrUnknownNode, catalog.ErrNameTaken, catalog.ErrInvalid, ErrGroupState,
		context.DeadlineExceeded} {
		if errors.Is(err, e) {
			return e.Error()
		}
	}
	return ""
}

// outcome counts op's result and fails on an error of no documented
// class.
func (h *history) outcome(op string, err error) {
	class := "ok"
	if err != nil {
		class = classOf(err)
		if class == "" {
			h.fail("%s: error of no documented class: %v", op, err)
			class = "unclassified"
		}
	}
	h.mu.Lock()
	h.outcomes[op+": "+class]++
	h.mu.Unlock()
}

// streamPool is the names the workers use, few enough that creates and
// deletes of one name meet often.
var streamPool = func() []string {
	var out []string
	for i := range 16 {
		out = append(out, fmt.Sprintf("s%d", i))
	}
	return out
}()

func runSafety(t *testing.T, seed uint64) {
	tc := newTestCluster(t, seed, 3, 2)
	tc.tune = func(c *Config) {
		c.SnapshotEvery = 25 // restarts restore from snapshots
	}
	tc.startAll()
	tc.leader(10 * time.Second)
	tc.registerAll(testCtx(t, 10*time.Second))
	tc.waitGroup(10*time.Second, tc.voters, nonVoterNames(2))

	h := &history{byIndex: map[uint64]seenCatalog{}, created: map[uint64]string{}, deleted: map[uint64]string{},
		deleteAsks: map[uint64]bool{}, epochs: map[uint64]map[uint64]bool{}, grantNames: map[uint64]string{}, outcomes: map[string]int{}}
	names := tc.names()
	tc.net.setFaults(0.1, 2*time.Millisecond)

	var stop atomic.Bool
	var wg sync.WaitGroup
	// The sampler: every member's catalog, every 2 ms.
	samplerDone := make(chan struct{})
	wg.Go(func() {
		for {
			for _, c := range tc.running() {
				h.sample(c)
			}
			select {
			case <-samplerDone:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	})
	// The workers.
	for w := range 6 {
		rng := rand.New(rand.NewPCG(seed, uint64(100+w)))
		wg.Go(func() {
			for !stop.Load() {
				work(tc, h, rng, names)
			}
		})
	}
	// The faults, on the test goroutine.
	rng := rand.New(rand.NewPCG(seed, 7))
	down := ""
	deadline := time.Now().Add(safetyChaos)
	var faults []string
	for time.Now().Before(deadline) {
		time.Sleep(time.Duration(50+rng.IntN(200)) * time.Millisecond)
		switch k := rng.IntN(10); {
		case k < 3 && down == "":
			down = names[rng.IntN(len(names))]
			faults = append(faults, "stop "+down)
			tc.stop(down)
		case k < 3:
			faults = append(faults, "restart "+down)
			tc.start(down)
			down = ""
		case k < 5:
			// A random minority: one voter, maybe with a follower.
			cut := []string{tc.voters[rng.IntN(len(tc.voters))]}
			if rng.IntN(2) == 0 {
				cut = append(cut, fmt.Sprintf("n%d", rng.IntN(2)))
			}
			faults = append(faults, fmt.Sprintf("cut off %v", cut))
			tc.net.partition(cut)
		case k < 7:
			if c := tc.running()[0]; c.ControllerName() != "" {
				faults = append(faults, "isolate the controller "+c.ControllerName())
				tc.net.partition([]string{c.ControllerName()})
			}
		default:
			faults = append(faults, "heal")
			tc.net.heal()
		}
	}
	// Heal everything and let the group settle.
	tc.net.heal()
	tc.net.setFaults(0, 0)
	if down != "" {
		tc.start(down)
	}
	stop.Store(true)
	close(samplerDone)
	wg.Wait()
	t.Logf("faults: %v", faults)

	tc.leader(10 * time.Second)
	// A write through the controller: everyone must apply up to it.
	var last uint64
	if !eventually(10*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s, err := tc.ctl("v0").CreateStream(ctx, createReq("final", 1))
		if err == nil {
			last = s.Id
		}
		return err == nil
	}) {
		t.Fatal("no create succeeds after healing")
	}
	for _, c := range tc.running() {
		if err := c.WaitApplied(testCtx(t, 10*time.Second), last); err != nil {
			t.Fatalf("%s: %v", c.Name(), err)
		}
	}
	tc.converged(10 * time.Second)
	for _, c := range tc.running() {
		h.sample(c)
	}
	checkFinal(t, tc, h)

	h.mu.Lock()
	defer h.mu.Unlock()
	st := tc.net.statsNow()
	t.Logf("%d samples at %d indexes; network %+v", h.samples, len(h.byIndex), st)
	t.Logf("outcomes: %v", h.outcomes)
	for _, f := range h.failures {
		t.Errorf("seed %d: %s", seed, f)
	}
	if h.outcomes["create: ok"] == 0 || h.outcomes["delete: ok"] == 0 || h.outcomes["grant: ok"] == 0 {
		t.Errorf("seed %d: too little succeeded to check anything: %v", seed, h.outcomes)
	}
}

// work makes one random request from a random running member.
func work(tc *testCluster, h *history, rng *rand.Rand, names []string) {
	c := tc.ctl(names[rng.IntN(len(names))])
	if c == nil {
		time.Sleep(time.Millisecond)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	name := streamPool[rng.IntN(len(streamPool))]
	switch k := rng.IntN(10); {
	case k < 4:
		// Mostly names this member does not see live; sometimes one it
		// does (a create that must fail, or race with a delete).
		if s, ok := c.Stream(name); ok && catalog.Live(s.State) && rng.IntN(4) > 0 {
			return
		}
		s, err := c.CreateStream(ctx, createReq(name, uint32(1+rng.IntN(3))))
		h.outcome("create", err)
		if err == nil {
			h.mu.Lock()
			if o, ok := h.created[s.Id]; ok && o != name {
				h.failures = append(h.failures, fmt.Sprintf("stream id %d given to %s and %s", s.Id, o, name))
			}
			h.created[s.Id] = name
			h.mu.Unlock()
		}
	case k < 6:
		s, ok := c.Stream(name)
		if !ok || !catalog.Live(s.State) {
			return
		}
		h.mu.Lock()
		h.deleteAsks[s.Id] = true
		h.mu.Unlock()
		d, err := c.DeleteStream(ctx, name, s.Id)
		h.outcome("delete", err)
		if err == nil {
			if d.Id != s.Id || catalog.Live(d.State) {
				h.fail("delete of %s id %d answered %v", name, s.Id, d)
			}
			h.mu.Lock()
			h.deleted[s.Id] = name
			h.mu.Unlock()
		}
	case k < 9:
		s, ok := c.Stream(name)
		if !ok || !catalog.Live(s.State) {
			return
		}
		lead := tc.ctl(s.Leader)
		if lead == nil {
			return
		}
		e, err := lead.GrantEpoch(ctx, name, s.Id)
		h.outcome("grant", err)
		if err == nil {
			h.mu.Lock()
			if h.epochs[s.Id] == nil {
				h.epochs[s.Id] = map[uint64]bool{}
			}
			if h.epochs[s.Id][e] {
				h.failures = append(h.failures, fmt.Sprintf("epoch %d of %s (id %d) granted twice", e, name, s.Id))
			}
			h.epochs[s.Id][e] = true
			h.grantNames[s.Id] = name
			h.mu.Unlock()
		}
	default:
		s, ok := c.Stream(name)
		if !ok || s.State != pb.StreamState_STREAM_STATE_DELETING || len(s.PendingDrop) == 0 {
			return
		}
		holder := tc.ctl(s.PendingDrop[rng.IntN(len(s.PendingDrop))])
		if holder == nil {
			return
		}
		h.outcome("dropped", holder.CopyDropped(ctx, name, s.Id))
	}
}

// checkFinal checks the healed group's catalog against what the workers
// were told.
func checkFinal(t *testing.T, tc *testCluster, h *history) {
	t.Helper()
	c := tc.running()[0]
	final := map[string]*pb.Stream{}
	ids := map[uint64]string{}
	for _, s := range c.Streams() {
		final[s.Name] = s
		if o, dup := ids[s.Id]; dup {
			t.Errorf("final catalog: id %d held by %s and %s", s.Id, o, s.Name)
		}
		ids[s.Id] = s.Name
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, name := range h.created {
		s := final[name]
		switch {
		case s == nil || s.Id < id:
			t.Errorf("create of %s (id %d) succeeded, but the final catalog has %v", name, id, s)
		case s.Id == id && catalog.Live(s.State):
		case !h.deleteAsks[id]:
			t.Errorf("create of %s (id %d) succeeded and was never deleted, but the final catalog has %v", name, id, s)
		}
	}
	for id, name := range h.deleted {
		if s := final[name]; s == nil || s.Id < id || s.Id == id && catalog.Live(s.State) {
			t.Errorf("delete of %s (id %d) succeeded, but the final catalog has %v", name, id, s)
		}
	}
	for id, epochs := range h.epochs {
		name := h.grantNames[id]
		if s := final[name]; s != nil && s.Id == id {
			for e := range epochs {
				if e > s.Epoch {
					t.Errorf("epoch %d of %s (id %d) granted, final epoch %d", e, name, id, s.Epoch)
				}
			}
		}
	}
	// Every member holds the same streams and nodes (converged checked
	// the encodings; this says it in the catalog's own terms).
	for _, o := range tc.running()[1:] {
		if !slices.EqualFunc(c.Streams(), o.Streams(), func(a, b *pb.Stream) bool { return proto.Equal(a, b) }) ||
			!slices.EqualFunc(c.Nodes(), o.Nodes(), func(a, b *pb.Node) bool { return proto.Equal(a, b) }) {
			t.Errorf("%s and %s hold different catalogs", c.Name(), o.Name())
		}
	}
}
