package state

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"optsync/extract"
)

// leafFixture is a closed state file whose packed bucket "t" holds PKey-like
// keys over many leaves (the next store to open it checks the pages it
// reaches, so lookups take the leaf their checked descent reaches), and the
// keys it holds, sorted.
func leafFixture(t *testing.T) (path string, keys []string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "state.db")
	st, err := Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 13))
	seen := map[string]bool{}
	var ops []blockOp
	for range 6000 {
		// two to six contacts a PKey, some PKeys prefixes of others
		k := string(appendPKeyKey(nil, fmt.Sprintf("@p%d", rng.IntN(1500)), id(rng.IntN(100000))))
		if seen[k] {
			continue
		}
		seen[k] = true
		keys = append(keys, k)
		ops = append(ops, blockOp{k: []byte(k), v: []byte(strings.Repeat("v", rng.IntN(40))), put: true})
	}
	slices.Sort(keys)
	slices.SortFunc(ops, func(a, b blockOp) int { return bytes.Compare(a.k, b.k) })
	if err := st.update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("t"))
		if err != nil {
			return err
		}
		return st.packed(b, "t").apply(ops)
	}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	return path, keys
}

// TestLeafLookupsAnswerAsACursor: a lookup in a read view, taken from the
// leaf its checked descent reached (leaf.go), finds what a cursor's seek
// finds, for keys held, keys between them, below the first and past the
// last, and lists what a cursor lists of a prefix; most lookups are
// answered by the leaf, the rest by the cursor.
func TestLeafLookupsAnswerAsACursor(t *testing.T) {
	path, keys := leafFixture(t)
	st, err := Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	probes := [][]byte{{0}, []byte("@"), []byte("\xff\xff"), []byte(keys[0]), []byte(keys[len(keys)-1]), append([]byte(keys[len(keys)-1]), 0)}
	for range 3000 {
		k := []byte(keys[rng.IntN(len(keys))])
		switch rng.IntN(3) {
		case 1: // just above a key held: between two, or past a block's last entry
			k = append(k, 0)
		case 2: // a key of the same PKey not held
			k = appendPKeyKey(nil, string(k[:bytes.IndexByte(k, 0)]), id(100000+rng.IntN(100)))
		}
		probes = append(probes, k)
	}
	decided, prefixesDecided := 0, 0
	err = st.view(func(tx *bolt.Tx) error {
		p := st.packed(tx.Bucket([]byte("t")), "t")
		var r blockReader
		for _, k := range probes {
			ck, cv := p.Cursor().Seek(k)
			want := ck != nil && bytes.Equal(ck, k)
			v, found, ok := p.lookup(&r, k)
			if !ok {
				continue
			}
			decided++
			if found != want || found && !bytes.Equal(v, cv) {
				return fmt.Errorf("lookup %q: found %v %q, a cursor %q %q", k, found, v, ck, cv)
			}
		}
		for _, k := range probes {
			prefix := append(slices.Clone(k[:max(bytes.IndexByte(k, 0), 0)]), 0)
			var want, got [][]byte
			c := p.Cursor()
			for ck, _ := c.Seek(prefix); ck != nil && bytes.HasPrefix(ck, prefix); ck, _ = c.Next() {
				want = append(want, bytes.Clone(ck))
			}
			ok, err := p.prefixed(&r, prefix, func(k []byte) error { got = append(got, bytes.Clone(k)); return nil })
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			prefixesDecided++
			if !slices.EqualFunc(got, want, bytes.Equal) {
				return fmt.Errorf("prefix %q: %q, a cursor %q", prefix, got, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if decided < len(probes)/2 || prefixesDecided < len(probes)/2 {
		t.Fatalf("the leaf answered %d lookups and %d prefixes of %d: the cursor answered most", decided, prefixesDecided, len(probes))
	}
	// a write transaction's nodes may differ from the pages: never taken
	// from the leaf there
	if err := st.update(func(tx *bolt.Tx) error {
		var r blockReader
		if _, _, ok := st.packed(tx.Bucket([]byte("t")), "t").lookup(&r, []byte(keys[10])); ok {
			return errors.New("a write transaction's lookup was taken from the leaf")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestLeafLookupsCheckTheBlocksTheyRead: a lookup taken from the leaf reads
// the blocks a cursor would and checks them the same way: a block that does
// not decode, or that does not lie below the next one, is damage named as
// such, never read as entries or as no entry.
func TestLeafLookupsCheckTheBlocksTheyRead(t *testing.T) {
	// block is a block keyed bk holding keys ks (its first entry encoded
	// against bk, as the writer does)
	block := func(bk string, ks ...string) []byte {
		var p []byte
		prev := []byte(bk)
		for _, k := range ks {
			p = appendEntry(p, prev, []byte(k), []byte("v"))
			prev = []byte(k)
		}
		return p
	}
	for _, tc := range []struct {
		name, want, lookup string
		prefix             bool
		blocks             map[string][]byte
	}{
		{"a block that does not begin with its key", "does not begin with the entry it is keyed by", "k3", false,
			map[string][]byte{"k1": block("k1", "k1", "k2"), "k3": block("k3", "k4")}},
		{"a block cut short", "does not decode", "k2", false,
			map[string][]byte{"k1": append(block("k1", "k1"), 1, 9), "k3": block("k3", "k3")}},
		{"the next block not beginning with its key", "does not begin with the entry it is keyed by", "k15", false,
			map[string][]byte{"k1": block("k1", "k1", "k12"), "k2": block("k2", "k3")}},
		{"a block past the next one's key", "not below the next block's key", "p\x00", true,
			map[string][]byte{"p": block("p", "p", "p\x00c"), "p\x00b": block("p\x00b", "p\x00b")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.db")
			st, err := Open(path, testPairs)
			if err != nil {
				t.Fatal(err)
			}
			if err := st.update(func(tx *bolt.Tx) error {
				b, err := tx.CreateBucket([]byte("t"))
				if err != nil {
					return err
				}
				// blocks enough after them that the bucket has pages of
				// its own (a small one is held inline in its parent's)
				for i := range 400 {
					k := fmt.Sprintf("z%04d", i)
					if err := st.vb(b, "t").Put([]byte(k), block(k, k)); err != nil {
						return err
					}
				}
				for k, p := range tc.blocks {
					// sealed as every block is: the damage lies past the seal
					if err := st.vb(b, "t").Put([]byte(k), p); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			st.Close()
			st, err = Open(path, testPairs)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			decided := false
			err = st.view(func(tx *bolt.Tx) error {
				var r blockReader
				p := st.packed(tx.Bucket([]byte("t")), "t")
				if tc.prefix {
					var err error
					decided, err = p.prefixed(&r, []byte(tc.lookup), func([]byte) error { return nil })
					return err
				}
				_, _, decided = p.lookup(&r, []byte(tc.lookup))
				return nil
			})
			var ce *CorruptError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("lookup %q (taken from the leaf: %v): %v, want damage: %s", tc.lookup, decided, err, tc.want)
			}
		})
	}
}

// TestNightLookupsTakeTheLeaf: a run's lookups by id (Reader.Get) and by
// PKey (PKeyContacts) over a file it did not create find what the file
// holds through the leaf, and the reader stands where PutRead takes the
// record read from.
func TestNightLookupsTakeTheLeaf(t *testing.T) {
	path, _, _ := carryFixture(t)
	r := readerOf(t, path)
	var s = fullSnap(0)
	for i := 2; i <= 2*fixtureContacts; i += 74 {
		found, err := r.Get(id(i), &s)
		if err != nil || !found {
			t.Fatalf("Get(%d): found %v, %v", i, found, err)
		}
		if !r.loose {
			t.Fatalf("Get(%d) was not taken from the leaf", i)
		}
		if want := fullSnap(i / 2); s.PKey != want.PKey || s.DModified != want.DModified {
			t.Fatalf("Get(%d): %+v, want %+v", i, s, want)
		}
		ids, err := r.PKeyContacts(s.PKey)
		var want []extract.ID
		prefix := append([]byte(s.PKey), 0)
		c := r.s.packed(r.tx.Bucket(bucketPKeys), "pkeys").Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			want = append(want, idOf(k[len(prefix):]))
		}
		if err != nil || !slices.Equal(ids, want) {
			t.Fatalf("PKeyContacts(%q): %v, %v; want %v", s.PKey, ids, err, want)
		}
		// what PutRead takes for the record read (PKeyContacts between
		// leaves it)
		if want := id(i); r.end || !bytes.Equal(r.k, want[:]) {
			t.Fatalf("after Get(%d) the reader stands at %x", i, r.k)
		}
		if found, err := r.Get(id(i+1), &s); err != nil || found || r.k != nil {
			t.Fatalf("Get(%d): found %v, %v, standing at %x", i+1, found, err, r.k)
		}
	}
}
