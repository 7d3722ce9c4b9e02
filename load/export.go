package load

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// OutputRefusedError is a file a command was told to write (--output) and
// would not: a link, something not a regular file, or a file that exists
// when it was not told to replace it. The command wrote nothing; it exits 2
// like any usage error.
type OutputRefusedError struct{ msg string }

func (e *OutputRefusedError) Error() string { return e.msg }

// WriteExport writes a file holding personal data that a command (what,
// for its messages) was told to write: created new, 0600, never through a
// link; an existing path is refused unless force says to replace it (a
// link even then: what it points to is not optsync's).
func WriteExport(what, path string, force bool, write func(io.Writer) error) error {
	refused := func(format string, args ...any) error {
		return &OutputRefusedError{msg: what + ": " + fmt.Sprintf(format, args...)}
	}
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("%s: %w", what, err)
	case fi.Mode()&fs.ModeSymlink != 0:
		return refused("--output %s is a symbolic link; optsync neither writes through a link nor replaces one: remove it or name the file itself", path)
	case !fi.Mode().IsRegular():
		return refused("--output %s exists and is not a regular file (%s)", path, fi.Mode().Type())
	case !force:
		return refused("--output %s exists; pass --force to replace it", path)
	}
	err = WriteFile(path, FileOptions{NoReplace: !force}, write)
	if errors.Is(err, fs.ErrExist) {
		return refused("%v; pass --force to replace it", err)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}
