package controller

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	pb "github.com/rpstream/rpstream/catalog/catalogpb"
)

// TestMain fails the package if a goroutine of this package outlives the
// tests: every controller, transport and worker must have been stopped.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if left := leftoverGoroutines(5 * time.Second); left != "" {
			fmt.Fprintf(os.Stderr, "goroutines of package controller left after the tests:\n%s\n", left)
			code = 1
		}
	}
	os.Exit(code)
}

// leftoverGoroutines waits up to d for every goroutine running code of
// this package (but the caller) to end, and describes those that did not.
func leftoverGoroutines(d time.Duration) string {
	deadline := time.Now().Add(d)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var left []string
		for i, g := range strings.Split(string(buf), "\n\n") {
			if i == 0 {
				continue // this goroutine
			}
			if strings.Contains(g, "rpstream/catalog/controller.") {
				left = append(left, g)
			}
		}
		if len(left) == 0 {
			return ""
		}
		if time.Now().After(deadline) {
			return strings.Join(left, "\n\n")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testLogger discards the controllers' logs unless RPSTREAM_CONTROLLER_LOG
// is set (to debug, info or warn), then writes them to stderr.
func testLogger() *slog.Logger {
	lv, ok := os.LookupEnv("RPSTREAM_CONTROLLER_LOG")
	if !ok {
		return slog.New(slog.DiscardHandler)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(lv)); err != nil {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// testCluster is a group of controllers on one in-memory network, each
// with its own directory that outlives its restarts. Its methods may be
// called concurrently; every controller still running is stopped in
// t.Cleanup.
type testCluster struct {
	t      testing.TB
	net    *network
	voters []string
	// tune adjusts each member's configuration before Start.
	tune func(*Config)

	mu      sync.Mutex
	rng     *rand.Rand // incarnations
	members map[string]*tmember
}

// tmember is one member: its durable identity and its running
// controller (nil when stopped).
type tmember struct {
	name string
	role pb.Role
	dir  string
	inc  uint64
	ctl  *Controller
}

// fastConfig is LoopbackConfig with 5 ms ticks: elections after 100
// ms, requests given up after 5 s.
func fastConfig(name string) Config {
	c := LoopbackConfig(name)
	c.Tick = 5 * time.Millisecond
	c.ElectionTicks = 20
	c.HeartbeatTicks = 1
	c.RequestTimeout = 5 * time.Second
	return c
}

// newTestCluster makes the network and the members (not started):
// voters v0.. and nonVoters n0...
func newTestCluster(t testing.TB, seed uint64, voters, nonVoters int) *testCluster {
	tc := &testCluster{
		t: t, net: newNetwork(seed), rng: rand.New(rand.NewPCG(seed, 0x696e63)),
		members: map[string]*tmember{},
	}
	for i := range voters {
		name := fmt.Sprintf("v%d", i)
		tc.voters = append(tc.voters, name)
		tc.add(name, pb.Role_ROLE_NODE)
	}
	for i := range nonVoters {
		tc.add(fmt.Sprintf("n%d", i), pb.Role_ROLE_NODE)
	}
	t.Cleanup(tc.stopAll)
	return tc
}

// add makes a member that is not started yet.
func (tc *testCluster) add(name string, role pb.Role) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	tc.members[name] = &tmember{name: name, role: role, dir: tc.t.TempDir(), inc: tc.newIncarnationLocked()}
}

func (tc *testCluster) newIncarnationLocked() uint64 {
	for {
		if inc := tc.rng.Uint64(); inc != 0 {
			return inc
		}
	}
}

// names is every member's name, sorted.
func (tc *testCluster) names() []string {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	return slices.Sorted(maps.Keys(tc.members))
}

// config is member m's configuration.
func (tc *testCluster) configLocked(m *tmember) Config {
	cfg := fastConfig(m.name)
	cfg.Incarnation = m.inc
	cfg.Role = m.role
	cfg.Dir = m.dir
	cfg.Voters = tc.voters
	cfg.Transport = tc.net.transport(m.name, m.role)
	cfg.Members = tc.net.members
	cfg.Logger = testLogger().With("member", m.name)
	if tc.tune != nil {
		tc.tune(&cfg)
	}
	return cfg
}

// start starts member name's controller on its directory.
func (tc *testCluster) start(name string) *Controller {
	tc.t.Helper()
	tc.mu.Lock()
	m := tc.members[name]
	if m.ctl != nil {
		tc.mu.Unlock()
		tc.t.Fatalf("%s is running already", name)
	}
	cfg := tc.configLocked(m)
	tc.mu.Unlock()
	c, err := Start(cfg)
	if err != nil {
		tc.t.Fatalf("start %s: %v", name, err)
	}
	tc.mu.Lock()
	m.ctl = c
	tc.mu.Unlock()
	return c
}

// startAll starts every member at once.
func (tc *testCluster) startAll() {
	tc.t.Helper()
	for _, n := range tc.names() {
		tc.start(n)
	}
}

// stop stops member name's controller (if running).
func (tc *testCluster) stop(name string) {
	tc.t.Helper()
	tc.mu.Lock()
	m := tc.members[name]
	c := m.ctl
	m.ctl = nil
	tc.mu.Unlock()
	if c == nil {
		return
	}
	if err := c.Stop(); err != nil {
		tc.t.Errorf("stop %s: %v", name, err)
	}
}

// wipe removes stopped member name's directory and gives it a new
// incarnation, as a replaced disk does.
func (tc *testCluster) wipe(name string) {
	tc.t.Helper()
	tc.mu.Lock()
	defer tc.mu.Unlock()
	m := tc.members[name]
	if m.ctl != nil {
		tc.t.Fatalf("wipe of running %s", name)
	}
	if err := os.RemoveAll(m.dir); err != nil {
		tc.t.Fatal(err)
	}
	m.inc = tc.newIncarnationLocked()
}

func (tc *testCluster) stopAll() {
	for _, n := range tc.names() {
		tc.stop(n)
	}
}

// ctl is member name's running controller, nil if stopped.
func (tc *testCluster) ctl(name string) *Controller {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	return tc.members[name].ctl
}

// running is every running controller, by name order.
func (tc *testCluster) running() []*Controller {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	var out []*Controller
	for _, n := range slices.Sorted(maps.Keys(tc.members)) {
		if c := tc.members[n].ctl; c != nil {
			out = append(out, c)
		}
	}
	return out
}

// leader waits until every running voter names the same controller,
// which is running and says it is the leader, and returns it.
func (tc *testCluster) leader(d time.Duration) *Controller {
	tc.t.Helper()
	var last, name string
	ok := eventually(d, func() bool {
		name = ""
		for _, c := range tc.running() {
			st := c.Status()
			if !st.Voter {
				continue
			}
			if st.Controller == "" || name != "" && st.Controller != name {
				last = fmt.Sprintf("%s sees %q", st.Name, st.Controller)
				return false
			}
			name = st.Controller
		}
		if name == "" {
			last = "no voter runs"
			return false
		}
		c := tc.ctl(name)
		return c != nil && c.IsController()
	})
	if !ok {
		tc.t.Fatalf("no agreed controller within %v: %s", d, last)
	}
	return tc.ctl(name)
}

// registerAll registers every running controller.
func (tc *testCluster) registerAll(ctx context.Context) {
	tc.t.Helper()
	for _, c := range tc.running() {
		if err := c.Register(ctx); err != nil {
			tc.t.Fatalf("register %s: %v", c.Name(), err)
		}
	}
}

// converged waits until every running controller has applied the same
// index and holds the same catalog, and returns that catalog's encoding.
func (tc *testCluster) converged(d time.Duration) []byte {
	tc.t.Helper()
	var last string
	var out []byte
	ok := eventually(d, func() bool {
		cs := tc.running()
		idx0, snap0 := cs[0].catalogState()
		for _, c := range cs[1:] {
			idx, snap := c.catalogState()
			if idx != idx0 || !bytes.Equal(snap, snap0) {
				last = fmt.Sprintf("%s at %d, %s at %d", cs[0].Name(), idx0, c.Name(), idx)
				return false
			}
		}
		out = snap0
		return true
	})
	if !ok {
		tc.t.Fatalf("catalogs did not converge within %v: %s", d, last)
	}
	return out
}

// catalogState is the applied index and the encoded catalog, read
// together.
func (c *Controller) catalogState() (uint64, []byte) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	b, err := c.cat.Snapshot()
	if err != nil {
		panic(err)
	}
	return c.cat.Applied(), b
}

// eventually polls cond every 5 ms until it holds or d passes.
func eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testCtx is a context ended after d or with the test.
func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// createReq is a create of name with replicas copies.
func createReq(name string, replicas uint32) *pb.CreateStreamRequest {
	return &pb.CreateStreamRequest{Name: name, Replicas: replicas, Acks: pb.Acks_ACKS_QUORUM, RegionSize: 1 << 20}
}
