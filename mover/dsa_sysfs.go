package mover

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Default places where Linux's idxd driver exposes DSA devices.
const (
	DefaultSysfsRoot = "/sys/bus/dsa/devices"
	DefaultDevRoot   = "/dev/dsa"
)

// WorkQueue describes one DSA work queue as sysfs shows it
// (/sys/bus/dsa/devices/wqD.Q) with its character device (/dev/dsa/wqD.Q).
type WorkQueue struct {
	Name            string // "wq0.0"
	Device          string // "dsa0"
	Path            string // character device, "/dev/dsa/wq0.0"
	Mode            string // "dedicated" or "shared"
	Size            int    // entries; a dedicated queue drops what exceeds it
	MaxTransferSize int    // bytes per descriptor
	MaxBatchSize    int    // descriptors per batch
	State           string // "enabled" when usable
	Type            string // "user" for queues a process may open
	ClientName      string // the "name" attribute set with accel-config
	BlockOnFault    bool   // the queue honours the block-on-fault flag
	DeviceState     string // the device's own state
	GenCap          uint64 // the device's GENCAP register
	// Unusable is empty when the queue can take this process's
	// descriptors, else why not.
	Unusable string
}

// Dedicated reports whether the queue is in dedicated mode.
func (w *WorkQueue) Dedicated() bool { return w.Mode == "dedicated" }

// FindWorkQueues lists the DSA work queues under sysfsRoot (normally
// DefaultSysfsRoot) with their character devices under devRoot (normally
// DefaultDevRoot), usable ones first. It returns an error wrapping
// ErrNoDevice, naming what is missing, when the bus does not exist or holds
// no work queue.
func FindWorkQueues(sysfsRoot, devRoot string) ([]WorkQueue, error) {
	ents, err := os.ReadDir(sysfsRoot)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s does not exist (no DSA device, or the idxd driver is not loaded)", ErrNoDevice, sysfsRoot)
		}
		return nil, fmt.Errorf("%w: %v", ErrNoDevice, err)
	}
	var wqs []WorkQueue
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, "wq") {
			continue
		}
		wqs = append(wqs, readWorkQueue(sysfsRoot, devRoot, name))
	}
	if len(wqs) == 0 {
		return nil, fmt.Errorf("%w: %s has no work queue (configure one with accel-config)", ErrNoDevice, sysfsRoot)
	}
	sort.SliceStable(wqs, func(i, j int) bool {
		if (wqs[i].Unusable == "") != (wqs[j].Unusable == "") {
			return wqs[i].Unusable == ""
		}
		return wqs[i].Name < wqs[j].Name
	})
	return wqs, nil
}

func readWorkQueue(sysfsRoot, devRoot, name string) WorkQueue {
	dir := filepath.Join(sysfsRoot, name)
	str := func(d, attr string) string {
		b, err := os.ReadFile(filepath.Join(d, attr))
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(b))
	}
	num := func(d, attr string) int {
		v, err := strconv.ParseInt(str(d, attr), 0, 64)
		if err != nil || v < 0 || v > 1<<40 {
			return 0
		}
		return int(v)
	}
	w := WorkQueue{
		Name:            name,
		Path:            filepath.Join(devRoot, name),
		Mode:            str(dir, "mode"),
		Size:            num(dir, "size"),
		MaxTransferSize: num(dir, "max_transfer_size"),
		MaxBatchSize:    num(dir, "max_batch_size"),
		State:           str(dir, "state"),
		Type:            str(dir, "type"),
		ClientName:      str(dir, "name"),
		BlockOnFault:    str(dir, "block_on_fault") == "1",
	}
	// wqD.Q belongs to dsaD.
	if d, _, ok := strings.Cut(strings.TrimPrefix(name, "wq"), "."); ok {
		w.Device = "dsa" + d
		ddir := filepath.Join(sysfsRoot, w.Device)
		w.DeviceState = str(ddir, "state")
		if g, err := strconv.ParseUint(strings.TrimPrefix(str(ddir, "gen_cap"), "0x"), 16, 64); err == nil {
			w.GenCap = g
		}
	}
	w.Unusable = w.check()
	return w
}

// check says why the queue cannot be used, or "".
func (w *WorkQueue) check() string {
	var why []string
	if w.State != "enabled" {
		why = append(why, fmt.Sprintf("state %q, not enabled", w.State))
	}
	if w.Type != "user" {
		why = append(why, fmt.Sprintf("type %q, not user", w.Type))
	}
	if w.Mode != "dedicated" && w.Mode != "shared" {
		why = append(why, fmt.Sprintf("mode %q", w.Mode))
	}
	if w.Size <= 0 {
		why = append(why, "size 0")
	}
	if w.MaxTransferSize <= 0 {
		why = append(why, "max_transfer_size 0")
	}
	if w.DeviceState != "" && w.DeviceState != "enabled" {
		why = append(why, fmt.Sprintf("device %s state %q", w.Device, w.DeviceState))
	}
	if _, err := os.Stat(w.Path); err != nil {
		why = append(why, fmt.Sprintf("no character device: %v", err))
	}
	return strings.Join(why, "; ")
}
