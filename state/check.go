package state

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// CorruptError says the state file is damaged: optsync does not use it.
// It exits 1 like any runtime failure, naming the file, what is wrong and
// the way back.
type CorruptError struct {
	Path    string
	Problem string
	// Check holds the first findings of bbolt's consistency check, when it
	// could run.
	Check []string
}

func (e *CorruptError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "state %s is damaged: %s", e.Path, e.Problem)
	if len(e.Check) > 0 {
		fmt.Fprintf(&b, " (found: %s)", strings.Join(e.Check, "; "))
	}
	b.WriteString(". optsync does not use a damaged state: " + wayBack)
	return b.String()
}

// The parts of bbolt's file format the check reads (go.etcd.io/bbolt
// internal/common: a page header of 16 bytes, then the meta: magic,
// version, page size, flags, root bucket (page, sequence), freelist page,
// high-water page id, transaction id, FNV-64a checksum of the fields
// before it). Two meta pages, 0 and 1; a commit writes page txid%2.
const (
	boltMagic      = 0xED0CDAED
	boltVersion    = 2
	pageHeaderSize = 16
	metaSize       = 64
	metaChecked    = 56 // bytes the checksum covers
)

type metaPage struct {
	pageSize uint32
	root     uint64
	pgid     uint64 // the high-water mark: pages the file must hold
	txid     uint64
	problem  string // "" when valid
}

func parseMeta(page []byte) metaPage {
	if len(page) < pageHeaderSize+metaSize {
		return metaPage{problem: "cut short"}
	}
	m := page[pageHeaderSize : pageHeaderSize+metaSize]
	le := binary.LittleEndian
	mp := metaPage{pageSize: le.Uint32(m[8:]), root: le.Uint64(m[16:]), pgid: le.Uint64(m[40:]), txid: le.Uint64(m[48:])}
	h := fnv.New64a()
	h.Write(m[:metaChecked])
	switch {
	case le.Uint32(m[0:]) != boltMagic:
		mp.problem = "no bbolt marker"
	case le.Uint32(m[4:]) != boltVersion:
		mp.problem = fmt.Sprintf("bbolt format version %d", le.Uint32(m[4:]))
	case le.Uint64(m[56:]) != h.Sum64():
		mp.problem = "its checksum does not match"
	}
	return mp
}

// checkFile looks at an existing state file before bbolt maps it: bbolt
// trusts a truncated file (and faults reading past its end), falls back
// silently to the older meta page when the newer is damaged (losing the
// last transaction), and takes an empty file as a new one.
func checkFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return nil // bbolt's open reports it
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("state %s: %w", path, err)
	}
	size := fi.Size()
	bad := func(format string, a ...any) error {
		return &CorruptError{Path: path, Problem: fmt.Sprintf(format, a...)}
	}
	if size == 0 {
		return bad("it is empty (0 bytes), which no state file is; a new one is only ever created where none exists")
	}
	head := make([]byte, min(size, 1<<17))
	if _, err := io.ReadFull(f, head); err != nil {
		return fmt.Errorf("state %s: reading its first pages: %w", path, err)
	}
	m0 := parseMeta(head)
	ps := int64(m0.pageSize)
	if m0.problem != "" {
		// The page size is in the damaged page: try the usual ones for
		// the second meta page.
		ps = 0
		for _, try := range []int64{int64(os.Getpagesize()), 4096, 8192, 16384, 32768, 65536} {
			if try < int64(len(head)) {
				if m1 := parseMeta(head[try:]); m1.problem == "" && int64(m1.pageSize) == try {
					ps = try
					break
				}
			}
		}
		if ps == 0 {
			return bad("neither of its two meta pages is valid (page 0: %s): it is not a state file, or its start is destroyed (%d bytes)", m0.problem, size)
		}
		return bad("meta page 0 is damaged (%s): bbolt would fall back to meta page 1 and silently lose the last transaction", m0.problem)
	}
	if ps < 1024 || ps > 1<<16 || ps&(ps-1) != 0 {
		return bad("meta page 0 names a page size of %d", ps)
	}
	if size < 2*ps {
		return bad("it is %d bytes, shorter than its two meta pages (%d bytes each): truncated", size, ps)
	}
	m1 := parseMeta(head[ps:])
	switch {
	case m1.problem != "":
		return bad("meta page 1 is damaged (%s): bbolt would fall back to meta page 0 and silently lose the last transaction", m1.problem)
	case int64(m1.pageSize) != ps:
		return bad("its meta pages disagree on the page size (%d, %d)", ps, m1.pageSize)
	case m0.txid%2 != 0 || m1.txid%2 != 1 || max(m0.txid, m1.txid)-min(m0.txid, m1.txid) != 1:
		// Each commit writes the meta page of its own parity, so the two
		// always hold consecutive transactions: anything else is an old
		// page written back, or a damaged one that still checks.
		return bad("its meta pages hold transactions %d and %d, not two consecutive ones: one was replaced", m0.txid, m1.txid)
	}
	newest := m0
	if m1.txid > m0.txid {
		newest = m1
	}
	if size%ps != 0 {
		return bad("its size, %d bytes, is not a whole number of %d-byte pages: truncated or appended to", size, ps)
	}
	if want := int64(newest.pgid) * ps; size < want {
		return bad("it is %d bytes, shorter than the %d pages (%d bytes) its last transaction (%d) uses: truncated", size, newest.pgid, want, newest.txid)
	}
	if newest.root >= newest.pgid || newest.root < 2 {
		return bad("its last transaction's root page (%d) lies outside its %d pages", newest.root, newest.pgid)
	}
	return nil
}

// checkEnv makes a process that imports this package run bbolt's
// consistency check over the file it names, print what it finds and exit:
// the check runs in goroutines of bbolt's own, where a damaged page panics
// or faults beyond any recover, so it runs in a process of its own
// (os.Executable again), whose crash is a finding, not the run's end.
const checkEnv = "OPTSYNC_INTERNAL_STATE_CHECK"

func init() {
	if path := os.Getenv(checkEnv); path != "" {
		os.Exit(runCheck(path))
	}
}

// runCheck is the child's side: bbolt's check, then every seal; exit 0
// clean, 3 with findings (one a line on stdout), 4 when the file cannot be
// opened.
func runCheck(path string) int {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: readerWait})
	if err != nil {
		fmt.Println(err)
		return 4
	}
	defer db.Close()
	n := 0
	report := func(err error) {
		if n++; n <= 5 {
			fmt.Println(err)
		}
	}
	_ = db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() { // drained: the checker must not block
			report(err)
		}
		if n == 0 {
			verifySeals(tx, report)
		}
		return nil
	})
	if n > 5 {
		fmt.Printf("and %d more\n", n-5)
	}
	if n > 0 {
		return 3
	}
	return 0
}

// checkSeals checks the seal of every record of a sealed file.
func (s *Store) checkSeals() error {
	if !s.sealed {
		return nil
	}
	var found []string
	err := s.view(func(tx *bolt.Tx) error {
		verifySeals(tx, func(err error) {
			if len(found) < 5 {
				found = append(found, err.Error())
			}
		})
		return nil
	})
	if err != nil {
		return err
	}
	if len(found) > 0 {
		return &CorruptError{Path: s.path, Problem: found[0], Check: found[1:]}
	}
	return nil
}

// verifySeals checks the seal of every value in a sealed file: a flipped
// bit in a key is found only this way (a lookup by the right key finds
// nothing, and reads on as if the record never was).
func verifySeals(tx *bolt.Tx, report func(error)) {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		return
	}
	_, sealed, err := readSchema(meta.Get(keySchema))
	if err != nil {
		report(err)
		return
	}
	if !sealed {
		return
	}
	var walk func(name string, b *bolt.Bucket)
	walk = func(name string, b *bolt.Bucket) {
		_ = b.ForEach(func(k, v []byte) error {
			if v == nil {
				if child := b.Bucket(k); child != nil {
					walk(string(k), child)
					return nil
				}
			}
			if _, err := unseal(name, k, v); err != nil {
				report(err)
			}
			return nil
		})
	}
	_ = tx.ForEach(func(name []byte, b *bolt.Bucket) error {
		walk(string(name), b)
		return nil
	})
}

// consistency runs bbolt's consistency check over the file in a child
// process and returns its findings (nil: clean, or the check could not be
// started). Opening a file for writing makes bbolt walk every page the
// same way, in a goroutine whose panic no recover reaches: a file the
// check passes is one that walk does not trip on.
func consistency(path string) []string {
	exe, err := os.Executable()
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(os.Environ(), checkEnv+"="+path)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	lines := func(b *bytes.Buffer) []string {
		var ls []string
		for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
			if l = strings.TrimSpace(l); l != "" && len(ls) < 6 {
				ls = append(ls, l)
			}
		}
		return ls
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ee) && ee.ExitCode() == 3:
		return lines(&out)
	case errors.As(err, &ee) && ee.ExitCode() == 4:
		return nil // the open's own error comes again from the run's open
	case errors.As(err, &ee):
		// A panic or a fault in bbolt's checker: the first line says where.
		first := lines(&errb)
		if len(first) == 0 {
			return []string{fmt.Sprintf("the check stopped (%v)", ee)}
		}
		return []string{"the check stopped at: " + strings.TrimPrefix(first[0], "panic: ")}
	}
	return nil
}
