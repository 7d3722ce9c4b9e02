package state

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"optsync/extract"
	"optsync/transform"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// packedStore opens a new store with an empty packed bucket "t".
func packedStore(t *testing.T) *Store {
	t.Helper()
	st, err := Open(filepath.Join(t.TempDir(), "state.db"), testPairs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucket([]byte("t"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return st
}

// packedBlocks is what bucket "t" holds: its blocks' keys and entries,
// checking the layout's rules on the way: a block begins with the entry it
// is keyed by, holds at least one, stays within blockCap unless it is a
// single entry, and lies below the next block.
func packedBlocks(t *testing.T, st *Store) (blocks [][]blockEntry) {
	t.Helper()
	if err := st.view(func(tx *bolt.Tx) error {
		x := st.vb(tx.Bucket([]byte("t")), "t")
		return x.ForEach(func(k, v []byte) error {
			var r blockReader
			r.reset("t", k, v)
			es := r.entries(nil, nil)
			for i := range es {
				es[i].v = bytes.Clone(es[i].v)
			}
			if len(v) > blockCap && len(es) > 1 {
				return fmt.Errorf("block %q holds %d bytes, over the cap of %d", k, len(v), blockCap)
			}
			if n := len(blocks); n > 0 {
				prev := blocks[n-1]
				if bytes.Compare(prev[len(prev)-1].k, k) >= 0 {
					return fmt.Errorf("block %q is not above the entries of the one before", k)
				}
			}
			blocks = append(blocks, es)
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	return blocks
}

// packedEntries is every entry of bucket "t", read through a cursor.
func packedEntries(t *testing.T, st *Store) map[string]string {
	t.Helper()
	got := map[string]string{}
	var prev []byte
	if err := st.view(func(tx *bolt.Tx) error {
		c := st.packed(tx.Bucket([]byte("t")), "t").Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if prev != nil && bytes.Compare(prev, k) >= 0 {
				return fmt.Errorf("cursor went from %q to %q", prev, k)
			}
			prev = bytes.Clone(k)
			got[string(k)] = string(v)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

// TestPackedEntriesRoundTrip: entries written into blocks read back as they
// were, whatever their keys share with the entry before and whatever their
// values.
func TestPackedEntriesRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		es   []blockEntry
	}{
		{"one", []blockEntry{{[]byte("a"), nil}}},
		{"prefixes", []blockEntry{{[]byte("a"), nil}, {[]byte("ab"), nil}, {[]byte("abc"), []byte("v")}, {[]byte("b"), nil}}},
		{"shared then shorter", []blockEntry{{[]byte("abcd\x00x"), []byte("1")}, {[]byte("abd"), nil}, {[]byte("b\x00\xff"), []byte(strings.Repeat("z", 300))}}},
		{"binary", []blockEntry{{[]byte{0}, nil}, {[]byte{0, 0}, []byte{0}}, {[]byte{0, 1}, nil}, {[]byte{0xff}, nil}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p []byte
			prev := tc.es[0].k
			for _, e := range tc.es {
				p = appendEntry(p, prev, e.k, e.v)
				if got := entrySize(prev, e.k, e.v); got != len(appendEntry(nil, prev, e.k, e.v)) {
					t.Fatalf("entrySize %d", got)
				}
				prev = e.k
			}
			var r blockReader
			r.reset("t", tc.es[0].k, p)
			got := r.entries(nil, nil)
			if len(got) != len(tc.es) {
				t.Fatalf("%d entries, want %d", len(got), len(tc.es))
			}
			for i := range got {
				if !bytes.Equal(got[i].k, tc.es[i].k) || !bytes.Equal(got[i].v, tc.es[i].v) {
					t.Fatalf("entry %d: %q=%q, want %q=%q", i, got[i].k, got[i].v, tc.es[i].k, tc.es[i].v)
				}
			}
		})
	}
}

// TestPackedBlockShapeIsChecked: a block that does not decode as this
// layout writes it (damage past its seal, or a key of another layout) is
// reported as damage naming the block, never read as entries.
func TestPackedBlockShapeIsChecked(t *testing.T) {
	one := appendEntry(nil, []byte("k1"), []byte("k1"), nil)
	for _, tc := range []struct {
		name, want string
		bk, p      []byte
	}{
		{"empty", "holds no entry", []byte("k1"), nil},
		{"another first key", "does not begin with the entry it is keyed by", []byte("k1"), appendEntry(nil, []byte("k1"), []byte("k2"), nil)},
		{"repeated key", "entry 1 is not above", []byte("k1"), appendEntry(slices.Clone(one), []byte("k1"), []byte("k1"), nil)},
		{"falling key", "entry 1 is not above", []byte("k1"), appendEntry(slices.Clone(one), []byte("k1"), []byte("k0"), nil)},
		{"cut short", "entry 1 does not decode", []byte("k1"), append(slices.Clone(one), 1, 9, 'x')},
		{"shares more than the key before", "entry 0 does not decode", []byte("k1"), []byte{5, 0, 0}},
		{"value past the end", "entry 0 does not decode", []byte("k1"), []byte{2, 0, 9, 'v'}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				d, ok := recover().(damage)
				if !ok || !strings.Contains(d.problem, tc.want) || !strings.Contains(d.problem, string(tc.bk)) {
					t.Fatalf("got %v, want damage naming block %q: %s", d, tc.bk, tc.want)
				}
			}()
			var r blockReader
			r.reset("t", tc.bk, tc.p)
			r.entries(nil, nil)
		})
	}
}

// packedLoad is a test's run of transactions over a packed bucket: keys
// drawn from a pool of keys, perTx changes a transaction (deleteProb of
// them deletes), values of up to value bytes.
type packedLoad struct {
	name       string
	keys, txs  int
	perTx      int
	deleteProb float64
	value      int
}

// ops is one transaction's changes, in key order, each key once: perTx
// keys drawn, deleteProb of them deleted, the others put.
func (l packedLoad) ops(rng *rand.Rand, key func() []byte, deleteProb float64) []blockOp {
	var ops []blockOp
	seen := map[string]bool{}
	for range l.perTx {
		k := key()
		if seen[string(k)] {
			continue
		}
		seen[string(k)] = true
		op := blockOp{k: k, put: rng.Float64() >= deleteProb}
		if op.put {
			op.v = []byte(strings.Repeat("v", rng.IntN(l.value+1)))
		}
		ops = append(ops, op)
	}
	slices.SortFunc(ops, func(a, b blockOp) int { return bytes.Compare(a.k, b.k) })
	return ops
}

// TestPackedApplyKeepsEntries: puts and deletes, in transactions of one to
// many changes, leave the bucket holding what a map holds after the same
// changes, in blocks within the cap (split as they grow, dropped when
// emptied, moved when their first entry goes), and a seek finds the first
// entry at or after any key.
func TestPackedApplyKeepsEntries(t *testing.T) {
	for _, tc := range []packedLoad{
		{"single changes", 300, 600, 1, 0.3, 0},
		{"a night's", 2000, 40, 50, 0.4, 0},
		{"a fill", 5000, 3, 4000, 0.05, 0},
		{"values", 1000, 30, 80, 0.3, 70},
		{"emptied", 200, 40, 30, 0.9, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := packedStore(t)
			rng := rand.New(rand.NewPCG(uint64(tc.keys), uint64(tc.txs)))
			want := map[string]string{}
			key := func() []byte {
				// PKey-like keys sharing prefixes, then a contact id
				id := id(rng.IntN(tc.keys))
				return appendPKeyKey(nil, fmt.Sprintf("@p%d", rng.IntN(tc.keys/3+1)), id)
			}
			for range tc.txs {
				ops := tc.ops(rng, key, tc.deleteProb)
				for _, op := range ops {
					if op.put {
						want[string(op.k)] = string(op.v)
					} else {
						delete(want, string(op.k))
					}
				}
				if err := st.update(func(tx *bolt.Tx) error {
					return st.packed(tx.Bucket([]byte("t")), "t").apply(ops)
				}); err != nil {
					t.Fatal(err)
				}
			}
			blocks := packedBlocks(t, st)
			if got := packedEntries(t, st); !mapsEqual(got, want) {
				t.Fatalf("the bucket holds %d entries, want %d", len(got), len(want))
			}
			if len(want) > 0 && len(blocks) == len(want) && len(want) > 10 {
				t.Fatalf("%d entries in as many blocks: nothing packed", len(want))
			}
			sorted := make([]string, 0, len(want))
			for k := range want {
				sorted = append(sorted, k)
			}
			slices.Sort(sorted)
			for range 200 {
				k := key()[:rng.IntN(20)+1]
				i, _ := slices.BinarySearch(sorted, string(k))
				var got []byte
				if err := st.view(func(tx *bolt.Tx) error {
					got, _ = st.packed(tx.Bucket([]byte("t")), "t").Cursor().Seek(k)
					got = bytes.Clone(got)
					return nil
				}); err != nil {
					t.Fatal(err)
				}
				if i == len(sorted) && got != nil || i < len(sorted) && string(got) != sorted[i] {
					t.Fatalf("seek %q found %q", k, got)
				}
			}
		})
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestPackerCutsTheSameBlocksAgain: the blocks a whole write cuts depend on
// the entries only, so a stream that differs from the one before in a few
// places cuts the same blocks away from them — what lets a repeat
// backfill write only the blocks that changed — and every block stays
// within the cap.
func TestPackerCutsTheSameBlocksAgain(t *testing.T) {
	keys := func(n int, skip map[int]bool) [][]byte {
		var ks [][]byte
		for i := range n {
			if !skip[i] {
				ks = append(ks, appendPKeyKey(nil, fmt.Sprintf("@p%07d", i), id(i)))
			}
		}
		return ks
	}
	cut := func(ks [][]byte) map[string]string {
		blocks := map[string]string{}
		p := blockPacker{emit: func(bk, es []byte) error {
			if len(es) > blockCap {
				return fmt.Errorf("block %q of %d bytes", bk, len(es))
			}
			blocks[string(bk)] = string(es)
			return nil
		}}
		for _, k := range ks {
			if err := p.add(k, nil); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.flush(); err != nil {
			t.Fatal(err)
		}
		return blocks
	}
	for _, tc := range []struct {
		name    string
		skip    map[int]bool
		maxDiff int // blocks of the second cut not in the first
	}{
		{"the same", nil, 0},
		{"one gone", map[int]bool{5000: true}, 2},
		{"ten gone", map[int]bool{10: true, 900: true, 1800: true, 2700: true, 3600: true, 4500: true, 5400: true, 6300: true, 7200: true, 8100: true}, 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := cut(keys(10000, nil)), cut(keys(10000, tc.skip))
			if len(a) > 10000/10 {
				t.Fatalf("%d blocks for 10000 entries", len(a))
			}
			diff := 0
			for k, v := range b {
				if a[k] != v {
					diff++
				}
			}
			if diff > tc.maxDiff {
				t.Fatalf("%d of %d blocks differ, want at most %d", diff, len(b), tc.maxDiff)
			}
		})
	}
	var p blockPacker
	p.emit = func([]byte, []byte) error { return nil }
	_ = p.add([]byte("b"), nil)
	if err := p.add([]byte("a"), nil); err == nil {
		t.Fatal("a key below the one before was packed")
	}
}

// TestFileOfOneKeyPerRecordIsPacked: a file of schema 8 (each contact record
// a bbolt key of its own) is read as it is by a reader, and the first run
// that opens it rewrites it whole, records packed in blocks, into a copy
// beside it renamed into place (a copy a killed rewrite left is dropped
// first): every record, the totals and the indexes read the same after,
// and the schema is the current one.
func TestFileOfOneKeyPerRecordIsPacked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	const n = 500
	ns := make([]int, n)
	for i := range ns {
		ns[i] = i
	}
	st := openWith(t, path, testPairs, ns...)
	want := checkTotals(t, st, "packed")
	flatten(t, st)
	if err := st.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keySchema, sealed(keySchema, []byte("8")))
	}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	keys := func(st *Store) (k int) {
		_ = st.db.View(func(tx *bolt.Tx) error { k = tx.Bucket(bucketContacts).Stats().KeyN; return nil })
		return k
	}
	snaps := func(st *Store) map[extract.ID]transform.Snapshot {
		m := map[extract.ID]transform.Snapshot{}
		if err := st.Each(func(id extract.ID, s *transform.Snapshot) error { m[id] = *s; return nil }); err != nil {
			t.Fatal(err)
		}
		return m
	}

	ro, err := OpenReadOnly(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	if keys(ro) != n {
		t.Fatalf("the fixture holds %d keys for %d records", keys(ro), n)
	}
	before := snaps(ro)
	r, err := ro.Reader()
	if err != nil {
		t.Fatal(err)
	}
	var s transform.Snapshot
	if found, err := r.Get(id(77), &s); err != nil || !found || s != before[id(77)] || s.PKey != fullSnap(77).PKey {
		t.Fatalf("a reader's Get of a record of schema 8: %v %v", found, err)
	}
	r.Close()
	ro.Close()
	if len(before) != n {
		t.Fatalf("a reader of schema 8 reads %d records, want %d", len(before), n)
	}

	if err := os.WriteFile(path+".sealing", []byte("what a killed rewrite left"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err = Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if n, sealed := schemaOf(t, st); n != SchemaVersion || !sealed {
		t.Fatalf("after a run opened it: schema %d, sealed %v", n, sealed)
	}
	if k := keys(st); k*5 > n {
		t.Fatalf("%d records in %d keys: not packed", n, k)
	}
	if _, err := os.Stat(path + ".sealing"); !os.IsNotExist(err) {
		t.Fatalf("the rewrite's copy was left behind: %v", err)
	}
	if after := snaps(st); !reflect.DeepEqual(before, after) {
		t.Fatal("the rewrite changed what the file says")
	}
	if got := checkTotals(t, st, "after the rewrite"); !reflect.DeepEqual(got, want) {
		t.Fatalf("totals %+v, want %+v", got, want)
	}
	// and runs write it as blocks from then on
	b := st.NewBatch(0)
	s = fullSnap(1000)
	b.Put(id(1000), &s)
	if err := st.Commit(context.Background(), b, &Final{Forget: []extract.ID{id(3)}}); err != nil {
		t.Fatal(err)
	}
	after := snaps(st)
	if _, ok := after[id(3)]; ok || after[id(1000)].PKey != fullSnap(1000).PKey || len(after) != n {
		t.Fatalf("after a commit: %d records", len(after))
	}
	checkTotals(t, st, "after a commit")
}

// TestRewriteCutsBlocksAsBefore: rewrite cuts a run of entries where the
// rule says (one block when they fit; else, for the last block, each block
// as full as the cap takes, and for any other, blocks of about equal size
// three quarters full) however it reckons their size, so blocks a file
// holds are cut the same way whether rewrite encoded them whole first or
// not. The reference below encodes them whole.
func TestRewriteCutsBlocksAsBefore(t *testing.T) {
	reference := func(es []blockEntry, last bool) (counts []int) {
		var buf []byte
		prev := es[0].k
		for _, e := range es {
			buf = appendEntry(buf, prev, e.k, e.v)
			prev = e.k
		}
		if len(buf) <= blockCap || len(es) == 1 {
			return []int{len(es)}
		}
		size := len(buf)
		parts := (size + blockCap - 1) / blockCap
		if parts > 1 {
			parts = (size*4 + blockCap*3 - 1) / (blockCap * 3)
		}
		target := (size + parts - 1) / parts
		if last {
			target = blockCap
		}
		for from := 0; from < len(es); {
			buf = buf[:0]
			prev = es[from].k
			to := from
			for to < len(es) {
				n := len(buf)
				buf = appendEntry(buf, prev, es[to].k, es[to].v)
				if to > from && (len(buf) > blockCap || n >= target) {
					break
				}
				prev = es[to].k
				to++
			}
			counts = append(counts, to-from)
			from = to
		}
		return counts
	}
	for _, tc := range []struct {
		name  string
		n     int
		value int
	}{
		{"one entry", 1, 0},
		{"one entry past the cap", 1, 3 * blockCap},
		{"a few", 10, 20},
		{"just past the cap", 30, 40},
		{"a backfill's chunk", 5000, 60},
		{"values of all sizes", 400, 300},
	} {
		for _, last := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s last=%v", tc.name, last), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(uint64(tc.n), uint64(tc.value)))
				es := make([]blockEntry, tc.n)
				for i := range es {
					v := []byte(strings.Repeat("v", rng.IntN(tc.value+1)))
					if tc.n == 1 {
						v = []byte(strings.Repeat("v", tc.value))
					}
					es[i] = blockEntry{appendPKeyKey(nil, fmt.Sprintf("@p%06d", i), id(i)), v}
				}
				var scratch []byte
				st := packedStore(t)
				if err := st.update(func(tx *bolt.Tx) error {
					return st.packed(tx.Bucket([]byte("t")), "t").rewrite(leafRange{}, nil, es, last, &scratch)
				}); err != nil {
					t.Fatal(err)
				}
				var got []int
				for _, b := range packedBlocks(t, st) {
					got = append(got, len(b))
				}
				if want := reference(es, last); !slices.Equal(got, want) {
					t.Fatalf("entries per block %v, want %v", got, want)
				}
			})
		}
	}
}

// TestBatchThatWritesThePKeyIndexWholeNeedsItDropped: a batch of a commit
// that writes the PKey index whole carries no PKey keys of its records, so
// committed into a file whose index is built it would leave the index
// short: the commit refuses it until the index is dropped.
func TestBatchThatWritesThePKeyIndexWholeNeedsItDropped(t *testing.T) {
	st, err := Open(filepath.Join(t.TempDir(), "state.db"), testPairs)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	put := func() *Batch {
		b := st.NewBatch(1)
		b.wholePK = true
		r, err := st.Reader()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		b.PutRead(r, id(1), &transform.Snapshot{Known: true, CSeen: true, PKey: "@p1"})
		return b
	}
	if err := st.Commit(context.Background(), put(), nil); err == nil || !strings.Contains(err.Error(), "PKey index whole") {
		t.Fatalf("a batch without PKey keys committed into a built index: %v", err)
	}
	if err := st.DropPKeyIndex(); err != nil {
		t.Fatal(err)
	}
	if err := st.Commit(context.Background(), put(), nil); err != nil {
		t.Fatal(err)
	}
}

// reopenedPackedStore is packedStore's file opened again, as a night opens
// its state: its pages are checked as they are reached (a file this
// process created is not), which floorInLeaf reads the leaves through.
func reopenedPackedStore(t *testing.T) *Store {
	t.Helper()
	st := packedStore(t)
	path := st.path
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// TestFloorInLeafAgreesWithTheSlowWay: a transaction's first apply, which
// finds each floor block on its committed leaf, leaves the bucket block
// for block as the slow way does (a seek, a step back, a step on), over
// nights of scattered changes, fills, and deletes that empty blocks.
func TestFloorInLeafAgreesWithTheSlowWay(t *testing.T) {
	for _, tc := range []packedLoad{
		{"nights", 4000, 30, 120, 0.2, 40},
		{"a fill, then nights", 6000, 12, 2500, 0.05, 60},
		{"emptying", 1500, 30, 200, 0.7, 30},
		{"single changes", 2000, 200, 1, 0.3, 50},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fast, slow := reopenedPackedStore(t), reopenedPackedStore(t)
			rng := rand.New(rand.NewPCG(uint64(tc.keys), 7))
			var sc packScratch
			key := func() []byte {
				return appendPKeyKey(nil, fmt.Sprintf("@p%d", rng.IntN(tc.keys/2+1)), id(rng.IntN(tc.keys)))
			}
			for tx := range tc.txs {
				deletes := tc.deleteProb
				if tx == 0 {
					deletes = 0 // a fill first
				}
				ops := tc.ops(rng, key, deletes)
				for _, st := range []*Store{fast, slow} {
					if err := st.update(func(tx *bolt.Tx) error {
						p := st.packed(tx.Bucket([]byte("t")), "t")
						p.sc, p.fresh = &sc, st == fast
						return p.apply(ops)
					}); err != nil {
						t.Fatal(err)
					}
				}
				a, b := packedBlocks(t, fast), packedBlocks(t, slow)
				if len(a) != len(b) {
					t.Fatalf("transaction %d: %d blocks, the slow way %d", tx, len(a), len(b))
				}
				for i := range a {
					if !slices.EqualFunc(a[i], b[i], func(x, y blockEntry) bool { return bytes.Equal(x.k, y.k) && bytes.Equal(x.v, y.v) }) {
						t.Fatalf("transaction %d: block %d holds %d entries from %q, the slow way's %d from %q", tx, i, len(a[i]), a[i][0].k, len(b[i]), b[i][0].k)
					}
				}
			}
			if sc.floors == 0 {
				t.Fatal("no floor block was found on its committed leaf: the test does not test it")
			}
		})
	}
}
