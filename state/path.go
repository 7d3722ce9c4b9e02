package state

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// resolvePath says which file to open for the configured state path. A
// symbolic link there is used only when it resolves to an existing regular
// file — an operator's deliberate link to a data volume; a state file is
// never created through a link, since whoever can write into the state
// folder could otherwise point the run at a file of their choosing.
func resolvePath(path string) (string, error) {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return path, nil // created by openFile, which follows no link
	case err != nil:
		return "", fmt.Errorf("state %s: %w", path, err)
	case fi.Mode().IsRegular():
		return path, nil
	case fi.Mode()&fs.ModeSymlink == 0:
		return "", fmt.Errorf("state %s is not a regular file (%s)", path, fi.Mode().Type())
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("state %s is a symbolic link to a file that does not exist; optsync does not create state through a link (create the state where the link points, by running with that path, or remove the link)", path)
		}
		return "", fmt.Errorf("state %s: %w", path, err)
	}
	if fi, err = os.Stat(real); err != nil {
		return "", fmt.Errorf("state %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("state %s is a symbolic link to %s, which is not a regular file (%s)", path, real, fi.Mode().Type())
	}
	return real, nil
}

// openFile is how bbolt opens the resolved state file: never following a
// link at its name (one planted since resolvePath looked makes the open
// fail, not write elsewhere), only a regular file, and, for a run that may
// write, 0600 whatever it was: it holds personal data.
func openFile(name string, flag int, mode os.FileMode, readOnly bool) (*os.File, error) {
	f, err := os.OpenFile(name, flag|syscall.O_NOFOLLOW|syscall.O_CLOEXEC|syscall.O_NONBLOCK, mode)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("%s became a symbolic link while optsync opened it; not followed", name)
	}
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s is not a regular file (%s)", name, fi.Mode().Type())
	}
	if err == nil && !readOnly && fi.Mode().Perm() != 0o600 {
		if cerr := f.Chmod(0o600); cerr != nil {
			err = fmt.Errorf("%s is mode %04o and cannot be made 0600 (it holds personal data): %w", name, fi.Mode().Perm(), cerr)
		}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
