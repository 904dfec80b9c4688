package proccluster

import "syscall"

// sysProcAttr makes the kernel kill a member if the process that started
// it dies without Close (a test binary killed by its timeout), so no
// streamnode outlives its harness.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
