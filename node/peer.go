package node

import (
	"context"
	"errors"
	"fmt"

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
		Authorize: s.authorize,
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
// first connection when it asks to create it. With a catalog, the catalog
// must name req.Leader as the stream's leader (by id) and this node as a
// holder; a copy of an older stream of the name held here is replaced.
func (s *Server) openCopy(req *remotepb.OpenRequest) (remote.RegionStore, error) {
	s.mu.Lock()
	busy := s.repairing[req.Stream]
	s.mu.Unlock()
	if busy {
		return nil, fmt.Errorf("node: the copy of %s is being repaired here; try again", req.Stream)
	}
	if req.Leader == "" || req.Leader == s.cfg.Name {
		return nil, fmt.Errorf("%w: writer %q cannot keep a copy of its own stream here", remote.ErrMismatch, req.Leader)
	}
	if s.cfg.Catalog != nil {
		rec, err := s.checkCopy(req.Stream, req.StreamId, req.Leader)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", remote.ErrMismatch, err)
		}
		// This node led the stream before the catalog moved it to
		// req.Leader: its files become that leader's copy.
		if err := s.demote(rec); err != nil {
			return nil, err
		}
		if id, err := s.replicas.streamID(req.Stream); err == nil && id != req.StreamId {
			s.log.Warn("replacing the copy of an older stream of the name", "stream", req.Stream, "old_id", id, "id", req.StreamId)
			// The Hub serves no Target of the name (it opens one now,
			// holding its lock: dropCopy would wait for it for ever).
			if err := s.replicas.remove(req.Stream); err != nil && !errors.Is(err, ErrNoStream) {
				return nil, err
			}
		}
	}
	if _, err := s.store.readMeta(req.Stream); err == nil {
		return nil, fmt.Errorf("%w: %s leads stream %s itself", remote.ErrMismatch, s.cfg.Name, req.Stream)
	}
	s.mu.Lock()
	err := s.checkOpenLimitLocked()
	s.mu.Unlock()
	// Not the copies: the Hub holds its open lock while it calls this.
	if err != nil && s.evictIdle(false) {
		s.mu.Lock()
		err = s.checkOpenLimitLocked()
		s.mu.Unlock()
	}
	if err != nil {
		// The Hub closes the copies no leader is connected to and asks
		// again.
		return nil, fmt.Errorf("%w: %w", remote.ErrFull, err)
	}
	fs, err := s.replicas.openStore(req.Stream, req.Leader, req.StreamId, int(req.RegionSize), req.Create)
	switch {
	case err == nil:
		s.log.Info("serving a copy", "stream", req.Stream, "leader", req.Leader)
		return fs, nil
	case errors.Is(err, ErrNoStream):
		return nil, fmt.Errorf("%w: %v", remote.ErrNoStream, err)
	case errors.Is(err, ErrWrongLeader), errors.Is(err, errBadArg), errors.Is(err, ErrBadName):
		return nil, fmt.Errorf("%w: %v", remote.ErrMismatch, err)
	case exhausted(err):
		return nil, fmt.Errorf("%w: %w", remote.ErrFull, err)
	}
	return nil, err
}

// authorize is the Hub's Authorize: writer may write stream name's copy
// under epoch if the catalog names it the stream's leader under that
// epoch (a newer epoch than this node's catalog shows is checked again
// once it caught up), and the copy has granted no newer epoch before
// (recorded durably first).
func (s *Server) authorize(name string, epoch uint64, writer string) error {
	if s.cfg.Catalog != nil {
		id, err := s.replicas.streamID(name)
		if err != nil {
			return err
		}
		rec, err := s.checkCopy(name, id, writer)
		if err != nil {
			return err
		}
		if epoch > rec.Epoch {
			ctx, cancel := context.WithTimeout(s.stopCtx, lookupTimeout)
			err := s.cfg.Catalog.Barrier(ctx)
			cancel()
			if err != nil {
				return fmt.Errorf("%w: epoch %d of %s is newer than the catalog here shows (%d), which cannot catch up: %v", ErrStaleEpoch, epoch, name, rec.Epoch, err)
			}
			if rec, err = s.checkCopy(name, id, writer); err != nil {
				return err
			}
		}
		if epoch != rec.Epoch {
			return fmt.Errorf("%w: %s writes %s under epoch %d; the catalog granted %d", ErrStaleEpoch, writer, name, epoch, rec.Epoch)
		}
		return s.replicas.authorize(name, epoch, writer, true)
	}
	return s.replicas.authorize(name, epoch, writer, false)
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
