package state

import (
	"path/filepath"
	"testing"
	"time"
)

// A run recorded as running shows so while it holds the state, and shows
// interrupted once its process has let the lock go without recording an
// end (killed): readers need not wait for the next run to learn it.
func TestRunsNowShowsAKilledRunInterrupted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st, err := Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.BeginRun(&Run{ID: "r1", Started: time.Now(), Outcome: "running"}); err != nil {
		t.Fatal(err)
	}
	if err := st.Share(); err != nil {
		t.Fatal(err)
	}
	outcome := func(want string) {
		t.Helper()
		ro, err := OpenReadOnly(path, testPairs)
		if err != nil {
			t.Fatal(err)
		}
		defer ro.Close()
		runs, err := ro.RunsNow()
		if err != nil || len(runs) != 1 || runs[0].Outcome != want {
			t.Fatalf("runs now: %+v %v, want one %s", runs, err, want)
		}
		if kept, err := ro.Runs(); err != nil || kept[0].Outcome != "running" {
			t.Fatalf("the history itself: %+v %v, want it still running until the next run marks it", kept, err)
		}
	}
	outcome("running") // its process holds the lock
	// The run's process goes without ending the run: its lock goes with it.
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	outcome(OutcomeInterrupted)
}
