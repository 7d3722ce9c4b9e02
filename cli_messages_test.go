package main

import (
	"fmt"
	"optsync/fixtures/testkit"
	"optsync/load"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestUsageOnHelpAndUnknownCommands: `optsync help`, no command and an
// unknown command print the usage with the command list and exit 2.
func TestUsageOnHelpAndUnknownCommands(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		stream string
	}{{[]string{"help"}, "stdout"}, {nil, "stdout"}, {[]string{"nosuch"}, "stderr"}, {[]string{"help", "nosuch"}, "stderr"}} {
		r := runCLI(t, tc.args...)
		out := map[string]string{"stdout": r.stdout, "stderr": r.stderr}[tc.stream]
		if r.code != exitUsage || !strings.Contains(out, "USAGE:") || !strings.Contains(out, "COMMANDS:") || !strings.Contains(out, "backfill") {
			t.Errorf("%q: exit %d, %s:\n%s", tc.args, r.code, tc.stream, out)
		}
		if len(tc.args) > 0 && strings.HasSuffix(tc.args[len(tc.args)-1], "nosuch") &&
			!strings.Contains(r.stderr, `unknown command \"nosuch\": the commands are run, backfill, plan, validate, audit, runs, report, state, version, completion, man`) {
			t.Errorf("%q: the error does not name the command:\n%s", tc.args, r.stderr)
		}
	}
	if r := runCLI(t, "help", "audit"); r.code != exitUsage || !strings.Contains(r.stdout, "--contact") {
		t.Errorf("help audit: exit %d\n%s", r.code, r.stdout)
	}
}

// TestGlobalFlagsAfterTheCommand: --config and the log flags work after the
// command too, in either spelling.
func TestGlobalFlagsAfterTheCommand(t *testing.T) {
	p := newProject(t, fmt.Sprintf(onePairConfig, "bidirectional", "newest"))
	testkit.WriteFile(t, p.path("d365.csv"), testkit.Contacts(testkit.GUID(1)+",2026-11-20T10:00:00Z,true"))
	testkit.WriteFile(t, p.path("campaign.csv"), testkit.Profiles("@p1,"+testkit.GUID(1)+",2026-11-20 09:00:00.000Z,false"))
	for _, args := range [][]string{
		{"backfill", "--config", p.config},
		{"backfill", "--config=" + p.config, "--log-level", "warn"},
		{"state", "export", "-config", p.config},
	} {
		r := runCLI(t, args...)
		if r.code != 0 {
			t.Errorf("%q: exit %d\n%s", args, r.code, r.stderr)
		}
	}
	cases := []struct{ in, want []string }{
		{[]string{"optsync", "run", "--config", "x.yaml", "--force"}, []string{"optsync", "--config", "x.yaml", "run", "--force"}},
		{[]string{"optsync", "--log-level", "warn", "audit", "--contact", "c", "--log-format=json"}, []string{"optsync", "--log-level", "warn", "--log-format=json", "audit", "--contact", "c"}},
		{[]string{"optsync", "state", "export", "--metrics-file", "m"}, []string{"optsync", "--metrics-file", "m", "state", "export"}},
		{[]string{"optsync", "run", "--", "--config", "x"}, []string{"optsync", "run", "--", "--config", "x"}},
		{[]string{"optsync", "--config", "x.yaml"}, []string{"optsync", "--config", "x.yaml"}},
		{[]string{"optsync", "-h", "run", "-h", "--config"}, []string{"optsync", "-h", "--config", "run", "-h"}},
		{[]string{"optsync", "-x", "run", "x", "-metrics-file=m"}, []string{"optsync", "-x", "-metrics-file=m", "run", "x"}},
	}
	app := cmdline{}.newApp(nil)
	for _, tc := range cases {
		if got := hoistGlobalFlags(tc.in, app.Flags); !slices.Equal(got, tc.want) {
			t.Errorf("%q → %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestEnvironmentBooleans: a boolean flag's variable takes the spellings
// the exports take, any case; anything else is a usage error naming it; a
// variable of a flag the command does not have is not read.
func TestEnvironmentBooleans(t *testing.T) {
	p := newProject(t, strings.Replace(fmt.Sprintf(onePairConfig, "d365-to-campaign", "newest"), `"100%"`, "0", 1))
	testkit.WriteFile(t, p.path("d365.csv"), testkit.Contacts(testkit.GUID(1)+",2026-11-20T10:00:00Z,false"))
	testkit.WriteFile(t, p.path("campaign.csv"), campaignOptOuts("2026-11-20 09:00:00.000Z", 1))
	for v, want := range map[string]int{"yes": 0, "Y": 0, "TRUE": 0, "1": 0, "no": exitSafety, "n": exitSafety, "0": exitSafety, "": exitSafety, "maybe": exitUsage} {
		t.Setenv("OPTSYNC_ALLOW_MASS_OPTIN", v)
		r := p.cli(t, "plan", "--backfill") // plan has no such flag: never read
		if r.code != 0 {
			t.Fatalf("plan with OPTSYNC_ALLOW_MASS_OPTIN=%q: exit %d\n%s", v, r.code, r.stderr)
		}
		r = p.backfill(t)
		if r.code != want {
			t.Errorf("OPTSYNC_ALLOW_MASS_OPTIN=%q: exit %d, want %d\n%s", v, r.code, want, r.stderr)
		}
		if want == exitUsage && !strings.Contains(r.stderr, `OPTSYNC_ALLOW_MASS_OPTIN=\"maybe\": want true/false, 1/0, yes/no or y/n`) {
			t.Errorf("the error does not name the variable:\n%s", r.stderr)
		}
		if want == 0 {
			// a real clear happened; start the next case from a clean state
			p = newProject(t, strings.Replace(fmt.Sprintf(onePairConfig, "d365-to-campaign", "newest"), `"100%"`, "0", 1))
			testkit.WriteFile(t, p.path("d365.csv"), testkit.Contacts(testkit.GUID(1)+",2026-11-20T10:00:00Z,false"))
			testkit.WriteFile(t, p.path("campaign.csv"), campaignOptOuts("2026-11-20 09:00:00.000Z", 1))
		}
	}
}

// TestValidateCountsWhatARunRejects: validate over the demo exports lists
// the rows a backfill over them rejects, grouped by reason with the first
// examples, and its numbers equal the backfill's rejects file.
func TestValidateCountsWhatARunRejects(t *testing.T) {
	p := &project{dir: t.TempDir()}
	for _, f := range []string{"optsync.yaml", "d365_contacts.csv", "campaign_profiles.csv"} {
		b, err := os.ReadFile(filepath.Join("fixtures", "demo", f))
		if err != nil {
			t.Fatal(err)
		}
		testkit.WriteFile(t, p.path(f), string(b))
	}
	p.config = p.path("optsync.yaml")
	v := p.cli(t, "validate")
	if v.code != 0 {
		t.Fatalf("validate: exit %d\n%s", v.code, v.stderr)
	}
	r := p.backfill(t, "--allow-mass-optin")
	if r.code != 0 {
		t.Fatalf("backfill: exit %d\n%s", r.code, r.stderr)
	}
	rejects := p.out(t, "rejects", r.runID)
	if !strings.Contains(v.stdout, fmt.Sprintf("would be rejected: %d rows, by reason", len(rejects))) {
		t.Fatalf("validate does not count the backfill's %d rejects:\n%s", len(rejects), v.stdout)
	}
	byKind := map[string]int{}
	for _, row := range rejects {
		byKind[load.ReasonKind(row["reason"])]++
	}
	for kind, n := range byKind {
		if !strings.Contains(v.stdout, fmt.Sprintf("  %d × %s\n", n, kind)) {
			t.Errorf("validate does not say %d × %s:\n%s", n, kind, v.stdout)
		}
	}
	for _, want := range []string{
		`contactid "not-a-guid" is not a GUID`, `superseded: line`, `duplicate-externalId`, `row has 9 fields, the header has 10`,
	} {
		if !strings.Contains(v.stdout, want) {
			t.Errorf("validate lacks the example %q", want)
		}
	}
	if len(byKind) < 8 {
		t.Errorf("only %d kinds of rejects in the demo: %v", len(byKind), byKind)
	}
}
