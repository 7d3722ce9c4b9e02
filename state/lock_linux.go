package state

import "golang.org/x/sys/unix"

// Open file description locks: they conflict between any two opens of the
// file, in one process or two, and are not dropped when some other
// descriptor of the same file is closed.
const (
	cmdSetLock     = unix.F_OFD_SETLK
	cmdSetLockWait = unix.F_OFD_SETLKW
	cmdGetLock     = unix.F_OFD_GETLK
)
