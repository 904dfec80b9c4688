package tcp_test

import (
	"testing"

	"github.com/rpstream/rpstream/rdma/rdmatest"
	"github.com/rpstream/rpstream/rdma/tcp"
)

func TestConformance(t *testing.T) {
	rdmatest.Run(t, tcp.Provider{}, "127.0.0.1")
}
