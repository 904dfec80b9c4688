package controller

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/rpstream/rpstream/catalog"
	pb "github.com/rpstream/rpstream/catalog/catalogpb"
	"github.com/rpstream/rpstream/catalog/raftlog"
)

// Errors of the controller.
var (
	// ErrStopped is returned by every call once Stop has begun.
	ErrStopped = errors.New("controller: stopped")
	// ErrNoController: no controller (Raft leader) could be reached within
	// the request's time: too few voters are up, or an election is under
	// way.
	ErrNoController = errors.New("controller: no controller reachable")
	// ErrPlacement: too few live nodes for the replicas asked for.
	ErrPlacement = errors.New("controller: cannot place the stream's copies")
	// ErrTimeout: a command was proposed but not seen applied in time
	// (the controller may have changed; the command may still apply).
	ErrTimeout = errors.New("controller: command not applied in time")
	// ErrGroupState: the controller group is not in the state a voter
	// change needs (a voter already, the only voter, not a voter).
	ErrGroupState = errors.New("controller: the controller group cannot make that change")
)

// Controller is this node's member of the catalog's Raft group: a voter
// or a non-voting follower. It keeps the catalog (package catalog)
// applied from the group's log, serves reads of it, and turns requests
// into commands: on the Raft leader it decides them (placement, leases,
// names), elsewhere it forwards them there.
type Controller struct {
	cfg  Config
	log  *slog.Logger
	id   uint64
	rlog *raftlog.Log
	rn   *raft.RawNode // owned by run

	// mu guards the catalog and the Raft state copied out of the loop.
	mu        sync.RWMutex
	cat       *catalog.Catalog
	conf      *raftpb.ConfState
	lead      uint64
	term      uint64
	commit    uint64
	state     raft.StateType
	appliedCh chan struct{} // closed and replaced after each applied batch
	changed   chan struct{} // capacity 1: the catalog changed

	// waitMu guards waiters (by command id) and reads (by read context).
	waitMu  sync.Mutex
	waiters map[string]chan applied
	reads   map[string]chan uint64

	leases leaseTable
	// heardLead is the Raft id of the last member this one heard from as
	// the leader (an append or a heartbeat), at heardLeadAt; the loop's.
	heardLead   uint64
	heardLeadAt time.Time
	// joining is set while a member with an empty log looks for its
	// group (join); its Raft node does not run then.
	joining atomic.Bool
	// registered is set once a registration of this incarnation
	// succeeded: its heartbeats then start even before its own catalog
	// shows it (it follows the catalog only once the controller added it
	// to the group, which heartbeats ask for again).
	registered atomic.Bool

	ops      chan func() // run on the loop goroutine
	recvc    chan received
	stop     chan struct{}
	stopOnce sync.Once
	stopErr  error
	wg       sync.WaitGroup

	snapIndex uint64 // owned by run
}

// applied is a command's result and its log index.
type applied struct {
	res   catalog.Result
	index uint64
}

// Start opens the Raft log in cfg.Dir, restores the catalog from it and
// starts the Raft loop, the heartbeat loop and the transport.
func Start(cfg Config) (*Controller, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// Catalog commands are small: regions of 256 KiB keep a new node's log small.
	rl, err := raftlog.Open(cfg.Dir, raftlog.Options{RegionSize: 256 << 10})
	if err != nil {
		return nil, fmt.Errorf("controller: %w", err)
	}
	for _, w := range rl.Warnings() {
		cfg.Logger.Warn("catalog log: a damaged snapshot file was skipped", "err", w)
	}
	c := &Controller{
		cfg: cfg, log: cfg.Logger, id: RaftID(cfg.Name), rlog: rl,
		cat: catalog.New(), conf: &raftpb.ConfState{},
		appliedCh: make(chan struct{}), changed: make(chan struct{}, 1),
		waiters: map[string]chan applied{}, reads: map[string]chan uint64{},
		ops: make(chan func(), 256), recvc: make(chan received, 4096), stop: make(chan struct{}),
	}
	c.leases.init()
	empty := rl.Empty()
	snap, err := rl.Snapshot()
	if err != nil {
		rl.Close()
		return nil, fmt.Errorf("controller: %w", err)
	}
	var appliedIdx uint64
	if !raft.IsEmptySnap(snap) {
		if err := c.cat.Restore(snap.GetMetadata().GetIndex(), snap.GetData()); err != nil {
			rl.Close()
			return nil, fmt.Errorf("controller: snapshot at %d: %w", snap.GetMetadata().GetIndex(), err)
		}
		appliedIdx = snap.GetMetadata().GetIndex()
		c.conf = proto.Clone(snap.GetMetadata().GetConfState()).(*raftpb.ConfState)
		c.snapIndex = appliedIdx
	}
	rc := &raft.Config{
		ID:                        c.id,
		ElectionTick:              cfg.ElectionTicks,
		HeartbeatTick:             cfg.HeartbeatTicks,
		Storage:                   rl,
		Applied:                   appliedIdx,
		MaxSizePerMsg:             1 << 20,
		MaxInflightMsgs:           256,
		MaxUncommittedEntriesSize: 64 << 20,
		CheckQuorum:               true,
		PreVote:                   true,
		StepDownOnRemoval:         true,
		Logger:                    raftLogger{c.log.With("component", "raft")},
	}
	rn, err := raft.NewRawNode(rc)
	if err != nil {
		rl.Close()
		return nil, fmt.Errorf("controller: %w", err)
	}
	c.rn = rn
	c.joining.Store(empty)
	if empty && len(cfg.Voters) == 1 && cfg.Voters[0] == cfg.Name {
		// A group of one: nobody else can hold its catalog.
		if err := c.bootstrap(); err != nil {
			rl.Close()
			return nil, err
		}
	}
	cfg.Transport.Attach(c)
	c.wg.Add(3)
	go c.run()
	go c.heartbeats()
	go c.watchLeaders()
	return c, nil
}

// bootstrap starts a new group with the configured voters.
func (c *Controller) bootstrap() error {
	var peers []raft.Peer
	for _, v := range c.cfg.Voters {
		peers = append(peers, raft.Peer{ID: RaftID(v), Context: []byte(v)})
	}
	if err := c.rn.Bootstrap(peers); err != nil {
		return fmt.Errorf("controller: bootstrap: %w", err)
	}
	c.joining.Store(false)
	c.log.Info("bootstrapping the catalog", "voters", c.cfg.Voters)
	return nil
}

// join runs before the Raft loop of a member whose log is empty: it asks
// whether a group already exists by registering through the other
// members. If one answers, this member joins it (the controller resets
// its place in the group if a lost incarnation of it was there) and does
// not bootstrap: a voter that lost its log must never start a group
// anew, nor take messages meant for the log it lost. If none answers for
// two election timeouts, a configured voter bootstraps the group with the
// others (they all start with the same voters and the same first
// entries); any other member keeps asking. It returns false when stopped.
func (c *Controller) join() bool {
	if !c.joining.Load() {
		return true
	}
	voter := slices.Contains(c.cfg.Voters, c.cfg.Name)
	deadline := time.Now().Add(2 * c.cfg.Tick * time.Duration(c.cfg.ElectionTicks))
	reg := &pb.ControlRequest{Req: &pb.ControlRequest_RegisterNode{RegisterNode: &pb.RegisterNode{Name: c.cfg.Name, Incarnation: c.cfg.Incarnation, Role: c.cfg.Role}}}
	for {
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Tick*time.Duration(2*c.cfg.ElectionTicks))
		resp, err := c.Handle(ctx, reg)
		cancel()
		if err == nil && resp.Code == pb.ErrorCode_ERROR_CODE_NONE {
			c.log.Info("joined the catalog's group", "controller", resp.Controller)
			c.registered.Store(true)
			c.joining.Store(false)
			return true
		}
		noController := err != nil || resp.Code == pb.ErrorCode_ERROR_CODE_NO_CONTROLLER
		if voter && noController && time.Now().After(deadline) {
			if err := c.bootstrap(); err != nil {
				c.log.Error("cannot bootstrap the catalog", "err", err)
				return false
			}
			return true
		}
		select {
		case <-c.stop:
			return false
		case <-time.After(2 * c.cfg.Tick):
		}
	}
}

// Stop ends the loops and closes the Raft log. Calls in flight end with
// ErrStopped.
func (c *Controller) Stop() error {
	c.stopOnce.Do(func() {
		close(c.stop)
		c.wg.Wait()
		c.cfg.Transport.Close()
		c.stopErr = c.rlog.Close()
	})
	return c.stopErr
}

// Name is this node's name; Incarnation its incarnation.
func (c *Controller) Name() string        { return c.cfg.Name }
func (c *Controller) Incarnation() uint64 { return c.cfg.Incarnation }

// do runs f on the loop goroutine (which owns the RawNode).
func (c *Controller) do(ctx context.Context, f func()) error {
	select {
	case c.ops <- f:
		return nil
	case <-c.stop:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run is the Raft loop: ticks, received messages and operations in; the
// log made durable, messages sent, entries applied, out.
func (c *Controller) run() {
	defer c.wg.Done()
	if !c.join() {
		c.failWaiters()
		return
	}
	t := time.NewTicker(c.cfg.Tick)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			c.failWaiters()
			return
		case <-t.C:
			c.rn.Tick()
		case r := <-c.recvc:
			c.step(r)
		case f := <-c.ops:
			f()
		}
		// What else is queued goes into the same Ready: proposals and
		// messages that arrived together share one Save (one sync of
		// the log) and one send. With a Ready per event, a loop behind
		// on a loaded machine paid a sync per proposal and fell further
		// behind (1,120 concurrent grants beside two busy loops: none
		// queued for 5 s).
		c.drain(maxDrain)
		if err := c.ready(); err != nil {
			// The log could not be made durable: this member must not
			// send or apply anything more. Stop serving the catalog.
			c.log.Error("catalog log failed; the controller stops", "err", err)
			c.failWaiters()
			<-c.stop
			return
		}
	}
}

// lostLog says whether m is a heartbeat for entries this member's log
// does not hold: one the controller sent to a lost incarnation of this
// member (a wiped disk) before it was added anew, delivered late. Raft
// would take its commit index as its own and panic; the controller's
// next heartbeats carry what it knows of this log. (A heartbeat's commit
// index is never past the follower's acknowledged entries, which a
// durable log keeps: only a lost log meets this.)
func (c *Controller) lostLog(m *raftpb.Message) bool {
	if m.GetType() != raftpb.MsgHeartbeat {
		return false
	}
	last, err := c.rlog.LastIndex()
	if err != nil || m.GetCommit() <= last {
		return false
	}
	c.log.Debug("dropped a heartbeat for a log this member does not hold", "from", m.GetFrom(), "commit", m.GetCommit(), "last", last)
	return true
}

// maxDrain bounds the events the loop takes into one Ready beside the
// one it woke for, so that ticks still come through.
const maxDrain = 256

// drain handles up to n received messages and operations already queued,
// without waiting.
func (c *Controller) drain(n int) {
	for range n {
		select {
		case r := <-c.recvc:
			c.step(r)
		case f := <-c.ops:
			f()
		default:
			return
		}
	}
}

// step hands a received message to Raft.
func (c *Controller) step(r received) {
	m := r.m
	if c.lostLog(m) {
		return
	}
	if t := m.GetType(); (t == raftpb.MsgApp || t == raftpb.MsgHeartbeat) && m.GetFrom() != c.id {
		// Only a leader sends these: it was alive when the message
		// arrived (not when this busy loop got to it).
		c.heardLead, c.heardLeadAt = m.GetFrom(), r.at
	}
	if err := c.rn.Step(m); err != nil && !errors.Is(err, raft.ErrStepPeerNotFound) {
		c.log.Debug("raft step", "err", err, "type", m.GetType().String(), "from", m.GetFrom())
	}
}

// ready handles every Ready the RawNode has.
func (c *Controller) ready() error {
	for c.rn.HasReady() {
		rd := c.rn.Ready()
		if err := c.rlog.Save(rd.HardState, rd.Entries, rd.Snapshot); err != nil {
			return err
		}
		if !raft.IsEmptySnap(rd.Snapshot) {
			if err := c.restore(rd.Snapshot); err != nil {
				return err
			}
		}
		c.cfg.Transport.Send(rd.Messages)
		if err := c.apply(rd.CommittedEntries); err != nil {
			return err
		}
		c.noteState(rd)
		for _, rs := range rd.ReadStates {
			c.waitMu.Lock()
			if ch := c.reads[string(rs.RequestCtx)]; ch != nil {
				ch <- rs.Index
				delete(c.reads, string(rs.RequestCtx))
			}
			c.waitMu.Unlock()
		}
		c.rn.Advance(rd)
		if err := c.maybeSnapshot(); err != nil {
			return err
		}
	}
	return nil
}

// restore replaces the catalog with a snapshot received from the leader.
func (c *Controller) restore(snap *raftpb.Snapshot) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.cat.Restore(snap.GetMetadata().GetIndex(), snap.GetData()); err != nil {
		return fmt.Errorf("controller: snapshot from the leader at %d: %w", snap.GetMetadata().GetIndex(), err)
	}
	c.conf = proto.Clone(snap.GetMetadata().GetConfState()).(*raftpb.ConfState)
	c.snapIndex = snap.GetMetadata().GetIndex()
	c.notifyLocked()
	return nil
}

// apply applies committed entries to the catalog and answers their
// proposers.
func (c *Controller) apply(ents []*raftpb.Entry) error {
	if len(ents) == 0 {
		return nil
	}
	var done []applied
	var ids []string
	c.mu.Lock()
	for _, e := range ents {
		// Every entry counts as applied, commands or not: a read
		// barrier's index is often a new leader's empty entry, and
		// WaitApplied must see it passed even if no command follows.
		c.cat.Skip(e.GetIndex())
		switch e.GetType() {
		case raftpb.EntryNormal:
			if len(e.GetData()) == 0 {
				continue // a new leader's empty entry
			}
			var cmd pb.Command
			if err := proto.Unmarshal(e.GetData(), &cmd); err != nil {
				// Only proposers of this package write entries; one that
				// does not decode changes nothing, on every member alike.
				c.log.Error("catalog entry does not decode; skipped", "index", e.GetIndex(), "err", err)
				continue
			}
			res := c.cat.Apply(e.GetIndex(), &cmd)
			done = append(done, applied{res: res, index: e.GetIndex()})
			ids = append(ids, string(cmd.Id))
		case raftpb.EntryConfChange:
			var cc raftpb.ConfChange
			if err := proto.Unmarshal(e.GetData(), &cc); err != nil {
				c.mu.Unlock()
				return fmt.Errorf("controller: configuration change at %d: %w", e.GetIndex(), err)
			}
			c.conf = c.rn.ApplyConfChange(&cc)
			c.log.Info("controller group changed", "change", cc.GetType().String(), "node", string(cc.GetContext()), "voters", c.namesLocked(c.conf.GetVoters()), "followers", c.namesLocked(c.conf.GetLearners()))
		case raftpb.EntryConfChangeV2:
			var cc raftpb.ConfChangeV2
			if err := proto.Unmarshal(e.GetData(), &cc); err != nil {
				c.mu.Unlock()
				return fmt.Errorf("controller: configuration change at %d: %w", e.GetIndex(), err)
			}
			c.conf = c.rn.ApplyConfChange(&cc)
		}
	}
	c.notifyLocked()
	c.mu.Unlock()
	c.waitMu.Lock()
	for i, id := range ids {
		if ch := c.waiters[id]; ch != nil {
			ch <- done[i]
			delete(c.waiters, id)
		}
	}
	c.waitMu.Unlock()
	return nil
}

// notifyLocked wakes WaitApplied callers and Changed's reader.
func (c *Controller) notifyLocked() {
	close(c.appliedCh)
	c.appliedCh = make(chan struct{})
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// noteState copies what others read out of the loop.
func (c *Controller) noteState(rd raft.Ready) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if rd.HardState != nil {
		c.term, c.commit = rd.HardState.GetTerm(), rd.HardState.GetCommit()
	}
	if rd.SoftState != nil {
		was := c.state == raft.StateLeader
		c.lead, c.state = rd.SoftState.Lead, rd.SoftState.RaftState
		if !was && c.state == raft.StateLeader {
			c.leases.becameLeader(time.Now())
			// The controller before this one: its node is as alive as
			// when this member last heard from it as the Raft leader,
			// not "unheard of, live for a grace": a controller killed
			// with its streams is replaced a Raft election later, and
			// its streams' leaders a lease after it went silent, not a
			// grace after this election on top.
			if name := c.nameLocked(c.heardLead); name != "" && c.heardLead != c.id {
				if n, ok := c.cat.Node(name); ok {
					c.leases.heardAt(name, n.Incarnation, c.heardLeadAt)
				} else {
					// Its registration is in this member's log but not
					// applied yet (the new term's entry commits first).
					c.leases.heardNamed(name, c.heardLeadAt)
				}
			}
			c.log.Info("this node is the controller now", "term", c.term)
		}
	}
}

// maybeSnapshot takes a snapshot every SnapshotEvery applied entries.
func (c *Controller) maybeSnapshot() error {
	c.mu.RLock()
	idx := c.cat.Applied()
	if idx < c.snapIndex+c.cfg.SnapshotEvery {
		c.mu.RUnlock()
		return nil
	}
	data, err := c.cat.Snapshot()
	cs := proto.Clone(c.conf).(*raftpb.ConfState)
	c.mu.RUnlock()
	if err != nil {
		return err
	}
	if err := c.rlog.CreateSnapshot(idx, cs, data); err != nil {
		return err
	}
	c.snapIndex = idx
	return nil
}

func (c *Controller) failWaiters() {
	c.waitMu.Lock()
	defer c.waitMu.Unlock()
	for id, ch := range c.waiters {
		close(ch)
		delete(c.waiters, id)
	}
	for id, ch := range c.reads {
		close(ch)
		delete(c.reads, id)
	}
}

// propose commits cmd through the Raft log (on the leader) and returns
// what it did once it is applied here.
func (c *Controller) propose(ctx context.Context, cmd *pb.Command) (applied, error) {
	cmd.Id = make([]byte, 16)
	rand.Read(cmd.Id)
	if cmd.Time == 0 {
		cmd.Time = time.Now().UnixNano()
	}
	data, err := proto.Marshal(cmd)
	if err != nil {
		return applied{}, err
	}
	ch := make(chan applied, 1)
	c.waitMu.Lock()
	c.waiters[string(cmd.Id)] = ch
	c.waitMu.Unlock()
	defer func() {
		c.waitMu.Lock()
		delete(c.waiters, string(cmd.Id))
		c.waitMu.Unlock()
	}()
	perr := make(chan error, 1)
	if err := c.do(ctx, func() { perr <- c.rn.Propose(data) }); err != nil {
		if errors.Is(err, ErrStopped) {
			return applied{}, err
		}
		// The loop's queue stayed full (a starved or swamped loop): as
		// for a proposal not applied in time, the requester asks again.
		return applied{}, fmt.Errorf("%w: the Raft loop did not take the proposal: %v", ErrTimeout, err)
	}
	select {
	case err := <-perr:
		if err != nil {
			return applied{}, fmt.Errorf("%w: %v", ErrNoController, err)
		}
	case <-c.stop:
		return applied{}, ErrStopped
	}
	select {
	case a, ok := <-ch:
		if !ok {
			return applied{}, ErrStopped
		}
		return a, nil
	case <-ctx.Done():
		return applied{}, fmt.Errorf("%w: %v", ErrTimeout, ctx.Err())
	case <-c.stop:
		return applied{}, ErrStopped
	}
}

// WaitApplied waits until the catalog here has applied index.
func (c *Controller) WaitApplied(ctx context.Context, index uint64) error {
	for {
		c.mu.RLock()
		ok, ch := c.cat.Applied() >= index, c.appliedCh
		c.mu.RUnlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("controller: waiting for the catalog to apply entry %d: %w", index, ctx.Err())
		case <-c.stop:
			return ErrStopped
		}
	}
}

// Barrier waits until the catalog here holds everything committed before
// the call (a Raft ReadIndex): what it says next is current, not the
// view of a member that lags. It fails when no controller answers in
// RequestTimeout.
func (c *Controller) Barrier(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	for {
		err := c.barrierOnce(ctx)
		if err == nil || ctx.Err() != nil {
			if err != nil {
				return fmt.Errorf("%w: read barrier: %v", ErrNoController, err)
			}
			return nil
		}
		select {
		case <-time.After(c.cfg.Tick * 2):
		case <-ctx.Done():
		case <-c.stop:
			return ErrStopped
		}
	}
}

func (c *Controller) barrierOnce(ctx context.Context) error {
	rctx := make([]byte, 16)
	rand.Read(rctx)
	ch := make(chan uint64, 1)
	c.waitMu.Lock()
	c.reads[string(rctx)] = ch
	c.waitMu.Unlock()
	defer func() {
		c.waitMu.Lock()
		delete(c.reads, string(rctx))
		c.waitMu.Unlock()
	}()
	if err := c.do(ctx, func() { c.rn.ReadIndex(rctx) }); err != nil {
		return err
	}
	// A read the leader never answers (none known, or it changed) is
	// asked again after a short while.
	wctx, cancel := context.WithTimeout(ctx, c.cfg.Tick*time.Duration(c.cfg.ElectionTicks))
	defer cancel()
	select {
	case idx, ok := <-ch:
		if !ok {
			return ErrStopped
		}
		return c.WaitApplied(ctx, idx)
	case <-wctx.Done():
		return wctx.Err()
	case <-c.stop:
		return ErrStopped
	}
}

// Changed is signalled (capacity 1, coalescing) after the catalog
// changes.
func (c *Controller) Changed() <-chan struct{} { return c.changed }

// Stream is the catalog's record of stream name (tombstones included).
func (c *Controller) Stream(name string) (*pb.Stream, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.cat.Stream(name)
}

// Streams is every stream record, tombstones included, by name.
func (c *Controller) Streams() []*pb.Stream {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.cat.Streams()
}

// Node is the catalog's record of node name.
func (c *Controller) Node(name string) (*pb.Node, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.cat.Node(name)
}

// Nodes is every node record, by name.
func (c *Controller) Nodes() []*pb.Node {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.cat.Nodes()
}

// Applied is the index of the last entry applied here.
func (c *Controller) Applied() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.cat.Applied()
}

// IsController says whether this node is the Raft leader now.
func (c *Controller) IsController() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.state == raft.StateLeader
}

// ControllerName is the Raft leader's name as this node knows it, "" if
// none.
func (c *Controller) ControllerName() string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.lead == raft.None {
		return ""
	}
	return c.nameLocked(c.lead)
}

// NameOf is the member name of Raft id, if known.
func (c *Controller) NameOf(id uint64) (string, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	n := c.nameLocked(id)
	return n, n != ""
}

// nameLocked finds the name of a Raft id among the configured voters,
// the catalog's nodes and the members.
func (c *Controller) nameLocked(id uint64) string {
	for _, v := range c.cfg.Voters {
		if RaftID(v) == id {
			return v
		}
	}
	if RaftID(c.cfg.Name) == id {
		return c.cfg.Name
	}
	for _, n := range c.cat.Nodes() {
		if RaftID(n.Name) == id {
			return n.Name
		}
	}
	for _, m := range c.cfg.Members() {
		if RaftID(m.Name) == id {
			return m.Name
		}
	}
	return ""
}

func (c *Controller) namesLocked(ids []uint64) []string {
	var out []string
	for _, id := range ids {
		n := c.nameLocked(id)
		if n == "" {
			n = fmt.Sprintf("#%016x", id)
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Receive hands Raft messages from member from to the loop. A message
// not addressed to this node is refused.
func (c *Controller) Receive(ctx context.Context, from string, msgs []*raftpb.Message) error {
	if c.joining.Load() {
		return fmt.Errorf("controller: %s is joining the group; its Raft node does not run yet", c.cfg.Name)
	}
	for _, m := range msgs {
		if m.GetTo() != c.id {
			return fmt.Errorf("controller: a Raft message for %016x reached %s (%016x)", m.GetTo(), c.cfg.Name, c.id)
		}
		if raft.IsLocalMsg(m.GetType()) {
			return fmt.Errorf("controller: local Raft message type %v from %s", m.GetType(), from)
		}
	}
	at := time.Now()
	for _, m := range msgs {
		select {
		case c.recvc <- received{m, at}:
		case <-c.stop:
			return ErrStopped
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// received is a Raft message and when it arrived.
type received struct {
	m  *raftpb.Message
	at time.Time
}

// ReportUnreachable tells Raft that a message to id was not delivered.
func (c *Controller) ReportUnreachable(id uint64) {
	select {
	case c.ops <- func() { c.rn.ReportUnreachable(id) }:
	default:
	}
}

// ReportSnapshot tells Raft how sending a snapshot to id ended.
func (c *Controller) ReportSnapshot(id uint64, failed bool) {
	st := raft.SnapshotFinish
	if failed {
		st = raft.SnapshotFailure
	}
	select {
	case c.ops <- func() { c.rn.ReportSnapshot(id, st) }:
	case <-c.stop:
	}
}

// raftLogger sends etcd raft's logs to slog; its Info is Debug here (it
// logs every election step).
type raftLogger struct{ l *slog.Logger }

func (r raftLogger) Debug(v ...any)              { r.l.Debug(fmt.Sprint(v...)) }
func (r raftLogger) Debugf(f string, v ...any)   { r.l.Debug(fmt.Sprintf(f, v...)) }
func (r raftLogger) Error(v ...any)              { r.l.Error(fmt.Sprint(v...)) }
func (r raftLogger) Errorf(f string, v ...any)   { r.l.Error(fmt.Sprintf(f, v...)) }
func (r raftLogger) Info(v ...any)               { r.l.Debug(fmt.Sprint(v...)) }
func (r raftLogger) Infof(f string, v ...any)    { r.l.Debug(fmt.Sprintf(f, v...)) }
func (r raftLogger) Warning(v ...any)            { r.l.Warn(fmt.Sprint(v...)) }
func (r raftLogger) Warningf(f string, v ...any) { r.l.Warn(fmt.Sprintf(f, v...)) }
func (r raftLogger) Fatal(v ...any)              { r.l.Error(fmt.Sprint(v...)); panic(fmt.Sprint(v...)) }
func (r raftLogger) Fatalf(f string, v ...any) {
	r.l.Error(fmt.Sprintf(f, v...))
	panic(fmt.Sprintf(f, v...))
}
func (r raftLogger) Panic(v ...any) { r.l.Error(fmt.Sprint(v...)); panic(fmt.Sprint(v...)) }
func (r raftLogger) Panicf(f string, v ...any) {
	r.l.Error(fmt.Sprintf(f, v...))
	panic(fmt.Sprintf(f, v...))
}
