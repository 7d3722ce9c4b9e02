package main

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"optsync/fixtures/campaignsim"
	"optsync/fixtures/testkit"
)

// conflictNights is the story over file drops: contact 1 is opted
// out of email and phone in Dynamics; Campaign has two profiles sharing its
// externalId, @p1 and @p2, neither opted out and both newer.
func conflictNights(t *testing.T) *project {
	t.Helper()
	p := newProject(t, fmt.Sprintf(dropConfig, ""))
	testkit.WriteFile(t, p.path("drops/d365/1.csv"), testkit.Contacts2(
		guid1+",2026-11-20T10:00:00Z,true,true",
		guid2+",2026-11-20T10:00:00Z,false,false"))
	testkit.WriteFile(t, p.path("drops/campaign/1.csv"), testkit.Profiles2(
		"@p1,"+guid1+",2026-11-21 10:00:00.000Z,false,false",
		"@p2,"+guid1+",2026-11-21 11:00:00.000Z,false,false",
		"@q2,"+guid2+",2026-11-21 10:00:00.000Z,false,false"))
	return p
}

// dynamicsOptOut says what the update files of a run write for contact 1 in
// Dynamics ("" for no row).
func dynamicsRow(t *testing.T, p *project, runID string) string {
	t.Helper()
	if _, err := os.Stat(p.path("out/d365-updates-" + runID + ".csv")); err != nil {
		return ""
	}
	for _, r := range p.out(t, "d365-updates", runID) {
		if r["contactid"] == guid1 {
			return fmt.Sprint(r)
		}
	}
	return ""
}

func conflictRejects(t *testing.T, p *project, runID string) []string {
	t.Helper()
	var out []string
	for _, r := range p.out(t, "rejects", runID) {
		if strings.HasPrefix(r["reason"], "duplicate-externalId") {
			out = append(out, r["id"]+": "+r["reason"])
		}
	}
	return out
}

// A duplicate profile does not slip through on a later night: state
// remembers that Campaign showed contact 1 two profiles, and no run decides
// it — not when only one of them is in the night's drop, not when only the
// contact changed — until a backfill finds exactly one. The Dynamics
// opt-outs stay in place until then.
func TestDuplicateProfileStaysOutUntilABackfillSettlesIt(t *testing.T) {
	p := conflictNights(t)
	r := p.run(t)
	checkTotalsPairs(t, p, 2) // the totals safety keeps follow every record written
	if rej := conflictRejects(t, p, r.runID); len(rej) != 2 {
		t.Fatalf("night 1: both profiles are rejected: %v", rej)
	}
	// Night 2: only @p2 changed, so only it is in the drop.
	testkit.WriteFile(t, p.path("drops/campaign/2.csv"), testkit.Profiles2("@p2,"+guid1+",2026-11-27 09:00:00.000Z,false,false"))
	r = p.run(t)
	checkTotalsPairs(t, p, 2)
	if row := dynamicsRow(t, p, r.runID); row != "" {
		t.Fatalf("night 2 decided contact 1 from a profile that is still a duplicate: %s", row)
	}
	if rej := conflictRejects(t, p, r.runID); len(rej) != 1 || !strings.HasPrefix(rej[0], "@p2: duplicate-externalId: Campaign has shown two or more profiles") {
		t.Fatalf("night 2: the profile is not rejected as in conflict: %v", rej)
	}
	// Night 3: the contact changes in Dynamics; its profiles do not.
	testkit.WriteFile(t, p.path("drops/d365/3.csv"), testkit.Contacts2(guid1+",2026-11-28T10:00:00Z,true,false"))
	r = p.run(t)
	checkTotalsPairs(t, p, 2)
	if row := dynamicsRow(t, p, r.runID); row != "" {
		t.Fatalf("night 3 decided contact 1: %s", row)
	}
	if got := p.out(t, "audit", r.runID); len(got) != 0 {
		t.Fatalf("night 3 decided: %v", got)
	}
	// What the nights read of the contact itself is kept, and so is the
	// conflict.
	exp := exportState(t, p, guid1)
	if len(exp) == 0 || exp[0]["campaign_conflict"] != "true" || exp[0]["d365_modified"] != "2026-11-28T10:00:00Z" {
		t.Fatalf("state of contact 1: %v", exp)
	}
	if r := p.cli(t, "audit", "--contact", guid1); !strings.Contains(r.stdout, "two or more profiles with this contact's externalId") {
		t.Fatalf("audit --contact does not say the profiles are in conflict:\n%s", r.stdout)
	}
	// A backfill that still finds both: still not touched.
	testkit.WriteFile(t, p.path("full/d365.csv"), testkit.Contacts2(guid1+",2026-11-28T10:00:00Z,true,false", guid2+",2026-11-20T10:00:00Z,false,false"))
	testkit.WriteFile(t, p.path("full/campaign.csv"), testkit.Profiles2(
		"@p1,"+guid1+",2026-11-21 10:00:00.000Z,false,false",
		"@p2,"+guid1+",2026-11-27 09:00:00.000Z,false,false",
		"@q2,"+guid2+",2026-11-21 10:00:00.000Z,false,false"))
	r = p.backfill(t, "--d365-csv", p.path("full/d365.csv"), "--campaign-csv", p.path("full/campaign.csv"))
	checkTotalsPairs(t, p, 2)
	if r.code != 0 || dynamicsRow(t, p, r.runID) != "" {
		t.Fatalf("a backfill with both profiles: exit %d, %s\n%s", r.code, dynamicsRow(t, p, r.runID), r.stderr)
	}
	// A night that sees @p1 alone: still not touched.
	testkit.WriteFile(t, p.path("drops/campaign/4.csv"), testkit.Profiles2("@p1,"+guid1+",2026-11-29 09:00:00.000Z,false,false"))
	r = p.run(t)
	checkTotalsPairs(t, p, 2)
	if row := dynamicsRow(t, p, r.runID); row != "" {
		t.Fatalf("night 4 decided contact 1 from @p1: %s", row)
	}
	// @p1 is merged away in Campaign: a backfill finds exactly one profile
	// and settles it, deciding as at first sight (Campaign is newer).
	testkit.WriteFile(t, p.path("full/campaign.csv"), testkit.Profiles2(
		"@p2,"+guid1+",2026-11-29 12:00:00.000Z,false,false",
		"@q2,"+guid2+",2026-11-21 10:00:00.000Z,false,false"))
	r = p.backfill(t, "--d365-csv", p.path("full/d365.csv"), "--campaign-csv", p.path("full/campaign.csv"))
	checkTotalsPairs(t, p, 2)
	if r.code != 0 {
		t.Fatalf("settling backfill: exit %d\n%s", r.code, r.stderr)
	}
	if row := dynamicsRow(t, p, r.runID); !strings.Contains(row, "donotemail:false") {
		t.Fatalf("the backfill that finds one profile decides the contact: %q", row)
	}
	if exp := exportState(t, p, guid1); exp[0]["campaign_conflict"] != "false" || exp[0]["profile_pkey"] != "@p2" {
		t.Fatalf("after the settling backfill: %v", exp)
	}
}

// exportState is state export's rows for one contact.
func exportState(t *testing.T, p *project, id string) []map[string]string {
	t.Helper()
	out := p.path("export-" + id + ".csv")
	_ = os.Remove(out)
	if r := p.cli(t, "state", "export", "--contact", id, "--output", out); r.code != 0 {
		t.Fatalf("state export: exit %d\n%s", r.code, r.stderr)
	}
	_, rows := testkit.ReadCSV(t, out)
	return rows
}

// The same through the APIs: the first run's full scan of Campaign finds
// two profiles for contact 1; a later night's changed-since read returns
// only one of them, and the contact stays untouched until a backfill (a
// read of every profile) finds exactly one.
func TestDuplicateProfileThroughTheAPIs(t *testing.T) {
	p := newCampaignProject(t, 8, true, "  source: api\n  target: api\n"+changedFilter)
	// contact 3 is opted out in Dynamics (i%3==0) and not in Campaign; a
	// second profile shares its externalId, newer.
	p.csim.Add(campaignsim.Profile{PKey: "@dup3", ExternalID: testkit.GUID(3), Fields: map[string]*bool{"blackListEmail": testkit.Bool(false)}})
	r := p.cli(t, "run")
	if r.code != 0 {
		t.Fatalf("first run: exit %d\n%s", r.code, r.stderr)
	}
	if rej := conflictRejects(t, p.project, r.runID); len(rej) != 2 {
		t.Fatalf("the full scan rejects both profiles: %v", rej)
	}
	optedOut := func() bool {
		c, _ := p.dsim.Contact(testkit.GUID(3))
		v := c.Fields["donotemail"]
		return v != nil && *v
	}
	// Night 2: the duplicate is saved again in Campaign; the changed-since
	// read returns it alone.
	p.csim.SetField("@dup3", "blackListEmail", testkit.Bool(false))
	r = p.cli(t, "run")
	if r.code != 0 || !optedOut() {
		t.Fatalf("night 2: exit %d, Dynamics opt-out kept %v\n%s", r.code, optedOut(), r.stdout)
	}
	if rej := conflictRejects(t, p.project, r.runID); len(rej) != 1 || !strings.HasPrefix(rej[0], "@dup3: duplicate-externalId: Campaign has shown") {
		t.Fatalf("night 2: %v", rej)
	}
	// @p3 is deleted in Campaign; a backfill reads every profile, finds
	// @dup3 alone and settles the contact: Campaign is newer.
	p.csim.Delete("@p3")
	r = p.cli(t, "backfill")
	if r.code != 0 {
		t.Fatalf("backfill: exit %d\n%s", r.code, r.stderr)
	}
	if optedOut() {
		t.Fatalf("the backfill that found one profile left the contact undecided\n%s", r.stdout)
	}
}
