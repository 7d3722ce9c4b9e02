package state

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"optsync/transform"
)

// The commit takes a contact's record from what the run's lookup kept only
// while no commit came between the lookup and the commit's start: a
// contact written meanwhile is looked up again, never decided from the
// record it had before. A contact the lookup did not find is taken as
// none, and one never looked up is looked up.
func TestCommitTakesKeptReadsOnlyWhileNothingCommittedBetween(t *testing.T) {
	st, err := Open(filepath.Join(t.TempDir(), "state.db"), testPairs)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	put := func(n int, s transform.Snapshot) {
		t.Helper()
		b := st.NewBatch(1)
		b.Put(id(n), &s)
		if err := st.Commit(context.Background(), b, &Final{Run: &Run{ID: "r", Started: time.Now(), Outcome: "ok"}}); err != nil {
			t.Fatal(err)
		}
	}
	a, b := snap(1), snap(2)
	put(1, a)
	put(3, snap(3))
	lookup := func(n int) {
		t.Helper()
		r, err := st.Reader()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		var s transform.Snapshot
		if _, err := r.Get(id(n), &s); err != nil {
			t.Fatal(err)
		}
	}
	lookup(1)
	lookup(2) // none
	// what a commit that starts now takes
	c := &committer{s: st, tag: st.commits.Load(), slot: st.slots()}
	prior := func(n int) (*transform.Snapshot, bool) {
		t.Helper()
		r, err := st.Reader()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		r.keep = false
		c.prev = transform.Snapshot{}
		old, err := c.prior(st.NewBatch(1), r, id(n))
		if err != nil {
			t.Fatal(err)
		}
		return &c.prev, old != nil
	}
	if got, found := prior(1); !found || got.DModified != a.DModified || got.PKey != a.PKey {
		t.Errorf("contact 1 kept: found %v, %+v, want %+v", found, got, a)
	}
	if _, found := prior(2); found {
		t.Error("contact 2, not found by the lookup, found")
	}
	if got, found := prior(3); !found || got.DModified != snap(3).DModified {
		t.Errorf("contact 3, never looked up: found %v, %+v", found, got)
	}

	// A commit between the lookup and the commit's start.
	lookup(1)
	b.PKey = "@changed"
	put(1, b)
	c.tag = st.commits.Load()
	if got, found := prior(1); !found || got.DModified != b.DModified || got.PKey != "@changed" {
		t.Errorf("contact 1 written after its lookup: found %v, %+v, want %+v", found, got, b)
	}
}

// A quiet commit's batch names the leaf page each kept lookup read, for
// its transaction to map in at once; others name none.
func TestQuietCommitNamesTheLeavesOfItsRecords(t *testing.T) {
	st := reopenedWith(t, 300)
	defer st.Close()
	// the lookups of a run's deciding pass
	lookups := func(ns ...int) {
		t.Helper()
		st.reads.off = false
		err := st.WithPrior(func(p transform.Prior) error {
			for _, n := range ns {
				var s transform.Snapshot
				if _, err := p.(*Reader).Get(id(n), &s); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		st.reads.pause()
	}
	lookups(5, 150, 299, 400) // 400: none, a page all the same
	for _, quiet := range []bool{false, true} {
		c := &committer{s: st, tag: st.commits.Load(), slot: st.slots(), quiet: quiet}
		batch := st.NewBatch(4)
		rd, err := st.Reader()
		if err != nil {
			t.Fatal(err)
		}
		rd.keep = false
		for _, n := range []int{5, 150} {
			if _, err := c.prior(batch, rd, id(n)); err != nil {
				t.Fatal(err)
			}
		}
		rd.Close()
		if !quiet {
			if len(batch.pages) != 0 {
				t.Fatalf("a commit with fault-around on named pages %v", batch.pages)
			}
			lookups(5, 150) // take forgot them
			continue
		}
		if len(batch.pages) != 2 {
			t.Fatalf("the quiet commit's batch names pages %v, want the two lookups' leaves", batch.pages)
		}
		err = st.db.View(func(tx *bolt.Tx) error {
			for _, p := range batch.pages {
				info, err := tx.Page(int(p))
				if err != nil || info == nil || info.Type != "leaf" {
					t.Errorf("page %d named: %+v, %v; want a leaf", p, info, err)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
