//go:build unix

package harness

import "syscall"

// signalGroup sends SIGTERM (or SIGKILL) to every process of group pgid.
func signalGroup(pgid int, kill bool) {
	sig := syscall.SIGTERM
	if kill {
		sig = syscall.SIGKILL
	}
	_ = syscall.Kill(-pgid, sig)
}
