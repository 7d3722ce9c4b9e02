package state

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"optsync/extract"
	"optsync/transform"
)

var testPairs = []transform.Pair{
	{D365: "donotemail", Campaign: "blackListEmail"},
	{D365: "xx_sms", Campaign: "blackListMobile", Invert: true},
}

func id(n int) extract.ID {
	var i extract.ID
	i[14], i[15] = byte(n>>8), byte(n)
	return i
}

func snap(n int) transform.Snapshot {
	s := transform.Snapshot{Known: true, DModified: int64(n) * 1000, CModified: int64(n)*1000 + 7, PKey: "@pk" + string(rune('a'+n%26))}
	s.Pairs[0] = transform.PairState{S: extract.True, DRaw: extract.True, CRaw: extract.False, CWritten: extract.True}
	s.Pairs[1] = transform.PairState{S: extract.Unknown, DRaw: extract.False, CRaw: extract.Unknown, DWritten: extract.False}
	return s
}

func TestSnapshotsRoundTripAndLookupOrder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st, err := Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	b := st.NewBatch(0)
	// Every third contact has a snapshot; put them out of order.
	for _, n := range []int{9, 3, 0, 6, 300, 12} {
		s := snap(n)
		b.Put(id(n), &s)
	}
	if err := st.Commit(context.Background(), b, &Final{Run: &Run{ID: "r1", Started: time.Now(), Outcome: "ok"}}); err != nil {
		t.Fatal(err)
	}
	st.Close()

	st, err = OpenReadOnly(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r, err := st.Reader()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	has := map[int]bool{0: true, 3: true, 6: true, 9: true, 12: true, 300: true}
	// Ascending, with gaps longer than the forward walk; then backwards; then repeats.
	order := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 299, 300, 301, 12, 3, 0, 400, 6, 6}
	for _, n := range order {
		var got transform.Snapshot
		ok, err := r.Get(id(n), &got)
		if err != nil {
			t.Fatal(err)
		}
		if ok != has[n] {
			t.Fatalf("Get(%d) found=%v, want %v", n, ok, has[n])
		}
		if ok && got != snap(n) {
			t.Fatalf("Get(%d) = %+v, want %+v", n, got, snap(n))
		}
	}
}

func TestPairsKeepTheirIDsAcrossMappingChanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st, err := Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	b := st.NewBatch(1)
	s := snap(1)
	b.Put(id(1), &s)
	if err := st.Commit(context.Background(), b, nil); err != nil {
		t.Fatal(err)
	}
	st.Close()

	// The second pair now comes first, and a new one joins.
	reordered := []transform.Pair{testPairs[1], {D365: "donotphone", Campaign: "blackListPhone"}, testPairs[0]}
	st, err = Open(path, reordered)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r, _ := st.Reader()
	defer r.Close()
	var got transform.Snapshot
	if ok, err := r.Get(id(1), &got); !ok || err != nil {
		t.Fatalf("found=%v err=%v", ok, err)
	}
	if got.Pairs[0] != s.Pairs[1] || got.Pairs[2] != s.Pairs[0] || got.Pairs[1] != (transform.PairState{}) {
		t.Fatalf("pairs not matched by identity: %+v", got.Pairs)
	}
}

func TestLockedStateNamesTheHolder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(path, nil)
	var le *LockedError
	if !errors.As(err, &le) || le.PID != os.Getpid() || le.Started.IsZero() {
		t.Fatalf("second open: %v", err)
	}
	st.Close()
	if _, err := os.Stat(path + ".lock"); !os.IsNotExist(err) {
		t.Fatalf("lock details left behind after Close: %v", err)
	}
	st, err = Open(path, nil)
	if err != nil {
		t.Fatalf("open after close: %v", err)
	}
	st.Close()
}

func TestInterruptedRunsAreMarked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st, _ := Open(path, nil)
	t0 := time.Date(2026, 11, 29, 2, 0, 0, 0, time.UTC)
	if err := st.BeginRun(&Run{ID: "a", Started: t0, Outcome: "running"}); err != nil {
		t.Fatal(err)
	}
	st.Close() // as if killed: never ended
	st, _ = Open(path, nil)
	defer st.Close()
	if err := st.BeginRun(&Run{ID: "b", Started: t0.Add(time.Second), Outcome: "running"}); err != nil {
		t.Fatal(err)
	}
	runs, err := st.Runs()
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 2 || runs[0].ID != "b" || runs[1].ID != "a" || runs[1].Outcome != OutcomeInterrupted || runs[0].Outcome != "running" {
		t.Fatalf("runs: %+v", runs)
	}
}
