package replicate

import (
	"fmt"

	"github.com/rpstream/rpstream/rdma"
)

// SharedPeer is what the Leaders of one node share: one rdma Peer (a
// protection domain, librpma's peer) and one registered source of zeroes.
// A Peer per Leader cost a device context and a 64 KiB zero buffer per
// led stream; a node leads thousands. Each Leader still registers its own
// stream's memory and dials its own connections on the shared Peer, and
// closes them when it closes: a connection carries one stream's epoch and
// grant (remote.Hub binds it to that stream), so sharing a connection
// between streams is not done here.
//
// Its methods and the Leaders using it may run concurrently. Close it
// after every Leader that uses it is closed.
type SharedPeer struct {
	peer   rdma.Peer
	zero   *rdma.Buffer
	zeroMR rdma.MR
}

// NewSharedPeer opens a Peer of provider with cfg for Leaders to share.
func NewSharedPeer(provider rdma.Provider, cfg rdma.Config) (*SharedPeer, error) {
	if provider == nil {
		return nil, fmt.Errorf("%w: shared peer needs an rdma Provider", ErrConfig)
	}
	peer, err := provider.NewPeer("", cfg)
	if err != nil {
		return nil, err
	}
	sp := &SharedPeer{peer: peer}
	if sp.zero, err = rdma.Alloc(zeroSize); err != nil {
		peer.Close()
		return nil, err
	}
	if sp.zeroMR, err = peer.Register(sp.zero.Bytes(), rdma.UsageWriteSrc, nil); err != nil {
		sp.zero.Free()
		peer.Close()
		return nil, err
	}
	return sp, nil
}

// Close closes the Peer (and with it any connection a Leader left open)
// and frees the zero source.
func (sp *SharedPeer) Close() error {
	sp.zeroMR.Deregister()
	err := sp.peer.Close()
	sp.zero.Free()
	return err
}
