//go:build unix && !linux

package state

import "golang.org/x/sys/unix"

// Classic POSIX record locks: they conflict between processes, which is
// what a run lock needs; within one process two opens do not exclude each
// other (Linux builds use open file description locks, which do).
const (
	cmdSetLock     = unix.F_SETLK
	cmdSetLockWait = unix.F_SETLKW
	cmdGetLock     = unix.F_GETLK
)
