package state

import (
	"encoding/binary"
	"errors"
	bolt "go.etcd.io/bbolt"
	"os"
	"slices"
	"strings"
	"testing"

	"optsync/transform"
)

// preadOf is the page reader of the records' lookups of r (nil: none).
func preadOf(r *Reader) *pageReader {
	if pc, ok := r.c.(*pcursor); ok && pc.c.x.pv != nil {
		return pc.c.x.pv.rd
	}
	return nil
}

// TestRunLookupsReadPages: a run's lookups (WithPrior's reader) by id and
// by PKey read their pages with pread, and find what a reader of the
// mapping finds; other readers (the commit's) read the mapping.
func TestRunLookupsReadPages(t *testing.T) {
	st, mapped := carryReader(t)
	if preadOf(mapped) != nil {
		t.Fatal("a reader other than a run's lookups reads pages with pread")
	}
	err := st.WithPrior(func(p transform.Prior) error {
		r := p.(*Reader)
		for i := 1; i <= 2*fixtureContacts+1; i += 37 {
			var got, want transform.Snapshot
			found, err := r.Get(id(i), &got)
			if err != nil {
				return err
			}
			wantFound, err := mapped.Get(id(i), &want)
			if err != nil {
				return err
			}
			if found != wantFound || got.PKey != want.PKey || got.DModified != want.DModified {
				t.Fatalf("Get(%d): %v %+v, the mapping's %v %+v", i, found, got, wantFound, want)
			}
			if !found {
				continue
			}
			ids, err := r.PKeyContacts(got.PKey)
			if err != nil {
				return err
			}
			wantIDs, err := mapped.PKeyContacts(got.PKey)
			if err != nil {
				return err
			}
			if !slices.Equal(ids, wantIDs) {
				t.Fatalf("PKeyContacts(%q): %v, the mapping's %v", got.PKey, ids, wantIDs)
			}
		}
		if rd := preadOf(r); rd == nil || rd.reads == 0 {
			t.Fatal("the lookups by id read no page with pread")
		}
		if r.pkeys == nil || r.pkeys.x.pv.rd == nil || r.pkeys.x.pv.rd.reads == 0 {
			t.Fatal("the lookups by PKey read no page with pread")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestPreadLookupsFallBackToTheMapping: a lookup whose pread fails (here:
// the file it reads is closed) reads the mapping instead and answers the
// same.
func TestPreadLookupsFallBackToTheMapping(t *testing.T) {
	path, _, _ := carryFixture(t)
	r := readerOf(t, path)
	r.readPages()
	closed, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	rd := preadOf(r)
	rd.f = closed
	for i := 2; i <= 2*fixtureContacts; i += 42 {
		var s transform.Snapshot
		found, err := r.Get(id(i), &s)
		if err != nil || !found {
			t.Fatalf("Get(%d): found %v, %v", i, found, err)
		}
		if want := fullSnap(i / 2); s.PKey != want.PKey || s.DModified != want.DModified {
			t.Fatalf("Get(%d): %+v, want %+v", i, s, want)
		}
	}
	if rd.reads != 0 {
		t.Fatalf("%d pages read from a closed file", rd.reads)
	}
}

// TestPreadLookupsCheckThePagesTheyRead: a page read with pread is checked
// as a mapped one is: a leaf whose header names another page, or whose
// value's seal does not match, is damage, never read as records.
func TestPreadLookupsCheckThePagesTheyRead(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		damage     func(t *testing.T, path string, leaf, pageSize uint64)
	}{
		{"a header naming another page", "names itself", func(t *testing.T, path string, leaf, pageSize uint64) {
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var hdr [8]byte
			binary.LittleEndian.PutUint64(hdr[:], leaf+1)
			if _, err := f.WriteAt(hdr[:], int64(leaf*pageSize)); err != nil {
				t.Fatal(err)
			}
		}},
		{"a flipped bit in a value", "checksum", flipInFile},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, leaves, pageSize := carryFixture(t)
			leaf := leaves[len(leaves)/2]
			tc.damage(t, path, leaf.id, pageSize)
			r := readerOf(t, path)
			r.readPages()
			var s transform.Snapshot
			_, err := r.Get(idOf(leaf.last), &s)
			var ce *CorruptError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Get on a damaged leaf: %v, want damage: %s", err, tc.want)
			}
			if preadOf(r).reads == 0 {
				t.Fatal("the damaged leaf was not read with pread")
			}
		})
	}
}

// TestPreadLookupsReadAPagePassedAgainOnce: lookups in id order pass the
// same root and branches again and again; a page still in its level's
// buffer is not read again (the view's pages do not change), so no page of
// the tree is read twice, and every answer is the mapping's.
func TestPreadLookupsReadAPagePassedAgainOnce(t *testing.T) {
	path, _, pageSize := carryFixture(t)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var root uint64
	if err := st.db.View(func(tx *bolt.Tx) error {
		root = uint64(tx.Bucket(bucketContacts).Root())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	mapped, err := st.Reader()
	if err != nil {
		t.Fatal(err)
	}
	defer mapped.Close()
	r, err := st.Reader()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.readPages()
	for i := 1; i <= 2*fixtureContacts+1; i++ {
		var got, want transform.Snapshot
		found, err := r.Get(id(i), &got)
		if err != nil {
			t.Fatal(err)
		}
		wantFound, err := mapped.Get(id(i), &want)
		if err != nil {
			t.Fatal(err)
		}
		if found != wantFound || got != want {
			t.Fatalf("Get(%d): %v %+v, the mapping's %v %+v", i, found, got, wantFound, want)
		}
	}
	// the records tree's pages, branches and leaves
	hwm := uint64(len(data)) / pageSize
	var pages int
	var walk func(id uint64)
	walk = func(id uint64) {
		p, problem := readRawPage(data, id, hwm, pageSize)
		if problem != "" {
			t.Fatal(problem)
		}
		pages++
		if p.branch {
			for i := range p.count {
				walk(p.child(i))
			}
		}
	}
	walk(root)
	if reads := preadOf(r).reads; reads == 0 || reads > pages {
		t.Fatalf("%d pages read for lookups in id order over a tree of %d pages", reads, pages)
	}
}
