package transform

import (
	"errors"
	"strings"
	"testing"

	"optsync/extract"
)

// noState is a state with no record: enough for the limits, which read
// records only to name the profiles a full read lacks.
type noState struct{}

func (noState) Get(extract.ID, *Snapshot) (bool, error) { return false, nil }
func (noState) Until(*extract.ID, *Snapshot, func(extract.ID, *Snapshot) error) (bool, error) {
	return false, nil
}
func (noState) PKeyContacts(string) ([]extract.ID, error)          { return nil, nil }
func (noState) PendingContacts(int64, func(extract.ID) bool) error { return nil }

// Guard.Stop is the stop as values: which limits stop the run once the
// --allow flags are applied, the message it prints and the error it exits
// with; a limit allowed once is left out of both, and a run no limit stops
// gets neither.
func TestGuardStop(t *testing.T) {
	optin, err := ParseOptinLimit("10")
	if err != nil {
		t.Fatal(err)
	}
	missing, err := ParseMissingLimit("10%")
	if err != nil {
		t.Fatal(err)
	}
	d := NewDecider(DecideOptions{Rules: &Rules{Direction: Bidirectional, Policy: Newest}}, &Identity{})
	// rows 0: Dynamics was read in full and lacks all 50 contacts state
	// knows; otherwise it was not read in full (no shrink to guard).
	for _, tc := range []struct {
		name                       string
		clears, rows               int
		allowOptin, allowMissing   bool
		wantMessage, wantNotInside []string
		wantErr                    string
	}{
		{name: "within the limits", clears: 10, rows: 100},
		{name: "optin", clears: 11, rows: 100,
			wantMessage: []string{"safety stop: this run would clear 11 of 200 known opt-outs (5.5 %), limit 10 (safety.max_optin 10). Nothing was written.",
				"Check the inputs with `optsync plan`; rerun with --allow-mass-optin to accept these opt-ins once."},
			wantErr: "stopped by safety.max_optin: 11 of 200 known opt-outs would be cleared, limit 10; nothing was written"},
		{name: "optin allowed once", clears: 11, rows: 100, allowOptin: true},
		{name: "header only", clears: 0, rows: 0,
			wantMessage: []string{"safety stop: the Dynamics input (d365.csv) has no rows, and state knows 50 contacts from Dynamics. An empty export never goes through on its own. Nothing was written or dropped.",
				"Check that the export is complete; rerun with --allow-missing if those records are really gone."},
			wantErr: "stopped by safety.max_missing: the Dynamics input lacks 50 of the 50 contacts state knows; nothing was written"},
		{name: "both, shrink allowed", clears: 11, rows: 0, allowMissing: true,
			wantMessage: []string{"would clear 11 of 200"}, wantNotInside: []string{"has no rows", "--allow-missing"},
			wantErr: "stopped by safety.max_optin: 11 of 200 known opt-outs would be cleared, limit 10; nothing was written"},
		{name: "both, optin allowed", clears: 11, rows: 0, allowOptin: true,
			wantMessage: []string{"has no rows"}, wantNotInside: []string{"would clear", "--allow-mass-optin"},
			wantErr: "stopped by safety.max_missing: the Dynamics input lacks 50 of the 50 contacts state knows; nothing was written"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := d.Guard(noState{}, Known{D365: 50, OptOuts: 200}, GuardInputs{FullD365: tc.rows == 0, D365Input: "d365.csv", D365Rows: tc.rows,
				Clears: tc.clears, Optin: optin, Missing: missing})
			if err != nil {
				t.Fatal(err)
			}
			msg, err := g.Stop(tc.allowOptin, tc.allowMissing)
			if tc.wantErr == "" {
				if msg != "" || err != nil {
					t.Fatalf("stopped: %q, %v", msg, err)
				}
				return
			}
			var stop *SafetyStopError
			if !errors.As(err, &stop) || err.Error() != tc.wantErr {
				t.Errorf("error %v (%T), want %q as a SafetyStopError", err, err, tc.wantErr)
			}
			for _, want := range tc.wantMessage {
				if !strings.Contains(msg, want) {
					t.Errorf("message lacks %q:\n%s", want, msg)
				}
			}
			for _, not := range tc.wantNotInside {
				if strings.Contains(msg, not) {
					t.Errorf("message has %q:\n%s", not, msg)
				}
			}
			// The guard is a value: deciding the stop changes nothing of it.
			if !g.OptinStops() && tc.clears > 10 || !g.MissingStops() && tc.rows == 0 {
				t.Errorf("Stop changed the guard: %+v", g)
			}
		})
	}
}

// Without state there is nothing a full read can lack: only the opt-in
// limit applies.
func TestGuardWithoutState(t *testing.T) {
	d := NewDecider(DecideOptions{Rules: &Rules{Direction: Bidirectional, Policy: Newest}}, &Identity{})
	optin, _ := ParseOptinLimit("")
	missing, _ := ParseMissingLimit("")
	g, err := d.Guard(nil, Known{}, GuardInputs{FullD365: true, FullCampaign: true, Optin: optin, Missing: missing})
	if err != nil {
		t.Fatal(err)
	}
	if g.MissingStops() || g.Sides[0].Checked || g.OptinLimit != 1000 {
		t.Errorf("guard without state: %+v", g)
	}
}
