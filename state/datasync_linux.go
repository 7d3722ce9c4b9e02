package state

import (
	"os"

	"golang.org/x/sys/unix"
)

// datasync makes f's data durable, and of its metadata only what reading
// the data back needs (its size, its blocks): a file rewritten in place at
// the same length needs no journal commit for its times, which fsync waits
// for.
func datasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			if serr = unix.Fdatasync(int(fd)); serr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	return serr
}
