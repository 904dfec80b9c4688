package replicate

import (
	"container/heap"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rpstream/rpstream/internal/logrepeat"
	"github.com/rpstream/rpstream/local"
	"github.com/rpstream/rpstream/rdma"
	"github.com/rpstream/rpstream/remote"
)

// ErrClosed is returned to appenders and callers of a closed Leader.
var ErrClosed = errors.New("replicate: leader closed")

// superblockCopy is how much of the leader's superblock is copied to a
// replica: local/'s persistent part, [0, 2048). The rest is the live area,
// a running writer's notice board for readers that is never persisted nor
// trusted by recovery.
const superblockCopy = 2048

// zeroSize is the size of the registered zero buffer, the source of every
// zeroing write.
const zeroSize = 64 << 10

// ReplicaAddr names a replica and where its remote.Target listens.
type ReplicaAddr struct {
	ID     ID
	Addr   string
	Backup bool // a backup target: written, votes only with Config.BackupsVote
}

// LeaderConfig configures a Leader.
type LeaderConfig struct {
	// Stream is the leader's stream, open for writing. The Leader
	// observes it (local.Stream.SetObserver) and does not close it.
	Stream *local.Stream
	// Writer is this node's name, sent with Grant.
	Writer string
	// Epoch is the epoch this leader holds.
	Epoch uint64
	// Replicator is the replication policy and batching.
	Replicator Config
	// Provider and RDMA make the rdma Peer replicas are dialled with
	// (RDMA.Secret is required).
	Provider rdma.Provider
	RDMA     rdma.Config
	// Shared, if set, is the Peer (and zero source) to use instead of a
	// Peer of the Leader's own: one per node for all its Leaders
	// (shared.go). Provider and RDMA are then ignored, and Close leaves
	// it open.
	Shared *SharedPeer
	// Replicas are the initial replicas.
	Replicas []ReplicaAddr
	// OnConnect, if set, runs on each new replica connection after
	// remote.NewClient and before Grant (a hub's Open request, say).
	OnConnect func(ctx context.Context, id ID, c *remote.Client) error
	// ConnectPos, if set, returns the replica's durable position after
	// Grant (see Replicator.Connected), cutting back what the replica
	// holds beyond leaderEnd (leaderIndex entries; remote's Tail does
	// both). leaderEnd is not the leader's current end but what the
	// replica may hold of the leader's bytes: the stream's end when the
	// Leader started, or the replica's durable position under this Leader
	// if that is further (see startConnect). Nil means Pos{}: the replica
	// is rewritten from the leader's oldest region.
	//
	// runs is the leader's epoch history over its live regions (each
	// run: consecutive regions started under one epoch), for a replica
	// to find where its log stops agreeing with the leader's
	// (remotepb.TailRequest.runs).
	ConnectPos func(ctx context.Context, id ID, c *remote.Client, epoch uint64, leaderEnd Pos, leaderIndex uint64, runs []EpochRun) (Pos, error)
	// Tick is the Replicator's logical clock period. Zero means 10ms.
	Tick time.Duration
	// ControlTimeout bounds one connect (dial, grant, header copy) or one
	// region allocation. Zero means 10s.
	ControlTimeout time.Duration
	// Logger; nil means slog.Default(). A replica that keeps failing is
	// logged when it goes down and when it comes back, with the count of
	// failed attempts, and once a minute meanwhile (internal/logrepeat).
	Logger *slog.Logger
	// Discard asks each replica, as it connects, to give back the
	// storage of its slots that hold no live region of the leader
	// (remote.Client.Discard; a target of an older build refuses the
	// request, and the connect fails: leave it off for those).
	Discard bool
	// Counters, if set, receives the counts of the Leader's rdma work
	// (shared by a node's Leaders, read by its metrics); nil: counted
	// in a private Counters.
	Counters *Counters
}

// Leader is the I/O loop of the package comment: it drives a Replicator
// for the leader's local stream over rdma and remote. Appends go to the
// local stream and return once committed under the policy.
type Leader struct {
	cfg    LeaderConfig
	s      *local.Stream
	log    *slog.Logger
	logs   *logrepeat.Limiter // per replica: down, up
	count  *Counters
	peer   rdma.Peer
	sbMR   rdma.MR      // the leader's superblock, source of the header copy
	zero   *rdma.Buffer // zeroSize zero bytes, the source of zeroing writes
	zeroMR rdma.MR

	cancel  context.CancelFunc
	ctx     context.Context
	closing atomic.Bool
	done    chan struct{} // closed when the loop has exited
	wg      sync.WaitGroup

	// The observer's queue, filled under the stream's commit lock.
	obsMu sync.Mutex
	obsQ  []obsEvent
	// obsSpare is the loop's: the buffer obsQ gets next.
	obsSpare []obsEvent
	obsWake  chan struct{}

	in      chan func()   // inputs from helper goroutines and API calls, run by the loop
	cq      *rdma.CQ      // the loop waits on it directly (CQ.Ready)
	persist chan struct{} // wakes the persister
	target  atomic.Uint64 // entries the persister should make durable

	committed atomic.Uint64
	waitMu    sync.Mutex
	waiters   waitHeap
	failErr   error // under waitMu: every waiter and later append gets it

	statusMu sync.Mutex
	status   Status
	// logged is the Status last logged (owned by the loop): a status
	// line is written when its summary changes, not for every replica
	// state it passes through.
	logged Status

	// Owned by the loop goroutine.
	rep    *Replicator
	links  map[ID]*link
	srcMRs map[int]rdma.MR // the leader's region slots, registered as write sources
	end    Pos             // the leader's appended end
	index  uint64          // entries appended
	slots  map[uint64]int  // live region seq -> slot
	// start and startIndex are end and index when the Leader started:
	// what earlier leaders of the stream wrote ends there.
	start      Pos
	startIndex uint64
}

// link is the loop's side of one replica.
type link struct {
	addr ReplicaAddr
	gen  uint64 // generation of the Connect in progress or the live connection; 0: none
	c    *rconn
}

// rconn is one connection to a replica.
type rconn struct {
	conn   rdma.Conn
	client *remote.Client
	descs  map[int]rdma.Descriptor // by slot
	hdr    rdma.Descriptor         // the replica's header (remote.HeaderSlot)
	ctl    sync.WaitGroup          // control requests in progress on client
	// discards are the Discard requests of trims in progress: an
	// allocation waits for them, so that a slot is never given back
	// while it is being reused (trim.go).
	discards gate
}

// gate counts requests in progress and lets others wait, bounded, until
// none is. Unlike a sync.WaitGroup, a request may start while someone
// waits (a trim's Discard while an allocation waits for an earlier one).
type gate struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed when n drops to 0
}

func (g *gate) add() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.n == 0 {
		g.idle = make(chan struct{})
	}
	g.n++
}

func (g *gate) done() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.n--; g.n == 0 {
		close(g.idle)
	}
}

// wait returns once no request is in progress, or ctx's error.
func (g *gate) wait(ctx context.Context) error {
	g.mu.Lock()
	if g.n == 0 {
		g.mu.Unlock()
		return nil
	}
	idle := g.idle
	g.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

type obsEvent struct {
	kind   uint8 // 0 region, 1 span, 2 persisted
	region local.ObservedRegion
	span   local.Span
	index  uint64
}

// opCtx is the context of the rdma operations one round of the loop posted
// to one replica: pairs of a first op (a Write or an AtomicWrite) and its
// Flush, sent together (rdma.Corker). Only the last Flush is notified to
// the CQ: on one connection its completion implies that every earlier post
// completed, so a round costs the loop one completion per replica, however
// many writes and words it carried.
type opCtx struct {
	id  ID
	gen uint64
	ops []postedOp
}

// postedOp is one posted pair of an opCtx.
type postedOp struct {
	first, flush *rdma.Op
	kind         OpKind
	end          Pos
}

// StartLeader observes cfg.Stream, opens the rdma Peer, connects the
// replicas in the background and starts the I/O loop. Nothing in it
// blocks; ctx is only checked (the Leader runs until Close).
func StartLeader(ctx context.Context, cfg LeaderConfig) (*Leader, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if cfg.Stream == nil || cfg.Provider == nil && cfg.Shared == nil {
		return nil, fmt.Errorf("%w: leader needs a Stream and an rdma Provider", ErrConfig)
	}
	if cfg.Tick <= 0 {
		cfg.Tick = 10 * time.Millisecond
	}
	if cfg.ControlTimeout <= 0 {
		cfg.ControlTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Counters == nil {
		cfg.Counters = new(Counters)
	}
	rep, err := New(cfg.Replicator, cfg.Epoch)
	if err != nil {
		return nil, err
	}
	seen := map[ID]bool{}
	for _, r := range cfg.Replicas {
		if r.ID == "" || r.Addr == "" || seen[r.ID] {
			return nil, fmt.Errorf("%w: replica %+v (empty or repeated)", ErrConfig, r)
		}
		seen[r.ID] = true
	}
	var peer rdma.Peer
	if cfg.Shared != nil {
		peer = cfg.Shared.peer
	} else if peer, err = cfg.Provider.NewPeer("", cfg.RDMA); err != nil {
		return nil, err
	}
	l := &Leader{
		cfg: cfg, s: cfg.Stream, log: cfg.Logger, peer: peer, rep: rep,
		logs: logrepeat.New(0), count: cfg.Counters,
		done: make(chan struct{}), obsWake: make(chan struct{}, 1),
		in: make(chan func(), 64), cq: rdma.NewCQ(),
		persist: make(chan struct{}, 1),
		links:   map[ID]*link{}, srcMRs: map[int]rdma.MR{}, slots: map[uint64]int{},
	}
	fail := func(err error) (*Leader, error) {
		l.release()
		return nil, err
	}
	mem := l.s.Memory().Bytes()
	if len(mem) < superblockCopy {
		return fail(fmt.Errorf("%w: stream mapping of %d bytes", ErrConfig, len(mem)))
	}
	if l.sbMR, err = peer.Register(mem[:superblockCopy:superblockCopy], rdma.UsageWriteSrc, nil); err != nil {
		return fail(err)
	}
	if cfg.Shared != nil {
		l.zeroMR = cfg.Shared.zeroMR
	} else {
		if l.zero, err = rdma.Alloc(zeroSize); err != nil {
			return fail(err)
		}
		if l.zeroMR, err = peer.Register(l.zero.Bytes(), rdma.UsageWriteSrc, nil); err != nil {
			return fail(err)
		}
	}
	st, err := l.s.SetObserver((*observer)(l))
	if err != nil {
		return fail(err)
	}
	for _, ri := range st.Regions {
		err := rep.NewRegion(RegionInfo{Seq: ri.Seq, Slot: ri.Slot, First: ri.First, Tail: ri.Used, End: ri.First + ri.Count})
		if err != nil {
			l.s.SetObserver(nil)
			return fail(err)
		}
		l.slots[ri.Seq] = ri.Slot
		l.end, l.index = Pos{ri.Seq, ri.Used}, ri.First+ri.Count
	}
	l.start, l.startIndex = l.end, l.index
	// The replicas first: the leader's own persisted end is committed
	// only as far as the policy's copies confirm it (from Floor on).
	for _, r := range cfg.Replicas {
		rep.AddReplica(r.ID, r.Backup)
		l.links[r.ID] = &link{addr: r}
	}
	rep.Persisted(st.Persisted)
	l.committed.Store(rep.Committed())
	// Status holds from the start, not from the loop's first round: a
	// caller may wait for the copies to connect before the first append.
	l.status = rep.Status()
	l.logged = l.status
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.wg.Add(2)
	go func() { defer l.wg.Done(); l.persister() }()
	go func() { defer l.wg.Done(); l.loop() }()
	if st.Committed > st.Persisted {
		l.target.Store(st.Committed)
		l.wake(l.persist)
	}
	return l, nil
}

// release frees what StartLeader acquired.
func (l *Leader) release() {
	for _, mr := range l.srcMRs {
		mr.Deregister()
	}
	if l.sbMR != nil {
		l.sbMR.Deregister()
	}
	if l.cfg.Shared != nil {
		return // the zero source and the Peer are the node's
	}
	if l.zeroMR != nil {
		l.zeroMR.Deregister()
	}
	if l.zero != nil {
		l.zero.Free()
	}
	l.peer.Close()
}

func (l *Leader) wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// observer is the Leader's local.Observer: it only queues.
type observer Leader

func (o *observer) push(e obsEvent) {
	o.obsMu.Lock()
	o.obsQ = append(o.obsQ, e)
	o.obsMu.Unlock()
	select {
	case o.obsWake <- struct{}{}:
	default:
	}
}

func (o *observer) RegionStarted(r local.ObservedRegion) { o.push(obsEvent{kind: 0, region: r}) }
func (o *observer) Committed(s local.Span)               { o.push(obsEvent{kind: 1, span: s}) }
func (o *observer) Persisted(i uint64)                   { o.push(obsEvent{kind: 2, index: i}) }

// persister makes the leader's appends durable (Stream.Sync, which shares
// persists with any other syncing goroutine), overlapping the remote
// writes. The observer reports the persisted index to the loop.
func (l *Leader) persister() {
	for {
		select {
		case <-l.ctx.Done():
			return
		case <-l.persist:
		}
		for t := l.target.Load(); t > l.s.Persisted(); t = l.target.Load() {
			if err := l.s.Sync(t - 1); err != nil {
				l.log.Error("replicate: leader's local persist failed", "err", err)
				l.failAll(fmt.Errorf("replicate: local persist: %w", err))
				return
			}
		}
	}
}

// loop is the I/O loop: it owns rep, links and the leader's registrations.
func (l *Leader) loop() {
	defer close(l.done)
	t := time.NewTicker(l.cfg.Tick)
	defer t.Stop()
	period := 1 // ticks per firing of t; 0 while stopped
	for {
		select {
		case <-l.ctx.Done():
			l.shutdown()
			return
		case <-l.obsWake:
		case <-l.cq.Ready():
		case f := <-l.in:
			f()
		case <-t.C:
			l.rep.TickN(period)
		}
		// Take what else is there, boundedly, then act on it at once:
		// whatever woke the loop, one round handles every completion,
		// input and append queued meanwhile.
		l.completions()
	drain:
		for k := 0; k < 256; k++ {
			select {
			case f := <-l.in:
				f()
			default:
				break drain
			}
		}
		l.observed()
		l.ready()
		// Tick only while ticks do something, and then only when one
		// is due (Replicator.TicksToNext): every other change comes as
		// an event that wakes the loop.
		if want := l.rep.TicksToNext(); want != period {
			if want > 0 {
				t.Reset(time.Duration(want) * l.cfg.Tick)
			} else {
				t.Stop()
			}
			period = want
		}
	}
}

// observed feeds the observer's queue to the Replicator.
func (l *Leader) observed() {
	l.obsMu.Lock()
	q := l.obsQ
	l.obsQ = l.obsSpare[:0]
	l.obsMu.Unlock()
	defer func() { l.obsSpare = q }() // two buffers take turns
	appended := false
	for _, e := range q {
		var err error
		switch e.kind {
		case 0:
			err = l.rep.NewRegion(RegionInfo{Seq: e.region.Seq, Slot: e.region.Slot, First: e.region.First})
			l.slots[e.region.Seq] = e.region.Slot
			l.end = Pos{e.region.Seq, RegionHeaderSize}
		case 1:
			err = l.rep.Append(Span{Seq: e.span.Seq, Off: e.span.Off, Len: e.span.Len, End: e.span.End})
			l.end, l.index = Pos{e.span.Seq, e.span.Off + e.span.Len}, e.span.End
			appended = true
		case 2:
			l.rep.Persisted(e.index)
		}
		if err != nil {
			// The stream's observer broke its contract: nothing can be
			// replicated correctly from here.
			l.log.Error("replicate: leader's stream reported an impossible append", "err", err)
			l.failAll(fmt.Errorf("replicate: %w", err))
		}
	}
	if appended {
		l.target.Store(l.index)
		l.wake(l.persist)
	}
}

// ready takes a Ready and carries it out.
func (l *Leader) ready() {
	rd := l.rep.Ready()
	for _, c := range rd.Connects {
		lk := l.links[c.Replica]
		if lk == nil {
			continue
		}
		l.drop(lk)
		lk.gen = c.Gen
		l.startConnect(lk, c)
	}
	for _, a := range rd.Allocs {
		lk := l.links[a.Replica]
		if lk == nil || lk.gen != a.Gen || lk.c == nil {
			continue
		}
		l.startAlloc(lk, a)
	}
	// The Replicator hands out each replica's ops together: each run of
	// one replica's ops goes out as one batch.
	for ops := rd.Ops; len(ops) > 0; {
		n := 1
		for n < len(ops) && ops[n].Replica == ops[0].Replica && ops[n].Gen == ops[0].Gen {
			n++
		}
		l.postBatch(ops[:n])
		ops = ops[n:]
	}
	if rd.CommitAdvanced {
		l.committed.Store(rd.Commit)
		l.wakeWaiters(rd.Commit)
	}
	if rd.Status != nil {
		l.statusMu.Lock()
		l.status = *rd.Status
		l.statusMu.Unlock()
		if rd.Status.Fenced {
			l.failAll(fmt.Errorf("%w: epoch %d", ErrFenced, l.rep.Epoch()))
		}
		if s, was := rd.Status, l.logged; s.UnderReplicated != was.UnderReplicated || s.QuorumLost != was.QuorumLost || s.Fenced != was.Fenced {
			l.log.Info("replicate: status", "underReplicated", s.UnderReplicated, "quorumLost", s.QuorumLost, "fenced", s.Fenced)
			l.logged = *s
		}
	}
}

// send hands f to the loop from a helper goroutine; false once the Leader
// is closing.
func (l *Leader) send(f func()) bool {
	select {
	case l.in <- f:
		return true
	case <-l.ctx.Done():
		return false
	}
}

// fenceErr classifies a control error: a refused epoch wraps ErrFenced.
func fenceErr(err error) error {
	if errors.Is(err, remote.ErrStaleEpoch) || errors.Is(err, remote.ErrNotWriter) {
		return fmt.Errorf("%w: %w", ErrFenced, err)
	}
	return err
}

// startConnect dials a replica, grants it the epoch, copies the header
// and reads its durable position on a helper goroutine; the answer comes
// back to the loop as Connected or Failed.
//
// The replica is taken to hold the leader's bytes at most up to from: the
// stream's end when this Leader started, or further what this Leader made
// durable there. Past that it may hold bytes of another epoch (a crashed
// leader's, which the leader lost) where this Leader appended others,
// possibly of the same sizes, which would pass its recovery: they are cut
// back and rewritten, never taken as present.
func (l *Leader) startConnect(lk *link, c Connect) {
	id, addr := c.Replica, lk.addr.Addr
	from, index := l.start, l.startIndex
	runs := l.epochRuns()
	for _, p := range l.rep.Progress() {
		if p.ID == id && from.Less(p.Acked) && p.Acked.Off >= RegionHeaderSize {
			from, index = p.Acked, p.AckedIdx
		}
	}
	end := l.end
	live := make(map[uint64]int, len(l.slots))
	for seq, slot := range l.slots {
		live[seq] = slot
	}
	l.count.Connects.Add(1)
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		ctx, cancel := context.WithTimeout(l.ctx, l.cfg.ControlTimeout)
		defer cancel()
		rc, pos, err := l.connect(ctx, id, addr, c.Epoch, from, index, end, live, runs)
		if err != nil && rc != nil {
			l.closeConn(rc)
			rc = nil
		}
		if !l.send(func() { l.connected(id, c.Gen, rc, pos, err) }) && rc != nil {
			l.closeConn(rc)
		}
	}()
}

// EpochRun is a run of consecutive regions of the leader's log started
// under one epoch: FirstSeq to LastSeq, the last ending at LastEnd (the
// leader's appended end when it is the leader's tail region).
type EpochRun struct {
	Epoch             uint64
	FirstSeq, LastSeq uint64
	LastEnd           int
}

// epochRuns reads the epochs of the leader's live regions from their
// headers in its mapping. Runs on the loop.
func (l *Leader) epochRuns() []EpochRun {
	seqs := make([]uint64, 0, len(l.slots))
	for seq := range l.slots {
		seqs = append(seqs, seq)
	}
	slices.Sort(seqs)
	b := l.s.Memory().Bytes()
	rs := l.s.RegionSize()
	var runs []EpochRun
	for _, seq := range seqs {
		base := remote.RegionOffset(l.slots[seq], rs)
		ep, ok := local.RegionEpoch(b[base : base+64])
		if !ok {
			continue
		}
		end := rs
		if seq == l.end.Seq {
			end = l.end.Off
		}
		if n := len(runs); n > 0 && runs[n-1].Epoch == ep && runs[n-1].LastSeq+1 == seq {
			runs[n-1].LastSeq, runs[n-1].LastEnd = seq, end
			continue
		}
		runs = append(runs, EpochRun{Epoch: ep, FirstSeq: seq, LastSeq: seq, LastEnd: end})
	}
	// A run's last region that is not the leader's tail was sealed when
	// its successor began: its seal word holds its end.
	for i := range runs {
		if runs[i].LastSeq != l.end.Seq {
			base := remote.RegionOffset(l.slots[runs[i].LastSeq], rs)
			if w := binary.LittleEndian.Uint64(b[base+local.RegionSealOffset:]); w != 0 {
				runs[i].LastEnd = int(uint32(w))
			}
		}
	}
	return runs
}

// connect is the blocking part of a Connect: from (index entries) is
// where the replica may hold the leader's bytes up to, end the leader's
// end.
func (l *Leader) connect(ctx context.Context, id ID, addr string, epoch uint64, from Pos, index uint64, end Pos, live map[uint64]int, runs []EpochRun) (*rconn, Pos, error) {
	conn, err := l.peer.Dial(ctx, addr)
	if err != nil {
		return nil, Pos{}, err
	}
	client, err := remote.NewClient(l.peer, conn)
	if err != nil {
		conn.Close()
		return nil, Pos{}, err
	}
	rc := &rconn{conn: conn, client: client, descs: map[int]rdma.Descriptor{}}
	if l.cfg.OnConnect != nil {
		if err := l.cfg.OnConnect(ctx, id, client); err != nil {
			return rc, Pos{}, err
		}
	}
	if err := l.grant(ctx, client, epoch); err != nil {
		return rc, Pos{}, err
	}
	// The header first, durably: the replica's file then opens as this
	// stream whatever else it holds.
	hdr, err := client.Region(ctx, epoch, remote.HeaderSlot)
	if err != nil {
		return rc, Pos{}, fenceErr(err)
	}
	rc.hdr = hdr.Desc
	conn.Write(hdr.Desc, 0, l.sbMR, 0, superblockCopy)
	if err := conn.Flush(hdr.Desc, 0, superblockCopy, rdma.Persistence).Wait(ctx); err != nil {
		return rc, Pos{}, err
	}
	var pos Pos
	if l.cfg.ConnectPos != nil {
		if pos, err = l.cfg.ConnectPos(ctx, id, client, epoch, from, index, runs); err != nil {
			return rc, Pos{}, fenceErr(err)
		}
	}
	if from.Less(pos) {
		// Bytes past from may be another epoch's (never acknowledged):
		// they are rewritten.
		pos = from
	}
	if err := l.cutBack(ctx, rc, epoch, from, end, pos, live); err != nil {
		return rc, Pos{}, err
	}
	if pos != (Pos{}) {
		// Regions the Replicator will take as present there still need
		// this connection's descriptors.
		for seq, slot := range live {
			if _, ok := rc.descs[slot]; ok || seq < pos.Seq {
				continue
			}
			reg, err := client.Region(ctx, epoch, slot)
			if err != nil {
				return rc, Pos{}, fenceErr(err)
			}
			rc.descs[slot] = reg.Desc
		}
	}
	return rc, pos, nil
}

// cutBack makes a replica hold nothing the leader does not: a replica may
// hold bytes a crashed leader never persisted (so never acknowledged), and
// its entries beyond what the leader overwrites would stay valid for the
// replica's recovery. Line 0 of every slot that holds no live region of
// the leader is zeroed (the region is gone, as local/'s freeRegion does),
// and so is line 0 of every live slot past pos, the replica's durable
// position (the Replicator allocates and writes those regions again; a
// slot the leader reused after a trim may still hold an older region
// there, which must not meet the newer regions around it); then the
// region of from (where the replica is rewritten from) from there on, and
// the leader's last region from its end on, durably, before the replica
// is reported Connected. The slots without a live region are then given
// back to the replica's system (remote's Discard: after a trim, their
// storage).
func (l *Leader) cutBack(ctx context.Context, rc *rconn, epoch uint64, from, end, pos Pos, live map[uint64]int) error {
	info, err := rc.client.Info(ctx)
	if err != nil {
		return err
	}
	used := make(map[int]bool, len(live))
	var past []uint64 // live regions past pos, highest first
	for seq, slot := range live {
		used[slot] = true
		if seq > pos.Seq || seq == pos.Seq && pos.Off < RegionHeaderSize {
			past = append(past, seq)
		}
	}
	slices.Sort(past)
	slices.Reverse(past)
	var flushes []*rdma.Op
	zero := func(k int) (rdma.Descriptor, error) {
		reg, err := rc.client.Region(ctx, epoch, k)
		if err != nil {
			return reg.Desc, fenceErr(err)
		}
		rc.conn.Write(reg.Desc, 0, l.zeroMR, 0, 64)
		flushes = append(flushes, rc.conn.Flush(reg.Desc, 0, 64, rdma.Persistence))
		return reg.Desc, nil
	}
	// Highest first, as regions are freed after a tail (one Conn's
	// writes apply in order, so a crash of the replica meanwhile leaves
	// a contiguous run): the live regions past pos (rewritten anyway; a
	// slot reused after a trim may hold an older region there)...
	for _, seq := range past {
		d, err := zero(live[seq])
		if err != nil {
			return err
		}
		rc.descs[live[seq]] = d
	}
	// ...then the slots without a live region: after remote's Tail
	// (which frees what lies after the leader's end and before the
	// copy's head) they hold no valid region, only older bytes.
	var unused []int
	for k := int(info.GetRegions()) - 1; k >= 0; k-- {
		if used[k] {
			continue
		}
		if _, err := zero(k); err != nil {
			return err
		}
		unused = append(unused, k)
	}
	cuts := []Pos{from}
	if from.Seq != end.Seq {
		cuts = append(cuts, end)
	}
	for _, cut := range cuts {
		slot, ok := live[cut.Seq]
		if !ok || cut.Off >= l.s.RegionSize() {
			continue
		}
		reg, err := rc.client.Region(ctx, epoch, slot)
		if err != nil {
			return fenceErr(err)
		}
		rc.descs[slot] = reg.Desc
		for off := cut.Off; off < l.s.RegionSize(); off += zeroSize {
			rc.conn.Write(reg.Desc, off, l.zeroMR, 0, min(zeroSize, l.s.RegionSize()-off))
		}
		flushes = append(flushes, rc.conn.Flush(reg.Desc, cut.Off, l.s.RegionSize()-cut.Off, rdma.Persistence))
	}
	for _, f := range flushes {
		if err := f.Wait(ctx); err != nil {
			return err
		}
	}
	if len(unused) > 0 && l.cfg.Discard {
		if _, err := rc.client.Discard(ctx, epoch, unused); err != nil {
			return fenceErr(err)
		}
		for _, k := range unused {
			delete(rc.descs, k)
		}
	}
	return nil
}

// grant asks for the epoch. A refusal at the epoch this leader holds is
// not a fence: the target may not have noticed yet that this writer's
// previous connection is gone (a crashed node's socket can linger until
// the target's rdma AckTimeout). It is asked again a few times at once,
// then reported as a plain failure, so that the Replicator retries with
// its backoff. Only a target at a newer epoch fences this leader.
func (l *Leader) grant(ctx context.Context, c *remote.Client, epoch uint64) error {
	for try := 0; ; try++ {
		err := c.Grant(ctx, epoch, l.cfg.Writer)
		if err != nil && errors.Is(err, remote.ErrNotWriter) {
			// The target's owner refused this writer (its catalog does not
			// show it yet, or its copy is being moved or repaired): a
			// fence only if the target holds a newer epoch, else a plain
			// failure, retried after the backoff.
			if info, ierr := c.Info(ctx); ierr == nil && info.GetEpoch() > epoch {
				return fenceErr(err)
			}
			return fmt.Errorf("replicate: epoch %d refused, not fenced: %v", epoch, err)
		}
		if err == nil || !errors.Is(err, remote.ErrStaleEpoch) {
			return fenceErr(err)
		}
		info, ierr := c.Info(ctx)
		if ierr != nil {
			return ierr
		}
		if info.GetEpoch() > epoch {
			return fenceErr(err)
		}
		if try >= 4 {
			// %v: not remote.ErrStaleEpoch, which would count as fenced.
			return fmt.Errorf("replicate: epoch %d still held by another connection: %v", epoch, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// connected runs on the loop: a Connect's answer.
func (l *Leader) connected(id ID, gen uint64, rc *rconn, pos Pos, err error) {
	lk := l.links[id]
	if lk == nil || lk.gen != gen || lk.c != nil {
		if rc != nil {
			l.closeConn(rc)
		}
		return
	}
	if err != nil {
		// Logged by fail, once per run of failures.
		l.count.ConnectErrors.Add(1)
		l.fail(lk, gen, fmt.Errorf("connect: %w", err))
		return
	}
	lk.c = rc
	if err := l.rep.Connected(id, gen, pos); err != nil {
		l.fail(lk, gen, err)
		return
	}
	l.watch(id, gen, rc)
	l.logs.Log(l.log, slog.LevelInfo, string(id), "up", "replicate: replica connected", "replica", id, "durable", pos)
}

// watch reports the loss of a replica's connection as a failure at once,
// so that an idle stream's Status notices too (writes would only fail at
// the next append). It ends with the connection.
func (l *Leader) watch(id ID, gen uint64, rc *rconn) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for {
			var ev rdma.Event
			select {
			case ev = <-rc.conn.Events():
			case <-l.ctx.Done():
				return
			}
			if ev.Kind == rdma.Established {
				continue
			}
			err := ev.Err
			if err == nil {
				err = fmt.Errorf("connection %s", ev.Kind)
			}
			l.send(func() {
				if lk := l.links[id]; lk != nil && lk.c == rc {
					l.fail(lk, gen, err)
				}
			})
			return
		}
	}()
}

// startAlloc makes a region exist on a replica and zeroes its line 1, on a
// helper goroutine.
func (l *Leader) startAlloc(lk *link, a Alloc) {
	rc, epoch := lk.c, l.rep.Epoch()
	rc.ctl.Add(1)
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		ctx, cancel := context.WithTimeout(l.ctx, l.cfg.ControlTimeout)
		defer cancel()
		var reg remote.Region
		err := rc.discards.wait(ctx)
		if err == nil {
			reg, err = rc.client.Region(ctx, epoch, a.Slot)
		}
		rc.ctl.Done() // the client is not used after this
		if err != nil {
			err = fenceErr(err)
		} else {
			rc.conn.Write(reg.Desc, CommitWordOffset, l.zeroMR, 0, RegionHeaderSize-CommitWordOffset)
			err = rc.conn.Flush(reg.Desc, CommitWordOffset, RegionHeaderSize-CommitWordOffset, rdma.Persistence).Wait(ctx)
		}
		l.send(func() {
			lk := l.links[a.Replica]
			if lk == nil || lk.gen != a.Gen || lk.c != rc {
				return
			}
			if err != nil {
				l.fail(lk, a.Gen, fmt.Errorf("allocate region %d in slot %d: %w", a.Seq, a.Slot, err))
				return
			}
			rc.descs[a.Slot] = reg.Desc
			if err := l.rep.Allocated(a.Replica, a.Gen, a.Seq); err != nil {
				l.fail(lk, a.Gen, err)
			}
		})
	}()
}

// srcMR is the registration of the leader's slot, made on first use (the
// mapping never moves; a slot's range exists once a region was in it).
func (l *Leader) srcMR(slot int) (rdma.MR, error) {
	if mr := l.srcMRs[slot]; mr != nil {
		return mr, nil
	}
	rs := l.s.RegionSize()
	base := remote.RegionOffset(slot, rs)
	b := l.s.Memory().Bytes()
	if base+rs > len(b) {
		return nil, fmt.Errorf("%w: slot %d beyond the leader's mapping", ErrNoRegion, slot)
	}
	mr, err := l.peer.Register(b[base:base+rs:base+rs], rdma.UsageWriteSrc, nil)
	if err != nil {
		return nil, err
	}
	l.srcMRs[slot] = mr
	return mr, nil
}

// postBatch posts ops, all of one replica's generation, as one batch: held
// back while they are posted (rdma.Corker) and sent together; only the last
// Flush's completion comes back, through the CQ.
func (l *Leader) postBatch(ops []Op) {
	lk := l.links[ops[0].Replica]
	if lk == nil || lk.gen != ops[0].Gen || lk.c == nil {
		return
	}
	rc := lk.c
	if ck, ok := rc.conn.(rdma.Corker); ok {
		ck.Cork()
		defer ck.Uncork()
	}
	oc := &opCtx{id: ops[0].Replica, gen: ops[0].Gen, ops: make([]postedOp, 0, len(ops))}
	for _, o := range ops {
		po, ok := l.post(lk, rc, o)
		if !ok {
			return // lk failed: what was posted is dropped with it
		}
		oc.ops = append(oc.ops, po)
	}
	oc.ops[len(oc.ops)-1].flush.Notify(l.cq, oc)
}

// post posts one Op's rdma operations (the first and its Flush) on rc, lk's
// connection; false if it failed lk instead.
func (l *Leader) post(lk *link, rc *rconn, o Op) (postedOp, bool) {
	desc, ok := rc.descs[o.Slot]
	if !ok {
		l.fail(lk, o.Gen, fmt.Errorf("%w: no descriptor of slot %d on %s", ErrNoRegion, o.Slot, o.Replica))
		return postedOp{}, false
	}
	po := postedOp{kind: o.Kind, end: o.End}
	switch o.Kind {
	case OpWrite:
		src, err := l.srcMR(o.Slot)
		if err != nil {
			l.fail(lk, o.Gen, err)
			return postedOp{}, false
		}
		po.first = rc.conn.Write(desc, o.Off, src, o.Off, o.Len)
		po.flush = rc.conn.Flush(desc, o.Off, o.Len, rdma.Persistence)
		l.count.Writes.Add(1)
		l.count.WriteBytes.Add(uint64(o.Len))
	case OpCommitWord, OpSealWord:
		off := CommitWordOffset
		if o.Kind == OpSealWord {
			off = SealWordOffset
		}
		var v [8]byte
		binary.LittleEndian.PutUint64(v[:], o.Value)
		po.first = rc.conn.AtomicWrite(desc, off, v)
		po.flush = rc.conn.Flush(desc, off, 8, rdma.Persistence)
		l.count.AtomicWrites.Add(1)
	default:
		l.fail(lk, o.Gen, fmt.Errorf("%w: op kind %d", ErrOrder, o.Kind))
		return postedOp{}, false
	}
	l.count.Flushes.Add(1)
	return po, true
}

// completions runs on the loop: it handles every completion queued.
func (l *Leader) completions() {
	for {
		c, ok := l.cq.Poll()
		if !ok {
			return
		}
		l.completion(c)
	}
}

// completion handles a batch's last Flush finishing: every op of the batch
// is done then (a Flush's completion covers earlier posts). Should a
// provider complete the earlier Op handles later than the last (none
// does), the rest of the batch waits for the first one not done: nothing
// is taken as flushed before its own handle says so.
func (l *Leader) completion(c rdma.Completion) {
	oc := c.Context.(*opCtx)
	lk := l.links[oc.id]
	if lk == nil || lk.gen != oc.gen {
		return
	}
	for i, po := range oc.ops {
		if !done(po.first) || !done(po.flush) {
			rest := &opCtx{id: oc.id, gen: oc.gen, ops: oc.ops[i:]}
			if !done(po.first) {
				po.first.Notify(l.cq, rest)
			} else {
				po.flush.Notify(l.cq, rest)
			}
			return
		}
		err := po.first.Err()
		if err == nil {
			err = po.flush.Err()
		}
		if err != nil {
			l.count.OpErrors.Add(1)
			l.fail(lk, oc.gen, err)
			return
		}
		if po.kind == OpWrite {
			if err := l.rep.Flushed(oc.id, oc.gen, po.end); err != nil {
				l.fail(lk, oc.gen, err)
				return
			}
		}
	}
}

// done says whether op has completed.
func done(op *rdma.Op) bool {
	select {
	case <-op.Done():
		return true
	default:
		return false
	}
}

// fail reports a failure of generation gen of a replica and drops its
// connection; the Replicator reconnects after its backoff.
func (l *Leader) fail(lk *link, gen uint64, err error) {
	if lk.gen != gen {
		return
	}
	if !errors.Is(err, ErrFenced) && (errors.Is(err, remote.ErrStaleEpoch) || errors.Is(err, remote.ErrNotWriter)) {
		err = fmt.Errorf("%w: %w", ErrFenced, err)
	}
	l.count.ReplicaFailures.Add(1)
	l.logs.Log(l.log, slog.LevelWarn, string(lk.addr.ID), "down", "replicate: replica failed", "replica", lk.addr.ID, "err", err)
	l.rep.Failed(lk.addr.ID, gen, err)
	l.drop(lk)
}

// drop closes lk's connection, if any, in the background.
func (l *Leader) drop(lk *link) {
	lk.gen = 0
	if lk.c != nil {
		l.closeConn(lk.c)
		lk.c = nil
	}
}

// closeConn closes a connection and, once its control requests are over,
// its client.
func (l *Leader) closeConn(rc *rconn) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		rc.conn.Close() // pending Ops and requests fail now
		rc.ctl.Wait()
		rc.client.Close()
	}()
}

// shutdown runs on the loop as it exits.
func (l *Leader) shutdown() {
	for _, lk := range l.links {
		l.drop(lk)
	}
	l.failAll(ErrClosed)
}

// Committed is the commit point: entries before it are acknowledged.
func (l *Leader) Committed() uint64 { return l.committed.Load() }

// Status is the health of replication as of the loop's last round.
func (l *Leader) Status() Status {
	l.statusMu.Lock()
	defer l.statusMu.Unlock()
	s := l.status
	s.Replicas = append([]ReplicaStatus(nil), s.Replicas...)
	return s
}

// do runs f on the loop and waits for it.
func (l *Leader) do(f func() error) error {
	res := make(chan error, 1)
	select {
	case l.in <- func() { res <- f() }:
	case <-l.done:
		return ErrClosed
	}
	select {
	case err := <-res:
		return err
	case <-l.done:
		return ErrClosed
	}
}

// Progress is every replica's replication position.
func (l *Leader) Progress() []Progress {
	var ps []Progress
	l.do(func() error { ps = l.rep.Progress(); return nil })
	return ps
}

// AddReplica adds a replica; it is connected and caught up in the
// background.
func (l *Leader) AddReplica(r ReplicaAddr) error {
	if r.ID == "" || r.Addr == "" {
		return fmt.Errorf("%w: replica %+v", ErrConfig, r)
	}
	return l.do(func() error {
		if err := l.rep.AddReplica(r.ID, r.Backup); err != nil {
			return err
		}
		l.links[r.ID] = &link{addr: r}
		return nil
	})
}

// RemoveReplica stops replicating to a replica and closes its connection.
func (l *Leader) RemoveReplica(id ID) error {
	return l.do(func() error {
		if err := l.rep.RemoveReplica(id); err != nil {
			return err
		}
		l.drop(l.links[id])
		delete(l.links, id)
		l.logs.Forget(l.log, slog.LevelInfo, string(id), "replicate: replica removed")
		return nil
	})
}

// Restarted says a replica's process restarted: it is reconnected at once.
func (l *Leader) Restarted(id ID) error {
	return l.do(func() error {
		if err := l.rep.Restarted(id); err != nil {
			return err
		}
		l.drop(l.links[id])
		return nil
	})
}

// Start appends p to the leader's stream and returns its index without
// waiting for it to be committed: WaitCommitted does, for pipelined
// callers.
func (l *Leader) Start(p []byte) (uint64, error) {
	l.waitMu.Lock()
	err := l.failErr
	l.waitMu.Unlock()
	if err != nil {
		return 0, err
	}
	return l.s.AppendNoSync(p)
}

// Append appends p and returns its index once it is committed under the
// policy (persisted locally and on the policy's voters). While quorum is
// lost it keeps waiting, until ctx ends. A fenced or closed Leader fails
// it (ErrFenced, ErrClosed): the entry is then not acknowledged.
func (l *Leader) Append(ctx context.Context, p []byte) (uint64, error) {
	i, err := l.Start(p)
	if err != nil {
		return i, err
	}
	// Persist here rather than wait for the persister: concurrent
	// appenders share the persist (group commit), and the loop is already
	// writing the entry to the replicas meanwhile.
	if err := l.s.Sync(i); err != nil {
		return i, err
	}
	return i, l.WaitCommitted(ctx, i)
}

// WaitCommitted waits until entry index is committed, ctx ends, or the
// Leader fails (fenced, closed).
func (l *Leader) WaitCommitted(ctx context.Context, index uint64) error {
	if l.committed.Load() > index {
		return nil
	}
	ch := make(chan error, 1)
	l.waitMu.Lock()
	if l.failErr != nil {
		err := l.failErr
		l.waitMu.Unlock()
		return err
	}
	if l.committed.Load() > index {
		l.waitMu.Unlock()
		return nil
	}
	w := &waiter{index: index, ch: ch}
	heap.Push(&l.waiters, w)
	l.waitMu.Unlock()
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		// Leave no waiter behind: a caller waiting again and again
		// while quorum is lost would pile them up until the next
		// commit.
		l.waitMu.Lock()
		if w.at >= 0 {
			heap.Remove(&l.waiters, w.at)
		}
		l.waitMu.Unlock()
		return ctx.Err()
	}
}

// wakeWaiters completes the waiters below commit.
func (l *Leader) wakeWaiters(commit uint64) {
	l.waitMu.Lock()
	defer l.waitMu.Unlock()
	for len(l.waiters) > 0 && l.waiters[0].index < commit {
		heap.Pop(&l.waiters).(*waiter).ch <- nil
	}
}

// failAll fails every waiter and every later append with err (the first
// error sticks).
func (l *Leader) failAll(err error) {
	l.waitMu.Lock()
	defer l.waitMu.Unlock()
	if l.failErr == nil {
		l.failErr = err
	}
	for len(l.waiters) > 0 {
		heap.Pop(&l.waiters).(*waiter).ch <- l.failErr
	}
}

// Close stops the loop, closes the replicas' connections and the rdma
// Peer, and fails pending waiters with ErrClosed. The stream stays open.
func (l *Leader) Close() error {
	if l.closing.Swap(true) {
		<-l.done
		return ErrClosed
	}
	l.s.SetObserver(nil)
	l.cancel()
	<-l.done
	l.wg.Wait()
	l.release()
	return nil
}

type waiter struct {
	index uint64
	ch    chan error // buffered: never blocks the loop
	at    int        // its place in the heap; -1 once out of it
}

type waitHeap []*waiter

func (h waitHeap) Len() int           { return len(h) }
func (h waitHeap) Less(i, j int) bool { return h[i].index < h[j].index }
func (h waitHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].at, h[j].at = i, j
}
func (h *waitHeap) Push(x any) {
	w := x.(*waiter)
	w.at = len(*h)
	*h = append(*h, w)
}
func (h *waitHeap) Pop() any {
	old := *h
	w := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	w.at = -1
	return w
}

// Err is why the Leader stopped (an error wrapping ErrFenced, or
// ErrClosed); nil while it runs.
func (l *Leader) Err() error {
	l.waitMu.Lock()
	defer l.waitMu.Unlock()
	return l.failErr
}
