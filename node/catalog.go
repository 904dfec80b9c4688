package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/catalog"
	pb "github.com/rpstream/rpstream/catalog/catalogpb"
)

// A node in a cluster serves streams by the catalog (Config.Catalog, a
// member of the catalog's Raft group): the catalog says which streams
// exist, which node leads each under which epoch, and where the copies
// are; this node only acts on what it says. It creates the files of the
// streams it leads, takes a new epoch from the catalog each time it opens
// one, refuses a copy's writer that the catalog does not name, and
// removes the files of deleted streams (reconcile).

// lookupTimeout bounds what a call asks of the catalog beyond its own
// view: a read barrier, an epoch, an activation.
const lookupTimeout = 5 * time.Second

// errNotHere says the catalog names another leader for a stream; route
// turns it into a leader hint.
var errNotHere = errors.New("node: stream led by another node")

// errLost says this node leads a stream in the catalog but does not hold
// its files (its data directory was lost or replaced).
var errLost = errors.New("node: this node leads the stream but holds no copy of it")

func acksOf(a api.AckPolicy) pb.Acks {
	switch a {
	case api.AckPolicy_ACK_POLICY_LEADER:
		return pb.Acks_ACKS_LEADER
	case api.AckPolicy_ACK_POLICY_ALL:
		return pb.Acks_ACKS_ALL
	}
	return pb.Acks_ACKS_QUORUM
}

// createInCatalog creates stream req.Stream through the catalog and, when
// this node leads it, its files; it answers with the stream's status.
func (s *Server) createInCatalog(ctx context.Context, req *api.CreateStreamRequest, m meta) (*api.CreateStreamResponse, error) {
	s.waitRegistered(ctx)
	rec, err := s.cfg.Catalog.CreateStream(ctx, &pb.CreateStreamRequest{
		Name: req.Stream, Replicas: m.Replicas, Acks: acksOf(req.Acks), RegionSize: uint64(m.RegionSize), Retention: m.Retention.proto()})
	if err != nil {
		return nil, statusOf(err)
	}
	s.log.Info("stream created", "stream", req.Stream, "id", rec.Id, "leader", rec.Leader, "copies", copyNames(rec), "replicas", m.Replicas, "acks", m.Acks)
	// The leader makes the stream's files and opens it at once, off the
	// create's path (reconcile, woken by the catalog's change); the first
	// append waits for that if it comes first.
	return &api.CreateStreamResponse{Status: s.recordStatus(rec)}, nil
}

// registerWait bounds how long a create waits for this node's
// registration in the catalog.
const registerWait = 5 * time.Second

// waitRegistered waits, at most registerWait, until this node's catalog
// shows it registered under its incarnation: a create sent to a node that
// has just started (it serves clients before its registration is
// committed) would otherwise find no live stream node to place the
// stream on, not even this one, and fail for good.
func (s *Server) waitRegistered(ctx context.Context) {
	deadline := time.Now().Add(registerWait)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		if n, ok := s.cfg.Catalog.Node(s.cfg.Name); ok && n.Incarnation == s.cfg.Catalog.Incarnation() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func copyNames(rec *pb.Stream) []string {
	var out []string
	for _, cp := range rec.Copies {
		out = append(out, cp.Node)
	}
	return out
}

// realize makes the files of stream rec, which this node leads and the
// catalog holds as creating, and says whether it made them now (files
// already made, by an incarnation that may have written under the
// create's epoch, are kept). The catalog marks the stream active later
// (reconcile), off the create's path.
func (s *Server) realize(rec *pb.Stream) (made bool, err error) {
	m, err := s.store.readMeta(rec.Name)
	switch {
	case err == nil && m.StreamID == rec.Id:
		return false, nil
	case err == nil:
		// Files of an older stream of the name, deleted while this node
		// was down.
		s.log.Warn("removing the files of an older stream of the name", "stream", rec.Name, "old_id", m.StreamID, "id", rec.Id)
		if err := s.store.remove(rec.Name); err != nil {
			return false, err
		}
		fallthrough
	case errors.Is(err, ErrNoStream):
		m = meta{Replicas: rec.Replicas, Acks: catalog.AcksName(rec.Acks), RegionSize: int(rec.RegionSize), Created: time.Unix(0, rec.Created).UTC(), Envelope: true, StreamID: rec.Id}
		if err := s.store.create(rec.Name, m); err != nil {
			return false, err
		}
		return true, nil
	}
	return false, err
}

// openLed prepares the opening of stream name, which the catalog says
// this node leads (takeover.go): its files made if the stream is new, or
// its copy promoted to them; the epoch to open under (the one the
// catalog granted this node if it never opened under it, else a new
// one); for a replicated stream the copies fenced and surveyed, and the
// stream handed to another copy's holder if that copy holds more of the
// log. It returns the stream's meta as it is to be opened and the
// takeover's facts.
func (s *Server) openLed(rec *pb.Stream) (meta, takeover, error) {
	var tk takeover
	if r := rec.GetRestoring(); r != nil && rec.State == pb.StreamState_STREAM_STATE_ACTIVE && r.Epoch == rec.Epoch && r.Node != s.cfg.Name {
		// Restored from another node's copy: fetched and verified first
		// (restore.go, bounded on its own: a copy may be large), then
		// taken over as a promoted copy.
		if err := s.fetchRestore(rec); err != nil {
			return meta{}, tk, err
		}
	}
	ctx, cancel := context.WithTimeout(s.stopCtx, lookupTimeout+takeoverTimeout)
	defer cancel()
	if rec.State == pb.StreamState_STREAM_STATE_CREATING {
		var err error
		if tk.made, err = s.realize(rec); err != nil {
			return meta{}, tk, err
		}
	} else if err := s.promote(rec); err != nil {
		return meta{}, tk, err
	}
	m, err := s.store.readMeta(rec.Name)
	if errors.Is(err, ErrNoStream) || err == nil && m.StreamID != rec.Id {
		return meta{}, tk, fmt.Errorf("%w: %s (id %d): its files are missing or of another stream here", errLost, rec.Name, rec.Id)
	}
	if err != nil {
		return meta{}, tk, err
	}
	m.Followers, m.Backup, m.Peers = nil, "", nil
	for _, cp := range rec.Copies[1:] {
		if cp.Backup {
			m.Backup = cp.Node
		} else {
			m.Followers = append(m.Followers, cp.Node)
		}
	}
	// The epoch: the one the catalog granted this node (by the create or
	// an election) if this node never opened the stream under it (its
	// meta.json records the last it did), or if this process holds it
	// (Server.held: a takeover retried, after one that could not
	// complete or whose Leader could not start), else the next one. It
	// is recorded before anything is written under it. An epoch a
	// process opened under is reused only by that process: only its
	// writes are under it, and its file holds them all (no crash since,
	// and closeTakenOver checked they are durable), so its log, surveyed
	// again, supersedes every copy's under that epoch. A new epoch would
	// also cost a region (local.StartEpoch): a takeover retried a
	// thousand times would allocate a thousand regions of markers on the
	// leader and then on each copy.
	epoch := rec.Epoch
	s.mu.Lock()
	reuse := s.held[rec.Name] == rec.Epoch && m.Epoch == rec.Epoch
	idle := s.idleReopenLocked(rec, m.Epoch)
	s.mu.Unlock()
	if idle {
		// Closed for idleness under this very epoch (idle.go): reopened
		// under it, the copies as they were.
		tk.reopen = true
		return m, tk, nil
	}
	if m.Epoch >= rec.Epoch && !reuse {
		if epoch, err = s.cfg.Catalog.GrantEpoch(ctx, rec.Name, rec.Id); err != nil {
			return meta{}, tk, fmt.Errorf("node: %s: taking a new epoch: %w", rec.Name, err)
		}
	}
	m.Epoch = epoch
	if err := s.store.writeMeta(rec.Name, m); err != nil {
		return meta{}, tk, err
	}
	if tk.made || !m.replicated() {
		return m, tk, nil
	}
	s.mu.Lock()
	s.held[rec.Name] = epoch
	s.mu.Unlock()
	// Fence and survey: the copies reached, this node's counted, must
	// meet every acknowledgement quorum.
	own, err := s.ownTail(rec.Name)
	if err != nil {
		return meta{}, tk, fmt.Errorf("node: %s: reading this node's log: %w", rec.Name, err)
	}
	need := fenceNeed(policy(m.Acks), int(rec.Replicas))
	tails, err := s.survey(ctx, rec, epoch, need)
	if err != nil {
		return meta{}, tk, err
	}
	best, floor, err := chooseLog(own, tails, rec.CommitFloor, need)
	if err != nil {
		return meta{}, tk, fmt.Errorf("%w: taking over %s (epoch %d): %v", errTakeover, rec.Name, epoch, err)
	}
	if best.node != s.cfg.Name {
		e, err := s.cfg.Catalog.HandOff(ctx, rec.Name, rec.Id, epoch, best.node)
		if err != nil {
			return meta{}, tk, fmt.Errorf("%w: %s holds more of %s (%+v; this node %+v) but cannot take it: %v", errTakeover, best.node, rec.Name, best, own, err)
		}
		s.log.Info("takeover: stream handed to the holder of a longer log", "stream", rec.Name, "to", best.node, "epoch", e, "theirs", best.index, "ours", own.index)
		return meta{}, tk, fmt.Errorf("%w: %s to %s (epoch %d)", errNotHere, rec.Name, best.node, e)
	}
	tk.floor = floor
	tk.survey = true
	s.log.Info("takeover: this node's log is the stream's", "stream", rec.Name, "epoch", epoch, "entries", own.index, "copies", 1+len(tails), "floor", rec.CommitFloor)
	return m, tk, nil
}

// takeover is what openLed found.
type takeover struct {
	reopen bool   // reopened under the epoch it was closed for idleness under
	made   bool   // the stream's files were made now (a new stream)
	survey bool   // the copies were fenced and surveyed
	floor  uint64 // the catalog's commit floor
}

// errTakeover says a takeover cannot complete now (too few copies
// answer, or none holds the committed log): the stream is unavailable
// until it can, and reconcile tries again.
var errTakeover = errors.New("node: takeover cannot complete")

// ledHere looks stream name up in the catalog: its record if this node
// leads it, else an error for route (errNotHere with the record, or
// ErrNoStream).
func (s *Server) ledHere(name string) (*pb.Stream, error) {
	rec, ok := s.cfg.Catalog.Stream(name)
	if !ok || !catalog.Live(rec.State) {
		// Not in this node's view: it may lag (it just started). Only a
		// current view says a stream does not exist.
		ctx, cancel := context.WithTimeout(s.stopCtx, lookupTimeout)
		err := s.cfg.Catalog.Barrier(ctx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("stream %s is not in this node's catalog, which cannot be brought up to date: %w", name, err)
		}
		if rec, ok = s.cfg.Catalog.Stream(name); !ok || !catalog.Live(rec.State) {
			return nil, fmt.Errorf("%w: %s", ErrNoStream, name)
		}
	}
	if rec.Leader != s.cfg.Name {
		return nil, fmt.Errorf("%w: %s is led by %s", errNotHere, name, rec.Leader)
	}
	return rec, nil
}

// routeCatalog turns err, an error of opening stream here, into what the
// client needs: a leader hint when another node leads it, Unavailable
// with the last known leader when that leader is down, NotFound only
// when the catalog has no such stream.
func (s *Server) routeCatalog(stream string, err error) error {
	if !errors.Is(err, errNotHere) {
		return statusOf(err)
	}
	// A hint from a current view: this node's may lag (the leader's new
	// epoch, say). Without a controller the view at hand is the hint.
	bctx, cancel := context.WithTimeout(s.stopCtx, time.Second)
	s.cfg.Catalog.Barrier(bctx)
	cancel()
	rec, ok := s.cfg.Catalog.Stream(stream)
	if !ok || !catalog.Live(rec.State) {
		return statusOf(fmt.Errorf("%w: %s", ErrNoStream, stream))
	}
	if rec.Leader == s.cfg.Name {
		// The current view names this node (an election it had not seen
		// yet): it takes the stream over now; the client asks again.
		go s.takeOver(stream)
		return status.Error(codes.Unavailable, fmt.Sprintf("stream %s: this node (%s) was just elected its leader (epoch %d) and is taking it over; try again", stream, s.cfg.Name, rec.Epoch))
	}
	addr, live := s.memberAddr(rec.Leader)
	hint := &api.StreamStatusResponse{Leader: rec.Leader, LeaderAddr: addr, Epoch: rec.Epoch}
	if !live {
		st := status.New(codes.Unavailable, fmt.Sprintf("stream %s: its leader %s (epoch %d, last at %s) is down; copies on %v keep serving reads up to what they hold", stream, rec.Leader, rec.Epoch, orUnknown(addr), copyNames(rec)[1:]))
		if d, err := st.WithDetails(&api.NotLeader{Leader: rec.Leader, LeaderAddr: addr, Epoch: rec.Epoch}); err == nil {
			st = d
		}
		return st.Err()
	}
	return notLeader(stream, hint)
}

func orUnknown(s string) string {
	if s == "" {
		return "an unknown address"
	}
	return s
}

// memberAddr is member name's client address and whether memberlist
// holds it live.
func (s *Server) memberAddr(name string) (string, bool) {
	c := s.cluster()
	if c == nil {
		return "", false
	}
	for _, m := range c.Members() {
		if m.Name == name {
			return m.ClientAddr, m.State.Live() && m.ClientAddr != ""
		}
	}
	return "", false
}

// recordStatus describes a stream this node does not lead, from the
// catalog alone.
func (s *Server) recordStatus(rec *pb.Stream) *api.StreamStatusResponse {
	addr, _ := s.memberAddr(rec.Leader)
	return &api.StreamStatusResponse{
		Stream: rec.Name, Leader: rec.Leader, LeaderAddr: addr, Epoch: rec.Epoch, Replicas: rec.Replicas,
		Acks: ackPolicy(catalog.AcksName(rec.Acks)), RegionSize: rec.RegionSize, UnderReplicated: rec.Replicas > 1,
		Retention: apiRetention(rec.Retention), TrimHead: rec.TrimHead,
	}
}

// listInCatalog names the live streams of the catalog, sorted.
func (s *Server) listInCatalog() []string {
	var names []string
	for _, rec := range s.cfg.Catalog.Streams() {
		if catalog.Live(rec.State) {
			names = append(names, rec.Name)
		}
	}
	return names
}

// deleteInCatalog turns stream name into a tombstone and removes this
// node's files of it at once; the other holders remove theirs when their
// catalog shows the tombstone (reconcile), now or when they come back.
func (s *Server) deleteInCatalog(ctx context.Context, name string) error {
	// The id this node sees: a retry of the delete can then never delete
	// a stream made anew under the name meanwhile.
	var id uint64
	if r, ok := s.cfg.Catalog.Stream(name); ok && catalog.Live(r.State) {
		id = r.Id
	}
	rec, err := s.cfg.Catalog.DeleteStream(ctx, name, id)
	if err != nil {
		return statusOf(err)
	}
	s.log.Info("stream deleted", "stream", name, "id", rec.Id)
	s.reconcile(ctx, false)
	// The live holders drop their copies within moments; one that is
	// down does when it is back. Wait a little for the first, not the
	// second.
	for deadline := time.Now().Add(deleteWait); time.Now().Before(deadline) && ctx.Err() == nil; time.Sleep(20 * time.Millisecond) {
		if r, ok := s.cfg.Catalog.Stream(name); !ok || r.Id != rec.Id || r.State == pb.StreamState_STREAM_STATE_DELETED {
			break
		}
	}
	return nil
}

// deleteWait is how long DeleteStream waits for the copies' holders to
// drop them before it answers (they drop them later otherwise).
const deleteWait = 2 * time.Second

// reconcileEvery is how often the node compares its files with the
// catalog when nothing changed.
const reconcileEvery = 2 * time.Second

// reconcileLoop runs reconcile whenever the catalog changes, and every
// reconcileEvery, until Shutdown.
func (s *Server) reconcileLoop() {
	defer s.leave()
	t := time.NewTicker(reconcileEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stopCtx.Done():
			return
		case <-s.cfg.Catalog.Changed():
		case <-t.C:
			s.closeIdleStreams()
		}
		start := time.Now()
		s.reconcile(s.stopCtx, true)
		// A pass reads every record and lists the stream directories:
		// with thousands of streams it takes milliseconds, and creates
		// change the catalog hundreds of times a second. Passes back to
		// back then took most of a core and slowed the making of the
		// streams they were for; a pause of reconcileGapFactor times the
		// pass (at most reconcileGapMax) lets the changes of many
		// creates gather for the next one.
		gap := min(time.Since(start)*reconcileGapFactor, reconcileGapMax)
		select {
		case <-s.stopCtx.Done():
			return
		case <-time.After(gap):
		}
	}
}

// reconcileGapFactor and reconcileGapMax bound how much of a core
// reconciling takes (about 1/(1+reconcileGapFactor)) and how long a
// change waits for it.
const (
	reconcileGapFactor = 3
	reconcileGapMax    = 200 * time.Millisecond
)

// makeParallel is how many streams being created reconcile makes at once.
const makeParallel = 4

// reconcile makes this node's files agree with the catalog: streams it
// leads that are still being created are made; its streams and copies of
// deleted streams are closed and removed, and each removal of a copy the
// catalog waits for is recorded (CopyDropped). Only files the catalog
// knows of are ever removed: a stream or copy of a name the catalog has
// never held (data from before the catalog) is left alone. Before it
// removes anything it makes sure its view of the catalog is current
// (Barrier); when no controller answers, it removes nothing.
func (s *Server) reconcile(ctx context.Context, create bool) {
	ctl := s.cfg.Catalog
	// One pass over the catalog's own records, without copying them and
	// without a file operation per record: with thousands of streams,
	// reconcile runs after every catalog change (each create is two), and
	// a copy of every record and a meta.json read per stream each time
	// made creates slow down as streams accumulated.
	names, _ := s.store.list()
	copyNames := s.replicas.list()
	here := make(map[string]bool, len(names))
	for _, n := range names {
		here[n] = true
	}
	type led struct {
		name  string
		epoch uint64
	}
	var creating, demoting []string
	var leading []led
	var owed int
	// What the loop needs of the records of this node's files, read under
	// the catalog's lock (the records change in place).
	type held struct {
		id    uint64
		live  bool
		holds bool
	}
	recs := map[string]held{}
	inCopies := make(map[string]bool, len(copyNames))
	for _, n := range copyNames {
		inCopies[n] = true
	}
	ctl.EachStream(func(rec *pb.Stream) bool {
		if here[rec.Name] || inCopies[rec.Name] {
			holds, _ := catalog.HolderOf(rec, s.cfg.Name, 0)
			recs[rec.Name] = held{id: rec.Id, live: catalog.Live(rec.State), holds: holds}
		}
		switch rec.State {
		case pb.StreamState_STREAM_STATE_CREATING:
			if rec.Leader == s.cfg.Name {
				creating = append(creating, rec.Name)
			}
		case pb.StreamState_STREAM_STATE_ACTIVE:
			if rec.Leader == s.cfg.Name {
				leading = append(leading, led{rec.Name, rec.Epoch})
			} else if here[rec.Name] {
				demoting = append(demoting, rec.Name)
			}
		case pb.StreamState_STREAM_STATE_DELETING:
			if slices.Contains(rec.PendingDrop, s.cfg.Name) {
				owed++
			}
		}
		return true
	})
	// stale is the function below on what was read.
	staleHere := func(name string, id uint64) bool {
		h, ok := recs[name]
		return ok && (h.id != id || !h.live || !h.holds)
	}
	if create {
		// Streams this node leads that are being created: made (if the
		// create's caller has not yet) and marked active, makeParallel
		// at a time: each waits for file work and a Raft commit, and
		// one at a time made streams more slowly than clients created
		// them.
		var wg sync.WaitGroup
		sem := make(chan struct{}, makeParallel)
		for _, name := range creating {
			rec, ok := ctl.Stream(name)
			if !ok || rec.State != pb.StreamState_STREAM_STATE_CREATING || rec.Leader != s.cfg.Name {
				continue
			}
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				st, err := s.acquire(rec.Name)
				if err != nil {
					s.log.Warn("cannot make a stream this node leads", "stream", rec.Name, "err", err)
					return
				}
				st.release()
				if err := ctl.ActivateStream(ctx, rec.Name, rec.Id); err != nil {
					s.log.Warn("cannot mark a stream active yet", "stream", rec.Name, "err", err)
				}
			})
		}
		wg.Wait()
	}
	// Streams this node led that another node leads now: demoted to
	// copies (closed first if open: a paused or cut-off leader learns of
	// its successor here). Streams this node leads now and has not
	// opened: opened (a takeover), in the background.
	for _, name := range demoting {
		rec, ok := ctl.Stream(name)
		if !ok || rec.State != pb.StreamState_STREAM_STATE_ACTIVE || rec.Leader == s.cfg.Name {
			continue
		}
		if id, err := s.store.streamID(rec.Name); err == nil && id == rec.Id {
			if holds, _ := catalog.HolderOf(rec, s.cfg.Name, 0); holds {
				if err := s.demote(rec); err != nil {
					s.log.Warn("cannot turn a stream led elsewhere now into a copy", "stream", rec.Name, "err", err)
				}
			}
		}
	}
	if create {
		for _, l := range leading {
			// A stream closed for idleness under the catalog's current
			// epoch opens again on its next use, not here.
			// Nor at the open-streams limit: a background open would
			// push out a stream in use; its next call opens it.
			s.mu.Lock()
			busy := s.streams[l.name] != nil || s.opening[l.name] != nil || s.closing || s.idleUnderLocked(l.name, l.epoch) || s.checkOpenLimitLocked() != nil
			s.mu.Unlock()
			if !busy {
				go s.takeOver(l.name)
			}
		}
	}
	// What is here and should not be.
	var goneStreams, goneCopies []string
	for _, name := range names {
		if id, err := s.store.streamID(name); err == nil && staleHere(name, id) {
			goneStreams = append(goneStreams, name)
		}
	}
	for _, name := range copyNames {
		if id, err := s.replicas.streamID(name); err == nil && staleHere(name, id) {
			goneCopies = append(goneCopies, name)
		}
	}
	if len(goneStreams)+len(goneCopies)+owed == 0 {
		return
	}
	if err := ctl.Barrier(ctx); err != nil {
		s.log.Debug("catalog not current; removing nothing now", "err", err)
		return
	}
	all := map[string]*pb.Stream{}
	for _, rec := range ctl.Streams() {
		all[rec.Name] = rec
	}
	for _, name := range goneStreams {
		if m, err := s.store.readMeta(name); err == nil && stale(all[name], m.StreamID, s.cfg.Name) {
			if err := s.removeLed(name); err != nil {
				s.log.Warn("cannot remove a deleted stream", "stream", name, "err", err)
			}
		}
	}
	for _, name := range goneCopies {
		if id, err := s.replicas.streamID(name); err == nil && stale(all[name], id, s.cfg.Name) {
			if err := s.dropCopy(name); err != nil && !errors.Is(err, ErrNoStream) {
				s.log.Warn("cannot remove the copy of a deleted stream", "stream", name, "err", err)
			} else {
				s.log.Info("copy of a deleted stream removed", "stream", name, "id", id)
			}
		}
	}
	for _, rec := range all {
		if rec.State != pb.StreamState_STREAM_STATE_DELETING || !slices.Contains(rec.PendingDrop, s.cfg.Name) {
			continue
		}
		if id, err := s.store.streamID(rec.Name); err == nil && id == rec.Id {
			continue // not removed (an error above)
		}
		if id, err := s.replicas.streamID(rec.Name); err == nil && id == rec.Id {
			continue
		}
		if err := ctl.CopyDropped(ctx, rec.Name, rec.Id); err != nil {
			s.log.Debug("cannot record a dropped copy yet", "stream", rec.Name, "err", err)
		}
	}
}

// stale says whether files of stream id held here should go: the catalog
// has a record of the name, and it is a tombstone of this id, or a
// stream of another id, or one this node holds no copy of.
func stale(rec *pb.Stream, id uint64, self string) bool {
	switch {
	case rec == nil:
		return false // never in the catalog: left alone
	case rec.Id != id:
		return true
	case !catalog.Live(rec.State):
		return true
	}
	holds, _ := catalog.HolderOf(rec, self, 0)
	// The source of a restore under way keeps its copy until the new
	// leader has fetched it and serves (restore.go).
	return !holds && catalog.Source(rec) != self
}

// removeLed closes stream name if it is open (its calls end with
// NotFound) and removes its files.
func (s *Server) removeLed(name string) error {
	s.mu.Lock()
	st := s.streams[name]
	if st != nil && st.gone {
		s.mu.Unlock()
		return nil
	}
	if st != nil {
		st.gone = true
	}
	delete(s.held, name) // a stream made again under the name starts afresh
	s.mu.Unlock()
	if st != nil {
		st.cancel(fmt.Errorf("%w: %s deleted", ErrNoStream, name))
		st.refs.Wait()
		if err := st.close(); err != nil {
			s.log.Warn("closing a deleted stream", "stream", name, "err", err)
		}
	}
	err := s.store.remove(name)
	s.mu.Lock()
	if s.streams != nil && s.streams[name] == st {
		delete(s.streams, name)
	}
	s.mu.Unlock()
	if err == nil {
		s.log.Info("deleted stream's files removed", "stream", name)
	}
	if errors.Is(err, ErrNoStream) {
		return nil
	}
	return err
}

// checkCopy says whether writer may keep stream name's copy (id) here as
// the catalog has it; if this node's catalog does not show it yet, it
// catches up first (Barrier) and looks again.
func (s *Server) checkCopy(name string, id uint64, writer string) (*pb.Stream, error) {
	look := func() (*pb.Stream, error) {
		rec, ok := s.cfg.Catalog.Stream(name)
		switch {
		case !ok || !catalog.Live(rec.State):
			return nil, fmt.Errorf("%w: %s is not a stream of the catalog", ErrNoStream, name)
		case id != 0 && rec.Id != id:
			return nil, fmt.Errorf("%w: %s has id %d in the catalog, not %d", ErrWrongLeader, name, rec.Id, id)
		case rec.Leader != writer:
			return nil, fmt.Errorf("%w: the catalog names %s as %s's leader, not %s", ErrWrongLeader, rec.Leader, name, writer)
		}
		if holds, _ := catalog.HolderOf(rec, s.cfg.Name, 0); !holds {
			return nil, fmt.Errorf("%w: the catalog places no copy of %s on %s", ErrWrongLeader, name, s.cfg.Name)
		}
		return rec, nil
	}
	rec, err := look()
	if err == nil {
		return rec, nil
	}
	ctx, cancel := context.WithTimeout(s.stopCtx, lookupTimeout)
	defer cancel()
	if berr := s.cfg.Catalog.Barrier(ctx); berr != nil {
		return nil, fmt.Errorf("%v (and the catalog cannot be brought up to date: %v)", err, berr)
	}
	return look()
}

// incarnationFile keeps a data directory's incarnation.
const incarnationFile = "incarnation"

// Incarnation returns the incarnation of data directory dir, made (random,
// never 0) and kept durably on first use: a node started on a new or
// wiped directory is a new incarnation to the catalog.
func Incarnation(dir string) (uint64, error) {
	path := filepath.Join(dir, incarnationFile)
	b, err := os.ReadFile(path)
	if err == nil {
		var v uint64
		if _, serr := fmt.Sscanf(string(b), "%016x\n", &v); serr != nil || v == 0 {
			return 0, fmt.Errorf("node: %s is damaged (%q): remove it only if this directory's data is to be treated as new", path, b)
		}
		return v, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("node: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, fmt.Errorf("node: %w", err)
	}
	var v uint64
	for v == 0 {
		v = randUint64()
	}
	tmp := path + ".new"
	os.Remove(tmp)
	if err := writeFileSync(tmp, fmt.Appendf(nil, "%016x\n", v)); err != nil {
		return 0, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return 0, fmt.Errorf("node: %w", err)
	}
	return v, syncDir(dir)
}

// ClusterStatus describes the catalog's group and nodes as this node
// sees them.
func (s *Server) ClusterStatus(ctx context.Context, req *api.ClusterStatusRequest) (*api.ClusterStatusResponse, error) {
	if err := s.enter(); err != nil {
		return nil, statusOf(err)
	}
	defer s.leave()
	ctl := s.cfg.Catalog
	if ctl == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "node %s runs alone, without a catalog", s.cfg.Name)
	}
	st := ctl.Status()
	r := &api.ClusterStatusResponse{
		Node: s.cfg.Name, Controller: st.Controller, Term: st.Term, Commit: st.Commit, Applied: st.Applied,
		RaftState: st.State, Voters: st.Voters, Followers: st.Followers, Streams: uint32(len(s.listInCatalog())),
		ScrubPasses: s.scrub.passes.Load(), ScrubBytes: s.scrub.bytes.Load(), ScrubDamaged: s.scrub.damaged.Load(), ScrubRepaired: s.scrub.repaired.Load(), ScrubUnrepairable: s.scrub.unrepairable.Load(),
	}
	members := map[string]*api.Member{}
	if s.cluster() != nil {
		for _, m := range s.clusterMembers() {
			members[m.Name] = m
		}
	}
	for _, n := range ctl.Nodes() {
		cn := &api.CatalogNode{
			Name: n.Name, Incarnation: fmt.Sprintf("%016x", n.Incarnation), Role: api.Role_ROLE_NODE,
			State: api.MemberState_MEMBER_STATE_UNSPECIFIED, Voter: slices.Contains(st.Voters, n.Name), Follower: slices.Contains(st.Followers, n.Name),
		}
		if n.Role == pb.Role_ROLE_BACKUP {
			cn.Role = api.Role_ROLE_BACKUP
		}
		if m := members[n.Name]; m != nil {
			cn.State, cn.ClientAddr = m.State, m.ClientAddr
		}
		if n.Name == s.cfg.Name {
			r.Registered = n.Incarnation == ctl.Incarnation()
			cn.State = api.MemberState_MEMBER_STATE_ALIVE
		}
		r.Nodes = append(r.Nodes, cn)
	}
	// Members of the group the catalog has no record of (voters that
	// never registered).
	for _, name := range append(slices.Clone(st.Voters), st.Followers...) {
		if slices.ContainsFunc(r.Nodes, func(n *api.CatalogNode) bool { return n.Name == name }) {
			continue
		}
		cn := &api.CatalogNode{Name: name, State: api.MemberState_MEMBER_STATE_UNSPECIFIED, Voter: slices.Contains(st.Voters, name), Follower: slices.Contains(st.Followers, name)}
		if m := members[name]; m != nil {
			cn.State, cn.ClientAddr, cn.Role = m.State, m.ClientAddr, m.Role
		}
		r.Nodes = append(r.Nodes, cn)
	}
	slices.SortFunc(r.Nodes, func(a, b *api.CatalogNode) int { return strings.Compare(a.Name, b.Name) })
	return r, nil
}

// ChangeVoter promotes or demotes a controller voter.
func (s *Server) ChangeVoter(ctx context.Context, req *api.ChangeVoterRequest) (*api.ChangeVoterResponse, error) {
	if err := s.enter(); err != nil {
		return nil, statusOf(err)
	}
	defer s.leave()
	if s.cfg.Catalog == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "node %s runs alone, without a catalog", s.cfg.Name)
	}
	if err := validName(req.Node); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "node name: %v", err)
	}
	var err error
	if req.Remove {
		err = s.cfg.Catalog.RemoveVoter(ctx, req.Node)
	} else {
		err = s.cfg.Catalog.AddVoter(ctx, req.Node)
	}
	if err != nil {
		return nil, statusOf(err)
	}
	s.log.Info("controller voters changed", "node", req.Node, "removed", req.Remove)
	return &api.ChangeVoterResponse{}, nil
}
