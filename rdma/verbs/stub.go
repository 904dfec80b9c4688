//go:build !verbs || !cgo

package verbs

import (
	"fmt"

	"github.com/rpstream/rpstream/rdma"
)

// Built says whether the cgo provider is compiled in.
const Built = false

// Provider is the verbs provider; in this build it has no devices.
type Provider struct{}

var _ rdma.Provider = Provider{}

// Name implements rdma.Provider.
func (Provider) Name() string { return "verbs" }

// NewPeer implements rdma.Provider: it always fails in this build.
func (Provider) NewPeer(addr string, cfg rdma.Config) (rdma.Peer, error) {
	return nil, fmt.Errorf("%w: built without -tags verbs (or without cgo)", rdma.ErrNoDevice)
}
