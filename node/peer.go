package node

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/rpstream/rpstream/api"
	"github.com/rpstream/rpstream/local"
	"github.com/rpstream/rpstream/remote"
	"github.com/rpstream/rpstream/remote/remotepb"
)

// startHub serves the copies this node holds for other leaders on
// cfg.PeerAddr (remote.Hub): a leader's first connection for a stream
// creates its copy under DATA/replicas, and grants are authorised against
// the copy's leader and highest epoch.
func (s *Server) startHub() error {
	rc := s.cfg.RDMA
	// The Target persists (msync, or a fence on pmem) before it answers a
	// persistence flush, so such a flush does reach this node's
	// persistence domain.
	rc.DirectWriteToPmem = true
	hub, err := remote.NewHub(s.stopCtx, remote.HubConfig{
		Provider:  s.cfg.Provider,
		RDMA:      rc,
		Addr:      s.cfg.PeerAddr,
		Open:      s.openCopy,
		Authorize: s.replicas.authorize,
	})
	if err != nil {
		return fmt.Errorf("node: peer address %s: %w", s.cfg.PeerAddr, err)
	}
	s.hub = hub
	s.hubDone = make(chan struct{})
	go func() {
		defer close(s.hubDone)
		if err := hub.Serve(s.stopCtx); err != nil {
			s.log.Warn("peer service stopped", "err", err)
		}
	}()
	return nil
}

// openCopy is the Hub's Open: the copy of req's stream, made on a leader's
// first connection when it asks to create it.
func (s *Server) openCopy(req *remotepb.OpenRequest) (remote.RegionStore, error) {
	if req.Leader == "" || req.Leader == s.cfg.Name {
		return nil, fmt.Errorf("%w: writer %q cannot keep a copy of its own stream here", remote.ErrMismatch, req.Leader)
	}
	if _, err := s.store.readMeta(req.Stream); err == nil {
		return nil, fmt.Errorf("%w: %s leads stream %s itself", remote.ErrMismatch, s.cfg.Name, req.Stream)
	}
	fs, err := s.replicas.openStore(req.Stream, req.Leader, int(req.RegionSize), req.Create)
	if req.Create {
		if why := s.orphan(req, fs, err); why != "" {
			if fs != nil {
				fs.Close()
			}
			if err := s.replicas.remove(req.Stream); err != nil {
				return nil, err
			}
			s.log.Warn("removed an orphan copy", "stream", req.Stream, "why", why)
			fs, err = s.replicas.openStore(req.Stream, req.Leader, int(req.RegionSize), req.Create)
		}
	}
	switch {
	case err == nil:
		s.log.Info("serving a copy", "stream", req.Stream, "leader", req.Leader)
		return fs, nil
	case errors.Is(err, ErrNoStream):
		return nil, fmt.Errorf("%w: %v", remote.ErrNoStream, err)
	case errors.Is(err, ErrWrongLeader), errors.Is(err, errBadArg), errors.Is(err, ErrBadName):
		return nil, fmt.Errorf("%w: %v", remote.ErrMismatch, err)
	}
	return nil, err
}

// orphan says why the copy of req's stream this node holds is of a
// stream that no longer exists, so that a leader creating the stream anew
// may replace it; "" when it may still be in use. fs and err are what
// opening the copy for req's leader gave:
//   - the copy was made for another leader (ErrWrongLeader), which is live
//     and answers, asked for its own streams only, that it has no stream
//     of that name (the stream was deleted while this node was down, so
//     its copy here was never deleted; a leader that is down or does not
//     answer keeps its copy);
//   - the copy was made for req's leader, but for a stream with another
//     stream id: a leader has one stream of a name, so the copy's was
//     deleted (and made again) while this node was down.
func (s *Server) orphan(req *remotepb.OpenRequest, fs *remote.FileStore, err error) string {
	switch {
	case err == nil:
		if req.StreamId == 0 {
			return ""
		}
		sid, serr := local.StreamIDOf(fs.Memory().Bytes())
		if serr != nil || sid == 0 || sid == req.StreamId {
			return ""
		}
		return fmt.Sprintf("its leader %s now leads a stream of that name with id %x; the copy is of id %x", req.Leader, req.StreamId, sid)
	case errors.Is(err, ErrWrongLeader):
		old, lerr := s.replicas.leader(req.Stream)
		if lerr != nil || old == req.Leader || !s.streamGoneAt(old, req.Stream) {
			return ""
		}
		return fmt.Sprintf("its leader %s says it has no stream %s; %s leads a new one", old, req.Stream, req.Leader)
	}
	return ""
}

// streamGoneAt reports whether member, live, answers that it has no
// stream of that name (NotFound for its own streams only). Any other
// answer, or none within lookupTimeout, is false.
func (s *Server) streamGoneAt(member, stream string) bool {
	if s.cfg.Cluster == nil {
		return false
	}
	addr := ""
	for _, m := range s.cfg.Cluster.Members() {
		if m.Name == member && m.State.Live() && m.ClientAddr != "" {
			addr = m.ClientAddr
		}
	}
	if addr == "" {
		return false
	}
	c, err := s.peerStreams(addr)
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(s.stopCtx, lookupTimeout)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, localOnlyKey, "1")
	_, err = c.StreamStatus(ctx, &api.StreamStatusRequest{Stream: stream})
	return status.Code(err) == codes.NotFound
}

// dropCopy deletes the copy of stream this node holds for its leader.
func (s *Server) dropCopy(stream string) error {
	if s.hub != nil {
		if err := s.hub.Drop(stream); err != nil && !errors.Is(err, remote.ErrNoStream) {
			return err
		}
	}
	return s.replicas.remove(stream)
}

// PeerAddr is where leaders reach this node's copies ("" without
// Config.PeerAddr).
func (s *Server) PeerAddr() string {
	if s.hub == nil {
		return ""
	}
	return s.hub.Addr()
}

// stopHub closes the peer service and every copy it serves.
func (s *Server) stopHub() error {
	if s.hub == nil {
		return nil
	}
	err := s.hub.Close()
	<-s.hubDone
	return err
}
