package verbs_test

import (
	"errors"
	"os"
	"testing"

	"github.com/rpstream/rpstream/rdma"
	"github.com/rpstream/rpstream/rdma/rdmatest"
	"github.com/rpstream/rpstream/rdma/verbs"
)

// TestConformance runs the provider suite over verbs where an RDMA device
// exists. RPSTREAM_VERBS_ADDR is the IP of the netdev the device is bound
// to (scripts/softroce.sh sets it).
func TestConformance(t *testing.T) {
	if err := verbs.Check(); err != nil {
		t.Skipf("verbs conformance skipped: %v", err)
	}
	addr := os.Getenv("RPSTREAM_VERBS_ADDR")
	if addr == "" {
		t.Skip("verbs conformance skipped: set RPSTREAM_VERBS_ADDR to the IP of the RDMA device's netdev")
	}
	rdmatest.Run(t, verbs.Provider{}, addr)
}

// TestNoDevice: where the provider cannot run, NewPeer says why with
// ErrNoDevice instead of failing obscurely.
func TestNoDevice(t *testing.T) {
	if verbs.Check() == nil {
		t.Skip("an RDMA device exists")
	}
	_, err := verbs.Provider{}.NewPeer("", rdma.LoopbackConfig(rdmatest.Secret))
	if !errors.Is(err, rdma.ErrNoDevice) {
		t.Fatalf("NewPeer without a device: %v, want ErrNoDevice", err)
	}
	t.Logf("as expected: %v", err)
}

func TestDevicesDoesNotFail(t *testing.T) {
	t.Logf("devices: %v", verbs.Devices())
	if _, err := verbs.DeviceForNetdev("lo"); err == nil {
		t.Log("lo has an RDMA device")
	}
}
