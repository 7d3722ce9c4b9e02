package show

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"optsync/load"
)

func TestRuns(t *testing.T) {
	var b strings.Builder
	if err := Runs(&b, "s.db", nil); err != nil || b.String() != "no runs recorded in s.db\n" {
		t.Fatalf("no runs: %v %q", err, b.String())
	}
	at := time.Date(2026, 11, 29, 2, 0, 0, 0, time.UTC)
	b.Reset()
	err := Runs(&b, "s.db", []Run{
		{ID: "r2", Command: "run", Outcome: "safety-stop", ExitCode: 4, Started: at, Ended: at.Add(3 * time.Second),
			Counts: map[string]int{"would_clear": 7, "pending_not_seen": 2, "pending_oldest_age_seconds": 90}},
		{ID: "r1", Command: "backfill", Outcome: "running", Started: at.Add(-time.Hour)},
	})
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if err != nil || len(lines) != 3 || !strings.HasPrefix(lines[0], "RUN") ||
		!strings.Contains(lines[1], "0 (would clear 7)") || !strings.Contains(lines[1], "2 (oldest 1m30s)") ||
		!strings.Contains(lines[2], "backfill") || !strings.Contains(lines[2], " - ") {
		t.Fatalf("%v\n%s", err, b.String())
	}
}

func TestAudit(t *testing.T) {
	rows := []load.AuditRow{
		{RunID: "r1", ContactID: "c1", D365Field: "donotemail", CampaignField: "blackListEmail", Direction: "d365->campaign", NewValue: "true", Rule: "first-sight", Outcome: "applied"},
		{RunID: "r1", ContactID: "c2", D365Field: "donotemail", CampaignField: "blackListEmail", Outcome: load.Skipped, Error: "blank on both sides"},
	}
	for _, tc := range []struct {
		format string
		rows   []load.AuditRow
		now    *Contact
		want   []string
	}{
		{"table", rows, nil, []string{"(unknown) → true", "first-sight", "skipped: blank on both sides"}},
		{"table", nil, nil, []string{"no decisions recorded for that query"}},
		{"table", nil, &Contact{Contact: "c9"}, []string{"contact c9: state has never seen this contact"}},
		{"table", nil, &Contact{Contact: "c1", Known: true, AsOf: "the last commit"}, []string{"history: no decisions recorded for this contact"}},
		{"json", nil, nil, []string{"[]"}},
		{"json", rows[:1], &Contact{Contact: "c1"}, []string{`"history": [`, `"d365->campaign"`}},
		{"csv", rows[:1], nil, []string{"run_id,decided_at,contact_id", "d365->campaign"}},
	} {
		var b strings.Builder
		if err := Audit(&b, tc.format, tc.rows, tc.now); err != nil {
			t.Fatal(err)
		}
		for _, w := range tc.want {
			if !strings.Contains(b.String(), w) {
				t.Errorf("%s: lacks %q\n%s", tc.format, w, b.String())
			}
		}
	}
}

func TestWriteCompletion(t *testing.T) {
	fish := func() (string, error) { return "complete -c optsync\n", nil }
	for _, tc := range []struct {
		shell, want string
		err         bool
	}{{"bash", bashCompletion, false}, {"zsh", zshCompletion, false}, {"fish", "complete -c optsync\n", false}, {"tcsh", "", true}, {"", "", true}} {
		var b strings.Builder
		err := WriteCompletion(&b, tc.shell, fish)
		var se *ShellError
		if tc.err != errors.As(err, &se) || b.String() != tc.want {
			t.Errorf("%q: %v, wrote %d bytes", tc.shell, err, b.Len())
		}
	}
	failing := func(int) (string, error) { return "", errors.New("no template") }
	if err := WriteMan(io.Discard, failing); err == nil || err.Error() != "man page: no template" {
		t.Errorf("man: %v", err)
	}
}
