//go:build verbs && cgo

package verbs

import (
	"testing"

	"github.com/rpstream/rpstream/rdma"
)

// These need no device: they check the build-time detection and the
// translation of usage bits.

func TestBuildTimeDetection(t *testing.T) {
	t.Logf("rdma-core has ibv_wr_atomic_write: %v, ibv_wr_flush: %v", haveAtomicWrite, haveFlush)
	if !Built {
		t.Fatal("cgo build says not built")
	}
}

func TestAccessFor(t *testing.T) {
	cases := []struct {
		u      rdma.Usage
		native bool
		want   int
	}{
		{rdma.UsageWriteDst, false, accessLocalWrite | accessRemoteWrite},
		{rdma.UsageReadSrc, false, accessRemoteRead},
		{rdma.UsageWriteSrc | rdma.UsageSend, false, 0},
		{rdma.UsageRecv, false, accessLocalWrite},
		{rdma.UsageFlushPersistence, false, accessRemoteRead},
		{rdma.UsageFlushPersistence, true, accessFlushPersistent},
		{rdma.UsageFlushVisibility, true, accessFlushGlobal},
		{rdma.UsageAtomicWrite, false, accessLocalWrite | accessRemoteWrite | accessRemoteAtomic},
	}
	for _, c := range cases {
		if got := int(accessFor(c.u, c.native)); got != c.want {
			t.Errorf("usage %#x native %v: %#x, want %#x", uint32(c.u), c.native, got, c.want)
		}
	}
}
