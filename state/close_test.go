package state

import (
	"path/filepath"
	"testing"
	"time"
)

// TestCloseEndsViewsLeftOpen: a read view a panic or an early return left
// open does not keep Close waiting on bbolt's lock for ever (a run that
// panicked hung in its deferred Close instead of ending); closing the
// view afterwards is harmless.
func TestCloseEndsViewsLeftOpen(t *testing.T) {
	st, err := Open(filepath.Join(t.TempDir(), "s.db"), testPairs)
	if err != nil {
		t.Fatal(err)
	}
	r, err := st.Reader()
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { closed <- st.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Close still waits on a read view left open")
	}
	if err := r.Close(); err != nil {
		t.Fatalf("closing the view after the store: %v", err)
	}
}
