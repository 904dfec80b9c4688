package node

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/rpstream/rpstream/catalog"
	pb "github.com/rpstream/rpstream/catalog/catalogpb"
	"github.com/rpstream/rpstream/local"
	"github.com/rpstream/rpstream/rdma"
	"github.com/rpstream/rpstream/remote"
	"github.com/rpstream/rpstream/remote/remotepb"
	"github.com/rpstream/rpstream/replicate/quorum"
)

// Takeover: one code path for a node that becomes a stream's leader (the
// controller elected it when the old leader's lease expired) and for a
// leader opening its stream again (a restart). Before it serves, under
// the epoch the catalog granted it:
//
//  1. Its copy becomes the stream's files if it held the stream as a copy
//     (promote: the copy's file is linked under streams/, then the copy
//     is removed; a crash in between leaves it in one place or both).
//  2. It fences the other copies with its epoch (each holder admits the
//     writer the catalog names under that epoch only, and revokes the old
//     leader's access: remote's permission switch) and reads their
//     durable tails without changing them (TailRequest.probe), until the
//     copies it reached, its own counted, meet every acknowledgement
//     quorum of the stream's policy: then one of them holds every
//     acknowledged entry.
//  3. It chooses the log that holds every acknowledged entry: the one
//     whose last region has the highest epoch, then the furthest
//     position (regions are started under one epoch each, so equal
//     epochs mean the same writer's prefix); never by length alone, and
//     never one ending before the commit floor the catalog recorded. If
//     that log is another copy's, it hands the stream to that copy's
//     holder (a new election, HandOff) instead of fetching the bytes.
//  4. It opens its log under the new epoch in a new region (so that no
//     region mixes epochs) and appends an epoch marker, the first entry
//     of the epoch. The replicate.Leader then cuts each copy back to the
//     longest prefix it shares with this log (TailRequest.runs) and
//     rewrites the rest, and commits nothing past the catalog's floor
//     until the marker is on the policy's copies (Config.EpochStart): the
//     entries an earlier leader left are committed with it, never by
//     being counted alone. Once the marker is committed the floor is
//     raised in the catalog (EpochStarted).

// errHandedOff says the stream was passed to another copy's holder.
var errHandedOff = errors.New("node: stream handed to the holder of a longer log")

// copyTail is one copy's durable end as a takeover sees it.
type copyTail struct {
	node  string
	epoch uint64 // of the copy's last region
	seq   uint64
	off   uint64
	index uint64
	// committed is what the copy's commit words say was committed.
	committed uint64
}

// better says whether a's log supersedes b's: a later epoch in its last
// region, then a later position.
func (a copyTail) better(b copyTail) bool {
	if a.epoch != b.epoch {
		return a.epoch > b.epoch
	}
	if a.seq != b.seq {
		return a.seq > b.seq
	}
	return a.off > b.off
}

// fenceNeed is how many copies (the leader's counted) a takeover must
// reach so that, whichever copies acknowledged an entry under the policy,
// one of those reached holds it: n-q+1 of n voters for a policy needing
// q.
func fenceNeed(p quorum.Policy, n int) int {
	q := 1
	switch p {
	case quorum.Majority:
		q = n/2 + 1
	case quorum.All:
		q = n
	}
	return n - q + 1
}

// chooseLog is a takeover's choice (see the comment at the top): own is
// this node's log, tails the other voters' copies reached, floor the
// catalog's commit floor, need how many copies (this node's counted) must
// have answered. It returns the log that holds every acknowledged entry
// and the index below which entries are known committed (the catalog's
// floor, or what any copy's commit words say).
func chooseLog(own copyTail, tails []copyTail, floor uint64, need int) (copyTail, uint64, error) {
	if 1+len(tails) < need {
		return copyTail{}, 0, fmt.Errorf("%d copies answered, %d needed to know every acknowledged entry", 1+len(tails), need)
	}
	best := own
	known := max(floor, own.committed)
	for _, t := range tails {
		if t.better(best) {
			best = t
		}
		known = max(known, t.committed)
	}
	if best.index < known {
		return copyTail{}, 0, fmt.Errorf("the longest log reached (%s's) ends at entry %d, before entry %d, known committed (catalog floor %d)", best.node, best.index, known, floor)
	}
	return best, known, nil
}

// takeoverTimeout bounds the fencing and survey of a takeover.
const takeoverTimeout = 5 * time.Second

// promote makes this node's copy of rec the stream's files here: the copy
// is closed (its Target dropped), its file linked under streams/NAME with
// a meta.json, and the copy removed. It is a no-op if streams/NAME is
// already of rec's id (a restart, or a promotion that crashed after the
// link: the leftover copy is removed).
func (s *Server) promote(rec *pb.Stream) error {
	// The copy's Target is closed first, without moveMu: the Hub calls
	// openCopy, which may demote (moveMu), with its own lock held, so
	// moveMu is never held while waiting for the Hub. No leader opens
	// the copy again meanwhile: the catalog names this node the leader.
	if s.hub != nil {
		if err := s.hub.Drop(rec.Name); err != nil && !errors.Is(err, remote.ErrNoStream) {
			return err
		}
	}
	s.moveMu.Lock()
	defer s.moveMu.Unlock()
	if m, err := s.store.readMeta(rec.Name); err == nil && m.StreamID == rec.Id {
		if id, err := s.replicas.streamID(rec.Name); err == nil && id == rec.Id {
			if err := s.replicas.remove(rec.Name); err != nil && !errors.Is(err, ErrNoStream) {
				return err
			}
		}
		return nil
	} else if err == nil {
		// Files of another stream of the name (deleted while this node
		// was away).
		if err := s.store.remove(rec.Name); err != nil && !errors.Is(err, ErrNoStream) {
			return err
		}
	}
	id, err := s.replicas.streamID(rec.Name)
	if err != nil || id != rec.Id {
		return fmt.Errorf("%w: %s (id %d): this node holds neither its files nor a copy", errLost, rec.Name, rec.Id)
	}
	path, _, err := s.replicas.copyFile(rec.Name)
	if err != nil {
		return err
	}
	m := meta{Replicas: rec.Replicas, Acks: catalog.AcksName(rec.Acks), RegionSize: int(rec.RegionSize),
		Created: time.Unix(0, rec.Created).UTC(), Envelope: true, StreamID: rec.Id}
	if err := s.store.adopt(rec.Name, m, path); err != nil {
		return err
	}
	if err := s.replicas.remove(rec.Name); err != nil && !errors.Is(err, ErrNoStream) {
		return err
	}
	s.log.Info("copy promoted: this node leads the stream now", "stream", rec.Name, "id", rec.Id, "epoch", rec.Epoch)
	return nil
}

// demote turns this node's files of stream rec, which another node leads
// now, into a copy for that leader: the stream is closed if it is open
// (its calls end with a leader hint), its file linked under replicas/NAME
// with a copy's meta, and the stream's directory removed.
func (s *Server) demote(rec *pb.Stream) error {
	s.moveMu.Lock()
	defer s.moveMu.Unlock()
	m, err := s.store.readMeta(rec.Name)
	if err != nil || m.StreamID != rec.Id {
		return nil
	}
	s.closeLed(rec.Name, fmt.Errorf("%w: %s is led by %s now", errNotHere, rec.Name, rec.Leader))
	if err := s.replicas.adopt(rec.Name, replicaMeta{Leader: rec.Leader, RegionSize: m.RegionSize, Epoch: m.Epoch, StreamID: rec.Id},
		filepath.Join(s.store.path(rec.Name), streamFile)); err != nil {
		return err
	}
	if err := s.store.remove(rec.Name); err != nil && !errors.Is(err, ErrNoStream) {
		return err
	}
	s.log.Info("stream demoted: this node holds a copy for its new leader", "stream", rec.Name, "leader", rec.Leader, "epoch", rec.Epoch)
	return nil
}

// closeLed closes stream name if it is open here, ending its calls with
// cause, and forgets it (a later call opens it again, or routes).
func (s *Server) closeLed(name string, cause error) {
	s.mu.Lock()
	st := s.streams[name]
	if st == nil || st.gone {
		s.mu.Unlock()
		return
	}
	st.gone = true
	s.mu.Unlock()
	st.cancel(cause)
	st.refs.Wait()
	if err := s.closeOpen(st); err != nil {
		s.log.Warn("closing a stream led elsewhere now", "stream", name, "err", err)
	}
	s.mu.Lock()
	if s.streams[name] == st {
		delete(s.streams, name)
	}
	s.mu.Unlock()
}

// ownTail reads this node's log of stream name (its stream file) as
// recovery would find it.
func (s *Server) ownTail(name string) (copyTail, error) {
	f, err := os.OpenFile(filepath.Join(s.store.path(name), streamFile), os.O_RDWR, 0)
	if err != nil {
		return copyTail{}, fmt.Errorf("node: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return copyTail{}, fmt.Errorf("node: %w", err)
	}
	if fi.Size() == 0 {
		return copyTail{node: s.cfg.Name}, nil
	}
	b, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return copyTail{}, fmt.Errorf("node: mapping %s: %w", f.Name(), err)
	}
	defer unix.Munmap(b)
	sc, err := local.Scan(b)
	if err != nil {
		off, sealed := local.SealedTail(b)
		if !sealed {
			return copyTail{}, err
		}
		// The last region was sealed, its successor's copy lost (a copy
		// promoted): the seal word is advisory.
		binary.LittleEndian.PutUint64(b[off+local.RegionSealOffset:], 0)
		if err := unix.Msync(b, unix.MS_SYNC); err != nil {
			return copyTail{}, fmt.Errorf("node: %w", err)
		}
		if sc, err = local.Scan(b); err != nil {
			return copyTail{}, err
		}
	}
	t := copyTail{node: s.cfg.Name, index: sc.Next, committed: sc.Committed()}
	if n := len(sc.Regions); n > 0 {
		r := sc.Regions[n-1]
		t.epoch, t.seq, t.off = r.Epoch, r.Seq, uint64(r.End)
	}
	return t, nil
}

// survey fences the other copies of rec with epoch and reads their
// durable tails. It returns the tails of the voters' copies it reached
// (a backup target's copy is fenced too, but does not vote: its tail is
// not a candidate log).
func (s *Server) survey(ctx context.Context, rec *pb.Stream, epoch uint64, need int) ([]copyTail, error) {
	if s.cfg.Provider == nil {
		return nil, fmt.Errorf("node: stream %s has copies on other members but this node has no rdma provider (Config.PeerAddr)", rec.Name)
	}
	peer, err := s.cfg.Provider.NewPeer("", s.cfg.RDMA)
	if err != nil {
		return nil, err
	}
	defer peer.Close()
	type answer struct {
		t      copyTail
		backup bool
		err    error
	}
	ch := make(chan answer, len(rec.Copies))
	n := 0
	for _, cp := range rec.Copies {
		if cp.Node == s.cfg.Name {
			continue
		}
		n++
		go func() {
			t, err := s.probeCopy(ctx, peer, rec, cp.Node, epoch)
			ch <- answer{t, cp.Backup, err}
		}()
	}
	// Every answer is awaited, but once enough voters answered (need,
	// this node's counted) the rest get surveyGrace more: a hung copy
	// (a paused process answers no dial) does not hold the takeover up
	// until the timeout, and more answers only refine the choice.
	var tails []copyTail
	var grace <-chan time.Time
	for range n {
		var a answer
		select {
		case a = <-ch:
		case <-grace:
			s.log.Info("takeover: copies still unanswered after the grace; going on", "stream", rec.Name, "answered", 1+len(tails))
			return tails, nil
		}
		switch {
		case a.err != nil:
			s.log.Info("takeover: a copy did not answer", "stream", rec.Name, "copy", a.t.node, "err", a.err)
		case !a.backup:
			tails = append(tails, a.t)
		}
		if grace == nil && 1+len(tails) >= need {
			grace = time.After(surveyGrace)
		}
	}
	return tails, nil
}

// surveyGrace is how long a takeover waits for more copies once enough
// answered.
const surveyGrace = 50 * time.Millisecond

// probeCopy fences node's copy of rec with epoch and reads its tail. A
// holder without the copy (never written, or removed) answers an empty
// one: it holds no acknowledged entry.
func (s *Server) probeCopy(ctx context.Context, peer rdma.Peer, rec *pb.Stream, node string, epoch uint64) (copyTail, error) {
	t := copyTail{node: node}
	addr := s.peerAddrOf(node, meta{})
	if addr == "" {
		return t, fmt.Errorf("no peer address known for %s", node)
	}
	conn, err := peer.Dial(ctx, addr)
	if err != nil {
		return t, err
	}
	defer conn.Close()
	c, err := remote.NewClient(peer, conn)
	if err != nil {
		return t, err
	}
	defer c.Close()
	if _, err := c.Open(ctx, &remotepb.OpenRequest{Stream: rec.Name, RegionSize: rec.RegionSize, StreamId: rec.Id, Leader: s.cfg.Name}); err != nil {
		if errors.Is(err, remote.ErrNoStream) {
			return t, nil
		}
		return t, err
	}
	if err := c.Grant(ctx, epoch, s.cfg.Name); err != nil {
		return t, err
	}
	r, err := c.Tail(ctx, &remotepb.TailRequest{Epoch: epoch, Probe: true})
	if err != nil {
		return t, err
	}
	t.epoch, t.seq, t.off, t.index, t.committed = r.Epoch, r.Seq, r.Off, r.Index, r.Committed
	return t, nil
}

// writeMetaEpoch records the epoch this node opens stream name under,
// durably, before anything is written under it.
func (st *store) writeMetaEpoch(name string, epoch uint64) (meta, error) {
	m, err := st.readMeta(name)
	if err != nil {
		return m, err
	}
	m.Epoch = epoch
	return m, st.writeMeta(name, m)
}

// adopt makes stream name here from data, an existing stream file (a
// copy's), with m as its meta.json (adoptInto).
func (st *store) adopt(name string, m meta, data string) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	if err := adoptInto(st.dir, name, data, b); err != nil {
		return err
	}
	st.mu.Lock()
	st.ids[name] = m.StreamID
	st.mu.Unlock()
	return nil
}

// adopt makes the copy of stream name here from data, an existing stream
// file (the stream this node led), with m as its meta (adoptInto).
func (r *replicas) adopt(name string, m replicaMeta, data string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := r.readMetaLocked(name); err == nil {
		if err := r.removeLocked(name); err != nil {
			return err
		}
	}
	b, _ := json.Marshal(m)
	if err := adoptInto(r.dir, name, data, b); err != nil {
		return err
	}
	r.metas[name] = m
	return nil
}

// adoptInto makes dir/name from data, an existing stream file, and
// metaJSON: the file is hard-linked into a hidden directory with the meta
// (both durable), which is then renamed to name, so the file is always
// in one place at least.
func adoptInto(dir, name, data string, metaJSON []byte) error {
	tmp := filepath.Join(dir, hiddenName(name, "new"))
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		}
	}()
	if err := os.Link(data, filepath.Join(tmp, streamFile)); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	if err := writeFileSync(filepath.Join(tmp, metaFile), append(metaJSON, '\n')); err != nil {
		return err
	}
	if err := syncDir(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	ok = true
	return syncDir(dir)
}

// openEpoch starts this leader's epoch in ls: a new region under epoch
// (no region mixes epochs), then the epoch marker, durably. It returns
// the marker's index.
func (s *Server) openEpoch(ls *local.Stream, epoch uint64) (uint64, error) {
	ctx, cancel := context.WithTimeout(s.stopCtx, takeoverTimeout)
	defer cancel()
	if err := ls.StartEpoch(ctx, epoch); err != nil {
		return 0, fmt.Errorf("node: starting epoch %d: %w", epoch, err)
	}
	i, err := ls.Append(marker(epoch))
	if err != nil {
		return 0, fmt.Errorf("node: the marker of epoch %d: %w", epoch, err)
	}
	return i, nil
}

// epochStartWait bounds how long a new leader waits for its epoch marker
// to be committed before it stops trying to record the commit floor (the
// floor is only a lower bound: a later takeover is safe without it).
const epochStartWait = time.Minute

// recordEpochStart raises the catalog's commit floor of rec once the
// epoch marker at index start is committed.
func (s *Server) recordEpochStart(rec *pb.Stream, epoch uint64, l interface {
	WaitCommitted(context.Context, uint64) error
}, start uint64) {
	ctx, cancel := context.WithTimeout(s.stopCtx, epochStartWait)
	defer cancel()
	if err := l.WaitCommitted(ctx, start); err != nil {
		return
	}
	s.log.Info("takeover: the epoch's first entry is committed", "stream", rec.Name, "epoch", epoch, "floor", start+1)
	if err := s.cfg.Catalog.EpochStarted(ctx, rec.Name, rec.Id, epoch, start+1); err != nil {
		s.log.Debug("cannot record the commit floor", "stream", rec.Name, "err", err)
	}
}

// takeOver opens stream name, which the catalog says this node leads, so
// that it serves without waiting for a client's call.
func (s *Server) takeOver(name string) {
	if err := s.enter(); err != nil {
		return
	}
	defer s.leave()
	// A background open never pushes out a stream in use (idle.go).
	st, err := s.acquireOpen(name, false)
	if err != nil {
		if !errors.Is(err, errNotHere) {
			s.log.Info("cannot open a stream this node leads yet", "stream", name, "err", err)
		}
		return
	}
	st.release()
}
