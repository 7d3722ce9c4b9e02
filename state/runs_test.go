package state

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// historyStore is a state file with n runs a day apart, ended ok, each
// with a record the size of a night's (its config and its counts).
func historyStore(tb testing.TB, n int) (*Store, time.Time) {
	tb.Helper()
	st, err := Open(filepath.Join(tb.TempDir(), "s.db"), testPairs)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	t0 := time.Date(2023, 1, 1, 2, 0, 0, 0, time.UTC)
	cfg := &RunConfig{Direction: "bidirectional", Policy: "newest", MaxOptin: "5%", Limit: 100, D365: "csv → csv", Campaign: "csv → csv",
		Mappings: []Mapping{{D365: "donotemail", Campaign: "blackListEmail"}, {D365: "donotbulkemail", Campaign: "blackListMobile"},
			{D365: "donotphone", Campaign: "blackListPhone"}, {D365: "donotsendmm", Campaign: "blackListPostalMail"}}}
	counts := map[string]int{}
	for i := range 30 {
		counts[fmt.Sprintf("count_%02d", i)] = i * 1000
	}
	for i := range n {
		r := NewRun("run", t0.Add(time.Duration(i)*24*time.Hour), "v1.2.3", cfg)
		r.Counts, r.Outcome = counts, "ok"
		if err := st.EndRun(r); err != nil {
			tb.Fatal(err)
		}
	}
	return st, t0.Add(time.Duration(n) * 24 * time.Hour)
}

// What a run's start reads of the history — the runs left running (to
// mark them interrupted), the interrupted ones (whose files go), the
// start of every run (to name the run a pending write is from) — is
// found as a walk of every record finds it, whatever else a record's text
// says; a report's trend reads the newest runs only.
func TestHistoryReadsOfARunsStart(t *testing.T) {
	st, next := historyStore(t, 40)
	// a run whose error text quotes the outcomes looked for, ended ok
	noisy := &Run{ID: "noisy", Command: "run", Started: next, Outcome: "ok", Error: `"running" and "interrupted"`}
	left := &Run{ID: "left", Command: "run", Started: next.Add(time.Hour), Outcome: "running"}
	gone := &Run{ID: "gone", Command: "run", Started: next.Add(2 * time.Hour), Outcome: OutcomeInterrupted}
	for _, r := range []*Run{noisy, left, gone} {
		if err := st.EndRun(r); err != nil {
			t.Fatal(err)
		}
	}
	running, err := st.runsOf("running")
	if err != nil || len(running) != 1 || running[0].ID != "left" {
		t.Fatalf("runs left running: %+v, %v", running, err)
	}
	if err := st.BeginRun(&Run{ID: "now", Command: "run", Started: next.Add(3 * time.Hour), Outcome: "running"}); err != nil {
		t.Fatal(err)
	}
	interrupted, err := st.runsOf(OutcomeInterrupted)
	if err != nil || len(interrupted) != 2 || interrupted[0].ID != "gone" || interrupted[1].ID != "left" {
		t.Fatalf("interrupted runs, newest first: %+v, %v", interrupted, err)
	}
	all, err := st.Runs()
	if err != nil {
		t.Fatal(err)
	}
	starts, err := st.runStarts()
	if err != nil || len(starts) != len(all) {
		t.Fatalf("starts: %d of %d runs, %v", len(starts), len(all), err)
	}
	names, err := RunNames(st)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range all {
		if names(r.Started.UnixMilli()) != r.ID {
			t.Fatalf("run started %s named %q, want %s", r.Started, names(r.Started.UnixMilli()), r.ID)
		}
	}
	var read []string
	if err := st.RunsNewest(func(r *Run) bool { read = append(read, r.ID); return len(read) < 3 }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(read) != "[now gone left]" {
		t.Fatalf("the newest three: %v", read)
	}
}

// BenchmarkRunStartHistory is what a run's start reads of a history of
// three years of nights: BeginRun, the interrupted runs' files, the names
// of the runs by their start.
func BenchmarkRunStartHistory(b *testing.B) {
	st, next := historyStore(b, 1100)
	out := b.TempDir()
	b.ResetTimer()
	for i := range b.N {
		if err := st.BeginRun(&Run{ID: fmt.Sprint("b", i), Command: "run", Started: next.Add(time.Duration(i) * time.Second), Outcome: "running"}); err != nil {
			b.Fatal(err)
		}
		st.RemovePartials(out, "", zerolog.Nop())
		if _, err := RunNames(st); err != nil {
			b.Fatal(err)
		}
	}
}
