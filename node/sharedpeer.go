package node

import (
	"sync"

	"github.com/rpstream/rpstream/replicate"
)

// leaderPeer is the rdma Peer every replicate.Leader of this node shares
// (replicate.SharedPeer), opened with the first replicated stream this node
// leads and closed by Shutdown after the streams.
type leaderPeer struct {
	mu   sync.Mutex
	peer *replicate.SharedPeer
}

// sharedPeer returns the node's shared Peer, opening it on first use.
func (s *Server) sharedPeer() (*replicate.SharedPeer, error) {
	lp := &s.leaderPeer
	lp.mu.Lock()
	defer lp.mu.Unlock()
	if lp.peer == nil {
		p, err := replicate.NewSharedPeer(s.cfg.Provider, s.cfg.RDMA)
		if err != nil {
			return nil, err
		}
		lp.peer = p
	}
	return lp.peer, nil
}

// closeSharedPeer closes the shared Peer, once every Leader is closed.
func (s *Server) closeSharedPeer() error {
	lp := &s.leaderPeer
	lp.mu.Lock()
	defer lp.mu.Unlock()
	if lp.peer == nil {
		return nil
	}
	err := lp.peer.Close()
	lp.peer = nil
	return err
}
