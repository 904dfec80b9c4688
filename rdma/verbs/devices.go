package verbs

import (
	"fmt"
	"os"

	"github.com/Mellanox/rdmamap"

	"github.com/rpstream/rpstream/rdma"
)

// Device is an RDMA device found in sysfs.
type Device struct {
	Name  string   // "mlx5_0", "rxe0"
	Ports []string // port numbers
}

// Devices lists the RDMA devices of this machine (empty when the kernel
// has no RDMA support).
func Devices() []Device {
	var ds []Device
	for _, n := range rdmamap.GetRdmaDeviceList() {
		ds = append(ds, Device{Name: n, Ports: rdmamap.GetPorts(n)})
	}
	return ds
}

// DeviceForNetdev names the RDMA device bound to a network interface
// ("eth0"), or returns an error wrapping rdma.ErrNoDevice.
func DeviceForNetdev(netdev string) (string, error) {
	d, err := rdmamap.GetRdmaDeviceForNetdevice(netdev)
	if err != nil || d == "" {
		return "", fmt.Errorf("%w: no RDMA device on %s: %v", rdma.ErrNoDevice, netdev, err)
	}
	return d, nil
}

// Check says why the verbs provider cannot run here, naming what is
// missing, or returns nil.
func Check() error {
	if !Built {
		return fmt.Errorf("%w: the verbs provider is not built in (build with -tags verbs and cgo)", rdma.ErrNoDevice)
	}
	if _, err := os.Stat("/sys/class/infiniband"); err != nil {
		return fmt.Errorf("%w: the kernel has no RDMA support (/sys/class/infiniband missing; load ib_core and rdma_rxe for SoftRoCE)", rdma.ErrNoDevice)
	}
	if len(Devices()) == 0 {
		return fmt.Errorf("%w: no RDMA device (for SoftRoCE: rdma link add rxe0 type rxe netdev eth0)", rdma.ErrNoDevice)
	}
	return nil
}
