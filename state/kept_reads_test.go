package state

import (
	"context"
	"path/filepath"
	"testing"
	"time"

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
		old, err := c.prior(r, id(n))
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
