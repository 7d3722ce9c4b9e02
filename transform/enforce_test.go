package transform

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// Guard.Enforce is what a run does at the limits: a plan is never stopped
// but says a run would be; a run stops at a limit not allowed once, and
// says when a flag let it past one.
func TestGuardEnforce(t *testing.T) {
	optin, _ := ParseOptinLimit("10")
	missing, _ := ParseMissingLimit("10%")
	d := NewDecider(DecideOptions{Rules: &Rules{Direction: Bidirectional, Policy: Newest}}, &Identity{})
	for _, tc := range []struct {
		name                  string
		plan, allowOptin      bool
		clears                int
		wantStop              bool
		wantLog, wantNotInLog string
	}{
		{name: "within the limits", clears: 10, wantNotInLog: "safety"},
		{name: "plan over a limit", plan: true, clears: 11, wantLog: "a run with these inputs would stop at a safety limit"},
		{name: "plan within the limits", plan: true, clears: 10, wantNotInLog: "would stop"},
		{name: "run over a limit", clears: 11, wantStop: true, wantNotInLog: "going on"},
		{name: "run allowed once", clears: 11, allowOptin: true, wantLog: "safety.max_optin exceeded; going on because of --allow-mass-optin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := d.Guard(noState{}, Known{D365: 50, OptOuts: 200}, GuardInputs{D365Input: "d365.csv", D365Rows: 50,
				Clears: tc.clears, Optin: optin, Missing: missing})
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			msg, err := g.Enforce(tc.plan, tc.allowOptin, false, zerolog.New(&buf))
			if got := err != nil; got != tc.wantStop || (msg != "") != tc.wantStop {
				t.Fatalf("stop %q, %v; want a stop: %v", msg, err, tc.wantStop)
			}
			if tc.wantLog != "" && !strings.Contains(buf.String(), tc.wantLog) {
				t.Errorf("log lacks %q:\n%s", tc.wantLog, buf.String())
			}
			if tc.wantNotInLog != "" && strings.Contains(buf.String(), tc.wantNotInLog) {
				t.Errorf("log has %q:\n%s", tc.wantNotInLog, buf.String())
			}
		})
	}
}

// A run's rules are the config's with the command's: the config's own
// stay as they are.
func TestRunRules(t *testing.T) {
	o := Options{Rules: Rules{Direction: Bidirectional, Policy: Newest}}
	r := o.RunRules(true, true, false, time.UnixMilli(1234))
	if !r.Replay || !r.ImportD365 || r.ImportCampaign || r.Started != 1234 || r.Direction != Bidirectional {
		t.Errorf("run rules %+v", r)
	}
	if o.Rules.Replay || o.Rules.ImportD365 || o.Rules.Started != 0 {
		t.Errorf("the config's rules changed: %+v", o.Rules)
	}
}
