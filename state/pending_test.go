package state

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"optsync/extract"
	"optsync/transform"
)

// pendingAts are the runs that wrote the pending writes of pendSnap.
var pendingAts = []int64{1_790_000_000_000, 1_790_000_500_000}

// pendSnap is fullSnap with its pending writes made by one of two runs
// (by n's parity), so that a run names many contacts.
func pendSnap(n int) transform.Snapshot {
	s := fullSnap(n)
	for i := range s.Pairs {
		s.Pairs[i].DWrittenAt = pendingAts[n%2]
		if s.Pairs[i].CWrittenAt != 0 {
			s.Pairs[i].CWrittenAt = pendingAts[(n+1)%2]
		}
	}
	return s
}

// pendingOf lists what PendingContacts gives for at.
func pendingOf(t *testing.T, st *Store, at int64) []extract.ID {
	t.Helper()
	r, err := st.Reader()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var got []extract.ID
	if err := r.PendingContacts(at, func(id extract.ID) bool { got = append(got, id); return true }); err != nil {
		t.Fatal(err)
	}
	return got
}

// wantPending is what PendingContacts should give for at: every record's
// pending writes, read from the records.
func wantPending(t *testing.T, st *Store, at int64) []extract.ID {
	t.Helper()
	var want []extract.ID
	if err := st.view(func(tx *bolt.Tx) error {
		return st.records(tx.Bucket(bucketContacts)).ForEach(func(k, v []byte) error {
			r, err := parseRecord(v)
			if err != nil {
				return err
			}
			var cid extract.ID
			copy(cid[:], k)
			_, ats, err := indexKeys(&r, cid)
			if _, found := slices.BinarySearch(ats, at); found {
				want = append(want, cid)
			}
			return err
		})
	}); err != nil {
		t.Fatal(err)
	}
	return want
}

// TestPendingIndexOfOneKeyPerEntryIsRebuilt: an index of pending writes in
// the layout from before the blocks (one bbolt key per entry, its value
// its seal, marked index_pending) is not used: the file's indexes are not
// ready, the first run that opens it builds the packed one in its place
// (the old marker gone) naming the same contacts, and from then on every
// write keeps it. One an older optsync rebuilt over the packed one (both
// markers) is never read as blocks.
func TestPendingIndexOfOneKeyPerEntryIsRebuilt(t *testing.T) {
	ctx := context.Background()
	st, err := Open(filepath.Join(t.TempDir(), "state.db"), testPairs)
	if err != nil {
		t.Fatal(err)
	}
	b := st.NewBatch(0)
	for n := range 400 {
		s := pendSnap(n)
		b.Put(id(n), &s)
	}
	if err := st.Commit(ctx, b, nil); err != nil {
		t.Fatal(err)
	}
	before := map[int64][]extract.ID{}
	for _, at := range pendingAts {
		before[at] = pendingOf(t, st, at)
		if want := wantPending(t, st, at); len(want) < 150 || !slices.Equal(before[at], want) {
			t.Fatalf("run %d: the index names %d contacts, the records %d", at, len(before[at]), len(want))
		}
	}
	// The old layout: every entry a key of its own, its value its seal.
	entries := 0
	if err := st.update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bucketPending); err != nil {
			return err
		}
		bk, err := tx.CreateBucket(bucketPending)
		if err != nil {
			return err
		}
		if err := st.records(tx.Bucket(bucketContacts)).ForEach(func(k, v []byte) error {
			r, err := parseRecord(v)
			if err != nil {
				return err
			}
			var cid extract.ID
			copy(cid[:], k)
			_, ats, err := indexKeys(&r, cid)
			for _, at := range ats {
				entries++
				if err := st.vb(bk, "pending").Put(pendingIndexKey(at, cid), nil); err != nil {
					return err
				}
			}
			return err
		}); err != nil {
			return err
		}
		vm := st.vb(tx.Bucket(bucketMeta), "meta")
		if err := vm.Delete(keyPendingOK); err != nil {
			return err
		}
		return vm.Put(keyPendingFlat, []byte("1"))
	}); err != nil {
		t.Fatal(err)
	}
	if ready, err := st.IndexesReady(); err != nil || ready {
		t.Fatalf("an index of one key per entry is taken as ready (%v)", err)
	}
	if _, err := st.BuildIndexes(ctx, 1<<20, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	if ready, err := st.IndexesReady(); err != nil || !ready {
		t.Fatalf("after the build: ready %v (%v)", ready, err)
	}
	if err := st.VerifyIndexes(); err != nil {
		t.Fatal(err)
	}
	var keys int
	if err := st.view(func(tx *bolt.Tx) error {
		keys = tx.Bucket(bucketPending).Stats().KeyN
		if tx.Bucket(bucketMeta).Get(keyPendingFlat) != nil {
			return errors.New("the old layout's marker is still there")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if keys*10 > entries {
		t.Fatalf("%d entries in %d bbolt keys: not packed", entries, keys)
	}
	for _, at := range pendingAts {
		if got := pendingOf(t, st, at); !slices.Equal(got, before[at]) {
			t.Fatalf("run %d: the rebuilt index names %d contacts, before %d", at, len(got), len(before[at]))
		}
	}

	// Writes keep it: some contacts' writes seen (no pending left), some
	// gone, some new ones pending.
	b = st.NewBatch(0)
	for n := 0; n < 400; n += 3 {
		s := fullSnap(n)
		for i := range s.Pairs {
			s.Pairs[i].DWritten, s.Pairs[i].CWritten = 0, 0
			s.Pairs[i].DWrittenAt, s.Pairs[i].CWrittenAt = 0, 0
		}
		b.Put(id(n), &s)
	}
	for n := 400; n < 500; n++ {
		s := pendSnap(n)
		b.Put(id(n), &s)
	}
	if err := st.Commit(ctx, b, nil); err != nil {
		t.Fatal(err)
	}
	if err := st.VerifyIndexes(); err != nil {
		t.Fatal(err)
	}
	for _, at := range pendingAts {
		got, want := pendingOf(t, st, at), wantPending(t, st, at)
		if !slices.Equal(got, want) || slices.Equal(got, before[at]) {
			t.Fatalf("run %d after a write: the index names %d contacts, the records %d (before %d)", at, len(got), len(want), len(before[at]))
		}
	}

	// An older optsync that rebuilt its own layout over the packed one
	// marks index_pending again.
	if err := st.update(func(tx *bolt.Tx) error {
		return st.vb(tx.Bucket(bucketMeta), "meta").Put(keyPendingFlat, []byte("1"))
	}); err != nil {
		t.Fatal(err)
	}
	if ready, err := st.IndexesReady(); err != nil || ready {
		t.Fatalf("both markers: taken as ready (%v)", err)
	}
}

// TestDamagedPendingBlockIsReported: a flipped bit in a block of the index
// of pending writes is found by its seal and reported as damage naming the
// index and the block, by the listing of a run's contacts (the warning's)
// and by a check of every seal.
func TestDamagedPendingBlockIsReported(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st, err := Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	b := st.NewBatch(0)
	for n := range 200 {
		s := pendSnap(n)
		b.Put(id(n), &s)
	}
	if err := st.Commit(context.Background(), b, nil); err != nil {
		t.Fatal(err)
	}
	var bk, bv []byte
	if err := st.view(func(tx *bolt.Tx) error {
		k, v := tx.Bucket(bucketPending).Cursor().First()
		bk, bv = bytes.Clone(k), bytes.Clone(v)
		var r blockReader
		r.reset("pending", k, v[:len(v)-sealSize])
		if es := r.entries(nil, nil); len(es) < 3 {
			return errors.New("the first block holds fewer than 3 entries")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	raw, _ := os.ReadFile(path)
	target := append(slices.Clone(bk), bv...)
	at := bytes.Index(raw, target)
	if at < 0 {
		t.Fatal("the block is not where a leaf keeps it")
	}
	raw[at+len(target)-sealSize-3] ^= 0x04 // in its last entry
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	lookup := func() error {
		ro, err := OpenReadOnly(path, testPairs)
		if err != nil {
			return err
		}
		defer ro.Close()
		r, err := ro.Reader()
		if err != nil {
			return err
		}
		defer r.Close()
		return r.PendingContacts(pendingAts[0], func(extract.ID) bool { return true })
	}
	err = lookup()
	var ce *CorruptError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "pending") || !strings.Contains(err.Error(), printable(bk)) {
		t.Fatalf("a listing through a damaged block: %v", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var found []string
	_ = db.View(func(tx *bolt.Tx) error {
		verifySeals(tx, func(err error) { found = append(found, err.Error()) }, nil)
		return nil
	})
	if len(found) != 1 || !strings.Contains(found[0], "pending") || !strings.Contains(found[0], printable(bk)) {
		t.Fatalf("a check of every seal found %q", found)
	}
}
