package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/catalog"
	pb "github.com/rpstream/rpstream/catalog/catalogpb"
)

// Retention and trim.
//
// A stream's retention policy and the head it was trimmed to are the
// catalog's (a node alone keeps its streams' policies in meta.json). Its
// leader enforces them: every RetentionEvery it works out the head the
// policy allows (at most MaxEntries of the newest entries, about
// MaxBytes of the newest regions, the entries younger than MaxAge by
// their append times: firstYoungerThan), never past the committed end nor a
// holding consumer's acknowledged position, and rounded down to a region
// boundary (only whole regions are freed). Then, in this order:
//
//  1. it records that head in the catalog (TrimStream), which refuses a
//     head past a holding consumer's acknowledged position as the
//     catalog sees it, whatever this node's view;
//  2. it trims its own stream up to the catalog's head (local.Trim: the
//     head durably in the superblock, then the regions below it freed,
//     their storage given back);
//  3. its replicate.Leader brings every copy to the new head (each
//     copy's superblock first, then its freed slots zeroed and given
//     back; replicate/trim.go).
//
// A crash at any point leaves every copy, the leader's included, opening
// at a head no later than the catalog's: the catalog's head moves first,
// and each copy's own head only ever moves to a region boundary at or
// before it. A new leader applies the catalog's head to its stream once
// it opens it. TrimStream (streamcli trim) takes the same path with the
// position asked for.

// Retention defaults.
const (
	defaultRetentionEvery = time.Second
	defaultAckEvery       = 200 * time.Millisecond
)

// retentionMeta is a stream's policy in meta.json, for a node without a
// catalog.
type retentionMeta struct {
	MaxBytes   uint64 `json:"max_bytes,omitempty"`
	MaxEntries uint64 `json:"max_entries,omitempty"`
	MaxAgeNs   int64  `json:"max_age_ns,omitempty"`
}

func (r *retentionMeta) proto() *pb.Retention {
	if r == nil {
		return nil
	}
	return &pb.Retention{MaxBytes: r.MaxBytes, MaxEntries: r.MaxEntries, MaxAgeNs: r.MaxAgeNs}
}

// checkRetention validates a policy from a client and returns it in the
// catalog's form (nil: no limit).
func checkRetention(r *api.Retention) (*pb.Retention, error) {
	if r == nil || r.MaxBytes == 0 && r.MaxEntries == 0 && r.MaxAgeNs == 0 {
		return nil, nil
	}
	if r.MaxAgeNs < 0 {
		return nil, fmt.Errorf("%w: negative max age", errBadArg)
	}
	return &pb.Retention{MaxBytes: r.MaxBytes, MaxEntries: r.MaxEntries, MaxAgeNs: r.MaxAgeNs}, nil
}

func apiRetention(r *pb.Retention) *api.Retention {
	if r == nil {
		return nil
	}
	return &api.Retention{MaxBytes: r.MaxBytes, MaxEntries: r.MaxEntries, MaxAgeNs: r.MaxAgeNs}
}

// retentionStatus maps the catalog's retention and consumer errors, then
// the rest as statusOf does.
func retentionStatus(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, catalog.ErrHeld):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, catalog.ErrNoConsumer):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, catalog.ErrConsumerExists):
		return status.Error(codes.AlreadyExists, err.Error())
	}
	return statusOf(err)
}

func (s *Server) SetRetention(ctx context.Context, req *api.SetRetentionRequest) (*api.SetRetentionResponse, error) {
	if err := s.enter(); err != nil {
		return nil, statusOf(err)
	}
	defer s.leave()
	if err := validName(req.Stream); err != nil {
		return nil, statusOf(err)
	}
	pol, err := checkRetention(req.Retention)
	if err != nil {
		return nil, statusOf(err)
	}
	if s.cfg.Catalog != nil {
		rec, err := s.cfg.Catalog.SetRetention(ctx, req.Stream, 0, pol)
		if err != nil {
			return nil, retentionStatus(err)
		}
		s.log.Info("retention set", "stream", req.Stream, "policy", pol)
		s.kickRetention()
		return &api.SetRetentionResponse{Retention: apiRetention(rec.Retention)}, nil
	}
	st, err := s.acquire(req.Stream)
	if err != nil {
		return nil, statusOf(err)
	}
	defer st.release()
	m := st.meta
	if pol != nil {
		m.Retention = &retentionMeta{MaxBytes: pol.MaxBytes, MaxEntries: pol.MaxEntries, MaxAgeNs: pol.MaxAgeNs}
	} else {
		m.Retention = nil
	}
	if err := s.store.writeMeta(req.Stream, m); err != nil {
		return nil, statusOf(err)
	}
	st.policy.Store(pol)
	s.kickRetention()
	return &api.SetRetentionResponse{Retention: apiRetention(pol)}, nil
}

func (s *Server) TrimStream(ctx context.Context, req *api.TrimStreamRequest) (*api.TrimStreamResponse, error) {
	if err := s.enter(); err != nil {
		return nil, statusOf(err)
	}
	defer s.leave()
	st, err := s.acquire(req.Stream)
	if err != nil {
		return nil, s.route(ctx, req.Stream, err)
	}
	defer st.release()
	if c := st.committed(); req.Before > c {
		return nil, status.Errorf(codes.FailedPrecondition, "trim of %s before %d: the stream's committed end is %d", req.Stream, req.Before, c)
	}
	trimHead := req.Before
	if s.cfg.Catalog != nil {
		rec, err := s.cfg.Catalog.TrimStream(ctx, req.Stream, st.meta.StreamID, req.Before)
		if err != nil {
			return nil, retentionStatus(err)
		}
		trimHead = rec.TrimHead
	}
	head, err := s.applyTrim(ctx, st, trimHead)
	if err != nil {
		return nil, statusOf(err)
	}
	s.log.Info("stream trimmed", "stream", req.Stream, "before", req.Before, "head", head)
	return &api.TrimStreamResponse{TrimHead: max(trimHead, head), Head: head}, nil
}

// applyTrim trims st's regions wholly before head, on every copy, and
// returns the stream's head.
func (s *Server) applyTrim(ctx context.Context, st *stream, head uint64) (uint64, error) {
	if head <= st.ls.Head() {
		return st.ls.Head(), nil
	}
	if st.leader != nil {
		return st.leader.Trim(ctx, head)
	}
	return st.ls.Trim(min(head, st.ls.Persisted()))
}

// retentionLoop enforces every led stream's policy and trim head every
// RetentionEvery (or at once when kicked).
func (s *Server) retentionLoop() {
	defer s.leave()
	t := time.NewTicker(s.cfg.RetentionEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stopCtx.Done():
			return
		case <-t.C:
		case <-s.ret.kick:
		}
		s.mu.Lock()
		var sts []*stream
		for _, st := range s.streams {
			if !st.gone {
				st.hold()
				sts = append(sts, st)
			}
		}
		s.mu.Unlock()
		for _, st := range sts {
			if s.stopCtx.Err() == nil {
				if err := s.enforce(s.stopCtx, st); err != nil && !errors.Is(err, catalog.ErrHeld) {
					s.log.Warn("retention: cannot trim", "stream", st.name, "err", err)
				}
			}
			st.unhold()
		}
	}
}

// kickRetention runs the retention loop's next round now.
func (s *Server) kickRetention() {
	select {
	case s.ret.kick <- struct{}{}:
	default:
	}
}

// enforce applies st's policy and the catalog's trim head (see the
// comment at the top of the file).
func (s *Server) enforce(ctx context.Context, st *stream) error {
	var rec *pb.Stream
	pol := st.policy.Load()
	if s.cfg.Catalog != nil {
		var ok bool
		if rec, ok = s.cfg.Catalog.Stream(st.name); !ok || !catalog.Live(rec.State) || rec.Leader != s.cfg.Name || rec.Id != st.meta.StreamID {
			return nil
		}
		pol = rec.Retention
	}
	committed := st.committed()
	want := policyHead(st, pol, committed)
	if rec != nil {
		if hold, _, ok := catalog.HoldOf(rec); ok {
			want = min(want, hold)
		}
	}
	// Only whole regions go: ask for the start of the newest region
	// that want passes, so that the catalog's head is where the copies'
	// heads will be.
	want = regionFloor(st, min(want, committed))
	trimHead := want
	if rec != nil {
		trimHead = rec.TrimHead
		if want > rec.TrimHead {
			tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			r, err := s.cfg.Catalog.TrimStream(tctx, st.name, rec.Id, want)
			cancel()
			if err != nil {
				return err
			}
			trimHead = r.TrimHead
		}
	}
	if trimHead <= st.ls.Head() {
		return nil
	}
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	head, err := s.applyTrim(tctx, st, trimHead)
	if err == nil {
		s.log.Debug("retention trimmed", "stream", st.name, "head", head)
	}
	return err
}

// policyHead is the head pol allows for a stream committed up to
// committed (0: none).
func policyHead(st *stream, pol *pb.Retention, committed uint64) uint64 {
	if pol == nil {
		return 0
	}
	var head uint64
	if n := pol.MaxEntries; n > 0 && committed > n {
		head = committed - n
	}
	if b := pol.MaxBytes; b > 0 {
		regions := st.ls.Regions()
		var kept uint64
		for k := len(regions) - 1; k > 0; k-- {
			kept += uint64(regions[k].Used)
			if kept+uint64(regions[k-1].Used) > b {
				head = max(head, regions[k].First)
				break
			}
		}
	}
	if age := pol.MaxAgeNs; age > 0 {
		if h, ok := firstYoungerThan(st, time.Duration(age)); ok {
			head = max(head, h)
		}
	}
	return head
}

// firstYoungerThan is max-age retention's head: the position of the
// first committed entry of st appended less than age ago by its append
// time (binary search over the regions, as FindPosition). A stream made
// before entries carried times has none (ok false).
func firstYoungerThan(st *stream, age time.Duration) (pos uint64, ok bool) {
	if !st.meta.Envelope {
		return 0, false
	}
	now := time.Now
	if st.clock != nil {
		now = st.clock
	}
	pos, _, err := findSince(st.ls, st.committed(), now().Add(-age).UnixNano())
	if err != nil {
		return 0, false
	}
	return pos, true
}

// regionFloor is the first index of the newest region of st that starts
// at or before pos (past the head): the head a trim before pos gives.
func regionFloor(st *stream, pos uint64) uint64 {
	head := st.ls.Head()
	for _, ri := range st.ls.Regions() {
		if ri.First > pos {
			break
		}
		head = max(head, ri.First)
	}
	return head
}

// retentionState is the server's part of retention and consumers.
type retentionState struct {
	kick chan struct{}
	acks ackBuffer
}

// ackBuffer gathers consumers' acknowledgements between commits.
type ackBuffer struct {
	mu      sync.Mutex
	pending map[string]map[string]uint64 // stream -> consumer -> highest position
	flushMu sync.Mutex                   // one commit at a time
}

func (b *ackBuffer) add(stream, consumer string, pos uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pending == nil {
		b.pending = map[string]map[string]uint64{}
	}
	m := b.pending[stream]
	if m == nil {
		m = map[string]uint64{}
		b.pending[stream] = m
	}
	m[consumer] = max(m[consumer], pos)
}

// pendingOf is consumer's highest acknowledged position not committed
// yet (0 if none).
func (b *ackBuffer) pendingOf(stream, consumer string) uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pending[stream][consumer]
}

// take empties the buffer.
func (b *ackBuffer) take() map[string]map[string]uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.pending
	b.pending = nil
	return p
}

// ackLoop commits the gathered acknowledgements every AckEvery, one
// catalog command per stream.
func (s *Server) ackLoop() {
	defer s.leave()
	t := time.NewTicker(s.cfg.AckEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stopCtx.Done():
			// A last commit, bounded: what is lost is delivered again.
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			s.commitAcks(ctx)
			cancel()
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(s.stopCtx, 10*time.Second)
		s.commitAcks(ctx)
		cancel()
	}
}

// commitAcks commits what the buffer holds. A commit that fails is put
// back (positions only rise, so a later one merges with it).
func (s *Server) commitAcks(ctx context.Context) {
	b := &s.ret.acks
	b.flushMu.Lock()
	defer b.flushMu.Unlock()
	for stream, m := range b.take() {
		var acks []*pb.ConsumerAck
		for k, pos := range m {
			acks = append(acks, &pb.ConsumerAck{Consumer: k, Acked: pos})
		}
		if _, err := s.cfg.Catalog.AckConsumers(ctx, stream, 0, acks); err != nil {
			if errors.Is(err, catalog.ErrNoStream) {
				continue
			}
			s.log.Warn("cannot commit consumers' acknowledgements", "stream", stream, "err", err)
			for k, pos := range m {
				b.add(stream, k, pos)
			}
		}
	}
}

// consumersOf is rec's consumers as clients see them, lag counted from
// committed, acknowledgements this node has not committed yet included.
func (s *Server) consumersOf(rec *pb.Stream, committed uint64) []*api.Consumer {
	var out []*api.Consumer
	for _, k := range rec.Consumers {
		acked := max(k.Acked, s.ret.acks.pendingOf(rec.Name, k.Name))
		c := &api.Consumer{Name: k.Name, Acked: acked, Hold: k.Hold, AckedTime: k.AckedTime}
		if committed > acked {
			c.Lag = committed - acked
		}
		out = append(out, c)
	}
	return out
}

// consumerCall checks a consumer call's stream name and refuses it on a
// node without a catalog.
func (s *Server) consumerCall(stream string) error {
	if err := validName(stream); err != nil {
		return statusOf(err)
	}
	if s.cfg.Catalog == nil {
		return status.Error(codes.FailedPrecondition, "named consumers are kept in the catalog: this node runs without one (start it in a cluster)")
	}
	return nil
}

func (s *Server) AddConsumer(ctx context.Context, req *api.AddConsumerRequest) (*api.AddConsumerResponse, error) {
	if err := s.enter(); err != nil {
		return nil, statusOf(err)
	}
	defer s.leave()
	if err := s.consumerCall(req.Stream); err != nil {
		return nil, err
	}
	rec, err := s.cfg.Catalog.AddConsumer(ctx, req.Stream, req.Consumer, req.Start, req.Hold)
	if err != nil {
		return nil, retentionStatus(err)
	}
	k, _ := catalog.Consumer(rec, req.Consumer)
	s.log.Info("consumer added", "stream", req.Stream, "consumer", req.Consumer, "start", k.GetAcked(), "hold", req.Hold)
	return &api.AddConsumerResponse{Consumer: &api.Consumer{Name: k.GetName(), Acked: k.GetAcked(), Hold: k.GetHold()}}, nil
}

func (s *Server) RemoveConsumer(ctx context.Context, req *api.RemoveConsumerRequest) (*api.RemoveConsumerResponse, error) {
	if err := s.enter(); err != nil {
		return nil, statusOf(err)
	}
	defer s.leave()
	if err := s.consumerCall(req.Stream); err != nil {
		return nil, err
	}
	if _, err := s.cfg.Catalog.RemoveConsumer(ctx, req.Stream, req.Consumer); err != nil {
		return nil, retentionStatus(err)
	}
	s.log.Info("consumer removed", "stream", req.Stream, "consumer", req.Consumer)
	s.kickRetention()
	return &api.RemoveConsumerResponse{}, nil
}

func (s *Server) ListConsumers(ctx context.Context, req *api.ListConsumersRequest) (*api.ListConsumersResponse, error) {
	if err := s.enter(); err != nil {
		return nil, statusOf(err)
	}
	defer s.leave()
	if err := s.consumerCall(req.Stream); err != nil {
		return nil, err
	}
	st, err := s.acquire(req.Stream)
	if err != nil {
		return nil, s.route(ctx, req.Stream, err)
	}
	defer st.release()
	rec, ok := s.cfg.Catalog.Stream(req.Stream)
	if !ok {
		return nil, statusOf(fmt.Errorf("%w: %s", ErrNoStream, req.Stream))
	}
	c := st.committed()
	return &api.ListConsumersResponse{Consumers: s.consumersOf(rec, c), Committed: c}, nil
}

func (s *Server) AckConsumer(ctx context.Context, req *api.AckConsumerRequest) (*api.AckConsumerResponse, error) {
	if err := s.enter(); err != nil {
		return nil, statusOf(err)
	}
	defer s.leave()
	if err := s.consumerCall(req.Stream); err != nil {
		return nil, err
	}
	rec, ok := s.cfg.Catalog.Stream(req.Stream)
	if !ok || !catalog.Live(rec.State) {
		if err := s.cfg.Catalog.Barrier(ctx); err != nil {
			return nil, statusOf(err)
		}
		if rec, ok = s.cfg.Catalog.Stream(req.Stream); !ok || !catalog.Live(rec.State) {
			return nil, statusOf(fmt.Errorf("%w: %s", ErrNoStream, req.Stream))
		}
	}
	k, ok := catalog.Consumer(rec, req.Consumer)
	if !ok {
		return nil, retentionStatus(fmt.Errorf("%w: %s of %s", catalog.ErrNoConsumer, req.Consumer, req.Stream))
	}
	if !req.Sync {
		s.ret.acks.add(req.Stream, req.Consumer, req.Position)
		return &api.AckConsumerResponse{Acked: max(k.Acked, req.Position)}, nil
	}
	acks := []*pb.ConsumerAck{{Consumer: req.Consumer, Acked: max(req.Position, s.ret.acks.pendingOf(req.Stream, req.Consumer))}}
	rec, err := s.cfg.Catalog.AckConsumers(ctx, req.Stream, rec.Id, acks)
	if err != nil {
		return nil, retentionStatus(err)
	}
	k, _ = catalog.Consumer(rec, req.Consumer)
	return &api.AckConsumerResponse{Acked: k.GetAcked()}, nil
}

// addRetentionStatus adds st's policy, trim head and consumers to r.
func (s *Server) addRetentionStatus(r *api.StreamStatusResponse, st *stream) {
	if s.cfg.Catalog == nil {
		r.Retention = apiRetention(st.policy.Load())
		return
	}
	rec, ok := s.cfg.Catalog.Stream(st.name)
	if !ok {
		return
	}
	r.Retention = apiRetention(rec.Retention)
	r.TrimHead = rec.TrimHead
	r.Consumers = s.consumersOf(rec, r.Committed)
}
