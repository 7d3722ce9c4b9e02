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
	freelistPage   = 0x10
	boltMagic      = 0xED0CDAED
	boltVersion    = 2
	pageHeaderSize = 16
	metaSize       = 64
	metaChecked    = 56 // bytes the checksum covers
)

type metaPage struct {
	pageSize uint32
	root     uint64
	freelist uint64 // the free list's page (noFreelist: not kept in the file)
	pgid     uint64 // the high-water mark: pages the file must hold
	txid     uint64
	problem  string // "" when valid
}

// noFreelist is the free list page of a file written without one.
const noFreelist = 1<<64 - 1

func parseMeta(page []byte) metaPage {
	if len(page) < pageHeaderSize+metaSize {
		return metaPage{problem: "cut short"}
	}
	m := page[pageHeaderSize : pageHeaderSize+metaSize]
	le := binary.LittleEndian
	mp := metaPage{pageSize: le.Uint32(m[8:]), root: le.Uint64(m[16:]), freelist: le.Uint64(m[32:]), pgid: le.Uint64(m[40:]), txid: le.Uint64(m[48:])}
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

// pageSizeOf reads meta page 0 from the file's first bytes (head) and the
// page size: the one page 0 names, or, when page 0 is damaged (torn by a
// commit that did not finish, say), the usual size at which the second
// meta page is valid and names itself (0: none).
func pageSizeOf(head []byte) (m0 metaPage, ps int64) {
	m0 = parseMeta(head)
	if m0.problem == "" {
		return m0, int64(m0.pageSize)
	}
	for _, try := range []int64{int64(os.Getpagesize()), 4096, 8192, 16384, 32768, 65536} {
		if try < int64(len(head)) {
			if m1 := parseMeta(head[try:]); m1.problem == "" && int64(m1.pageSize) == try {
				return m0, try
			}
		}
	}
	return m0, 0
}

// checkFile looks at an existing state file before bbolt maps it: bbolt
// trusts a truncated file (and faults reading past its end), falls back
// silently to the older meta page when the newer is damaged (losing the
// last transaction), and takes an empty file as a new one. A meta page
// torn by a commit that did not finish is no damage (committed.go): torn
// then names the state file the record beside it belongs to, to be
// compared with the file's own identity once it is open.
func checkFile(path, statePath string) (torn *committed, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil // bbolt's open reports it
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("state %s: %w", path, err)
	}
	size := fi.Size()
	bad := func(format string, a ...any) error {
		return &CorruptError{Path: path, Problem: fmt.Sprintf(format, a...)}
	}
	if size == 0 {
		return nil, bad("it is empty (0 bytes), which no state file is; a new one is only ever created where none exists")
	}
	head := make([]byte, min(size, 1<<17))
	if _, err := io.ReadFull(f, head); err != nil {
		return nil, fmt.Errorf("state %s: reading its first pages: %w", path, err)
	}
	m0, ps := pageSizeOf(head)
	if ps == 0 {
		return nil, bad("neither of its two meta pages is valid (page 0: %s): it is not a state file, or its start is destroyed (%d bytes)", m0.problem, size)
	}
	if ps < 1024 || ps > 1<<16 || ps&(ps-1) != 0 {
		return nil, bad("meta page 0 names a page size of %d", ps)
	}
	if size < 2*ps {
		return nil, bad("it is %d bytes, shorter than its two meta pages (%d bytes each): truncated", size, ps)
	}
	m1 := parseMeta(head[ps:])
	var newest metaPage
	switch {
	case m0.problem != "" && m1.problem != "":
		return nil, bad("neither of its two meta pages is valid (page 0: %s; page 1: %s)", m0.problem, m1.problem)
	case m0.problem != "" || m1.problem != "":
		damaged, good, problem := 0, m1, m0.problem
		if m1.problem != "" {
			damaged, good, problem = 1, m0, m1.problem
		}
		// Each commit writes the meta page of its transaction's parity:
		// the damaged page is the one the next commit was writing, if that
		// commit did not finish while good's transaction was the last one
		// that did.
		last, known := readCommitted(statePath)
		if !known || last.txid != good.txid || int(good.txid%2) == damaged {
			return nil, bad("meta page %d is damaged (%s): bbolt would fall back to meta page %d and silently lose the last transaction", damaged, problem, 1-damaged)
		}
		newest, torn = good, &last
	case int64(m1.pageSize) != ps:
		return nil, bad("its meta pages disagree on the page size (%d, %d)", ps, m1.pageSize)
	case m0.txid%2 != 0 || m1.txid%2 != 1 || max(m0.txid, m1.txid)-min(m0.txid, m1.txid) != 1:
		// Each commit writes the meta page of its own parity, so the two
		// always hold consecutive transactions: anything else is an old
		// page written back, or a damaged one that still checks.
		return nil, bad("its meta pages hold transactions %d and %d, not two consecutive ones: one was replaced", m0.txid, m1.txid)
	default:
		newest = m0
		if m1.txid > m0.txid {
			newest = m1
		}
	}
	if size%ps != 0 {
		return nil, bad("its size, %d bytes, is not a whole number of %d-byte pages: truncated or appended to", size, ps)
	}
	if want := int64(newest.pgid) * ps; size < want {
		return nil, bad("it is %d bytes, shorter than the %d pages (%d bytes) its last transaction (%d) uses: truncated", size, newest.pgid, want, newest.txid)
	}
	if newest.root >= newest.pgid || newest.root < 2 {
		return nil, bad("its last transaction's root page (%d) lies outside its %d pages", newest.root, newest.pgid)
	}
	if newest.freelist != noFreelist {
		if problem := checkFreelist(f, uint64(ps), newest); problem != "" {
			return nil, bad("%s", problem)
		}
	}
	return torn, nil
}

// checkFreelist reads the free list a writer's bbolt loads at open (pages
// it will write over): its page is a free list page, and the pages it
// lists lie inside the file's pages in use, each once, in order, as bbolt
// writes them. (Whether a page it lists is also reached from the root,
// which would let bbolt overwrite a live page, is what the walk of every
// page finds: a backfill makes it.)
func checkFreelist(f *os.File, ps uint64, m metaPage) string {
	id := m.freelist
	if id < 2 || id >= m.pgid {
		return fmt.Sprintf("its last transaction's free list (page %d) lies outside its %d pages", id, m.pgid)
	}
	hdr := make([]byte, pageHeaderSize+8)
	if _, err := f.ReadAt(hdr, int64(id*ps)); err != nil {
		return fmt.Sprintf("its free list (page %d) cannot be read: %v", id, err)
	}
	le := binary.LittleEndian
	overflow := uint64(le.Uint32(hdr[12:]))
	switch {
	case le.Uint64(hdr) != id:
		return fmt.Sprintf("its free list page %d names itself page %d", id, le.Uint64(hdr))
	case le.Uint16(hdr[8:]) != freelistPage:
		return fmt.Sprintf("its free list page %d has type/flags %#x", id, le.Uint16(hdr[8:]))
	case id+overflow >= m.pgid:
		return fmt.Sprintf("its free list page %d runs past the %d pages in use", id, m.pgid)
	}
	count, skip := uint64(le.Uint16(hdr[10:])), uint64(0)
	if count == 0xFFFF { // the real count is the first element
		count, skip = le.Uint64(hdr[pageHeaderSize:]), 1
	}
	if pageHeaderSize+(count+skip)*8 > (overflow+1)*ps {
		return fmt.Sprintf("its free list page %d lists %d pages, more than fit in it", id, count)
	}
	ids := make([]byte, count*8)
	if _, err := f.ReadAt(ids, int64(id*ps+pageHeaderSize+skip*8)); err != nil {
		return fmt.Sprintf("its free list (page %d) cannot be read: %v", id, err)
	}
	prev := uint64(1)
	for i := range count {
		p := le.Uint64(ids[i*8:])
		if p <= prev || p >= m.pgid {
			return fmt.Sprintf("its free list (page %d) lists page %d out of order or outside the %d pages in use", id, p, m.pgid)
		}
		prev = p
	}
	return ""
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
			verifySeals(tx, report, nil)
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
			if len(found) < sealsShown {
				found = append(found, err.Error())
			}
		}, func() { s.releaseMapping(tx) })
		return nil
	})
	if err != nil {
		return err
	}
	return s.sealsFound(found)
}

// sealsFound is the error of the seals found not matching (the first few,
// in the order of the keys), in a sealed file; nil when none was.
func (s *Store) sealsFound(found []string) error {
	if !s.sealed || len(found) == 0 {
		return nil
	}
	return &CorruptError{Path: s.path, Problem: found[0], Check: found[1:]}
}

// verifySeals checks the seal of every value in a sealed file: a flipped
// bit in a key is found only this way (a lookup by the right key finds
// nothing, and reads on as if the record never was).
//
// release, when set, is called every scanEvery values: a scan through the
// mapping would otherwise leave the whole file in the resident set.
func verifySeals(tx *bolt.Tx, report func(error), release func()) {
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
	n := 0
	var walk func(name string, b *bolt.Bucket)
	walk = func(name string, b *bolt.Bucket) {
		_ = b.ForEach(func(k, v []byte) error {
			if v == nil {
				if child := b.Bucket(k); child != nil {
					walk(string(k), child)
					return nil
				}
			}
			if n++; release != nil && n%scanEvery == 0 {
				release()
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
