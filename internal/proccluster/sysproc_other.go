//go:build !linux

package proccluster

import "syscall"

// sysProcAttr: only Linux can tie a member's life to its harness's.
func sysProcAttr() *syscall.SysProcAttr { return nil }
