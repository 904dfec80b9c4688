package mover

import "fmt"

// DSAConfig configures the dsa engine.
type DSAConfig struct {
	// WorkQueue selects a queue by name ("wq0.0") or device path
	// ("/dev/dsa/wq0.0"); empty takes the first usable one.
	WorkQueue string
	// Submit chooses write() or the mapped portal; SubmitAuto decides.
	Submit SubmitMode
	// MaxInflight bounds the descriptors in flight, and so the completion
	// records (default and maximum: the queue's size, at most 256).
	MaxInflight int
	// CPUBelow: requests smaller than this run on the CPU inside Submit,
	// where a descriptor's round trip costs more than the copy (default
	// 4 KiB; negative: everything goes to the device).
	CPUBelow int
	// BlockOnFault sets the block-on-fault flag where the queue honours it:
	// the device then waits for the kernel to resolve page faults. Off by
	// default: the engine touches the page and resubmits the rest itself,
	// so that one fault does not stall the queue for everyone.
	BlockOnFault bool
	// FaultRetries is how many times a descriptor is resubmitted after
	// page faults before the rest is done on the CPU (default 4).
	FaultRetries int
	// SysfsRoot and DevRoot are where to look for devices (defaults
	// DefaultSysfsRoot and DefaultDevRoot; tests point them elsewhere).
	SysfsRoot, DevRoot string
}

func defaultDSAConfig() DSAConfig {
	return DSAConfig{CPUBelow: 4096, FaultRetries: 4, SysfsRoot: DefaultSysfsRoot, DevRoot: DefaultDevRoot}
}

func (c *DSAConfig) fillDefaults() {
	d := defaultDSAConfig()
	if c.CPUBelow == 0 {
		c.CPUBelow = d.CPUBelow
	}
	if c.FaultRetries == 0 {
		c.FaultRetries = d.FaultRetries
	}
	if c.SysfsRoot == "" {
		c.SysfsRoot = d.SysfsRoot
	}
	if c.DevRoot == "" {
		c.DevRoot = d.DevRoot
	}
}

func (c *DSAConfig) validate() error {
	switch c.Submit {
	case SubmitAuto, SubmitWrite, SubmitPortal:
	default:
		return fmt.Errorf("%w: config: DSA.Submit %q (want \"\", write or portal)", ErrInvalid, c.Submit)
	}
	if c.MaxInflight < 0 || c.MaxInflight > 256 {
		return fmt.Errorf("%w: config: DSA.MaxInflight %d not in [0, 256]", ErrInvalid, c.MaxInflight)
	}
	if c.FaultRetries < 0 || c.FaultRetries > 1000 {
		return fmt.Errorf("%w: config: DSA.FaultRetries %d not in [0, 1000]", ErrInvalid, c.FaultRetries)
	}
	return nil
}

// SubmitMode chooses how the dsa engine submits descriptors.
type SubmitMode string

const (
	// SubmitAuto maps the portal where the CPU has the instruction the
	// queue's mode needs (MOVDIR64B: dedicated, ENQCMD: shared) and the
	// process may map it (CAP_SYS_RAWIO on patched kernels), else write().
	SubmitAuto SubmitMode = ""
	// SubmitWrite always uses write() on the queue's file.
	SubmitWrite SubmitMode = "write"
	// SubmitPortal requires the mapped portal.
	SubmitPortal SubmitMode = "portal"
)
