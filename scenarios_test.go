package main

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/jszwec/csvutil"

	"optsync/fixtures/testkit"
	"optsync/transform"
)

type scenario struct {
	Case             string `csv:"case"`
	Direction        string `csv:"direction"`
	Policy           string `csv:"policy"`
	Snapshot         string `csv:"snapshot"`
	D365             string `csv:"d365"`
	Campaign         string `csv:"campaign"`
	D365Modified     string `csv:"d365_modified"`
	CampaignModified string `csv:"campaign_modified"`
	ExpectWrite      string `csv:"expect_write"`
	ExpectValue      string `csv:"expect_value"`
	ExpectRule       string `csv:"expect_rule"`
}

func loadScenarios(t *testing.T, path string) []scenario {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rows []scenario
	if err := csvutil.Unmarshal(b, &rows); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if len(rows) == 0 {
		t.Fatalf("%s: no scenarios", path)
	}
	return rows
}

// TestScenarios runs every row of the decision table through the real CLI:
// CSV files in, backfill (twice when the row has a snapshot), audit read back.
func TestScenarios(t *testing.T) {
	for _, sc := range loadScenarios(t, "fixtures/scenarios/rules.csv") {
		t.Run(sc.Case, func(t *testing.T) { runScenario(t, sc) })
	}
}

const scenarioContact = "0f8fad5b-d9cb-469f-a165-70867728950e"

func runScenario(t *testing.T, sc scenario) {
	p := newProject(t, fmt.Sprintf(onePairConfig, sc.Direction, sc.Policy))
	write := func(d, c string) {
		testkit.WriteFile(t, p.path("d365.csv"), testkit.Contacts(scenarioContact+","+sc.D365Modified+","+d))
		testkit.WriteFile(t, p.path("campaign.csv"), testkit.Profiles("@pk1,"+strings.ToUpper(scenarioContact)+","+sc.CampaignModified+","+c))
	}
	if sc.Snapshot != "" {
		write(sc.Snapshot, sc.Snapshot)
		if r := p.backfill(t); r.code != 0 {
			t.Fatalf("snapshot backfill: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
	}
	write(sc.D365, sc.Campaign)
	var extra []string
	if strings.Contains(sc.Case, "replay") {
		extra = append(extra, "--replay")
	}
	r := p.backfill(t, extra...)
	if r.code != 0 || r.runID == "" {
		t.Fatalf("backfill: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	audit := p.out(t, "audit", r.runID)
	switch sc.ExpectWrite {
	case "none":
		if len(audit) != 0 {
			t.Fatalf("want no audit rows, got %v", audit)
		}
		return
	case "skipped":
		// error is the reason code the table names, then the blank side:
		// "unknown-value: campaign blank".
		if len(audit) != 1 || audit[0]["outcome"] != "skipped" || transform.ReasonCode(audit[0]["error"]) != sc.ExpectRule {
			t.Fatalf("want one skipped row with error %s, got %v", sc.ExpectRule, audit)
		}
		blank := "d365"
		if sc.Campaign == "" {
			blank = "campaign"
		}
		if sc.D365 == "" && sc.Campaign == "" {
			blank = "d365 and campaign"
		}
		if want := sc.ExpectRule + ": " + blank + " blank"; audit[0]["error"] != want {
			t.Fatalf("error %q, want %q", audit[0]["error"], want)
		}
		return
	}
	if len(audit) != 1 {
		t.Fatalf("want one audit row, got %v", audit)
	}
	row := audit[0]
	want := map[string]string{
		"direction": sc.ExpectWrite, "new_value": sc.ExpectValue, "rule": sc.ExpectRule, "outcome": "applied",
		"contact_id": scenarioContact, "profile_pkey": "@pk1", "d365_field": "donotemail", "campaign_field": "blackListEmail",
	}
	for k, v := range want {
		if row[k] != v {
			t.Errorf("audit %s = %q, want %q (row %v)", k, row[k], v, row)
		}
	}
	// The write must also be in the target's update file.
	kind, col := "campaign-updates", "blackListEmail"
	if sc.ExpectWrite == "campaign->d365" {
		kind, col = "d365-updates", "donotemail"
	}
	upd := p.out(t, kind, r.runID)
	if len(upd) != 1 || upd[0][col] != sc.ExpectValue {
		t.Errorf("%s: want one row with %s=%s, got %v", kind, col, sc.ExpectValue, upd)
	}
}
