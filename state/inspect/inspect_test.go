package inspect

import (
	"errors"
	"testing"
	"time"

	"optsync/state"
	"optsync/transform"
)

func TestReportedRun(t *testing.T) {
	at := time.Date(2026, 11, 29, 2, 0, 0, 0, time.UTC)
	history := []state.Run{ // newest first
		{ID: "r3", Command: "state reset", Started: at.Add(2 * time.Hour)},
		{ID: "r2", Command: "run", Started: at.Add(time.Hour)},
		{ID: "r1", Command: "backfill", Started: at},
	}
	for _, tc := range []struct {
		history []state.Run
		runID   string
		want    int
		err     string
	}{
		{history, "", 1, ""}, // the latest run or backfill, not the reset
		{history, "r3", 0, ""},
		{history, "r1", 2, ""},
		{history, "r9", -1, "--run r9: no such run in s.db (see optsync runs)"},
		{nil, "", -1, "no run recorded in s.db yet: nothing to report"},
	} {
		i, err := ReportedRun(tc.history, tc.runID, "s.db")
		var qe *QueryError
		if i != tc.want || (tc.err == "") != (err == nil) || err != nil && (err.Error() != tc.err || !errors.As(err, &qe)) {
			t.Errorf("ReportedRun(%q) = %d, %v; want %d, %q", tc.runID, i, err, tc.want, tc.err)
		}
	}
}

func TestCheckFieldWithoutState(t *testing.T) {
	pairs := []transform.Pair{{D365: "donotemail", Campaign: "blackListEmail"}}
	for field, want := range map[string]string{
		"donotemail":     "",
		"blackListEmail": "",
		"blacklistemail": "--field blacklistemail is not a mapped field; the mapped fields are donotemail, blackListEmail",
	} {
		err := CheckField(nil, pairs, field)
		if got := ""; err != nil {
			got = err.Error()
			if got != want {
				t.Errorf("%s: %q, want %q", field, got, want)
			}
		} else if want != "" {
			t.Errorf("%s: accepted, want %q", field, want)
		}
	}
}

// TestHistoryRef: a record's second names its run; of two runs started in
// one second an agreement dates from the first, a last change from the
// last, and a state reset is never the run a record dates from.
func TestHistoryRef(t *testing.T) {
	at := time.Date(2026, 11, 29, 2, 0, 0, 0, time.UTC)
	h := history{ // newest first
		{ID: "reset", Command: "state reset", Started: at.Add(500 * time.Millisecond)},
		{ID: "second", Command: "run", Started: at.Add(300 * time.Millisecond)},
		{ID: "first", Command: "backfill", Started: at},
	}
	if r := h.ref(at.Unix(), false); r == nil || r.RunID != "first" || r.At != "2026-11-29T02:00:00Z" {
		t.Errorf("agreement: %+v", r)
	}
	if r := h.ref(at.Unix(), true); r == nil || r.RunID != "second" {
		t.Errorf("last change: %+v", r)
	}
	if r := h.ref(0, true); r != nil {
		t.Errorf("no time: %+v", r)
	}
	if r := h.writtenBy(at.Add(300 * time.Millisecond).UnixMilli()); r.RunID != "second" {
		t.Errorf("written by: %+v", r)
	}
	if r := h.writtenBy(0); r.RunID != "" || r.At != "not recorded (written before this optsync kept the run of a write)" {
		t.Errorf("written by, unknown: %+v", r)
	}
}
