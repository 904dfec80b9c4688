package node

import (
	"context"
	"fmt"
	"math"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/local"
)

// Read limits.
const (
	defaultReadEntries = 100
	maxReadEntries     = 10000
	// maxReadBytes keeps a ReadResponse or TailResponse under the
	// default 4 MiB receive limit of gRPC clients, except for one entry
	// that is larger by itself.
	maxReadBytes = 3 << 20
)

func (s *Server) CreateStream(ctx context.Context, req *api.CreateStreamRequest) (*api.CreateStreamResponse, error) {
	if err := s.enter(); err != nil {
		return nil, statusOf(err)
	}
	defer s.leave()
	if err := validName(req.Stream); err != nil {
		return nil, statusOf(err)
	}
	m := meta{Replicas: req.Replicas, Acks: ackName(req.Acks), RegionSize: int(req.RegionSize), Epoch: 1, Created: time.Now().UTC(), Envelope: true}
	if m.Replicas == 0 {
		m.Replicas = 1
	}
	if m.Replicas > 15 {
		return nil, statusOf(fmt.Errorf("%w: replicas %d > 15", errBadArg, m.Replicas))
	}
	if _, ok := api.AckPolicy_name[int32(req.Acks)]; !ok {
		return nil, statusOf(fmt.Errorf("%w: acks %d", errBadArg, req.Acks))
	}
	if req.RegionSize == 0 {
		m.RegionSize = s.cfg.RegionSize
	} else if req.RegionSize > local.MaxRegionSize {
		return nil, statusOf(fmt.Errorf("%w: region size %d", errBadArg, req.RegionSize))
	} else if err := (local.Options{RegionSize: m.RegionSize}).Validate(); err != nil {
		return nil, statusOf(fmt.Errorf("%w: %v", errBadArg, err))
	}
	pol, err := checkRetention(req.Retention)
	if err != nil {
		return nil, statusOf(err)
	}
	if pol != nil {
		m.Retention = &retentionMeta{MaxBytes: pol.MaxBytes, MaxEntries: pol.MaxEntries, MaxAgeNs: pol.MaxAgeNs}
	}
	s.mu.Lock()
	if st := s.streams[req.Stream]; st != nil && st.gone {
		s.mu.Unlock()
		return nil, status.Errorf(codes.Unavailable, "stream %s is being deleted", req.Stream)
	}
	s.mu.Unlock()
	if s.cfg.Backup {
		return nil, status.Errorf(codes.FailedPrecondition, "node %s is a backup target, which holds copies only: create streams on a stream node", s.cfg.Name)
	}
	if s.cfg.Catalog != nil {
		return s.createInCatalog(ctx, req, m)
	}
	if err := s.store.create(req.Stream, m); err != nil {
		return nil, statusOf(err)
	}
	s.log.Info("stream created", "stream", req.Stream, "replicas", m.Replicas, "acks", m.Acks, "region_size", m.RegionSize)
	st, err := s.acquire(req.Stream)
	if err != nil {
		return nil, statusOf(err)
	}
	defer st.release()
	return &api.CreateStreamResponse{Status: s.statusOfStream(st)}, nil
}

func (s *Server) DeleteStream(ctx context.Context, req *api.DeleteStreamRequest) (*api.DeleteStreamResponse, error) {
	if err := s.enter(); err != nil {
		return nil, statusOf(err)
	}
	defer s.leave()
	if err := validName(req.Stream); err != nil {
		return nil, statusOf(err)
	}
	if s.cfg.Catalog != nil {
		if err := s.deleteInCatalog(ctx, req.Stream); err != nil {
			return nil, err
		}
		return &api.DeleteStreamResponse{}, nil
	}
	if _, err := s.store.readMeta(req.Stream); err != nil {
		return nil, statusOf(err)
	}
	if err := s.removeLed(req.Stream); err != nil {
		return nil, statusOf(err)
	}
	s.log.Info("stream deleted", "stream", req.Stream)
	return &api.DeleteStreamResponse{}, nil
}

func (s *Server) ListStreams(ctx context.Context, req *api.ListStreamsRequest) (*api.ListStreamsResponse, error) {
	if err := s.enter(); err != nil {
		return nil, statusOf(err)
	}
	defer s.leave()
	if s.cfg.Catalog != nil {
		// A current view where the group can give one (a node just
		// restarted may not have the latest creates yet); without a
		// controller, the view at hand after a second.
		bctx, cancel := context.WithTimeout(ctx, time.Second)
		s.cfg.Catalog.Barrier(bctx)
		cancel()
		return &api.ListStreamsResponse{Streams: s.listInCatalog()}, nil
	}
	names, err := s.store.list()
	if err != nil {
		return nil, statusOf(err)
	}
	return &api.ListStreamsResponse{Streams: names}, nil
}

func (s *Server) Append(ctx context.Context, req *api.AppendRequest) (resp *api.AppendResponse, err error) {
	if err := s.enter(); err != nil {
		return nil, statusOf(err)
	}
	defer s.leave()
	if s.metrics != nil {
		started := time.Now()
		defer func() {
			n, b := reqSize(req)
			s.metrics.appended(n, b, started, err)
		}()
	}
	if err := checkAppend(req); err != nil {
		return nil, statusOf(err)
	}
	st, err := s.acquire(req.Stream)
	if err != nil {
		return nil, s.route(ctx, req.Stream, err)
	}
	defer st.release()
	resp, top, err := st.appendNoSync(req)
	if err != nil {
		return nil, statusOf(err)
	}
	if err := st.waitDurable(ctx, top); err != nil {
		return nil, statusOf(err)
	}
	return resp, nil
}

// reqSize is the number of entries an append request carries and their
// payload bytes.
func reqSize(req *api.AppendRequest) (entries, bytes int) {
	if len(req.Batch) == 0 {
		return 1, len(req.Data)
	}
	for _, e := range req.Batch {
		bytes += len(e)
	}
	return len(req.Batch), bytes
}

// Batch limits (AppendRequest.batch).
const (
	// MaxBatch is the most entries one append request may carry.
	MaxBatch = 4096
	// MaxBatchBytes is the most payload bytes of one batch: under
	// MaxMessageSize with room for the framing.
	MaxBatchBytes = MaxMessageSize - 4<<20
)

// checkAppend refuses a request mixing data and batch or over the batch
// limits.
func checkAppend(req *api.AppendRequest) error {
	if len(req.Batch) == 0 {
		return nil
	}
	if len(req.Data) > 0 {
		return fmt.Errorf("%w: an append request carries data or a batch, not both", errBadArg)
	}
	if len(req.Batch) > MaxBatch {
		return fmt.Errorf("%w: batch of %d entries, more than %d", errBadArg, len(req.Batch), MaxBatch)
	}
	n := 0
	for _, e := range req.Batch {
		n += len(e)
	}
	if n > MaxBatchBytes {
		return fmt.Errorf("%w: batch of %d bytes, more than %d", errBadArg, n, MaxBatchBytes)
	}
	if req.ProducerId != "" && req.Sequence > math.MaxUint64-uint64(len(req.Batch)-1) {
		return fmt.Errorf("%w: batch sequence numbers from %d overflow", errBadArg, req.Sequence)
	}
	return nil
}

func (s *Server) Read(ctx context.Context, req *api.ReadRequest) (*api.ReadResponse, error) {
	if err := s.enter(); err != nil {
		return nil, statusOf(err)
	}
	defer s.leave()
	st, err := s.acquire(req.Stream)
	if err != nil {
		if cp, ok := s.readableCopy(req.Stream, err); ok {
			maxEntries, maxBytes := readLimits(req)
			return readCopy(cp, req, maxEntries, maxBytes)
		}
		return nil, s.route(ctx, req.Stream, err)
	}
	defer st.release()
	maxEntries, maxBytes := readLimits(req)
	resp := &api.ReadResponse{Committed: st.committed(), Head: st.ls.Head()}
	r := newEntryReader(st.ls.Iterator(req.From), req.From, st.meta.Envelope)
	resp.Entries, err = r.read(resp.Committed, maxEntries, maxBytes)
	if err != nil && s.repairOnRead(st, r.it.Pos(), err) {
		// Damage repaired from a copy: read again.
		r = newEntryReader(st.ls.Iterator(req.From), req.From, st.meta.Envelope)
		resp.Entries, err = r.read(resp.Committed, maxEntries, maxBytes)
	}
	if err != nil {
		return nil, statusOf(err)
	}
	resp.Next = r.next()
	return resp, nil
}

// readLimits are the entry and byte limits of a Read.
func readLimits(req *api.ReadRequest) (maxEntries, maxBytes int) {
	maxEntries = int(req.MaxEntries)
	if maxEntries == 0 {
		maxEntries = defaultReadEntries
	}
	maxEntries = min(maxEntries, maxReadEntries)
	maxBytes = int(req.MaxBytes)
	if maxBytes == 0 || maxBytes > maxReadBytes {
		maxBytes = maxReadBytes
	}
	return maxEntries, maxBytes
}

func (s *Server) Tail(req *api.TailRequest, call api.Streams_TailServer) error {
	if err := s.enter(); err != nil {
		return statusOf(err)
	}
	defer s.leave()
	st, err := s.acquire(req.Stream)
	if err != nil {
		if cp, ok := s.readableCopy(req.Stream, err); ok {
			return s.tailCopy(req, call, cp)
		}
		return s.route(call.Context(), req.Stream, err)
	}
	defer st.release()
	// ctx ends with the call, the stream or the server.
	ctx, cancel := context.WithCancel(call.Context())
	defer cancel()
	defer context.AfterFunc(st.ctx, cancel)()
	from := req.From
	if req.FromEnd {
		from = st.committed()
	}
	it := st.ls.Iterator(from)
	r := newEntryReader(it, from, st.meta.Envelope)
	repairs := 0
	for {
		batch, err := r.read(st.committed(), maxReadEntries, maxReadBytes)
		if err != nil && repairs < 3 && s.repairOnRead(st, r.it.Pos(), err) {
			// Damage repaired from a copy: go on from the entry (or
			// the batch) not shown yet.
			repairs++
			next := r.next()
			it = st.ls.Iterator(next)
			r = newEntryReader(it, next, st.meta.Envelope)
			err = nil
		}
		if err != nil {
			return statusOf(err)
		}
		if len(batch) > 0 {
			if err := call.Send(&api.TailResponse{Entries: batch}); err != nil {
				return err
			}
			continue
		}
		if st.leader != nil {
			// Entries are shown once the policy's copies hold them.
			err = st.leader.WaitCommitted(ctx, it.Pos())
		} else {
			err = it.Wait(ctx)
		}
		if err != nil {
			if st.ctx.Err() != nil {
				if s.stopCtx.Err() != nil {
					return statusOf(ErrClosing)
				}
				return statusOf(fmt.Errorf("%w: %s deleted", ErrNoStream, st.name))
			}
			return statusOf(err)
		}
	}
}

func (s *Server) StreamStatus(ctx context.Context, req *api.StreamStatusRequest) (*api.StreamStatusResponse, error) {
	if err := s.enter(); err != nil {
		return nil, statusOf(err)
	}
	defer s.leave()
	st, err := s.acquire(req.Stream)
	if err != nil {
		return nil, s.route(ctx, req.Stream, err)
	}
	defer st.release()
	return s.statusOfStream(st), nil
}

// clientAddr is the address reported as this node's client address.
func (s *Server) clientAddr() string {
	if s.cfg.ClientAddr != "" {
		return s.cfg.ClientAddr
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

func (s *Server) statusOfStream(st *stream) *api.StreamStatusResponse {
	r := &api.StreamStatusResponse{
		Stream:          st.name,
		Leader:          s.cfg.Name,
		LeaderAddr:      s.clientAddr(),
		Epoch:           st.meta.Epoch,
		Replicas:        st.meta.Replicas,
		Acks:            ackPolicy(st.meta.Acks),
		RegionSize:      uint64(st.ls.RegionSize()),
		Head:            st.ls.Head(),
		Committed:       st.committed(),
		Persisted:       st.ls.Persisted(),
		UnderReplicated: st.meta.Replicas > 1,
	}
	if st.leader != nil {
		appended := st.ls.Committed()
		rs := st.leader.Status()
		r.UnderReplicated = rs.UnderReplicated || rs.QuorumLost || rs.Fenced || len(st.meta.Followers)+1 < int(st.meta.Replicas)
		for _, p := range st.leader.Progress() {
			lag := uint64(0)
			if appended > p.AckedIdx {
				lag = appended - p.AckedIdx
			}
			r.ReplicaStatus = append(r.ReplicaStatus, &api.ReplicaStatus{
				Member: string(p.ID), Persisted: p.AckedIdx, Lag: lag, Backup: string(p.ID) == st.meta.Backup,
			})
		}
	}
	for _, ri := range st.ls.Regions() {
		r.Regions = append(r.Regions, &api.Region{Seq: ri.Seq, First: ri.First, Count: ri.Count, Used: uint64(ri.Used), Sealed: ri.Sealed})
	}
	s.addRetentionStatus(r, st)
	return r
}

func (s *Server) Members(ctx context.Context, req *api.MembersRequest) (*api.MembersResponse, error) {
	if err := s.enter(); err != nil {
		return nil, statusOf(err)
	}
	defer s.leave()
	if s.cluster() != nil {
		return &api.MembersResponse{Members: s.clusterMembers()}, nil
	}
	return &api.MembersResponse{Members: []*api.Member{{
		Name:       s.cfg.Name,
		ClientAddr: s.clientAddr(),
		Role:       api.Role_ROLE_NODE,
		State:      api.MemberState_MEMBER_STATE_ALIVE,
		Capacity:   freeBytes(s.cfg.Dir),
		Self:       true,
	}}}, nil
}
