// Package state keeps what optsync knows between runs in one bbolt file:
// per-contact snapshots, totals over them, the decision log, the run history
// and the schema version. It commits a run's decisions (CommitDecisions):
// the entries transform kept (Dirty) decided again, a chunk per
// transaction, the run's final record with the last. Options is its part
// of the config (the state file, audit_retention, pending_alert,
// max_run_time), with its checks.
//
// It also owns a run's start and end around the stages (start.go,
// kept.go, recover.go, reset.go, history.go, runcommit.go): opening the file
// as the command needs, refusing to start over silently from a lost or
// another state file, placing the files of runs that did not commit, the
// config's changes since the last run, the run's record (History: start,
// failure recorder, safety stop, commit with CommitRun), the run's final
// record (Ending; Run.End names its outcome after the exit code main chose)
// and state reset. What state gives the stages goes out as values (Before,
// Identify, Deciding).
//
// Two locks guard it. A run (backfill, run, state reset) holds the run lock,
// <state>.lock, for its whole life: a second run exits at once, naming the
// holder. bbolt's own lock on the state file only keeps readers (runs,
// audit, state export, plan) out while a run writes: while it reads and
// decides, a run shares that lock, so readers answer from the last
// committed state; when it commits, it takes the lock alone, and readers
// that arrive meanwhile wait for the commit.
package state

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/bits"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"optsync/transform"
)

// SchemaVersion is bumped whenever a stored layout changes. 4: contact
// records keep the Dynamics ETag as read, when each agreement was reached,
// and per pending write the start of the run that wrote it (record version
// 4); the file keeps totals over its records (an older optsync would change
// records without them). Schema 1 (the last released one: records of
// version 1) and files of builds in between (schema 2: record version 2,
// the ETag; schema 3: record version 3, the ETag and agreement times, and
// the totals) are still read, and brought up to 4 by the first transaction
// that writes records. 5: every value ends with a seal, the CRC32C of its
// key and value (seal.go); a file of 1 to 4 is read as it is by readers
// and sealed whole by the first run that opens it (migrate.go).
// 6: contact records (version 5) also keep the Campaign fields' own change
// times and whether Campaign showed two or more profiles for the contact —
// an older optsync would decide such a contact again; a file of schema 5 is
// brought up to 6 by the first transaction that writes records.
// 7: the file keeps an index of the records by PKey and one of the pending
// writes (index.go), and its totals count the profiles and pending writes:
// an older optsync would change records without them. A file of 6 (or
// before) gets them from the first run that opens it.
// 9: contact records are packed in blocks (packed.go), several to a bbolt
// key: an older optsync would read a block as one record. A file of 8 (or
// before) is read as it is by readers and rewritten whole by the first
// run that opens it (migrate.go), as a file before the seals is.
// 8: the decision log is indexed by run, then contact (log_index), where
// 7 indexed it by contact first (log_contact, which a night rewrote a page
// of per contact decided): an older optsync would write its entries to
// log_contact only. A file of 7 (or before) gets log_index from the first
// run that opens it (BuildIndexes), and keeps log_contact until then.
// 10: log_index's entries are packed in blocks, in log_index_packed
// (log.go): an older optsync would read the log by contact through an
// index the file no longer keeps. A file of 9 (or before) keeps its index
// until the first run that opens it builds the packed one (BuildIndexes).
const SchemaVersion = 10

// packedSchema is the first schema whose contact records are packed.
const packedSchema = 9

var (
	bucketMeta     = []byte("meta")
	bucketPairs    = []byte("pairs")
	bucketContacts = []byte("contacts")
	bucketRuns     = []byte("runs")
	keySchema      = []byte("schema")
)

// How long readers wait for a commit to end, and a run waits for readers to
// finish before it writes. A commit takes seconds even at millions of
// contacts; a reader that keeps the file longer than writerWait (a state
// export piped into a pager left open) fails the run rather than hold the
// night's work back silently.
const (
	readerWait = 30 * time.Second
	writerWait = 2 * time.Minute
)

// LockedError says another run holds the state file, or (Writing) that it
// stayed busy committing for longer than a reader waits.
type LockedError struct {
	Path string
	LockInfo
	Writing bool
	Waited  time.Duration // how long a reader waited for a commit (Writing)
}

func (e *LockedError) Error() string {
	if e.Writing {
		return fmt.Sprintf("state %s is being written by the optsync run that holds it (%s) and stayed busy for %s; try again in a moment",
			e.Path, e.holder(), e.Waited)
	}
	return fmt.Sprintf("state %s is locked by another optsync run: %s", e.Path, e.holder())
}

func (e *LockedError) holder() string {
	if e.PID == 0 {
		return "its details could not be read"
	}
	return fmt.Sprintf("pid %d on %s, started %s", e.PID, e.Host, e.Started.UTC().Format(time.RFC3339))
}

// Store is an open state file.
type Store struct {
	db       *bolt.DB
	file     *os.File // bbolt's file: its flock is shared while a run decides
	path     string
	lock     *runLock
	readOnly bool
	// sealed says the file's values carry their checksums (schema 5 on):
	// every one read is checked. A file from before them is read as it
	// is (by readers) or sealed whole first (by a run: migrate).
	sealed bool
	// flatRecords says the file keeps one bbolt key per contact record
	// (schema 8 and before): read as it is (by readers) or rewritten
	// whole in blocks first (by a run: migrate), like a file before seals.
	flatRecords bool
	// mu guards shared, which says this run lets readers in for now.
	mu     sync.Mutex
	shared bool
	// viewsMu guards views, the read views handed out and not closed yet
	// (not mu: exclusive holds that while it waits for other processes).
	viewsMu sync.Mutex
	views   map[*Reader]struct{}
	// pairIDs[i] is the stored id of the configured pair i (0: none yet).
	pairIDs []byte
	// A run that writes nothing changes nothing in state but its entry in
	// the run history: a configured pair new to the file gets its id at
	// open, but the id (and a newer schema version, and the totals of a
	// file from before they were kept) is stored only with the first
	// transaction that writes records (see persist).
	newPairs     map[string]byte
	schemaBehind bool
	// unmapped holds the ids of registered pairs that are not configured
	// (a mapping removed, until DropUnmapped drops them after the run's
	// commit): their entries in a record are kept when it is written.
	unmapped map[byte]bool
	// begin, for a run's open, is the run its first transaction records
	// begun (nil: none); torn is the meta page found torn at open.
	begin *beginning
	torn  *committed
	// passed is the record of the last commit found ahead of the file at
	// open (nil: not ahead).
	passed *passedRecord
	// Holder, for a read-only store, is the run that held the state when it
	// was opened (nil: none): what is read is its last commit.
	Holder *LockInfo
	// id is the file's identity (see ID).
	id string
	// guard checks the pages a command reaches (pages.go).
	guard *pageGuard
	// mark is <state>.committed, open once a commit has been recorded;
	// noted is the transaction it records, markSync its sync under way
	// (nil: none; committed.go), all guarded by markMu.
	markMu   sync.Mutex
	mark     *os.File
	noted    int
	markSync chan struct{}
	// release keeps the mapped pages of the file out of the resident set
	// (release.go).
	release pageReleaser
	// quiet keeps fault-around off in the mapping while a night commits
	// (quiet_linux.go).
	quiet quietFaults
	// commits counts the write transactions committed; reads keeps what
	// a run's lookups found, for its commit (kept_reads.go).
	commits atomic.Int64
	reads   keptReads
	// indexChunk, when set, is the keys per transaction of an index
	// written whole (tests make it small to stop a build half-way).
	indexChunk int
	// procs is GOMAXPROCS when the store was opened (0: set in the
	// environment): a commit runs with one more (releaseDuring).
	procs int
	// during counts the releaseDuring calls under way (they nest); stop
	// ends the outermost's releases.
	during struct {
		sync.Mutex
		n    int
		stop func()
	}
}

// Open opens (creating if needed) the state file for a run that may write,
// taking the run lock. A held run lock gives a *LockedError at once; readers
// that have the file open are waited for (up to writerWait).
// pairs are the configured mappings, in order; each gets a stable stored id.
// A missing folder is created 0700, as out_dir is: the file holds
// personal data.
func Open(path string, pairs []transform.Pair) (*Store, error) {
	return openWriter(path, pairs, false, nil)
}

// OpenFull is Open for a command that reads every record anyway (a
// backfill): every page of the file is walked and every record's seal
// checked before anything is used, so that nothing is left to check as
// the records are read.
func OpenFull(path string, pairs []transform.Pair) (*Store, error) {
	return openWriter(path, pairs, true, nil)
}

// beginning is a run begun by the transaction that opens the file (see
// init): check says, before anything is written, that the file is the
// one the run may use.
type beginning struct {
	run   *Run
	check func(*Store) error
}

func openWriter(path string, pairs []transform.Pair, full bool, b *beginning) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating the folder of state %s: %w", path, err)
	}
	host, _ := os.Hostname()
	lock, err := acquireRunLock(path, LockInfo{PID: os.Getpid(), Host: host, Started: time.Now().UTC()})
	if err != nil {
		return nil, err
	}
	// A copy a compact killed half-way left (the lock held: none is
	// under way) is of no use; gigabytes at millions of contacts.
	if real, err := resolvePath(path); err == nil {
		_ = os.Remove(real + compactingSuffix)
	}
	s, err := openStore(path, pairs, false, full, nil, b, writerWait)
	if err != nil {
		lock.release()
		return nil, err
	}
	s.lock = lock
	return s, nil
}

// OpenReadOnly opens an existing state file for reading. It answers while a
// run holds the state (Holder says which), from the run's last commit; it
// waits (up to readerWait) while that run commits.
func OpenReadOnly(path string, pairs []transform.Pair) (*Store, error) {
	return openReadOnly(path, pairs, readerWait)
}

func openReadOnly(path string, pairs []transform.Pair, wait time.Duration) (*Store, error) {
	if _, err := os.Lstat(path); err != nil {
		return nil, fmt.Errorf("state %s: %w", path, err)
	}
	holder, err := lockHolder(path)
	if err != nil {
		return nil, err
	}
	s, err := openStore(path, pairs, true, false, nil, nil, wait)
	if errors.Is(err, bolterrors.ErrTimeout) {
		le := &LockedError{Path: path, Writing: true, Waited: wait}
		if holder != nil {
			le.LockInfo = *holder
		}
		return nil, le
	}
	if err != nil {
		return nil, err
	}
	s.Holder = holder
	return s, nil
}

func open(path string, pairs []transform.Pair, readOnly bool) (*Store, error) {
	return openHooked(path, pairs, readOnly, false, nil)
}

// fileHook, in tests, sees every file bbolt opens (the state file, and a
// new one under its temporary name) and may inject faults into it.
type fileHook func(f *os.File) error

// openHooked opens the state file. Its shape (size, meta pages, free list)
// is checked before bbolt maps it; its pages and records are then checked
// as commands reach them (pages.go, seals on every read). full walks every
// page and checks every seal first, for a command that reads everything
// anyway (backfill); so does a writer's open of a file whose free list
// bbolt would rebuild by walking every page itself, in goroutines where a
// damaged page panics beyond any recover.
func openHooked(path string, pairs []transform.Pair, readOnly, full bool, hook fileHook) (*Store, error) {
	wait := writerWait
	if readOnly {
		wait = readerWait
	}
	return openStore(path, pairs, readOnly, full, hook, nil, wait)
}

// openStore is openHooked for a writer whose open may begin a run (b),
// waiting up to wait for the file's lock (readers wait for a commit,
// writers for readers to go).
func openStore(path string, pairs []transform.Pair, readOnly, full bool, hook fileHook, b *beginning, wait time.Duration) (*Store, error) {
	s := &Store{path: path, readOnly: readOnly, procs: spareProcs(), begin: b}
	real, err := resolvePath(path)
	if err != nil {
		return nil, err
	}
	// A file that exists is checked before bbolt maps it (an empty one is
	// damaged: bbolt would take it for a new file).
	_, statErr := os.Lstat(real)
	exists := !errors.Is(statErr, fs.ErrNotExist)
	var torn *committed
	var walked *sealFindings
	if exists {
		if torn, walked, err = checkBeforeMapping(real, path, readOnly, full); err != nil {
			return nil, err
		}
	}
	openFunc := hookedOpener(readOnly, hook)
	if !exists && !readOnly {
		if err := create(real, openFunc); err != nil {
			return nil, fmt.Errorf("creating state %s: %w", path, err)
		}
	}
	opts := s.boltOptions(wait, readOnly, openFunc)
	db, err := openBolt(real, opts)
	if errors.Is(err, bolterrors.ErrTimeout) {
		if readOnly {
			return nil, err
		}
		return nil, fmt.Errorf("state %s: readers (optsync runs, audit, state export or plan) kept it open for %s; the run did not start", path, wait)
	}
	if err != nil {
		return nil, fmt.Errorf("opening state %s: %w", path, err)
	}
	s.db = db
	if err := s.prepare(real, opts, pairs, exists, full, walked, torn); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// checkBeforeMapping checks an existing file's shape before bbolt maps it,
// so that bbolt never sees a file it would misread or panic on. It returns
// the meta page found torn (if one is) and, when every page was walked,
// what the walk found of the seals (nil: not walked). A full check has the
// walk check every value's seal too, while it holds each page.
func checkBeforeMapping(real, path string, readOnly, full bool) (torn *committed, walked *sealFindings, err error) {
	if torn, err = checkFile(real, path); err != nil {
		return nil, nil, err
	}
	if full || !readOnly && !freelistKept(real) {
		// Its pages walked as bbolt's check (tx.Check) walks them, and
		// as its open for writing does when it rebuilds the free list.
		// Found wrong, bbolt's own check (tx.Check, in a process of its
		// own) says what else it sees.
		seals, err := walkPages(real, full)
		if err != nil {
			var ce *CorruptError
			if errors.As(err, &ce) {
				ce.Path, ce.Check = path, consistency(real)
			}
			return nil, nil, err
		}
		walked = &seals
	}
	return torn, walked, nil
}

// hookedOpener opens every file bbolt opens the way the mode needs, and
// hands it to the test hook (if any) before bbolt uses it.
func hookedOpener(readOnly bool, hook fileHook) func(string, int, os.FileMode) (*os.File, error) {
	return func(name string, flag int, mode os.FileMode) (*os.File, error) {
		f, err := openFile(name, flag, mode, readOnly)
		if err == nil && hook != nil {
			if err = hook(f); err != nil {
				f.Close()
				f = nil
			}
		}
		return f, err
	}
}

// initialMapping is the state file's first mapping: 1 GB of address space
// on 64 bits; none asked for on 32, where a process has 3 GB of it at most
// and a mapping of 1 GB beside the Go heap's was refused (ENOMEM: every
// open failed), so bbolt maps there as the file needs.
const initialMapping = (bits.UintSize / 64) << 30

// boltOptions are the options every open of the state file uses; the file
// bbolt opens is kept in s (for the checks that read it directly).
func (s *Store) boltOptions(wait time.Duration, readOnly bool, openFunc func(string, int, os.FileMode) (*os.File, error)) *bolt.Options {
	return &bolt.Options{
		Timeout:  wait,
		ReadOnly: readOnly,
		// The free list is kept in the file: without it bbolt rebuilds it
		// at every open by walking every page, seconds at millions of
		// contacts however little a run then does.
		NoFreelistSync: false,
		// A page is taken from the lowest free ones (the array keeps them
		// in order; the map hands them out in no order): a night's pages,
		// written in page order, then lie together, where scattered over
		// the file they took a 10 M-contact night's commit 1.5 – 2.5 times
		// as long to write and sync. A page at a time is taken off the
		// front of the array, as cheap as the map's.
		FreelistType: bolt.FreelistArrayType,
		// Each time a growing file is mapped again, bbolt copies every
		// node of the open write transaction out of the old mapping; a
		// large first mapping (address space, not memory) avoids that.
		InitialMmapSize: initialMapping,
		OpenFile: func(name string, flag int, mode os.FileMode) (*os.File, error) {
			f, err := openFunc(name, flag, mode)
			s.file = f
			return f, err
		},
	}
}

// prepare makes a freshly mapped file ready for use: the page guard set,
// seals checked (full), the schema and pairs read (init), a file from
// before the seals sealed, a torn meta page told apart from another
// file's, and what this run starts from noted as committed. The caller
// closes s when it fails.
func (s *Store) prepare(real string, opts *bolt.Options, pairs []transform.Pair, exists, full bool, walked *sealFindings, torn *committed) error {
	err := s.view(func(tx *bolt.Tx) error {
		s.notePassed(tx.ID())
		if meta := tx.Bucket(bucketMeta); meta != nil {
			_, sealed, err := readSchema(meta.Get(keySchema))
			if err != nil {
				return &CorruptError{Path: s.path, Problem: err.Error()}
			}
			s.sealed = sealed
		}
		return nil
	})
	// From here every page reached is checked (with its records' seals),
	// unless every one was walked already, or the file is new: every page
	// it will hold is one this process writes (as after a walk). The schema
	// read just now is read again through the check by init.
	s.guard = &pageGuard{off: walked != nil || !exists, sealed: s.sealed, carry: !s.readOnly}
	s.torn = torn
	if err == nil && exists && full {
		// Every record's seal, before any is used and before anything is
		// written (a damaged file is left as it was found): checked by
		// the walk as it read the pages, or (a walk that did not get to
		// them) now.
		if walked != nil && walked.checked {
			err = s.sealsFound(walked.found)
		} else {
			err = s.checkSeals()
		}
	}
	if err == nil {
		err = s.init(pairs)
	}
	if errors.Is(err, errUnsealed) {
		err = s.sealAndReopen(real, opts, pairs)
	}
	if err == nil && !s.readOnly {
		// What this run starts from is committed: a torn meta page from
		// here on is one of its own commits that did not finish.
		_ = s.view(func(tx *bolt.Tx) error { return s.noteCommittedErr(tx.ID()) })
	}
	return err
}

// againstRecord compares the file as opened with the record of the last
// commit beside it, once the file's identity is read and before anything
// is written: a meta page found torn at open must be this file's own
// unfinished commit (the record is this file's), and the file must not be
// behind the record (notePassed).
func (s *Store) againstRecord() error {
	if s.torn != nil && s.torn.id != s.id {
		return &CorruptError{Path: s.path, Problem: fmt.Sprintf("a meta page is damaged, and the record of the last commit beside it (%s%s) is another state file's: bbolt would fall back to the other meta page and may silently lose the last transaction", s.path, committedSuffix)}
	}
	if a := s.passed; a != nil && a.record.id == s.id {
		return &CorruptError{Path: s.path, Problem: fmt.Sprintf("its last transaction is %d, but the record of the last commit beside it (%s%s) says this file committed transaction %d: a meta page was replaced by an older copy of itself (or the whole file by an older one), and bbolt would open it without the transactions since, silently; a file restored from a backup on purpose goes with that record removed", a.txid, s.path, committedSuffix, a.record.txid)}
	}
	return nil
}

// notePassed reads the record of the last commit as the file is opened
// (txid: its last transaction), before this process writes anything: a
// record of a later transaction than the file's last is one the file has
// lost — the newer meta page replaced by an older copy of itself (both
// pages still check and hold consecutive transactions, so the shape alone
// cannot tell), or the whole file put back from an older copy — if the
// record is this file's (againstRecord, once the identity is read). The
// record only ever follows a commit, and an open holds commits out (a
// run's holds the file alone, a reader's shares it), so a record ahead of
// the file is never a race.
func (s *Store) notePassed(txid int) {
	if last, ok := readCommitted(s.path); ok && last.txid > uint64(txid) {
		s.passed = &passedRecord{record: last, txid: txid}
	}
}

// passedRecord is a record of the last commit ahead of the file's last
// transaction (txid).
type passedRecord struct {
	record committed
	txid   int
}

// sealAndReopen handles a file from before the seals, opened by a run: it
// is sealed whole, then opened again.
func (s *Store) sealAndReopen(real string, opts *bolt.Options, pairs []transform.Pair) error {
	err := s.sealWhole(real)
	if err != nil {
		return err
	}
	s.passed = nil // the copy's transactions start again, its record gone (sealWhole)
	s.db.Close()
	s.db = nil
	db, err := openBolt(real, opts)
	if err != nil {
		return err
	}
	s.db = db
	s.guard = &pageGuard{sealed: true, carry: !s.readOnly}
	return s.init(pairs)
}

// noteCommittedErr is noteCommitted whose failure is ignored: without the
// record a torn meta page is taken as damage, the safe side.
func (s *Store) noteCommittedErr(txid int) error {
	_ = s.noteCommitted(txid)
	return nil
}

// freelistKept says whether the file's last transaction kept its free list
// in the file (else bbolt's open for writing rebuilds it from every page).
func freelistKept(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	head := make([]byte, 2*65536)
	n, _ := io.ReadFull(f, head)
	m0 := parseMeta(head[:n])
	if m0.problem != "" || int(m0.pageSize) > n/2 {
		return false
	}
	newest := m0
	if m1 := parseMeta(head[m0.pageSize:n]); m1.problem == "" && m1.txid > m0.txid {
		newest = m1
	}
	return newest.freelist != noFreelist
}

// create makes a new state file whole: bbolt writes its first pages into a
// file under a temporary name of its own and syncs it, and only then is it
// linked to the state path (never replacing anything there). A state file
// is never one bbolt did not finish: a failed write, a full disk or a kill
// while it was created left a 0-byte state file, which the next run took
// for a new one and a reader could not open ("write …: bad file
// descriptor": bbolt writes the first pages of an empty file, even one
// opened to be read).
func create(path string, openFunc func(string, int, os.FileMode) (*os.File, error)) error {
	// One left by a creation killed half-way (the run lock is held: no
	// other run is creating one) goes first.
	if left, _ := filepath.Glob(path + ".new-????????????"); len(left) > 0 {
		for _, f := range left {
			os.Remove(f)
		}
	}
	tmp := path + ".new-" + newStateID()[:12]
	db, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: writerWait, FreelistType: bolt.FreelistMapType,
		OpenFile: openFunc})
	if err == nil {
		err = db.Close()
	}
	if err == nil {
		err = os.Link(tmp, path)
	}
	if rerr := os.Remove(tmp); err == nil && rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
		err = rerr
	}
	if err != nil {
		return err
	}
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer dir.Close()
	return dir.Sync()
}

// Share lets readers open the file while this run reads and decides; the
// next write takes it back alone.
func (s *Store) Share() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.readOnly || s.shared {
		return nil
	}
	if err := flock(s.file, syscall.LOCK_SH); err != nil {
		return fmt.Errorf("state %s: sharing the file with readers: %w", s.path, err)
	}
	s.shared = true
	return nil
}

// exclusive takes the file back from readers before a write, waiting for
// those that have it open to finish.
func (s *Store) exclusive() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.shared {
		return nil
	}
	deadline := time.Now().Add(writerWait)
	for {
		err := flock(s.file, syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			s.shared = false
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("state %s: taking the file back from readers: %w", s.path, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("state %s: readers (optsync runs, audit, state export or plan) kept it open for %s; nothing of this run was committed", s.path, writerWait)
		}
		time.Sleep(50 * time.Millisecond) // bbolt waits for its lock the same way
	}
}

func flock(f *os.File, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// update runs fn in a write transaction, once readers are out. An error of
// the commit itself (a failed write or fdatasync: "input/output error")
// names the file.
func (s *Store) update(fn func(tx *bolt.Tx) error) (err error) {
	if err := s.exclusive(); err != nil {
		return err
	}
	defer s.recoverDamage(&err, debug.SetPanicOnFault(true))
	var inFn bool
	var txid int
	defer s.releaseDuring()()
	if info := s.db.Info(); info != nil {
		// Advice only: a mapping left unregistered keeps fault-around,
		// and the next transaction tries again.
		_ = s.quiet.follow(info.Data)
	}
	// The pages the transaction dirties stay mapped until it ends (see
	// writeSlack), and go then.
	s.release.writing.Store(true)
	defer s.releaseNow()
	defer s.release.writing.Store(false)
	err = s.db.Update(func(tx *bolt.Tx) error {
		txid = tx.ID()
		if err := fn(tx); err != nil {
			inFn = true
			return err
		}
		// The record of the last commit is on disk before this one
		// writes its meta page (its sync ran beside fn).
		s.markSynced()
		return nil
	})
	if err != nil && !inFn {
		err = fmt.Errorf("state %s: committing: %w", s.path, err)
	}
	if err == nil {
		s.commits.Add(1)
		// recorded before the next commit can start (committed.go)
		_ = s.noteCommitted(txid)
	}
	return err
}

// openBolt is bolt.Open with its panics (a damaged page met while the free
// pages are gathered, a fault past the end of the mapping) turned into an
// error.
func openBolt(path string, opt *bolt.Options) (db *bolt.DB, err error) {
	defer func(old bool) {
		debug.SetPanicOnFault(old)
		if r := recover(); r != nil {
			db, err = nil, &CorruptError{Path: path, Problem: fmt.Sprintf("bbolt could not open it: %v", r)}
		}
	}(debug.SetPanicOnFault(true))
	return bolt.Open(path, 0o600, opt)
}

// init checks the schema and resolves the configured pairs to stored ids,
// registering new ones.
func (s *Store) init(pairs []transform.Pair) error {
	s.pairIDs = make([]byte, len(pairs))
	if s.readOnly {
		return s.view(func(tx *bolt.Tx) error {
			if err := s.checkSchema(tx); err != nil {
				return err
			}
			if err := s.againstRecord(); err != nil {
				return err
			}
			if reg := tx.Bucket(bucketMeta); reg != nil {
				if reg = reg.Bucket(bucketPairs); reg != nil {
					vr := s.vb(reg, "pairs")
					for i, p := range pairs {
						if v := vr.Get(pairKey(p)); len(v) == 1 {
							s.pairIDs[i] = v[0]
						}
					}
				}
			}
			return nil
		})
	}
	return s.update(func(tx *bolt.Tx) error {
		if err := s.checkSchema(tx); err != nil {
			return err
		}
		// Before anything is written, a file sealed whole first included.
		if err := s.againstRecord(); err != nil {
			return err
		}
		if !s.sealed || s.flatRecords {
			return errUnsealed // open seals (and packs) the file whole, then opens it again
		}
		reg, err := s.ensureLayout(tx)
		if err != nil {
			return err
		}
		if err := s.assignPairIDs(reg, pairs); err != nil {
			return err
		}
		if b := s.begin; b != nil {
			// A run's open records it begun in the same transaction
			// (one commit, its free list and syncs, fewer), once nothing
			// stops it: nothing is written for a run that may not use
			// the file.
			if err := b.check(s); err != nil {
				return err
			}
			return s.beginRun(tx, b.run)
		}
		return nil
	})
}

// checkSchema reads the schema, which says whether the values are sealed,
// and refuses a file written by a newer optsync.
func (s *Store) checkSchema(tx *bolt.Tx) error {
	s.sealed = true // a new file is written sealed from the start
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		return nil
	}
	n, sealed, err := readSchema(meta.Get(keySchema))
	if err != nil {
		return &CorruptError{Path: s.path, Problem: err.Error()}
	}
	if n > SchemaVersion {
		return fmt.Errorf("state %s has schema %d; this optsync reads schema %d or older", s.path, n, SchemaVersion)
	}
	s.sealed = sealed
	s.flatRecords = n != 0 && n < packedSchema
	s.id = string(s.vb(meta, "meta").Get(keyStateID))
	return nil
}

// ensureLayout gives a writer's file the buckets, schema, indexes and
// identity every command expects, and returns the pair registry.
func (s *Store) ensureLayout(tx *bolt.Tx) (*bolt.Bucket, error) {
	meta, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return nil, err
	}
	if v := meta.Get(keySchema); v == nil {
		if err := s.vb(meta, "meta").Put(keySchema, []byte(fmt.Sprint(SchemaVersion))); err != nil {
			return nil, err
		}
		// a new file: its indexes are built (empty)
		if err := s.markIndexes(tx); err != nil {
			return nil, err
		}
	} else {
		n, _, _ := readSchema(v)
		s.schemaBehind = n != SchemaVersion
	}
	// A file gets its identity when it is created (one made before
	// identities were kept, when a run first opens it).
	if s.id == "" {
		s.id = newStateID()
		if err := s.vb(meta, "meta").Put(keyStateID, []byte(s.id)); err != nil {
			return nil, err
		}
	}
	reg, err := meta.CreateBucketIfNotExists(bucketPairs)
	if err != nil {
		return nil, err
	}
	for _, name := range [][]byte{bucketContacts, bucketRuns} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return nil, err
		}
	}
	return reg, nil
}

// assignPairIDs resolves each configured pair to its stored id, notes the
// stored pairs no longer configured, and picks the lowest free id for a
// new pair; new ids are only noted here (persist stores them with the
// first records written under them).
func (s *Store) assignPairIDs(reg *bolt.Bucket, pairs []transform.Pair) error {
	used := map[byte]bool{}
	configured := map[string]bool{}
	for _, p := range pairs {
		configured[string(pairKey(p))] = true
	}
	s.unmapped = map[byte]bool{}
	vr := s.vb(reg, "pairs")
	_ = vr.ForEach(func(k, v []byte) error {
		if len(v) == 1 {
			used[v[0]] = true
			if !configured[string(k)] {
				s.unmapped[v[0]] = true
			}
		}
		return nil
	})
	for i, p := range pairs {
		k := pairKey(p)
		if v := vr.Get(k); len(v) == 1 {
			s.pairIDs[i] = v[0]
			continue
		}
		id := byte(0)
		for c := 1; c < 256; c++ {
			if !used[byte(c)] {
				id = byte(c)
				break
			}
		}
		if id == 0 {
			return fmt.Errorf("state %s: no free pair id left (255 mappings registered)", s.path)
		}
		used[id] = true
		if s.newPairs == nil {
			s.newPairs = map[string]byte{}
		}
		s.newPairs[string(k)] = id
		s.pairIDs[i] = id
	}
	return nil
}

// persist stores, in a transaction that writes records, what open only
// noted: the ids of configured pairs new to the file and the schema
// version of the layout the records are written in. A file from before
// the totals were kept gets them here, from a full count, with the schema
// that says every writer keeps them; from here on every write keeps them.
func (s *Store) persist(tx *bolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	vm := s.vb(meta, "meta")
	kept, ok, err := s.loadCounts(tx)
	if err != nil {
		return err
	}
	if !ok || kept.v1 {
		// none yet, or from before the profiles and pending writes were
		// counted
		c, err := s.recount(tx)
		if err != nil {
			return fmt.Errorf("counting the records once: %w", err)
		}
		if err := s.storeCounts(tx, c); err != nil {
			return err
		}
	}
	if s.schemaBehind {
		if err := vm.Put(keySchema, []byte(fmt.Sprint(SchemaVersion))); err != nil {
			return err
		}
	}
	reg := s.vb(meta.Bucket(bucketPairs), "pairs")
	for k, id := range s.newPairs {
		if err := reg.Put([]byte(k), []byte{id}); err != nil {
			return err
		}
	}
	return nil
}

// persisted notes that a transaction that called persist has committed.
func (s *Store) persisted() {
	s.schemaBehind = false
	s.newPairs = nil
}

// pairKey identifies a mapping across runs; flipping invert makes it a new
// mapping, since its snapshots were kept in the other polarity.
func pairKey(p transform.Pair) []byte {
	inv := "0"
	if p.Invert {
		inv = "1"
	}
	return []byte(p.D365 + "\x1f" + p.Campaign + "\x1f" + inv)
}

// Close releases the file and the run lock.
func (s *Store) Close() error {
	if s == nil || s.db == nil { // a plan without a state file
		return nil
	}
	// A view still open here is one a panic or an early return left
	// behind: bbolt's Close would wait on it for ever, so the process
	// would hang instead of ending.
	s.viewsMu.Lock()
	left := s.views
	s.views = nil
	s.viewsMu.Unlock()
	for r := range left {
		r.ahead.halt() // it reads the view until stopped
		_ = r.tx.Rollback()
	}
	s.quiet.end()
	err := s.db.Close()
	s.db = nil
	s.release.statm.close()
	s.markSynced()
	if s.mark != nil {
		s.mark.Close()
		s.mark = nil
	}
	s.lock.release()
	s.lock = nil
	return err
}
