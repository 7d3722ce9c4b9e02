//go:build !linux

package state

import (
	"errors"
	"os"
)

// canAdvise is Linux's (warm_linux.go): elsewhere a night's lookups read
// their pages as they come to them.
const canAdvise = false

func willNeed(*os.File, uint64, uint64, uint64) error { return errors.ErrUnsupported }

func inCache(uintptr, uint64, uint64) (bool, bool) { return false, false }
