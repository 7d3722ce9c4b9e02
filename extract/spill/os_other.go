//go:build !linux

package spill

import (
	"errors"
	"os"
)

// oDirect is 0 here: files are read and written through the page cache.
const oDirect = 0

// unnamedFile returns nil: files get a name for an instant (TempFile).
func unnamedFile(string) (*os.File, error) { return nil, nil }

// punchHole cannot here: a spill file keeps its space until it is closed.
func punchHole(int, int64, int64) error { return errors.ErrUnsupported }
