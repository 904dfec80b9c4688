package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/catalog"
	pb "github.com/rpstream/rpstream/catalog/catalogpb"
	"github.com/rpstream/rpstream/catalog/controller"
)

// Restore, the operator's command (any node serves it): the node surveys
// the stream's copies (every node the catalog places one on, the leader,
// and the node named as the source) with ProbeCopy, chooses the source,
// asks the controller to restore the stream from it (catalog
// RestoreStream: new placement, new leader, next epoch), and waits until
// the new leader serves.
//
// The source is the copy with the longest log among those that answer,
// by a takeover's rule (copyTail.better: the epoch of the last region,
// then the position), so that no acknowledged entry a reachable copy
// holds is lost; on a tie a stream node's copy is preferred (it can lead
// without a transfer). A source named by the operator that holds less
// than another reachable copy is refused unless forced.

// probeTimeout bounds one ProbeCopy.
const probeTimeout = 5 * time.Second

// restoreWait bounds how long RestoreStream waits for a new leader to
// serve (its fetch included).
const restoreWait = 2 * time.Minute

// RestoreStream restores one stream, or every stream a node leads.
func (r *restoreService) RestoreStream(ctx context.Context, req *api.RestoreStreamRequest) (*api.RestoreStreamResponse, error) {
	s := r.s
	if err := s.enter(); err != nil {
		return nil, statusOf(err)
	}
	defer s.leave()
	ctl := s.cfg.Catalog
	if ctl == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "node %s runs alone, without a catalog: nothing to restore", s.cfg.Name)
	}
	if (req.Stream == "") == (req.Node == "") {
		return nil, status.Error(codes.InvalidArgument, "restore: name a stream, or a node whose streams to restore (one of the two)")
	}
	for _, n := range []string{req.Stream, req.Node, req.From, req.Leader} {
		if n != "" {
			if err := validName(n); err != nil {
				return nil, statusOf(err)
			}
		}
	}
	bctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	err := ctl.Barrier(bctx)
	cancel()
	if err != nil {
		return nil, statusOf(err)
	}
	var recs []*pb.Stream
	if req.Stream != "" {
		rec, ok := ctl.Stream(req.Stream)
		if !ok || !catalog.Live(rec.State) {
			return nil, status.Errorf(codes.NotFound, "no stream %s", req.Stream)
		}
		recs = append(recs, rec)
	} else {
		for _, rec := range ctl.Streams() {
			if rec.State == pb.StreamState_STREAM_STATE_ACTIVE && s.lostWith(rec, req.Node) {
				recs = append(recs, rec)
			}
		}
		if len(recs) == 0 {
			return nil, status.Errorf(codes.NotFound, "%s leads no active stream, and no stream that lost its copy on %s lost its leader's too", req.Node, req.Node)
		}
	}
	resp := &api.RestoreStreamResponse{}
	var failed []string
	var first error
	for _, rec := range recs {
		done, err := s.restoreOne(ctx, rec, req)
		if req.Node != "" && errors.Is(err, controller.ErrLeaderLive) {
			resp.Skipped = append(resp.Skipped, fmt.Sprintf("%s: led by %s, which is live", rec.Name, rec.Leader))
			continue
		}
		if err != nil {
			s.log.Warn("restore failed", "stream", rec.Name, "err", err)
			failed = append(failed, fmt.Sprintf("%s: %v", rec.Name, status.Convert(statusOf(err)).Message()))
			if first == nil {
				first = statusOf(err)
			}
			continue
		}
		resp.Streams = append(resp.Streams, done)
	}
	switch {
	case first == nil && len(resp.Streams) == 0:
		return nil, status.Errorf(codes.FailedPrecondition, "no stream of %s needs a restore (%s)", req.Node, strings.Join(resp.Skipped, "; "))
	case first == nil:
		return resp, nil
	case len(recs) == 1:
		return nil, first
	}
	var ok []string
	for _, d := range resp.Streams {
		ok = append(ok, d.Stream)
	}
	return nil, status.Errorf(status.Code(first), "restored %d of %d streams (%s); failed: %s", len(ok), len(recs), strings.Join(ok, ", "), strings.Join(failed, "; "))
}

// lostWith says whether stream rec is one that node lost took with it:
// it leads it and is down (not live in the membership) or lost its data
// (its copy was placed on an incarnation it no longer has), or its copy
// there was lost and so was the leader's (an election may have moved the
// stream to another node that was lost too before the node came back).
func (s *Server) lostWith(rec *pb.Stream, lost string) bool {
	n, ok := s.cfg.Catalog.Node(lost)
	if !ok {
		return rec.Leader == lost
	}
	held, current := catalog.HolderOf(rec, lost, n.Incarnation)
	if rec.Leader == lost {
		_, live := s.memberAddr(lost)
		return !live || !current
	}
	if !held || current {
		return false
	}
	ln, ok := s.cfg.Catalog.Node(rec.Leader)
	return !ok || ln.Incarnation != rec.Copies[0].Incarnation
}

// surveyed is one node's answer to a restore's survey.
type surveyed struct {
	t      copyTail
	inc    uint64
	backup bool
	err    error
	held   bool
}

// restoreOne surveys rec's copies, has the controller restore it from
// the best, and waits until the new leader serves.
func (s *Server) restoreOne(ctx context.Context, rec *pb.Stream, req *api.RestoreStreamRequest) (*api.RestoredStream, error) {
	nodes := []string{rec.Leader}
	for _, cp := range rec.Copies {
		nodes = append(nodes, cp.Node)
	}
	if req.From != "" {
		nodes = append(nodes, req.From)
	}
	slices.Sort(nodes)
	nodes = slices.Compact(nodes)
	answers := map[string]surveyed{}
	ch := make(chan surveyed, len(nodes))
	for _, n := range nodes {
		go func() { ch <- s.probeNode(ctx, n, rec) }()
	}
	for range nodes {
		a := <-ch
		answers[a.t.node] = a
	}
	// The candidates: stream nodes first, so that on a tie a copy that
	// can lead without a transfer wins.
	var cands []surveyed
	var notes []string
	for _, n := range nodes {
		a := answers[n]
		switch {
		case a.err != nil:
			notes = append(notes, fmt.Sprintf("%s: %v", n, a.err))
		case !a.held:
			notes = append(notes, fmt.Sprintf("%s: holds no copy", n))
		default:
			notes = append(notes, fmt.Sprintf("%s: %d entries (epoch %d)", n, a.t.index, a.t.epoch))
			cands = append(cands, a)
		}
	}
	slices.SortStableFunc(cands, func(a, b surveyed) int {
		switch {
		case a.backup == b.backup:
			return 0
		case b.backup:
			return -1
		}
		return 1
	})
	var best *surveyed
	for i := range cands {
		if best == nil || cands[i].t.better(best.t) {
			best = &cands[i]
		}
	}
	if best == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "no reachable node holds a copy of %s (%s)", rec.Name, strings.Join(notes, "; "))
	}
	src := best
	if req.From != "" {
		a := answers[req.From]
		if !a.held {
			return nil, status.Errorf(codes.FailedPrecondition, "%s holds no readable copy of %s (%s)", req.From, rec.Name, strings.Join(notes, "; "))
		}
		if best.t.better(a.t) && !req.Force {
			return nil, status.Errorf(codes.FailedPrecondition, "%s's copy of %s ends at entry %d (epoch %d), %s's holds more (%d entries, epoch %d): restoring from %s would lose entries; use force to restore from it anyway",
				req.From, rec.Name, a.t.index, a.t.epoch, best.t.node, best.t.index, best.t.epoch, req.From)
		}
		src = &a
	}
	s.log.Warn("restore: restoring a stream from a copy", "stream", rec.Name, "source", src.t.node, "entries", src.t.index, "epoch", rec.Epoch, "surveyed", notes)
	got, err := s.cfg.Catalog.RestoreStream(ctx, &pb.RestoreStreamRequest{Name: rec.Name, StreamId: rec.Id, FromEpoch: rec.Epoch,
		Source: src.t.node, SourceIncarnation: src.inc, Leader: req.Leader, Force: req.Force})
	if err != nil {
		return nil, err
	}
	done := &api.RestoredStream{Stream: rec.Name, Source: src.t.node, Entries: src.t.index, SourceEpoch: src.t.epoch,
		Leader: got.Leader, Epoch: got.Epoch, Copies: copyNames(got), Surveyed: notes}
	if err := s.waitRestored(ctx, got); err != nil {
		return nil, err
	}
	s.log.Info("restore: the restored stream serves", "stream", rec.Name, "leader", got.Leader, "epoch", got.Epoch)
	return done, nil
}

// probeNode asks node for its copy of rec (ProbeCopy), this node's own
// files directly.
func (s *Server) probeNode(ctx context.Context, node string, rec *pb.Stream) surveyed {
	a := surveyed{t: copyTail{node: node}}
	var r *api.ProbeCopyResponse
	if node == s.cfg.Name {
		r, a.err = s.probeHeld(rec.Name, rec.Id)
	} else {
		addr, live := s.memberAddr(node)
		if !live {
			a.err = errors.New("not live")
			return a
		}
		ctx, cancel := context.WithTimeout(ctx, probeTimeout)
		defer cancel()
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			a.err = err
			return a
		}
		defer cc.Close()
		r, a.err = api.NewRestoresClient(cc).ProbeCopy(ctx, &api.ProbeCopyRequest{Stream: rec.Name, StreamId: rec.Id})
	}
	if a.err != nil {
		a.err = errors.New(status.Convert(a.err).Message())
		return a
	}
	a.held, a.backup, a.inc = r.Held, r.Backup, r.Incarnation
	a.t.epoch, a.t.seq, a.t.off, a.t.index, a.t.committed = r.Epoch, r.Seq, r.Off, r.Index, r.Committed
	return a
}

// waitRestored waits until the restore of got (the stream as restored)
// is done: its new leader's epoch started, which the catalog records by
// clearing Stream.restoring.
func (s *Server) waitRestored(ctx context.Context, got *pb.Stream) error {
	ctx, cancel := context.WithTimeout(ctx, restoreWait)
	defer cancel()
	for {
		rec, ok := s.cfg.Catalog.Stream(got.Name)
		switch {
		case !ok || rec.Id != got.Id || !catalog.Live(rec.State):
			return status.Errorf(codes.NotFound, "%s was deleted during its restore", got.Name)
		case rec.Restoring == nil || rec.Restoring.Epoch != got.Epoch:
			return nil
		}
		select {
		case <-ctx.Done():
			return status.Errorf(codes.DeadlineExceeded, "%s: the new leader %s has not served under epoch %d yet (it keeps trying: see its log, and streamcli status %s)", got.Name, got.Leader, got.Epoch, got.Name)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
