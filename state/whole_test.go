package state

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"optsync/extract"
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
			left, err := c.wholeKeys(b, chunk)
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
	for _, chunk := range []int{1, 2, 3, 5, 100} {
		t.Run(fmt.Sprint(chunk), func(t *testing.T) {
			write(nil, chunk, 0)
			check("none", nil, true)
			write(a, chunk, 0)
			check("from none", a, true)
			write(a, chunk, 0)
			check("the same again", a, true)
			write(b, chunk, 0)
			check("another set", b, true)
			write(a, chunk, 2)
			if chunk*2 < len(a) {
				if ready, err := st.IndexesReady(); err != nil || ready {
					t.Fatalf("stopped half-way: marked built (%v)", err)
				}
			}
			write(b, chunk, 0)
			check("after a stop", b, true)
			write(nil, chunk, 0)
			check("none again", nil, true)
		})
	}
}
