package node

import (
	"errors"
	"slices"
	"strings"
	"time"

	pb "github.com/rpstream/rpstream/catalog/catalogpb"
)

// Idle streams are closed and reopened on demand, so that a node can lead
// more streams than it can keep open (each open stream holds a mapping,
// file descriptors, a replicate.Leader and its connections to the copies).
// A stream with no call using it for Config.IdleClose is closed by the
// reconcile loop, and the least recently used idle one is closed at once
// when opening another would pass Config.MaxOpenStreams. Only a quiet
// stream closes: no call in flight, every entry it holds committed. The
// copies this node serves close the same way once no leader has been
// connected to them for Config.IdleClose (remote.Hub.CloseIdle), and open
// again on the leader's next connection.
//
// Epochs: opening a led stream normally takes a new epoch from the
// catalog (a Raft commit) and fences and surveys its copies, because an
// earlier incarnation of this node may have written under the old epoch
// and crashed. A stream closed for idleness by this process is different:
// its leader stopped cleanly with everything committed, nobody else may
// write under its epoch (the catalog grants each epoch to one leader), and
// the copies hold exactly what it replicated. So it reopens under the same
// epoch, without the catalog and without a survey, if the catalog still
// names this node its leader under that epoch with the same copies
// (idleRecord); otherwise it goes the ordinary way. Reopening thousands
// of idle streams therefore churns no epochs. The record lives in memory
// only: after a restart every stream opens the ordinary way.

// idleRecord is how a stream was closed for idleness.
type idleRecord struct {
	epoch  uint64
	copies string // the catalog's copies then, by node, in order
}

// errIdle is the cause of an idle stream's context when it is closed.
var errIdle = errors.New("node: stream closed for idleness")

// DefaultIdleClose is Config.IdleClose when it is zero.
const DefaultIdleClose = 5 * time.Minute

func copiesKey(rec *pb.Stream) string { return strings.Join(copyNames(rec), ",") }

// idleReopen says whether stream rec, opened now with meta epoch
// metaEpoch, may reopen under its epoch as it was closed for idleness,
// and forgets the record either way. s.mu is held.
func (s *Server) idleReopenLocked(rec *pb.Stream, metaEpoch uint64) bool {
	ir, ok := s.idle[rec.Name]
	if !ok {
		return false
	}
	delete(s.idle, rec.Name)
	return ir.epoch != 0 && ir.epoch == rec.Epoch && metaEpoch == rec.Epoch && ir.copies == copiesKey(rec)
}

// idleUnderLocked says whether stream name was closed for idleness under
// epoch (reconcile leaves it closed). s.mu is held.
func (s *Server) idleUnderLocked(name string, epoch uint64) bool {
	ir, ok := s.idle[name]
	return ok && ir.epoch == epoch
}

// closeIdleStreams closes every stream unused for Config.IdleClose.
func (s *Server) closeIdleStreams() {
	if s.cfg.IdleClose <= 0 {
		return
	}
	now := time.Now()
	s.mu.Lock()
	var names []string
	for name, st := range s.streams {
		if now.Sub(st.lastUsed()) >= s.cfg.IdleClose {
			names = append(names, name)
		}
	}
	s.mu.Unlock()
	for _, name := range names {
		s.closeIdle(name, s.cfg.IdleClose)
	}
	// Copies no leader is connected to (their leaders closed them, or
	// are down).
	if s.hub != nil {
		if n, err := s.hub.CloseIdle(s.cfg.IdleClose); err != nil {
			s.log.Warn("closing idle copies", "closed", n, "err", err)
		} else if n > 0 {
			s.log.Debug("idle copies closed", "closed", n)
		}
	}
}

// evictIdle closes the least recently used quiet stream, for room under
// Config.MaxOpenStreams, or failing that (with copies) the copies no
// leader is connected to, and says whether it closed any.
func (s *Server) evictIdle(copies bool) bool {
	s.mu.Lock()
	type cand struct {
		name string
		used time.Time
	}
	var cands []cand
	for name, st := range s.streams {
		if st.users.Load() == 0 {
			cands = append(cands, cand{name, st.lastUsed()})
		}
	}
	s.mu.Unlock()
	slices.SortFunc(cands, func(a, b cand) int { return a.used.Compare(b.used) })
	for _, c := range cands[:min(len(cands), 8)] {
		if s.closeIdle(c.name, 0) {
			return true
		}
	}
	if copies && s.hub != nil {
		if n, _ := s.hub.CloseIdle(0); n > 0 {
			return true
		}
	}
	return false
}

// closeIdle closes stream name if it is open, has been unused for at least
// minIdle, and is quiet; it says whether it did. Calls that come meanwhile
// wait (acquire) and open it again.
func (s *Server) closeIdle(name string, minIdle time.Duration) bool {
	s.mu.Lock()
	st := s.streams[name]
	if st == nil || st.gone || s.closing || s.opening[name] != nil || st.users.Load() > 0 || time.Since(st.lastUsed()) < minIdle || !st.quiet() {
		s.mu.Unlock()
		return false
	}
	ch := make(chan struct{})
	s.opening[name] = ch
	delete(s.streams, name)
	s.mu.Unlock()
	st.cancel(errIdle)
	err := s.closeOpen(st)
	s.mu.Lock()
	if err == nil && s.cfg.Catalog != nil {
		if rec, ok := s.cfg.Catalog.Stream(name); ok && rec.Leader == s.cfg.Name && rec.Epoch == st.meta.Epoch {
			s.idle[name] = idleRecord{epoch: st.meta.Epoch, copies: copiesKey(rec)}
		}
	}
	delete(s.opening, name)
	close(ch)
	s.mu.Unlock()
	if err != nil {
		s.log.Warn("closing an idle stream", "stream", name, "err", err)
	} else {
		s.log.Debug("idle stream closed", "stream", name, "epoch", st.meta.Epoch)
	}
	return true
}

// quiet says whether everything the stream holds is committed, so that
// closing it loses nothing a client is waiting for.
func (st *stream) quiet() bool {
	if st.leader == nil {
		return true
	}
	return st.leader.Err() == nil && st.leader.Committed() >= st.ls.Committed()
}

// hold counts a user of the stream (a call, the scrubber, metrics) until
// release; acquire also marks it used now.
func (st *stream) hold() {
	st.refs.Add(1)
	st.users.Add(1)
}

// unhold ends a hold taken by background work (the scrubber, retention,
// metrics): unlike release it does not mark the stream used, so work
// the node does by itself never keeps an idle stream open.
func (st *stream) unhold() {
	st.users.Add(-1)
	st.refs.Done()
}

func (st *stream) lastUsed() time.Time { return time.Unix(0, st.used.Load()) }

func (st *stream) touch() { st.used.Store(time.Now().UnixNano()) }
