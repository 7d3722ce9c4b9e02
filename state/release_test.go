package state

import (
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"

	bolt "go.etcd.io/bbolt"
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

// TestWriteReleasesWhenItsTransactionEnds: while a write transaction is
// open, the file's pages it mapped stay mapped up to writeSlack (bbolt
// reads the pages it dirties again as it commits, each a fault again once
// released); when it ends, the mapping goes with the usual slack.
func TestWriteReleasesWhenItsTransactionEnds(t *testing.T) {
	st, err := Open(filepath.Join(t.TempDir(), "s.db"), testPairs)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var resident atomic.Int64
	st.release.resident = func() (int64, bool) { return resident.Load(), true }
	st.release.mapped.Store(0)
	const mapped = 20 << 20 // past the slack, short of writeSlack
	err = st.update(func(tx *bolt.Tx) error {
		resident.Store(mapped)
		st.releaseMapping(tx)
		if got := st.release.mapped.Load(); got != 0 {
			t.Errorf("the mapping was released while the write transaction was open, %d bytes mapped since the last release", mapped)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := st.release.mapped.Load(); got != mapped {
		t.Fatalf("after the write transaction, with %d bytes mapped since the last release, the mapping was not released (noted %d)", mapped, got)
	}
	if st.release.writing.Load() {
		t.Fatal("a write transaction is still counted as open after it ended")
	}
}

// TestStatmReadsAfresh: the kept descriptor reads the figures as they are
// now at each read, not as they were when it was opened, and none once
// closed.
func TestStatmReadsAfresh(t *testing.T) {
	var m statm
	before, ok := m.residentFiles()
	if !ok {
		t.Skip("/proc/self/statm cannot be read here")
	}
	mapIn(t, 8<<20)
	after, ok := m.residentFiles()
	if !ok {
		t.Fatal("a second read through the kept descriptor failed")
	}
	if after-before < 8<<20 {
		t.Fatalf("resident file pages went from %d to %d bytes after 8 MB of a file were mapped in", before, after)
	}
	m.close()
	if _, ok := m.residentFiles(); ok {
		t.Fatal("a read after close found figures")
	}
	m.close() // twice: nothing to close
}
