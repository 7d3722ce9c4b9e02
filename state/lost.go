package state

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"optsync/transform"
)

// LostError says a run would have to start from a state other than the one
// the runs before it kept: the file is missing although earlier runs
// left their files, or is not the state those runs used. (An empty or
// otherwise damaged file is a CorruptError, with the same way back.) optsync never
// starts over silently — a run without its state decides every contact as
// at first sight and can clear opt-outs that state had agreed — so it
// stops (exit 1), naming the file and the way back.
type LostError struct {
	Path    string
	Problem string
}

func (e *LostError) Error() string {
	return fmt.Sprintf("state %s %s. optsync does not start over silently: a run without the state of the runs before it decides every contact as at first sight and can clear opt-outs that state had agreed; %s", e.Path, e.Problem, wayBack)
}

// wayBack is what a lost or damaged state file's message ends with: the
// one way back, and the one deliberate way to start over, for both.
const wayBack = "restore the file from a backup, or start over deliberately with `optsync backfill --new-state` (it moves a state file found aside, never deletes it, and the run history records the start over): the run then decides every contact as at first sight"

// keyStateID is the identity of a state file, made when it is created:
// out_dir keeps it beside the files of the runs that used the file, so
// that a run can tell the state of those runs from another one.
var keyStateID = []byte("state_id")

func newStateID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ID is the identity of the state file ("" for a file opened read-only
// that has none yet: made before identities were kept, and not yet opened
// by a run).
func (s *Store) ID() string { return s.id }

// OpenNew starts a new state file at path on purpose (backfill
// --new-state): under the run lock, a file found there is moved aside,
// never deleted, to <path>.replaced-<UTC time>, and a new one is created.
// aside says where the old file went ("" when there was none).
func OpenNew(path string, pairs []transform.Pair) (s *Store, aside string, err error) {
	return openNew(path, pairs, nil)
}

// openNew is OpenNew whose open may begin a run (b).
func openNew(path string, pairs []transform.Pair, b *beginning) (s *Store, aside string, err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, "", fmt.Errorf("creating the folder of state %s: %w", path, err)
	}
	host, _ := os.Hostname()
	lock, err := acquireRunLock(path, LockInfo{PID: os.Getpid(), Host: host, Started: time.Now().UTC()})
	if err != nil {
		return nil, "", err
	}
	defer func() {
		if err != nil {
			lock.release()
		}
	}()
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, "", fmt.Errorf("state %s: %w", path, err)
	case !fi.Mode().IsRegular():
		return nil, "", fmt.Errorf("state %s is not a regular file (%s): move it aside yourself to start over, or point state at a new file", path, fi.Mode().Type())
	default:
		aside = path + ".replaced-" + time.Now().UTC().Format("20060102T150405Z")
		if _, err := os.Lstat(aside); err == nil {
			return nil, "", fmt.Errorf("state %s: %s exists already; try again in a second", path, aside)
		}
		if err := os.Rename(path, aside); err != nil {
			return nil, "", fmt.Errorf("state %s: moving it aside: %w", path, err)
		}
	}
	if s, err = openStore(path, pairs, false, false, nil, b, writerWait); err != nil {
		return nil, aside, err
	}
	s.lock = lock
	return s, aside, nil
}
