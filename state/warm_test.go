package state

import (
	"bytes"
	"errors"
	"os"
	"slices"
	"sort"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"

	"optsync/extract"
	"optsync/transform"
	"optsync/transform/sorts"
)

// askedFor runs a warm of trees over st with the kernel's part played by
// the test: every page is out of the cache (cached: whether it is), and
// the pages asked for are returned.
func askedFor(t *testing.T, st *Store, cached bool, trees ...warmTree) map[uint64]bool {
	t.Helper()
	var mu sync.Mutex
	asked := map[uint64]bool{}
	w := &warming{
		advise: func(id, n uint64) error {
			mu.Lock()
			defer mu.Unlock()
			for i := range n {
				asked[id+i] = true
			}
			return nil
		},
		cached: func(uint64) (bool, bool) { return cached, true },
	}
	w.start(st.db, st.file, func() []warmTree { return trees })
	<-w.done // to its end (end would stop it)
	return asked
}

// carryStore is carryFixture's file, open.
func carryStore(t *testing.T) *Store {
	t.Helper()
	path, _, _ := carryFixture(t)
	st, err := Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// floorLeaves are the leaves (of leaves, in key order) whose key ranges
// hold keys: a key's is the last leaf whose first key is not above it;
// next adds the leaf after each.
func floorLeaves(leaves []leafKeys, keys [][]byte, next bool) map[uint64]bool {
	out := map[uint64]bool{}
	for _, k := range keys {
		i := max(0, sort.Search(len(leaves), func(i int) bool { return bytes.Compare(leaves[i].first, k) > 0 })-1)
		out[leaves[i].id] = true
		if next && i+1 < len(leaves) {
			out[leaves[i+1].id] = true
		}
	}
	return out
}

// treeOf is the root of bucket in st's file and its leaves, read from the
// file's bytes (not by the code under test).
func treeOf(t *testing.T, st *Store, bucket []byte) (root uint64, leaves []leafKeys) {
	t.Helper()
	if err := st.db.View(func(tx *bolt.Tx) error {
		root = uint64(tx.Bucket(bucket).Root())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(st.path)
	if err != nil {
		t.Fatal(err)
	}
	return root, bucketLeaves(t, data, root, uint64(st.db.Info().PageSize))
}

// A warm asks for the leaves the lookups of its keys reach — and, in a
// tree where lookups seek (the pending writes' index), the leaf after each,
// onto which a seek may step — and for the branches above them.
func TestWarmAsksForTheLeavesLookupsReach(t *testing.T) {
	st := carryStore(t)
	var ids []extract.ID
	for i := 1; i <= 2*fixtureContacts+3; i += 331 {
		ids = append(ids, id(i)) // odd ones are not in the file
	}
	ids = append(ids, ids[3]) // twice, and out of order
	trees := lookupTrees(ids, []string{"@kb", "@ka", "", "@kb"})
	if len(trees[0].keys) != 2 || !bytes.Equal(trees[0].keys[0], []byte("@ka\x00")) || !bytes.Equal(trees[0].keys[1], []byte("@kb\x00")) {
		t.Errorf("the PKey index's keys: %q, want the two PKeys' prefixes in order", trees[0].keys)
	}
	// the first contacts' pending writes, the oldest: the index's first leaf
	if err := st.WithPrior(func(p transform.Prior) error {
		_, err := p.Get(id(2), new(transform.Snapshot))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	trees = append(trees, pendingTree(st.reads.records()))
	asked := askedFor(t, st, false, trees...)

	for _, tr := range trees {
		root, leaves := treeOf(t, st, tr.bucket)
		if len(leaves) < 2 {
			t.Fatalf("%s lies on %d leaves; the test needs a tree with branches", tr.bucket, len(leaves))
		}
		if !asked[root] {
			t.Errorf("%s: the root branch %d was not asked for", tr.bucket, root)
		}
		want := floorLeaves(leaves, tr.keys, tr.next)
		if len(want) == len(leaves) {
			t.Fatalf("%s: the keys reach every leaf; the test needs some they do not", tr.bucket)
		}
		for _, l := range leaves {
			if asked[l.id] != want[l.id] {
				t.Errorf("%s leaf %d [%x ...]: asked for %v, reached by a lookup (or the leaf after) %v", tr.bucket, l.id, l.first, asked[l.id], want[l.id])
			}
		}
	}
}

// A file whose probed pages are all in the page cache is not warmed; one
// whose pages' state cannot be told is.
func TestWarmLeavesACachedFileAlone(t *testing.T) {
	st := carryStore(t)
	trees := lookupTrees([]extract.ID{id(2), id(400)}, nil)
	if asked := askedFor(t, st, true, trees...); len(asked) != 0 {
		t.Errorf("asked for %d pages of a file in the cache", len(asked))
	}
	if asked := askedFor(t, st, false, trees...); len(asked) == 0 {
		t.Error("asked for nothing of a file out of the cache")
	}
}

// A branch that is not what bbolt writes ends the warm, quietly (the
// lookups find it and say what is wrong), having asked for it alone.
func TestWarmStopsAtADamagedBranch(t *testing.T) {
	path, _, _ := carryFixture(t)
	st, err := Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := treeOf(t, st, bucketContacts)
	ps := uint64(st.db.Info().PageSize)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	// the elements' offsets and sizes (past the header) all ones
	if _, err := f.WriteAt(bytes.Repeat([]byte{0xff}, 64), int64(root*ps+16)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if st, err = Open(path, testPairs); err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	asked := askedFor(t, st, false, lookupTrees([]extract.ID{id(2), id(900)}, nil)...)
	if len(asked) != 1 || !asked[root] {
		t.Errorf("asked for %v, want the damaged root %d alone", asked, root)
	}
}

// A commit's warm asks for the entries of the pending writes' index that
// the records its lookups read hold: one per run with a write pending.
func TestPendingTreeHoldsTheReadRecordsEntries(t *testing.T) {
	st := carryStore(t)
	var want [][]byte
	read := []int{3, 50, 51, 700}
	if err := st.WithPrior(func(p transform.Prior) error {
		for _, n := range read {
			var snap transform.Snapshot
			if found, err := p.Get(id(2*n), &snap); err != nil || !found {
				t.Fatalf("contact %d: found %v, %v", n, found, err)
			}
			s := fullSnap(n)
			for _, pair := range s.Pairs[:len(testPairs)] {
				if pair.DWritten.Known() {
					want = append(want, pendingIndexKey(pair.DWrittenAt, id(2*n)))
				}
				if pair.CWritten.Known() {
					want = append(want, pendingIndexKey(pair.CWrittenAt, id(2*n)))
				}
			}
		}
		if found, err := p.Get(id(5), new(transform.Snapshot)); err != nil || found {
			t.Fatalf("contact 5 (none such): found %v, %v", found, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(want, bytes.Compare)
	tree := pendingTree(st.reads.records())
	if !bytes.Equal(tree.bucket, bucketPending) || !tree.next {
		t.Errorf("the tree of bucket %q (next %v), want the pending writes' index, with the leaves after", tree.bucket, tree.next)
	}
	if !slices.EqualFunc(tree.keys, want, bytes.Equal) {
		t.Errorf("keys %x,\nwant %x", tree.keys, want)
	}
}

// A night's lookups are of the contacts its rows name (a profile's too,
// unless it links none) and of the PKeys its input links.
func TestNightLookupsAreWhatItsRowsName(t *testing.T) {
	contacts := sorts.Contacts(1<<20, "")
	ks := extract.NewKeys()
	kw := ks.Writer()
	profiles := sorts.Profiles(ks, false, 1<<20, "")
	var want []extract.ID
	for i := range 6 {
		c := extract.Contact{ID: extract.ID{0: byte(10 - i)}, Modified: 1, Line: int32(i + 2)}
		if i%2 == 0 {
			if err := contacts.Add(&c); err != nil {
				t.Fatal(err)
			}
		}
		p := extract.Profile{ID: c.ID, PKey: kw.Put(string(rune('a' + i))), Modified: 1, Line: int32(i + 2)}
		if i == 5 {
			p.ID, p.Unlinked = extract.ID{}, true
		} else {
			want = append(want, c.ID)
		}
		if err := profiles.Add(&p); err != nil {
			t.Fatal(err)
		}
	}
	files := []extract.InputFile{{}}
	id, err := transform.Identify(contacts, profiles, transform.IdentifyOptions{D365Files: files, CampaignFiles: files, WithOwners: true,
		Later: sorts.Rejects(0, ""), Sorts: sorts.Identity{Budget: 1 << 20}, Keys: ks, ReadKeys: kw})
	if err != nil {
		t.Fatal(err)
	}
	defer id.Close()
	ids, pkeys := nightLookups(id)
	keys := idKeys(ids)
	slices.SortFunc(want, extract.ID.Compare)
	if !slices.EqualFunc(keys, want, func(k []byte, w extract.ID) bool { return bytes.Equal(k, w[:]) }) {
		t.Errorf("contacts looked up %x, want %x", keys, want)
	}
	slices.Sort(pkeys)
	if !slices.Equal(pkeys, []string{"a", "b", "c", "d", "e", "f"}) {
		t.Errorf("PKeys looked up %q, want every one the input links", pkeys)
	}
}

// A kernel that refuses the advice ends the warm at its first ask.
func TestWarmStopsWhenTheKernelRefuses(t *testing.T) {
	st := carryStore(t)
	asks := 0
	w := &warming{
		advise: func(uint64, uint64) error { asks++; return errors.ErrUnsupported },
		cached: func(uint64) (bool, bool) { return false, true },
	}
	trees := lookupTrees([]extract.ID{id(2), id(900)}, []string{"@ka"})
	w.start(st.db, st.file, func() []warmTree { return trees })
	<-w.done
	if asks != 1 {
		t.Errorf("asked %d times after the kernel refused the first", asks)
	}
}
