package state

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"optsync/extract"
	"optsync/transform"
)

// leafKeys is a leaf page of a bucket, with its first and last key.
type leafKeys struct {
	id          uint64
	first, last []byte
}

// idOf is the contact id a records key (a block's first id) begins with.
func idOf(k []byte) extract.ID {
	var i extract.ID
	copy(i[:], k)
	return i
}

// bucketLeaves lists the leaf pages of the bucket rooted at root, in key
// order, read from the file's bytes.
func bucketLeaves(t *testing.T, data []byte, root, pageSize uint64) []leafKeys {
	t.Helper()
	hwm := uint64(len(data)) / pageSize
	var out []leafKeys
	var walk func(id uint64)
	walk = func(id uint64) {
		p, problem := readRawPage(data, id, hwm, pageSize)
		if problem != "" {
			t.Fatal(problem)
		}
		if p.branch {
			for i := range p.count {
				walk(p.child(i))
			}
			return
		}
		out = append(out, leafKeys{id: id, first: append([]byte(nil), p.key(0)...), last: append([]byte(nil), p.key(p.count-1)...)})
	}
	walk(root)
	return out
}

// TestLookupsInOrderCheckThePagesTheyPass: a night's lookups in id order
// step within the leaf they stand on and seek past it, without a walk down
// the tree per step; a step or a seek onto another leaf still checks it
// before anything on it is used, and the records found are the ones kept.
func TestLookupsInOrderCheckThePagesTheyPass(t *testing.T) {
	path, leaves, pageSize := carryFixture(t)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	a, stepInto, seekTo := leaves[3], leaves[4], leaves[6]

	for _, tc := range []struct {
		name    string
		damaged uint64 // a leaf whose second value has a flipped bit: not the record the step lands on
		then    extract.ID
	}{
		// the records are packed: an id just past a leaf's last key lies
		// in that key's block; the next leaf begins with the next block
		{"a step past the leaf's last block onto the next leaf", stepInto.id, idOf(stepInto.first)},
		{"a seek onto a later leaf", seekTo.id, idOf(seekTo.first)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := append([]byte(nil), good...)
			p, _ := readRawPage(data, tc.damaged, uint64(len(data))/pageSize, pageSize)
			v, _ := p.value(1)
			v[0] ^= 0x10
			putBack(t, path, data)
			r := readerOf(t, path)
			var s transform.Snapshot
			if found, err := r.Get(idOf(a.last), &s); err != nil || !found {
				t.Fatalf("Get of a sound leaf's last record: found %v, %v", found, err)
			}
			_, err := r.Get(tc.then, &s)
			var ce *CorruptError
			if !errors.As(err, &ce) {
				t.Fatalf("Get(%s) over the damaged leaf %d: %v, want a *CorruptError", tc.then, tc.damaged, err)
			}
		})
	}

	t.Run("every id in order, kept or not", func(t *testing.T) {
		putBack(t, path, good)
		r := readerOf(t, path)
		// strides of 1, 3 and 97 ids: steps within a leaf, onto the next
		// one, and seeks past several
		for _, stride := range []int{1, 3, 97} {
			r.k, r.end = nil, false
			for i := 0; i <= 2*fixtureContacts+2; i += stride {
				var s transform.Snapshot
				found, err := r.Get(id(i), &s)
				if err != nil {
					t.Fatalf("stride %d, Get(%d): %v", stride, i, err)
				}
				kept := i%2 == 0 && i >= 2 && i <= 2*fixtureContacts
				if found != kept {
					t.Fatalf("stride %d, Get(%d): found %v, want %v", stride, i, found, kept)
				}
				if want := fullSnap(i / 2); kept && (s.DModified != want.DModified || s.PKey != want.PKey) {
					t.Fatalf("stride %d, Get(%d): %+v, want %+v", stride, i, s, want)
				}
			}
		}
	})
}

// TestSeekPastTheEndChecksTheLastLeafOnly: a lookup of an id past every
// key seeks to the end and steps back to the block before it (the one that
// would hold it), passing the last leaf only. A damaged leaf near the start
// is not on its way, so it does not stop the lookup (the step back once
// checked every page from the bucket's first key, at every such lookup).
func TestSeekPastTheEndChecksTheLastLeafOnly(t *testing.T) {
	path, leaves, pageSize := carryFixture(t)
	if len(leaves) < 4 {
		t.Fatalf("the fixture has %d leaves, want 4 or more", len(leaves))
	}
	flipInFile(t, path, leaves[1].id, pageSize)
	r := readerOf(t, path)
	var s transform.Snapshot
	if found, err := r.Get(id(2*fixtureContacts+3), &s); err != nil || found {
		t.Fatalf("Get past every key: found %v, %v; want not found, no error", found, err)
	}
	if found, err := r.Get(id(2*fixtureContacts), &s); err != nil || !found {
		t.Fatalf("Get of the last record: found %v, %v", found, err)
	}
	// what passes the damaged leaf still finds it
	r.k, r.end = nil, false
	var ce *CorruptError
	if _, err := r.Get(idOf(leaves[1].first), &s); !errors.As(err, &ce) {
		t.Fatalf("Get on the damaged leaf: %v, want a *CorruptError", err)
	}
}

// TestLastChecksThePathToTheEndOnly: a cursor's Last (a history read
// newest first starts there) checks the pages down to the bucket's last key,
// so damage on that way stops it and damage elsewhere is left to what
// passes it; it once checked every page of the bucket, and then again.
func TestLastChecksThePathToTheEndOnly(t *testing.T) {
	path, leaves, pageSize := carryFixture(t)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lastBlock := leaves[len(leaves)-1].last
	for _, tc := range []struct {
		name    string
		damaged uint64
		stops   bool
	}{
		{"an early leaf", leaves[1].id, false},
		{"the last leaf", leaves[len(leaves)-1].id, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			putBack(t, path, good)
			flipInFile(t, path, tc.damaged, pageSize)
			st, err := Open(path, testPairs)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			var got []byte
			err = st.view(func(tx *bolt.Tx) error {
				k, _ := st.vb(tx.Bucket(bucketContacts), "contacts").Cursor().Last()
				got = append(got, k...)
				return nil
			})
			var ce *CorruptError
			switch {
			case tc.stops && !errors.As(err, &ce):
				t.Fatalf("Last over a damaged last leaf: %v, want a *CorruptError", err)
			case !tc.stops && (err != nil || string(got) != string(lastBlock)):
				t.Fatalf("Last: %x, %v; want %x, no error", got, err, lastBlock)
			}
		})
	}
}

// readerOf opens the state file at path and a read view of it, both
// closed when the test (or subtest) ends.
func readerOf(t *testing.T, path string) *Reader {
	t.Helper()
	st, err := Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	r, err := st.Reader()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// fixtureContacts is how many contacts carryFixture writes: ids 2, 4, …,
// 2×fixtureContacts, so that the odd ids between them are not kept.
const fixtureContacts = 1500

// carryFixture is a state file of 1,500 contacts on many leaves, written by
// a store since closed (so the next one checks the pages it reaches), with
// the contacts bucket's leaves as the file holds them.
func carryFixture(t *testing.T) (path string, leaves []leafKeys, pageSize uint64) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "optsync.db")
	st, err := Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	b := st.NewBatch(fixtureContacts)
	for i := 1; i <= fixtureContacts; i++ {
		s := fullSnap(i)
		b.Put(id(2*i), &s)
	}
	if err := st.Commit(context.Background(), b, &Final{Run: &Run{ID: "r1", Started: time.Now(), Outcome: "ok"}}); err != nil {
		t.Fatal(err)
	}
	var root uint64
	pageSize = uint64(st.db.Info().PageSize)
	if err := st.db.View(func(tx *bolt.Tx) error {
		root = uint64(tx.Bucket(bucketContacts).Root())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	leaves = bucketLeaves(t, data, root, pageSize)
	if len(leaves) < 8 {
		t.Fatalf("the contacts are on %d leaves; the test needs more", len(leaves))
	}
	return path, leaves, pageSize
}

// flipInFile flips a bit of the second value of leaf page id in the file
// on disk, under a store that has it open (the mapping shows it).
// putBack writes an earlier copy of the state file back, as a restore
// from a backup does: with the record of the last commit beside it
// removed, since the copy is behind it on purpose.
func putBack(t *testing.T, path string, good []byte) {
	t.Helper()
	if err := os.WriteFile(path, good, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path + committedSuffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
}

func flipInFile(t *testing.T, path string, id, pageSize uint64) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p, problem := readRawPage(data, id, uint64(len(data))/pageSize, pageSize)
	if problem != "" {
		t.Fatal(problem)
	}
	// the value of element 1 lies after its key (rawPage.value)
	e := p.b[pageHeaderSize+elemSize : pageHeaderSize+2*elemSize]
	le := binary.LittleEndian
	at := int(id*pageSize) + pageHeaderSize + elemSize + int(le.Uint32(e[4:])) + int(le.Uint32(e[8:]))
	v, _ := p.value(1)
	if data[at] != v[0] {
		t.Fatal("the value's offset is miscounted")
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte{v[0] ^ 0x10}, int64(at)); err != nil {
		t.Fatal(err)
	}
}

// TestWriterChecksAPageOnceAcrossItsTransactions: a run's store checks a
// page the first time any of its views reaches it, not again in each view
// after a commit — its own commits are all that wrote the file between
// (pages.go). Pages it had not reached are still checked when first reached
// in a later view, and what its commits rewrote reads back as written.
func TestWriterChecksAPageOnceAcrossItsTransactions(t *testing.T) {
	path, leaves, pageSize := carryFixture(t)
	st, err := Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	reached, later := leaves[2], leaves[len(leaves)-2]
	r, err := st.Reader()
	if err != nil {
		t.Fatal(err)
	}
	var s transform.Snapshot
	if found, err := r.Get(idOf(reached.first), &s); err != nil || !found {
		t.Fatalf("Get: found %v, %v", found, err)
	}
	r.Close()

	// commits of other contacts: new views, pages freed and handed out
	// again by this store's own transactions
	for round := range 5 {
		b := st.NewBatch(1)
		s := fullSnap(7000 + round)
		b.Put(id(2*(round*37+5)), &s)
		if err := st.Commit(context.Background(), b, &Final{Run: &Run{ID: fmt.Sprintf("c%d", round), Started: time.Now(), Outcome: "ok"}}); err != nil {
			t.Fatal(err)
		}
	}
	r, err = st.Reader()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	pv := st.pages(r.tx)
	if pv == nil {
		t.Fatal("no page checks in the writer's view")
	}
	if !pv.sound.has(reached.id) {
		t.Errorf("leaf %d, checked in an earlier view of this writer, is to be checked again in a later one", reached.id)
	}
	if pv.sound.has(later.id) {
		t.Fatalf("leaf %d was never reached, yet counts as checked", later.id)
	}
	for round := range 5 {
		var got transform.Snapshot
		if found, err := r.Get(id(2*(round*37+5)), &got); err != nil || !found || got.DModified != fullSnap(7000+round).DModified {
			t.Fatalf("contact rewritten in commit %d: found %v, %v, %+v", round, found, err, got)
		}
	}
	// a leaf first reached now is checked now
	flipInFile(t, path, later.id, pageSize)
	_, err = r.Get(idOf(later.first), &s)
	var ce *CorruptError
	if !errors.As(err, &ce) {
		t.Fatalf("Get over leaf %d, damaged and not reached before: %v, want a *CorruptError", later.id, err)
	}
}

// carryReader opens carryFixture's file and a reader of it, both closed
// when the test ends.
func carryReader(t *testing.T) (*Store, *Reader) {
	t.Helper()
	st := carryStore(t)
	r, err := st.Reader()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return st, r
}

// TestReleaseWaitsForTheSlack: releasing the mapping walks the page
// tables of all of it, flushes TLBs on every CPU the process runs on and
// makes the faults after it allocate page tables again, so a release is
// made only once releaseSlack more of the files the process maps are
// resident than right after the last one.
func TestReleaseWaitsForTheSlack(t *testing.T) {
	st, r := carryReader(t)
	if _, ok := st.release.statm.residentFiles(); !ok {
		t.Skip("/proc/self/statm cannot be read here")
	}
	reads := 0
	st.release.resident = func() (int64, bool) { reads++; return st.release.statm.residentFiles() }
	// made: read before and after the madvise
	made := func() bool {
		t.Helper()
		reads = 0
		st.releaseMapping(r.tx)
		return reads == 2
	}
	slack := releaseSlack(r.tx.Size(), false, false)
	st.release.mapped.Store(-slack) // as if all were mapped since
	if !made() {
		t.Fatal("a release with the slack mapped since the last was skipped")
	}
	if made() {
		t.Fatal("a release with nothing mapped since the last was made")
	}
	// a tight slack's worth twice (a few MB) of another file's pages
	// mapped in: a release only while the run holds its rows
	tight := releaseSlack(r.tx.Size(), true, false)
	if tight >= slack {
		t.Fatalf("a tight slack of %d bytes, not under the slack of %d", tight, slack)
	}
	mapIn(t, int(2*tight))
	if made() {
		t.Fatal("a release after less than the slack was mapped in was made")
	}
	st.release.tight.Store(true)
	if !made() {
		t.Fatal("a release after twice the tight slack was mapped in, while the run holds its rows, was skipped")
	}
	st.release.tight.Store(false)
	mapIn(t, int(2*slack))
	if !made() {
		t.Fatal("a release after twice the slack was mapped in was skipped")
	}
	// while a write transaction is open, only past writeSlack
	st.release.writing.Store(true)
	defer st.release.writing.Store(false)
	mapIn(t, int(2*slack))
	if made() {
		t.Fatal("a release while a write transaction is open, after twice the slack and less than writeSlack was mapped in, was made")
	}
	mapIn(t, int(writeSlack-2*slack+slack/2))
	if !made() {
		t.Fatal("a release while a write transaction is open, after more than writeSlack was mapped in, was skipped")
	}
}

// mapIn maps n bytes of a new file and touches each page: n bytes more of
// the process's mapped files resident until the test ends.
func mapIn(t *testing.T, n int) {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "mapped")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.Truncate(int64(n)); err != nil {
		t.Fatal(err)
	}
	b, err := unix.Mmap(int(f.Fd()), 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(b) })
	for i := 0; i < len(b); i += os.Getpagesize() {
		b[i] = 1
	}
}

// TestReleaseSlack: a mapping is released after 16 MB, while the run
// holds its rows after a 64th of it, from 1 MB up to 16, and while a write
// transaction is open otherwise after 64 MB.
func TestReleaseSlack(t *testing.T) {
	for _, tc := range []struct {
		size           int64
		tight, writing bool
		want           int64
	}{
		{10 << 20, false, false, 16 << 20},
		{2 << 30, false, false, 16 << 20},
		{10 << 20, true, false, 1 << 20},
		{192 << 20, true, false, 3 << 20},
		{2 << 30, true, false, 16 << 20},
		{2 << 30, false, true, 64 << 20},
		{192 << 20, true, true, 3 << 20}, // a backfill's commit keeps its peak
	} {
		if got := releaseSlack(tc.size, tc.tight, tc.writing); got != tc.want {
			t.Errorf("releaseSlack(%d, tight %v, writing %v) = %d, want %d", tc.size, tc.tight, tc.writing, got, tc.want)
		}
	}
}

// TestReleaseWithoutStatmCountsFaults: where the resident file pages
// cannot be read, a release is skipped while hardly a fault was made
// since the last one.
func TestReleaseWithoutStatmCountsFaults(t *testing.T) {
	st, r := carryReader(t)
	st.release.resident = func() (int64, bool) { return 0, false }
	st.releaseMapping(r.tx)
	after := st.release.faults.Load()
	if after == 0 {
		t.Fatal("the first release was not made")
	}
	st.releaseMapping(r.tx) // nothing faulted since
	if got := st.release.faults.Load(); got != after {
		t.Fatalf("a release with no faults since the last was made (faults noted %d, then %d)", after, got)
	}
	// a megabyte's pages faulted in (anonymous ones count as the file's do)
	b, err := unix.Mmap(-1, 0, 1<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(b); i += os.Getpagesize() {
		b[i] = 1
	}
	if err := unix.Munmap(b); err != nil {
		t.Fatal(err)
	}
	st.releaseMapping(r.tx)
	if got := st.release.faults.Load(); got == after {
		t.Fatal("a release after 256 pages were faulted in was skipped")
	}
}

// TestCommitRunsWithASpareP: a write transaction runs with one P more than
// the process had when the store was opened, so that the ticker releasing
// the mapping runs when it fires, not once the commit's goroutines are
// preempted; the P is given back when it ends, also when it fails.
// GOMAXPROCS set in the environment is left as it is.
func TestCommitRunsWithASpareP(t *testing.T) {
	base := runtime.GOMAXPROCS(0)
	during := func(st *Store, fail bool) int {
		t.Helper()
		n := 0
		err := st.update(func(tx *bolt.Tx) error {
			n = runtime.GOMAXPROCS(0)
			if fail {
				return errors.New("refused")
			}
			return nil
		})
		if (err != nil) != fail {
			t.Fatalf("update: %v", err)
		}
		if got := runtime.GOMAXPROCS(0); got != base {
			t.Fatalf("after a commit (failed %v): GOMAXPROCS %d, want %d back", fail, got, base)
		}
		return n
	}
	if os.Getenv("GOMAXPROCS") == "" {
		st, err := Open(filepath.Join(t.TempDir(), "optsync.db"), testPairs)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		for _, fail := range []bool{false, true} {
			if n := during(st, fail); n != base+1 {
				t.Errorf("during a commit (failing %v): GOMAXPROCS %d, want %d", fail, n, base+1)
			}
		}
	}
	t.Setenv("GOMAXPROCS", fmt.Sprint(base))
	st, err := Open(filepath.Join(t.TempDir(), "optsync.db"), testPairs)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if n := during(st, false); n != base {
		t.Errorf("GOMAXPROCS set in the environment: %d during a commit, want %d", n, base)
	}
}

// TestWriteCursorStepsCheckTheLeafTheyReach: a cursor of a write
// transaction keeps the range of the leaf it checked, as a reader's does
// (bbolt changes only leaves before it commits, so a step between two keys
// of that range, written in this transaction or not, stays on that leaf);
// a step onto the next leaf, damaged and not reached before, still stops
// the transaction with a *CorruptError before anything on it is used.
func TestWriteCursorStepsCheckTheLeafTheyReach(t *testing.T) {
	path, leaves, pageSize := carryFixture(t)
	st, err := Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	a, next := leaves[3], leaves[4]
	flipInFile(t, path, next.id, pageSize)

	// a key inside a's range, put in this transaction: the leaf's node
	// then holds it beside what the page held
	added := append(append([]byte(nil), a.first...), 0)
	var seen [][]byte
	err = st.update(func(tx *bolt.Tx) error {
		x := st.packed(tx.Bucket(bucketContacts), "contacts").x
		if x.pv == nil {
			t.Fatal("no page checks in the writer's view")
		}
		if err := x.Put(added, []byte("entries")); err != nil {
			return err
		}
		c := x.Cursor()
		for k, _ := c.Seek(a.first); k != nil; k, _ = c.Next() {
			seen = append(seen, append([]byte(nil), k...))
			if !c.inLeaf(k) {
				t.Fatalf("key %x, on leaf %d as checked, is not in the cursor's leaf range", k, a.id)
			}
			if bytes.Equal(k, a.last) {
				c.Next() // onto next, damaged
				t.Fatalf("the step from leaf %d onto the damaged leaf %d went on", a.id, next.id)
			}
		}
		t.Fatal("the cursor ended before the leaf's last key")
		return nil
	})
	var ce *CorruptError
	if !errors.As(err, &ce) {
		t.Fatalf("update: %v, want a *CorruptError", err)
	}
	if len(seen) < 3 || !bytes.Equal(seen[0], a.first) || !bytes.Equal(seen[1], added) {
		t.Fatalf("keys stepped over on leaf %d: %x, want its first key, the one put, then the rest", a.id, seen)
	}
}

// TestPutBesideACursorChecksAKeyOutsideItsLeaf: a write beside a cursor
// (packed.apply's) walks no pages for a key of the leaf the cursor checked;
// a key of another leaf, damaged and not reached before, is still checked
// before bbolt writes into that leaf, and the transaction stops with a
// *CorruptError.
func TestPutBesideACursorChecksAKeyOutsideItsLeaf(t *testing.T) {
	path, leaves, pageSize := carryFixture(t)
	st, err := Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	a, other := leaves[3], leaves[6]
	flipInFile(t, path, other.id, pageSize)
	inA := append(append([]byte(nil), a.first...), 0)
	inOther := append(append([]byte(nil), other.first...), 0)
	err = st.update(func(tx *bolt.Tx) error {
		x := st.packed(tx.Bucket(bucketContacts), "contacts").x
		c := x.Cursor()
		if k, _ := c.Seek(a.first); !bytes.Equal(k, a.first) || !c.leaf.holds(inA) {
			t.Fatalf("Seek(%x) stands on %x, leaf range %x – %x", a.first, k, c.leaf.lo, c.leaf.hi)
		}
		if err := x.putSealedIn(c.leaf, inA, sealed(inA, []byte("entries"))); err != nil {
			t.Fatalf("a put on the checked leaf %d: %v", a.id, err)
		}
		if err := x.putSealedIn(c.leaf, inOther, sealed(inOther, []byte("entries"))); err != nil {
			return err
		}
		t.Fatalf("a put on the damaged leaf %d went on", other.id)
		return nil
	})
	var ce *CorruptError
	if !errors.As(err, &ce) {
		t.Fatalf("update: %v, want a *CorruptError", err)
	}
}

// TestSoundPagesGrowWithTheFile: a writer's set is sized for the pages of
// the view that made it; a later view of a larger file takes a larger copy
// holding every page found sound before, and an id past a set's size is
// left out (checked again when reached), never written past it.
func TestSoundPagesGrowWithTheFile(t *testing.T) {
	small := newSoundPages(100, nil)
	for _, id := range []uint64{2, 63, 64, 99} {
		small.add(id)
	}
	small.add(1000) // past its size
	if small.has(1000) {
		t.Fatal("an id past the set's size counts as sound")
	}
	large := newSoundPages(5000, small)
	large.add(4999)
	for _, tc := range []struct {
		id   uint64
		want bool
	}{{2, true}, {63, true}, {64, true}, {99, true}, {3, false}, {1000, false}, {4999, true}, {5000, false}} {
		if got := large.has(tc.id); got != tc.want {
			t.Errorf("has(%d) = %v, want %v", tc.id, got, tc.want)
		}
	}
	if small.has(4999) {
		t.Error("the larger copy's page shows in the set it was copied from")
	}
}
