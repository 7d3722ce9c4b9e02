package state

import (
	"bytes"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// A fault on the mapped file maps the pages around it that the page cache
// holds too (fault-around: up to 16 pages), so a few thousand lookups
// scattered over a file the page cache holds whole put all of it in the
// process's resident set. Lookups release the mapping (drop its page
// table entries) at most every releaseTick; checking the clock every
// checkEvery lookups keeps that cheap for a walk, whose lookups fault
// little.
const checkEvery = 64

// scanEvery is how many records a scan of a whole bucket (sequential: few
// faults a page) reads between two releases of the mapping.
const scanEvery = 1 << 15

// pageReleaser lets go of the state file's pages the process has mapped.
type pageReleaser struct {
	n    atomic.Int64
	last atomic.Int64 // when the mapping was last released (Unix ns)
	// mapped is the process's resident file pages (bytes) right after the
	// mapping was last released: a release (a walk of the whole
	// mapping's page tables, TLB flushes on every CPU the process runs on,
	// and on kernels that free page tables left empty, their allocation
	// again by the faults after) is made only once releaseSlack more are
	// resident. Released whenever a few pages had been faulted, every 2 ms
	// of a commit, a 10 M night made 700 releases of 0.7 ms each and spent
	// a third of its time in them and in faulting the pages back, at a
	// peak of 52 – 58 MB.
	mapped atomic.Int64
	// faults is the process's minor faults when the mapping was last
	// released, for when the resident file pages cannot be read: a
	// release is then skipped while hardly anything was faulted since.
	faults atomic.Int64
	// tight says the run holds the rows it read (releaseSlack).
	tight atomic.Bool
	// writing says a write transaction is open (releaseSlack).
	writing atomic.Bool
	// resident reads the resident file pages (nil: statm's).
	resident func() (int64, bool)
	statm    statm
}

// releaseSlack is how much more of the files the process maps (its
// binary's pages too) may be resident before a mapping of size bytes is
// released again: 16 MB; while a run holds the rows it read (tight: a
// backfill's commit, at the run's peak) a 64th of the mapping, from 1 MB
// up; while any other write transaction is open (writing: a night's
// scattered contacts above all), writeSlack. What a release costs grows with the mapping (its page
// tables are walked whole); what the slack costs is the peak's. With
// 16 MB a 1 M backfill peaked at 284 – 304 MB (three runs), with a 64th
// (3 MB) at 273 – 283 MB, against 281 – 289 MB releasing whenever 16
// faults were made (alternated, same hour). A night holds little else:
// 16 MB there took a 1 M night from 1.83 – 1.91 s to 1.32 – 1.57 s, where
// a 64th gave 1.62 – 1.65 s.
func releaseSlack(size int64, tight, writing bool) int64 {
	switch {
	case tight:
		return min(max(size/64, 1<<20), 16<<20)
	case writing:
		return writeSlack
	}
	return 16 << 20
}

// writeSlack is the slack while a write transaction is open, outside a
// backfill's commit: bbolt reads each page the transaction dirties three
// or four times (the lookup of where its record goes, the put, the sort of
// the spilled nodes by their first keys, the copy into the new page, the
// free of the old one), and a release between them makes each read after
// it a fault again (on a paravirtual guest, ~30 µs each). A night's
// transaction (scatteredChunk contacts) maps 40 – 55 MB of the file, the
// pages around each leaf with it; the mapping is released after each
// transaction instead (update), and this bounds one that maps more. Over a
// 10 M state thirty nights old, nights took 1.65 – 1.69 s and 23.5 k
// faults at a peak of 81 MB, against 2.40 – 2.52 s and 41 k faults at
// 72 – 77 MB releasing with the 16 MB slack while the transaction was
// open; over a fresh one, 1.28 – 1.40 s against 1.76 – 1.88 s.
const writeSlack = 64 << 20

// releaseFaults is how many faults since the last release make the next
// one worth its cost, when the resident file pages cannot be read: each
// maps up to a few dozen pages of the file.
const releaseFaults = 16

// statm reads how much of the files the process maps is resident (bytes:
// statm's shared pages, file-backed and shared memory), through one
// descriptor kept open from the first read to the store's Close: a pread
// at 0 has the kernel write the figures afresh. Opening, reading and
// closing the file each time cost three system calls and a walk of the
// path (28 µs against 10 on this machine), and a 1 M night reads it 1,200
// times.
type statm struct {
	once sync.Once
	fd   int // -1: not open (it could not be, or it is closed)
}

func (m *statm) residentFiles() (int64, bool) {
	m.once.Do(func() {
		fd, err := unix.Open("/proc/self/statm", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			fd = -1
		}
		m.fd = fd
	})
	if m.fd < 0 {
		return 0, false
	}
	var buf [128]byte
	n, err := unix.Pread(m.fd, buf[:], 0)
	if err != nil || n <= 0 {
		return 0, false
	}
	// size resident shared text lib data dt, in pages
	f := bytes.Fields(buf[:n])
	if len(f) < 3 {
		return 0, false
	}
	pages, err := strconv.ParseInt(string(f[2]), 10, 64)
	if err != nil {
		return 0, false
	}
	return pages * int64(os.Getpagesize()), true
}

// close closes the descriptor, if open; a read after it finds none.
func (m *statm) close() {
	m.once.Do(func() { m.fd = -1 })
	if m.fd >= 0 {
		_ = unix.Close(m.fd)
		m.fd = -1
	}
}

// touched counts n lookups made in tx and, every releaseTick, drops the
// mapping's page table entries (madvise MADV_DONTNEED). The file is mapped
// read-only and shared: the pages stay in the page cache, and a later read
// maps them again, so nothing read or to be read changes. tx must be open:
// bbolt maps the file again only while no transaction is (a read
// transaction holds the mapping lock; a write transaction maps again only
// inside its Commit), so the range is the one tx reads.
func (s *Store) touched(tx *bolt.Tx, n int) {
	if s.release.n.Add(int64(n))%checkEvery >= int64(n) {
		return
	}
	now := time.Now().UnixNano()
	if now-s.release.last.Load() < int64(releaseTick) {
		return
	}
	s.release.last.Store(now)
	s.releaseMapping(tx)
}

func (s *Store) releaseMapping(tx *bolt.Tx) {
	if s.db == nil || tx == nil {
		return
	}
	info := s.db.Info()
	size := tx.Size()
	if info == nil || info.Data == 0 || size <= 0 {
		return
	}
	resident := s.release.resident
	if resident == nil {
		resident = s.release.statm.residentFiles
	}
	mapped, known := resident()
	if known {
		if mapped-s.release.mapped.Load() < releaseSlack(size, s.release.tight.Load(), s.release.writing.Load()) {
			return
		}
	} else {
		var ru unix.Rusage
		if unix.Getrusage(unix.RUSAGE_SELF, &ru) == nil {
			if int64(ru.Minflt)-s.release.faults.Load() < releaseFaults {
				return
			}
			s.release.faults.Store(int64(ru.Minflt))
		}
	}
	data := mappedAt(info.Data, size)
	// Advice only: a failure costs memory, never data.
	_ = unix.Madvise(data, unix.MADV_DONTNEED)
	if mapped, known = resident(); known {
		s.release.mapped.Store(mapped)
	}
}

// releaseNow releases the mapping (with the slack) in a read transaction
// of its own: after a write transaction, whose pages nothing reads again.
func (s *Store) releaseNow() {
	if s.db == nil {
		return
	}
	tx, err := s.db.Begin(false)
	if err != nil {
		return
	}
	s.releaseMapping(tx)
	_ = tx.Rollback()
}

// releaseDuring releases the mapping every few milliseconds until the
// function it returns is called: while a write transaction commits, bbolt
// copies every record of each page it rewrites out of the mapping (its
// nodes point into it), and those faults map the pages around them too,
// where touched cannot be counted. Each release holds a read transaction,
// so the mapping it drops is the current one (bbolt maps the file again
// only once no transaction is open).
//
// The ticker's goroutine needs a P to run when it fires; while a commit
// spills on one and the next chunk is decided (or the collector marks) on
// the other, it waited for a preemption, 10 ms and more, while the spill
// faulted in 5 MB a millisecond: a 10 M night peaked at 130 – 145 MB,
// with a spare P at 92 – 121 MB. So the commit runs with one P more than
// the process had when the store was opened (spare), given back after;
// GOMAXPROCS set in the environment is left as it is.
//
// Calls nest: inside one (a run's commit of all its chunks) the others
// change nothing, so a run's transactions do not each stop the world
// twice to change GOMAXPROCS and start a ticker of their own.
func (s *Store) releaseDuring() (stop func()) {
	if s.db == nil {
		return func() {}
	}
	s.during.Lock()
	defer s.during.Unlock()
	if s.during.n++; s.during.n > 1 {
		return s.releaseDone
	}
	if s.procs > 0 {
		runtime.GOMAXPROCS(s.procs + 1)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(releaseTick)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			s.releaseNow()
		}
	}()
	s.during.stop = func() {
		close(done)
		wg.Wait()
		if s.procs > 0 {
			runtime.GOMAXPROCS(s.procs)
		}
	}
	return s.releaseDone
}

// releaseDone ends a releaseDuring; the outermost stops the releases.
func (s *Store) releaseDone() {
	s.during.Lock()
	defer s.during.Unlock()
	if s.during.n--; s.during.n == 0 {
		s.during.stop()
		s.during.stop = nil
	}
}

// releaseTick is how often the mapping is released while lookups or a
// commit fault pages in: a few hundred pages in that time, each mapping up
// to 16.
const releaseTick = 2 * time.Millisecond

// spareProcs is the Ps a store's commits run with beyond the process's own
// (0: GOMAXPROCS is the environment's, left alone).
func spareProcs() int {
	if os.Getenv("GOMAXPROCS") != "" {
		return 0
	}
	return runtime.GOMAXPROCS(0)
}

// beginQuiet turns fault-around off in the state file's mapping until end
// is called (quiet_linux.go); false when the system refuses, which is
// logged (at debug) and leaves the mapping as it was.
func (s *Store) beginQuiet(log zerolog.Logger) (quiet bool, end func()) {
	info := s.db.Info()
	if info == nil {
		return false, nil
	}
	quiet, err := s.quiet.begin(info.Data)
	if err != nil {
		log.Debug().Err(err).Msg("fault-around stays on in the state file's mapping; a night's commit takes smaller transactions")
	}
	if !quiet {
		return false, nil
	}
	return true, s.quiet.end
}
