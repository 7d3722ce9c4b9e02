package state

import (
	"path/filepath"
	"runtime"
	"testing"
)

// The releases of a run's commit nest: its transactions, each inside the
// commit's own, neither stop the world to change GOMAXPROCS nor start a
// ticker of their own, and the spare P goes only when the outermost ends.
func TestReleaseDuringNests(t *testing.T) {
	st, err := Open(filepath.Join(t.TempDir(), "s.db"), testPairs)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	st.procs = 2
	runtime.GOMAXPROCS(st.procs)
	outer := st.releaseDuring()
	if n := runtime.GOMAXPROCS(0); n != 3 {
		t.Fatalf("during a commit: GOMAXPROCS %d, want 3", n)
	}
	for range 3 {
		if err := st.EndRun(&Run{ID: "r", Outcome: "ok"}); err != nil { // a transaction inside
			t.Fatal(err)
		}
		if n := runtime.GOMAXPROCS(0); n != 3 {
			t.Fatalf("after a transaction inside the commit: GOMAXPROCS %d, want 3", n)
		}
	}
	outer()
	if n := runtime.GOMAXPROCS(0); n != 2 {
		t.Fatalf("after the commit: GOMAXPROCS %d, want 2", n)
	}
	if st.during.n != 0 || st.during.stop != nil {
		t.Fatalf("releases still under way: %d", st.during.n)
	}
}
