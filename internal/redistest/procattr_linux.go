package redistest

import "syscall"

// procAttr makes the kernel kill redis-server when the process that
// started it dies, so a test that panics or times out leaves no server
// behind.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
