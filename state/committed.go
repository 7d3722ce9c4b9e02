package state

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// A commit writes its meta page last; a power loss while it does leaves
// that page torn, and bbolt then opens the file at the transaction before —
// which is right, as that commit never returned. A meta page damaged
// otherwise (a bit flipped in the newer one, a disk returning an old copy)
// makes bbolt fall back the same way and lose a transaction that had
// committed. The file alone cannot tell the two apart, so every commit, once
// it returns, records its transaction beside the state file: a torn meta
// page whose other page holds the last transaction recorded there is a
// commit that did not finish, and the file is used as it stands; any other
// damaged meta page stops every command.
//
// <state>.committed is one fixed-length line, rewritten in place and synced
// after each commit (before the next one starts):
//
//	optsync-committed 1 <state id> <txid, 16 hex digits> <CRC32C, 8 hex digits>
//
// A line that does not check (torn, or not there) tells nothing, and a
// damaged meta page is then damage.
const committedSuffix = ".committed"

type committed struct {
	id   string
	txid uint64
}

const committedLen = 20 + 32 + 1 + 16 + 1 + 8 + 1

func (c committed) line() []byte {
	body := fmt.Sprintf("optsync-committed 1 %-32s %016x", c.id, c.txid)
	return []byte(fmt.Sprintf("%s %08x\n", body, crc32.Checksum([]byte(body), castagnoli)))
}

func parseCommitted(b []byte) (committed, bool) {
	s := string(b)
	if len(s) != committedLen || !strings.HasSuffix(s, "\n") {
		return committed{}, false
	}
	body, sum := s[:len(s)-10], s[len(s)-9:len(s)-1]
	if want, err := strconv.ParseUint(sum, 16, 32); err != nil || uint32(want) != crc32.Checksum([]byte(body), castagnoli) {
		return committed{}, false
	}
	f := strings.Fields(body)
	if len(f) != 4 || f[0] != "optsync-committed" || f[1] != "1" {
		return committed{}, false
	}
	txid, err := strconv.ParseUint(f[3], 16, 64)
	if err != nil {
		return committed{}, false
	}
	return committed{id: f[2], txid: txid}, true
}

// readCommitted reads the record beside the state file (ok false: none, or
// one that does not check).
func readCommitted(statePath string) (committed, bool) {
	f, err := os.OpenFile(statePath+committedSuffix, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0)
	if err != nil {
		return committed{}, false
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return committed{}, false
	}
	b := make([]byte, committedLen+1)
	n, err := io.ReadFull(f, b)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return committed{}, false
	}
	return parseCommitted(b[:n])
}

// noteCommitted records the transaction this run has just committed (or
// found committed at open). It is written in place, never through a link;
// its sync runs beside what comes next and is waited for (markSynced)
// before the next commit writes its meta page and before the store
// closes, so a meta page is never written while the record of the
// commit before it could still be lost. A failure is returned for the
// caller to ignore: without the record a torn meta page is taken as
// damage, the safe side.
func (s *Store) noteCommitted(txid int) error {
	if s.readOnly || s.id == "" {
		return nil
	}
	s.markMu.Lock()
	defer s.markMu.Unlock()
	if s.mark != nil && s.noted == txid {
		return nil // recorded already (open notes the transaction its own commit recorded)
	}
	s.waitMark()
	first := s.mark == nil
	if first {
		f, err := os.OpenFile(s.path+committedSuffix, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0o600)
		if err != nil {
			return err
		}
		if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
			f.Close()
			return fmt.Errorf("%s%s is not a regular file", s.path, committedSuffix)
		}
		s.mark = f
	}
	s.noted = -1
	line := committed{id: s.id, txid: uint64(txid)}.line()
	if _, err := s.mark.WriteAt(line, 0); err != nil {
		return err
	}
	// Every line has the same length: whatever followed the first one
	// written goes once.
	if first {
		if err := s.mark.Truncate(int64(len(line))); err != nil {
			return err
		}
	}
	s.noted = txid
	done := make(chan struct{})
	s.markSync = done
	go func(f *os.File) {
		defer close(done)
		if first {
			_ = f.Sync()
			return
		}
		// Rewritten in place at its length: only its data changed (and its
		// times, which tell nothing). A full fsync also commits the
		// file system's journal for the new mtime; beside bbolt's own
		// syncs of a backfill's commit that took 0.45 s of 1 M contacts'
		// 64 transactions, waited for by the next one's (markSynced).
		_ = datasync(f)
	}(s.mark)
	return nil
}

// markSynced waits for the record of the last commit to reach the disk.
func (s *Store) markSynced() {
	s.markMu.Lock()
	defer s.markMu.Unlock()
	s.waitMark()
}

func (s *Store) waitMark() {
	if s.markSync != nil {
		<-s.markSync
		s.markSync = nil
	}
}
