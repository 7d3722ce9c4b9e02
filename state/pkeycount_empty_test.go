package state

import (
	"context"
	"path/filepath"
	"testing"

	"optsync/extract"
)

// A PKey index with no entry says so (Identify then asks it nothing); one
// with entries does not, and counts as before once asked.
func TestPKeyCountEmpty(t *testing.T) {
	ctx := context.Background()
	st, err := Open(filepath.Join(t.TempDir(), "state.db"), testPairs)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	counter := func() (*PKeyCount, func()) {
		t.Helper()
		r, err := st.Reader()
		if err != nil {
			t.Fatal(err)
		}
		return r.PKeyCounter(func(PKeyEntry) error { return nil }), func() { r.Close() }
	}
	pc, done := counter()
	if !pc.Empty() {
		t.Error("a new state's PKey index: not empty")
	}
	done()
	keys := []PKeyEntry{{PKey: "@a", ID: extract.ID{15: 1}}, {PKey: "@b", ID: extract.ID{15: 2}}}
	next := 0
	c := &committer{s: st, o: CommitOptions{PKeys: func() (string, extract.ID, bool, error) {
		if next == len(keys) {
			return "", extract.ID{}, false, nil
		}
		next++
		return keys[next-1].PKey, keys[next-1].ID, true, nil
	}}}
	if err := st.DropPKeyIndex(); err != nil {
		t.Fatal(err)
	}
	b := st.NewBatch(0)
	if _, err := c.wholeKeys(b, 10); err != nil {
		t.Fatal(err)
	}
	b.built = true
	if err := st.Commit(ctx, b, nil); err != nil {
		t.Fatal(err)
	}
	pc, done = counter()
	defer done()
	if pc.Empty() {
		t.Fatal("an index with two entries: empty")
	}
	if n, err := pc.Count("@b"); n != 1 || err != nil {
		t.Errorf("Count(@b) after Empty: %d, %v; want 1", n, err)
	}
}
