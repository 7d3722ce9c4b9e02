package spill

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// oDirect is the open flag that reads and writes past the page cache.
const oDirect = unix.O_DIRECT

// unnamedFile creates a file in dir that has no name (O_TMPFILE), or
// returns nil and no error where the file system cannot.
func unnamedFile(dir string) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err == nil {
		return os.NewFile(uintptr(fd), filepath.Join(dir, "(unnamed spill)")), nil
	}
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EINVAL) {
		return nil, fmt.Errorf("spill file in %s: %w", dir, err)
	}
	return nil, nil
}

// punchHole gives back the space of n bytes of fd from off, the file's
// size kept.
func punchHole(fd int, off, n int64) error {
	return unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
}
