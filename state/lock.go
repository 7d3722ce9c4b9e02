//go:build unix

package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The run lock is <state>.lock: a run (backfill, run, state reset) holds it
// for its whole life, and it names the holder. bbolt's own lock on the state
// file is a different matter: it only keeps readers out while a run writes.
//
// Two byte-range locks on the lock file (open file description locks on
// Linux, which conflict between any two opens, in one process or two):
//
//   - byteRun is the run lock itself, held by the run until it ends;
//   - byteDetails guards the holder's details in the file: whoever takes or
//     gives up the run lock holds it for writing while it writes or clears
//     them, and whoever reads them holds it for reading.
//
// A run takes byteDetails first (a brief wait at most), then tries byteRun,
// and writes its details before it lets byteDetails go. So whoever finds
// byteRun held and then gets byteDetails reads the complete details of the
// run that holds it: "locked" always comes with a pid, a host and a start
// time, however many runs start at once.
const (
	byteRun     = 0
	byteDetails = 1
)

// LockInfo names the run that holds a state file.
type LockInfo struct {
	PID     int       `json:"pid"`
	Host    string    `json:"host"`
	Started time.Time `json:"started"`
}

// runLock is a held run lock.
type runLock struct {
	f *os.File
}

// openLockFile opens the lock file without following a link: anyone who can
// write into the state folder could otherwise make a run truncate and
// overwrite a file of their choosing. A file with a second hard link is
// refused for the same reason.
func openLockFile(path string, create bool) (*os.File, error) {
	flag := os.O_RDONLY
	if create {
		flag = os.O_RDWR | os.O_CREATE
	}
	f, err := os.OpenFile(path, flag|syscall.O_NOFOLLOW|syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0o600)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("state lock %s is a symbolic link; optsync does not follow links there (remove it: a run creates its own)", path)
	}
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("state lock %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("state lock %s is not a regular file (%s); remove it: a run creates its own", path, fi.Mode().Type())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
		f.Close()
		return nil, fmt.Errorf("state lock %s has %d hard links; optsync writes only a lock file of its own (remove it: a run creates its own)", path, st.Nlink)
	}
	return f, nil
}

// lockByte takes (typ F_RDLCK or F_WRLCK) or gives up (F_UNLCK) one byte's
// lock; wait says to wait for it rather than fail with EAGAIN.
func lockByte(f *os.File, typ int16, at int64, wait bool) error {
	lk := unix.Flock_t{Type: typ, Whence: io.SeekStart, Start: at, Len: 1}
	cmd := cmdSetLock
	if wait {
		cmd = cmdSetLockWait
	}
	for {
		err := unix.FcntlFlock(f.Fd(), cmd, &lk)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// held reports whether another open holds a write lock on the byte.
func held(f *os.File, at int64) (bool, error) {
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart, Start: at, Len: 1}
	if err := unix.FcntlFlock(f.Fd(), cmdGetLock, &lk); err != nil {
		return false, err
	}
	return lk.Type != unix.F_UNLCK, nil
}

func busy(err error) bool { return errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) }

// acquireRunLock takes the run lock of the state file at statePath, or
// fails at once with a *LockedError naming the holder.
func acquireRunLock(statePath string, me LockInfo) (*runLock, error) {
	path := statePath + ".lock"
	f, err := openLockFile(path, true)
	if err != nil {
		return nil, fmt.Errorf("opening the state lock: %w", err)
	}
	if err := lockByte(f, unix.F_WRLCK, byteDetails, true); err != nil {
		f.Close()
		return nil, fmt.Errorf("state lock %s: %w", path, err)
	}
	if err := lockByte(f, unix.F_WRLCK, byteRun, false); err != nil {
		defer f.Close() // gives byteDetails up too
		if !busy(err) {
			return nil, fmt.Errorf("state lock %s: %w", path, err)
		}
		le := &LockedError{Path: statePath}
		if li, ok := readDetails(f); ok {
			le.LockInfo = li
		}
		return nil, le
	}
	b, _ := json.Marshal(me)
	if err := writeDetails(f, b); err != nil {
		f.Close()
		return nil, fmt.Errorf("writing the lock details to %s: %w", path, err)
	}
	if err := lockByte(f, unix.F_UNLCK, byteDetails, false); err != nil {
		f.Close()
		return nil, fmt.Errorf("state lock %s: %w", path, err)
	}
	return &runLock{f: f}, nil
}

func writeDetails(f *os.File, b []byte) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err := f.WriteAt(b, 0)
	return err
}

func readDetails(f *os.File) (LockInfo, bool) {
	var li LockInfo
	b, err := io.ReadAll(io.NewSectionReader(f, 0, 4096))
	if err != nil || json.Unmarshal(b, &li) != nil || li.PID == 0 {
		return LockInfo{}, false
	}
	return li, true
}

// release clears the details and gives the lock up. The file stays: a
// lock file removed while another process has it open would let two runs
// hold "the" lock on two different files.
func (l *runLock) release() {
	if l == nil || l.f == nil {
		return
	}
	if lockByte(l.f, unix.F_WRLCK, byteDetails, true) == nil {
		_ = l.f.Truncate(0)
	}
	l.f.Close()
	l.f = nil
}

// seeLock calls see with the lock file of the state file open and its
// details held for reading, which a run must hold for writing to take the
// run lock or give it up: while see runs, whether a run holds the lock
// (held) does not change. It does not create the lock file, and does not
// call see when there is none (no run ever took the lock).
func seeLock(statePath string, see func(f *os.File, held bool) error) error {
	path := statePath + ".lock"
	f, err := openLockFile(path, false)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	if err := lockByte(f, unix.F_RDLCK, byteDetails, true); err != nil {
		return fmt.Errorf("state lock %s: %w", path, err)
	}
	h, err := held(f, byteRun)
	if err != nil {
		return fmt.Errorf("state lock %s: %w", path, err)
	}
	return see(f, h)
}

// whileIdle calls read while no run holds the run lock of the state file
// and none can take it (a run that starts meanwhile waits for read to
// return), and reports whether it did: not while a run holds the lock,
// nor when no run ever made the lock file.
func whileIdle(statePath string, read func() error) (bool, error) {
	idle := false
	err := seeLock(statePath, func(_ *os.File, held bool) error {
		if held {
			return nil
		}
		idle = true
		return read()
	})
	return idle, err
}

// lockHolder reads who holds the run lock of the state file, without
// taking it and without creating the lock file; nil when no run holds it.
func lockHolder(statePath string) (*LockInfo, error) {
	var holder *LockInfo
	err := seeLock(statePath, func(f *os.File, held bool) error {
		if held {
			li, _ := readDetails(f)
			holder = &li
		}
		return nil
	})
	return holder, err
}
