package state

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// An error of the commit itself (a write or fdatasync the disk refuses)
// names the state file, not only "input/output error".
func TestCommitErrorNamesTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "optsync.db")
	s, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.file.Close() // every write and sync of the commit now fails
	err = s.EndRun(&Run{ID: "r1", Started: time.Now(), Outcome: "ok"})
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "committing") {
		t.Fatalf("err %v, want one naming %s", err, path)
	}
}

// An empty file at the state path is not taken for a new state: it is
// what a truncation leaves.
func TestEmptyStateFileIsDamage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "optsync.db")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, open := range []func(string) error{
		func(p string) error {
			s, err := Open(p, nil)
			if s != nil {
				s.Close()
			}
			return err
		},
		func(p string) error {
			s, err := OpenReadOnly(p, nil)
			if s != nil {
				s.Close()
			}
			return err
		},
	} {
		var ce *CorruptError
		if err := open(path); !errors.As(err, &ce) || !strings.Contains(err.Error(), "empty") {
			t.Fatalf("err %v", err)
		}
	}
	if fi, _ := os.Stat(path); fi.Size() != 0 {
		t.Fatal("the empty file was initialised")
	}
}

// The free list is kept in the file, so that opening it for writing does
// not make bbolt walk every page to rebuild it (seconds at millions of
// contacts); a file written without it (every optsync before) gets it from
// the first run that opens it, after the walk that keeps bbolt's own from
// tripping over a damaged page.
func TestFreeListIsKept(t *testing.T) {
	path := filepath.Join(t.TempDir(), "optsync.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoFreelistSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("x")); return err }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if freelistKept(path) {
		t.Fatal("the setup kept a free list")
	}
	st, err := Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.BeginRun(&Run{ID: "r1", Command: "run", Started: time.Now(), Outcome: "running"}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	if !freelistKept(path) {
		t.Fatal("a run's commits did not keep the free list in the file")
	}
	last, ok := readCommitted(path)
	if !ok {
		t.Fatal("no record of the last commit beside the state file")
	}
	ro, err := OpenReadOnly(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if err := ro.view(func(tx *bolt.Tx) error {
		if uint64(tx.ID()) != last.txid || last.id != ro.ID() {
			t.Errorf("the record names transaction %d of %s; the file's last is %d of %s", last.txid, last.id, tx.ID(), ro.ID())
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// The record beside the state file names each commit as soon as the commit
// returns (its sync runs beside the next transaction's work and is waited
// for before that one's meta page, and before the store closes); a file
// there with more than one line's bytes is cut to the line.
func TestCommittedRecordFollowsEachCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	if err := os.WriteFile(path+committedSuffix, bytes.Repeat([]byte("x"), 2*committedLen), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	run := &Run{ID: "r1", Command: "run", Started: time.Now(), Outcome: "running"}
	for i, write := range []func() error{func() error { return st.BeginRun(run) }, func() error { run.Outcome = "ok"; return st.EndRun(run) }} {
		if err := write(); err != nil {
			t.Fatal(err)
		}
		var txid int
		_ = st.view(func(tx *bolt.Tx) error { txid = tx.ID(); return nil })
		c, ok := readCommitted(path)
		if !ok || c.txid != uint64(txid) || c.id != st.ID() {
			t.Fatalf("commit %d: the record says %+v (%v), want transaction %d of %s", i, c, ok, txid, st.ID())
		}
	}
	st.Close()
	if fi, err := os.Stat(path + committedSuffix); err != nil || fi.Size() != committedLen {
		t.Fatalf("the record file: %v, %v bytes, want one line of %d", err, fi.Size(), committedLen)
	}
}

// A file behind the record of its last commit has lost committed
// transactions (its newer meta page replaced by an older copy of itself,
// or the whole file by an older one): every open refuses it, before
// anything is written, while the same copy put back with the record
// removed (a restore from a backup) opens as the state it holds.
func TestFileBehindItsRecordIsDamage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	st, err := Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	run := &Run{ID: "r1", Command: "run", Started: time.Now(), Outcome: "running"}
	if err := st.BeginRun(run); err != nil {
		t.Fatal(err)
	}
	st.Close()
	older, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if st, err = Open(path, testPairs); err != nil {
		t.Fatal(err)
	}
	run.Outcome = "ok"
	if err := st.EndRun(run); err != nil {
		t.Fatal(err)
	}
	st.Close()
	mark, err := os.ReadFile(path + committedSuffix)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, older, 0o600); err != nil {
		t.Fatal(err)
	}
	for name, open := range map[string]func() (*Store, error){
		"a run":    func() (*Store, error) { return Open(path, testPairs) },
		"a reader": func() (*Store, error) { return OpenReadOnly(path, testPairs) },
	} {
		s, err := open()
		if s != nil {
			s.Close()
		}
		var ce *CorruptError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), "replaced by an older copy") {
			t.Fatalf("%s: %v, want a *CorruptError saying a transaction is lost", name, err)
		}
		if now, _ := os.ReadFile(path); !bytes.Equal(now, older) {
			t.Fatalf("%s changed the file it refused", name)
		}
		if now, _ := os.ReadFile(path + committedSuffix); !bytes.Equal(now, mark) {
			t.Fatalf("%s changed the record it refused the file for", name)
		}
	}
	if err := os.Remove(path + committedSuffix); err != nil {
		t.Fatal(err)
	}
	if st, err = Open(path, testPairs); err != nil {
		t.Fatalf("the copy put back without the record: %v", err)
	}
	defer st.Close()
	runs, err := st.Runs()
	if err != nil || len(runs) != 1 || runs[0].ID != "r1" || runs[0].Outcome == "ok" {
		t.Fatalf("the copy holds %+v (%v), want the run as it began", runs, err)
	}
}

// A meta page 0 torn by a commit that did not finish is no damage (bbolt
// opens the file at page 1's transaction), and the walk of every page
// (a backfill's, or before bbolt rebuilds a free list) still runs, from
// page 1: it once stopped at the torn page and left the pages unchecked,
// taken for walked.
func TestWalkRunsFromPageOneWhenPageZeroIsTorn(t *testing.T) {
	path, _, pageSize := carryFixture(t)
	ps := int(pageSize)
	metas := func() (m0, m1 metaPage, data []byte) {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return parseMeta(data), parseMeta(data[ps:]), data
	}
	// The last commit's meta page on page 1: page 0 is the one the next
	// commit writes, and tears.
	for i := 0; ; i++ {
		if m0, m1, _ := metas(); m1.txid > m0.txid {
			break
		}
		if i == 3 {
			t.Fatal("no commit wrote meta page 1")
		}
		st, err := Open(path, testPairs)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.EndRun(&Run{ID: fmt.Sprint("r", i+2), Started: time.Now(), Outcome: "ok"}); err != nil {
			t.Fatal(err)
		}
		st.Close()
	}
	_, m1, data := metas()
	meta0 := data[pageHeaderSize : pageHeaderSize+metaSize]
	copy(meta0[:32], data[ps+pageHeaderSize:ps+pageHeaderSize+32])
	binary.LittleEndian.PutUint64(meta0[16:], m1.root+7) // the new root, the rest still the old bytes
	if m0 := parseMeta(data); m0.problem == "" {
		t.Fatal("the setup did not tear meta page 0")
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if found, err := walkPages(path, true); err != nil || !found.checked {
		t.Fatalf("the walk of a sound file with page 0 torn: %+v, %v; want every page walked", found, err)
	}
	// A page of the contacts bucket with a wrong element count.
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var root int
	_ = db.View(func(tx *bolt.Tx) error { root = int(tx.Bucket(bucketContacts).Root()); return nil })
	db.Close()
	data[root*ps+10] ^= 0x40
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	var ce *CorruptError
	if _, err := walkPages(path, true); !errors.As(err, &ce) {
		t.Fatalf("the walk with page 0 torn and a damaged page: %v, want a *CorruptError", err)
	}
}
