package state

import (
	"fmt"
	"runtime/debug"

	bolt "go.etcd.io/bbolt"
)

// view runs fn in a read transaction. bbolt panics on a damaged page (and
// a page past a truncated end faults); here either becomes a
// *CorruptError naming the file and the way back, never a crash.
func (s *Store) view(fn func(tx *bolt.Tx) error) (err error) {
	defer s.recoverDamage(&err, debug.SetPanicOnFault(true))
	return s.db.View(fn)
}

// recoverDamage, deferred with the goroutine's previous SetPanicOnFault,
// turns a panic on the way out into the error of a damaged file. For a
// reader, bbolt's consistency check (in a process of its own) adds what
// else it finds; a run holds the file alone, and its open checked it.
func (s *Store) recoverDamage(err *error, old bool) {
	debug.SetPanicOnFault(old)
	r := recover()
	if r == nil {
		return
	}
	if d, ok := r.(damage); ok {
		*err = &CorruptError{Path: s.path, Problem: d.problem}
		return
	}
	ce := &CorruptError{Path: s.path, Problem: fmt.Sprintf("reading it stopped at a damaged page (%v)", r)}
	if s.readOnly {
		ce.Check = consistency(s.path)
	}
	*err = ce
}
