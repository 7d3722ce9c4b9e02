package state

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestLeavesOfNamesTheLeavesKeysFallIn checks leavesOf against the checked
// descent to each key: the same leaves, each once, in key order, over a
// tree of more than one level, for keys inside it, below its first and
// past its last.
func TestLeavesOfNamesTheLeavesKeysFallIn(t *testing.T) {
	const n = 20000
	st := reopenedWith(t, n)
	defer st.Close()
	keys := [][]byte{{0}}
	for i := 0; i < n; i += 37 {
		k := id(i)
		keys = append(keys, k[:])
	}
	keys = append(keys, bytes.Repeat([]byte{0xff}, 20))
	slices.SortFunc(keys, bytes.Compare)
	err := st.view(func(tx *bolt.Tx) error {
		v := st.pages(tx)
		if v == nil {
			return fmt.Errorf("no page view of the state reopened")
		}
		root := uint64(tx.Bucket(bucketContacts).Root())
		if !v.page(root, nil, nil, string(bucketContacts)).branch {
			return fmt.Errorf("the contacts' tree is one leaf: more contacts, to test a descent")
		}
		var want []uint64
		for _, k := range keys {
			pg, r := v.leafOf(root, k, string(bucketContacts))
			if !r.ok {
				return fmt.Errorf("no checked descent to %x", k)
			}
			if id := pg.id(); len(want) == 0 || want[len(want)-1] != id {
				want = append(want, id)
			}
		}
		got := v.leavesOf(root, keys, string(bucketContacts), nil)
		if !slices.Equal(got, want) {
			return fmt.Errorf("leavesOf named %d leaves %v,\nthe descents reach %d: %v", len(got), got, len(want), want)
		}
		if len(want) < 10 {
			return fmt.Errorf("the keys fall in %d leaves: too few to test", len(want))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// reopenedWith is a state of n contacts (snap(0) … snap(n-1)), committed
// and opened again, as a night opens it: its pages are checked, and
// lookups read their leaves off the checked descent (leaf.go).
func reopenedWith(t *testing.T, n int) *Store {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.db")
	st, err := Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	b := st.NewBatch(n)
	for i := range n {
		s := snap(i)
		b.Put(id(i), &s)
	}
	if err := st.Commit(context.Background(), b, &Final{Run: &Run{ID: "r", Started: time.Now(), Outcome: "ok"}}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if st, err = Open(path, testPairs); err != nil {
		t.Fatal(err)
	}
	return st
}
