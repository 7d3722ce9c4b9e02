package state

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"optsync/extract"

	bolt "go.etcd.io/bbolt"
)

// TestWholePKeyIndexHoldsItsKeysOnly: a backfill's PKey index, written
// whole a range of keys per transaction over what the index held, ends
// holding exactly the run's keys (those it held and the run does not
// gone, the others put), whatever the chunk size and whatever the index
// held before — a set of its own, the same set, none, or what a rewrite
// killed half-way left — and is marked built only by the last transaction.
func TestWholePKeyIndexHoldsItsKeysOnly(t *testing.T) {
	ctx := context.Background()
	st, err := Open(filepath.Join(t.TempDir(), "state.db"), testPairs)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	set := func(pkeys ...string) []PKeyEntry {
		var es []PKeyEntry
		for i, p := range pkeys {
			var id extract.ID
			id[15] = byte(i % 3) // some PKeys twice, under other contacts
			es = append(es, PKeyEntry{PKey: p, ID: id})
		}
		slices.SortFunc(es, func(a, b PKeyEntry) int {
			if a.PKey != b.PKey {
				return strings.Compare(a.PKey, b.PKey)
			}
			return a.ID.Compare(b.ID)
		})
		return es
	}
	// late > 0: the first late transactions take no key, as while the
	// keys are sorted (keysFor), and the next one takes theirs too.
	late := 0
	// write rewrites the index whole from keys, chunk keys a transaction;
	// stopAfter > 0 stops it after that many (a kill).
	write := func(keys []PKeyEntry, chunk, stopAfter int) {
		t.Helper()
		if err := st.DropPKeyIndex(); err != nil {
			t.Fatal(err)
		}
		next := 0
		c := &committer{s: st, o: CommitOptions{PKeys: func() (string, extract.ID, bool, error) {
			if next == len(keys) {
				return "", extract.ID{}, false, nil
			}
			next++
			return keys[next-1].PKey, keys[next-1].ID, true, nil
		}}}
		for n := 1; ; n++ {
			b := st.NewBatch(0)
			take := chunk
			switch {
			case n <= late:
				take = 0
			case n == late+1:
				take = chunk * (late + 1)
			}
			left, err := c.wholeKeys(b, take)
			if err != nil {
				t.Fatal(err)
			}
			b.built = !left
			if err := st.Commit(ctx, b, nil); err != nil {
				t.Fatal(err)
			}
			if !left || n == stopAfter {
				return
			}
		}
	}
	check := func(step string, want []PKeyEntry, built bool) {
		t.Helper()
		r, err := st.Reader()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		var got []PKeyEntry
		if err := r.EachPKey(func(pkey string, id extract.ID) bool {
			got = append(got, PKeyEntry{PKey: pkey, ID: id})
			return true
		}); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%s: the index holds %v, want %v", step, got, want)
		}
		if ready, err := st.IndexesReady(); err != nil || ready != built {
			t.Fatalf("%s: built %v (%v), want %v", step, ready, err, built)
		}
	}
	a := set("@b", "@d", "@f", "@h", "@j", "@l", "@n")
	b := set("@a", "@b", "@c", "@f", "@g", "@h", "@h", "@m", "@n", "@o", "@p")
	for _, tc := range []struct{ chunk, late int }{{1, 0}, {2, 0}, {3, 0}, {5, 0}, {100, 0}, {1, 2}, {2, 1}, {3, 3}} {
		chunk := tc.chunk
		t.Run(fmt.Sprintf("%d late %d", chunk, tc.late), func(t *testing.T) {
			late = tc.late
			write(nil, chunk, 0)
			check("none", nil, true)
			write(a, chunk, 0)
			check("from none", a, true)
			write(a, chunk, 0)
			check("the same again", a, true)
			write(b, chunk, 0)
			check("another set", b, true)
			write(a, chunk, late+2)
			if chunk*(late+2) < len(a) {
				if ready, err := st.IndexesReady(); err != nil || ready {
					t.Fatalf("stopped half-way: marked built (%v)", err)
				}
			}
			write(b, chunk, 0)
			check("after a stop", b, true)
			write(nil, chunk, 0)
			check("none again", nil, true)
			// what the layout of one key per entry left: each entry a
			// bbolt key of its own, its value only its seal
			if err := st.update(func(tx *bolt.Tx) error {
				vb := st.vb(tx.Bucket(bucketPKeys), "pkeys")
				for _, e := range b {
					if err := vb.Put(appendPKeyKey(nil, e.PKey, e.ID), nil); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			write(a, chunk, 0)
			check("over one key per entry", a, true)
		})
	}
}

// TestPKeyIndexOfOneKeyPerEntryIsRebuilt: a PKey index in the layout from
// before the blocks (one bbolt key per entry, marked index_pkeys) is not
// used: the file's indexes are not ready, the first run that opens it
// builds the packed one in its place (the old marker gone), and from then
// on runs keep it.
func TestPKeyIndexOfOneKeyPerEntryIsRebuilt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	ns := make([]int, 300)
	for i := range ns {
		ns[i] = i
	}
	st := openWith(t, path, testPairs, ns...)
	// The old layout: every entry a key of its own, its value its seal.
	var want []string
	if err := st.update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bucketPKeys); err != nil {
			return err
		}
		bk, err := tx.CreateBucket(bucketPKeys)
		if err != nil {
			return err
		}
		return st.records(tx.Bucket(bucketContacts)).ForEach(func(k, v []byte) error {
			r, err := parseRecord(v)
			if err != nil {
				return err
			}
			var cid extract.ID
			copy(cid[:], k)
			pk, _, err := indexKeys(&r, cid)
			if pk != nil {
				want = append(want, string(pk))
				err = st.vb(bk, "pkeys").Put(pk, nil)
			}
			return err
		})
	}); err != nil {
		t.Fatal(err)
	}
	if err := st.update(func(tx *bolt.Tx) error {
		vm := st.vb(tx.Bucket(bucketMeta), "meta")
		if err := vm.Delete(keyPKeysOK); err != nil {
			return err
		}
		return vm.Put(keyPKeysFlat, []byte("1"))
	}); err != nil {
		t.Fatal(err)
	}
	if len(want) < 100 {
		t.Fatalf("the fixture has %d PKey entries", len(want))
	}
	if ready, err := st.IndexesReady(); err != nil || ready {
		t.Fatalf("an index of one key per entry is taken as ready (%v)", err)
	}
	if _, err := st.BuildIndexes(context.Background(), 1<<20, t.TempDir()); err != nil {
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
		keys = tx.Bucket(bucketPKeys).Stats().KeyN
		if tx.Bucket(bucketMeta).Get(keyPKeysFlat) != nil {
			return errors.New("the old layout's marker is still there")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if keys*10 > len(want) {
		t.Fatalf("%d entries in %d bbolt keys: not packed", len(want), keys)
	}
	r, err := st.Reader()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var got []string
	if err := r.EachPKey(func(pkey string, id extract.ID) bool {
		got = append(got, string(appendPKeyKey(nil, pkey, id)))
		return true
	}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("the rebuilt index holds %d entries, want %d", len(got), len(want))
	}

	// An older optsync that rebuilt its own layout over the packed one
	// marks index_pkeys again: the packed marker left beside it does not
	// make its keys blocks.
	r.Close()
	if err := st.update(func(tx *bolt.Tx) error {
		return st.vb(tx.Bucket(bucketMeta), "meta").Put(keyPKeysFlat, []byte("1"))
	}); err != nil {
		t.Fatal(err)
	}
	if ready, err := st.IndexesReady(); err != nil || ready {
		t.Fatalf("both markers: taken as ready (%v)", err)
	}
}

// TestDamagedPKeyBlockIsReported: a flipped bit in a block of the PKey
// index — in any of its entries — is found by its seal and reported as
// damage naming the index and the block, by a lookup and by a check of
// every seal.
func TestDamagedPKeyBlockIsReported(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	ns := make([]int, 200)
	for i := range ns {
		ns[i] = i
	}
	st := openWith(t, path, testPairs, ns...)
	var bk, bv []byte
	var pkey string
	if err := st.view(func(tx *bolt.Tx) error {
		k, v := tx.Bucket(bucketPKeys).Cursor().First()
		k, v = tx.Bucket(bucketPKeys).Cursor().Seek(k) // the first block
		bk, bv = bytes.Clone(k), bytes.Clone(v)
		var r blockReader
		r.reset("pkeys", k, v[:len(v)-sealSize])
		es := r.entries(nil, nil)
		if len(es) < 3 {
			return fmt.Errorf("the first block holds %d entries", len(es))
		}
		last := es[len(es)-1].k
		pkey = string(last[:len(last)-17])
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
	// found by the open's check of the pages it reaches, or by the lookup
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
		_, err = r.PKeyContacts(pkey)
		return err
	}
	err := lookup()
	var ce *CorruptError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "pkeys") || !strings.Contains(err.Error(), printable(bk)) {
		t.Fatalf("a lookup through a damaged block: %v", err)
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
	if len(found) != 1 || !strings.Contains(found[0], "pkeys") || !strings.Contains(found[0], printable(bk)) {
		t.Fatalf("a check of every seal found %q", found)
	}
}
