//go:build linux

package harness

import "syscall"

// sysProcAttr puts the child in its own process group, and has the kernel
// kill it if the test binary dies without running its cleanups (a test
// timeout, for example), so no process outlives the tests.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
