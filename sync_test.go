package main

import (
	"fmt"
	"optsync/fixtures/testkit"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestIncrementalBackfill(t *testing.T) {
	p := newProject(t, fmt.Sprintf(onePairConfig, "bidirectional", "newest"))
	contacts := []string{
		"00000000-0000-0000-0000-000000000001,2026-11-20T10:00:00Z,true",
		"00000000-0000-0000-0000-000000000002,2026-11-20T10:00:00Z,false",
		"00000000-0000-0000-0000-000000000003,2026-11-20T10:00:00Z,false",
	}
	profiles := []string{
		"@p1,00000000-0000-0000-0000-000000000001,2026-11-20 09:00:00.000Z,false",
		"@p2,00000000-0000-0000-0000-000000000002,2026-11-20 11:00:00.000Z,true",
		"@p3,00000000-0000-0000-0000-000000000003,2026-11-20 09:00:00.000Z,false",
	}
	testkit.WriteFile(t, p.path("d365.csv"), testkit.Contacts(contacts...))
	testkit.WriteFile(t, p.path("campaign.csv"), testkit.Profiles(profiles...))
	r := p.backfill(t)
	if got := p.out(t, "audit", r.runID); len(got) != 2 {
		t.Fatalf("first backfill: want 2 writes, got %v", got)
	}

	// The same exports again (the update files not imported yet): nothing.
	r = p.backfill(t)
	if got := p.out(t, "audit", r.runID); len(got) != 0 {
		t.Fatalf("second backfill over the same files wrote %v", got)
	}
	if got := p.out(t, "campaign-updates", r.runID); len(got) != 0 {
		t.Fatalf("second backfill wrote campaign updates %v", got)
	}

	// The updates were imported: both sides now agree, with new times. Still nothing.
	contacts[1] = "00000000-0000-0000-0000-000000000002,2026-11-21T01:00:00Z,true"
	profiles[0] = "@p1,00000000-0000-0000-0000-000000000001,2026-11-21 01:00:00.000Z,true"
	testkit.WriteFile(t, p.path("d365.csv"), testkit.Contacts(contacts...))
	testkit.WriteFile(t, p.path("campaign.csv"), testkit.Profiles(profiles...))
	r = p.backfill(t)
	if got := p.out(t, "audit", r.runID); len(got) != 0 {
		t.Fatalf("after import: wrote %v", got)
	}

	// Campaign opts contact 3 out: only that pair is written, to Dynamics.
	profiles[2] = "@p3,00000000-0000-0000-0000-000000000003,2026-11-22 09:00:00.000Z,true"
	testkit.WriteFile(t, p.path("campaign.csv"), testkit.Profiles(profiles...))
	r = p.backfill(t)
	got := p.out(t, "audit", r.runID)
	if len(got) != 1 || got[0]["contact_id"] != "00000000-0000-0000-0000-000000000003" ||
		got[0]["rule"] != "only-campaign-changed" || got[0]["new_value"] != "true" {
		t.Fatalf("after one Campaign change: %v", got)
	}
	if upd := p.out(t, "d365-updates", r.runID); len(upd) != 1 || upd[0]["donotemail"] != "true" {
		t.Fatalf("d365 updates: %v", upd)
	}
}

func TestSafetyLimitStopsBeforeWriting(t *testing.T) {
	cfg := strings.Replace(fmt.Sprintf(onePairConfig, "d365-to-campaign", "newest"), `"100%"`, "1", 1)
	p := newProject(t, cfg)
	testkit.WriteFile(t, p.path("d365.csv"), testkit.Contacts(
		"00000000-0000-0000-0000-000000000001,2026-11-20T10:00:00Z,false",
		"00000000-0000-0000-0000-000000000002,2026-11-20T10:00:00Z,false",
	))
	testkit.WriteFile(t, p.path("campaign.csv"), campaignOptOuts("2026-11-20 09:00:00.000Z", 1, 2))
	r := p.backfill(t)
	if r.code != exitSafety {
		t.Fatalf("exit %d, want 4\n%s%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, "would clear 2 of 2 known opt-outs (100 %), limit 1") || !strings.Contains(r.stdout, "00000000-0000-0000-0000-000000000001") {
		t.Fatalf("message lacks the count or the examples:\n%s", r.stdout)
	}
	onlyReport(t, p, "would have cleared 2 opt-outs")
	if got := dumpState(t, p.path("optsync.db")); len(got) != 0 {
		t.Fatalf("a safety stop changed state: %v", got)
	}
	if runs := p.cli(t, "runs"); !strings.Contains(runs.stdout, "safety-stop") {
		t.Fatalf("runs does not record the stop:\n%s", runs.stdout)
	}

	r = p.backfill(t, "--allow-mass-optin")
	if r.code != 0 {
		t.Fatalf("--allow-mass-optin: exit %d %s", r.code, r.stderr)
	}
	if got := p.out(t, "campaign-updates", r.runID); len(got) != 2 {
		t.Fatalf("--allow-mass-optin: want 2 updates, got %v", got)
	}
}

func TestBadRowsAreRejectedAndGoodRowsGoOn(t *testing.T) {
	p := newProject(t, fmt.Sprintf(onePairConfig, "d365-to-campaign", "newest"))
	testkit.WriteFile(t, p.path("d365.csv"), "\uFEFFcontactid,modifiedon,donotemail\r\n"+
		"00000000-0000-0000-0000-000000000001,2026-11-20T10:00:00Z,yes\r\n"+ // line 2: good
		"not-a-guid,2026-11-20T10:00:00Z,true\r\n"+ // 3
		"00000000-0000-0000-0000-000000000003,yesterday,true\r\n"+ // 4
		"00000000-0000-0000-0000-000000000004,2026-11-20T10:00:00Z,maybe\r\n"+ // 5
		"00000000-0000-0000-0000-000000000005,2026-11-20T10:00:00Z\r\n"+ // 6: short
		"=1+1,2026-11-20T10:00:00Z,true\r\n"+ // 7: formula in the id
		"{00000000-0000-0000-0000-00000000000A},2026-11-20T10:00:00Z,\"Do Not Allow\"\r\n"+ // 8: good
		"00000000-0000-0000-0000-00000000000b,2026-11-20T10:00:00Z,n\r\n"+ // 9: older row
		"00000000-0000-0000-0000-00000000000B,2026-11-21T10:00:00Z,y\r\n") // 10: newer row wins
	testkit.WriteFile(t, p.path("campaign.csv"), testkit.Profiles(
		"@p1,00000000-0000-0000-0000-000000000001,2026-11-20 09:00:00.000Z,false",          // 2
		"@p4,00000000-0000-0000-0000-000000000004,2026-11-20 09:00:00.000Z,false",          // 3
		"@pa,00000000-0000-0000-0000-00000000000a,2026-11-20 09:00:00.000Z,false",          // 4
		"@pb,00000000-0000-0000-0000-00000000000b,2026-11-20 09:00:00.000Z,false",          // 5
		"@pc1,00000000-0000-0000-0000-00000000000c,2026-11-20 09:00:00.000Z,false",         // 6: duplicate externalId
		"@pc2,00000000-0000-0000-0000-00000000000C,2026-11-20 09:00:00.000Z,true",          // 7: duplicate externalId
		"=HYPERLINK(1),00000000-0000-0000-0000-00000000000d,2026-11-20 09:00:00.000Z,true", // 8: bad PKey
		"@pe,,2026-11-20 09:00:00.000Z,true",                                               // 9: no externalId: not a bad row
	))
	r := p.backfill(t)
	if r.code != 0 {
		t.Fatalf("exit %d %s", r.code, r.stderr)
	}
	rejects := p.out(t, "rejects", r.runID)
	want := []struct{ source, line, id, reason string }{
		{"campaign.csv", "6", "@pc1", "duplicate-externalId"},
		{"campaign.csv", "7", "@pc2", "duplicate-externalId"},
		{"campaign.csv", "8", "'=HYPERLINK(1)", "PKey"},
		{"d365.csv", "3", "not-a-guid", "not a GUID"},
		{"d365.csv", "4", "00000000-0000-0000-0000-000000000003", "modifiedon"},
		{"d365.csv", "5", "00000000-0000-0000-0000-000000000004", `donotemail "maybe" is not a boolean`},
		{"d365.csv", "6", "00000000-0000-0000-0000-000000000005", "2 fields"},
		{"d365.csv", "7", "'=1+1", "not a GUID"},
		{"d365.csv", "9", "00000000-0000-0000-0000-00000000000b", "superseded: line 10"},
	}
	if len(rejects) != len(want) {
		t.Fatalf("want %d rejects, got %d: %v", len(want), len(rejects), rejects)
	}
	for i, w := range want {
		got := rejects[i]
		if !strings.HasSuffix(got["source"], w.source) || got["line"] != w.line || got["id"] != w.id || !strings.Contains(got["reason"], w.reason) {
			t.Errorf("reject %d: got %v, want %+v", i, got, w)
		}
	}
	audit := p.out(t, "audit", r.runID)
	writes := map[string]string{}
	for _, a := range audit {
		writes[a["contact_id"]] = a["new_value"]
	}
	wantWrites := map[string]string{
		"00000000-0000-0000-0000-000000000001": "true", // yes
		"00000000-0000-0000-0000-00000000000a": "true", // Do Not Allow, braces and upper case
		"00000000-0000-0000-0000-00000000000b": "true", // the newer of two rows
	}
	if len(writes) != len(wantWrites) {
		t.Fatalf("writes %v, want %v", writes, wantWrites)
	}
	for id, v := range wantWrites {
		if writes[id] != v {
			t.Errorf("write for %s = %q, want %q", id, writes[id], v)
		}
	}
	if !strings.Contains(r.stdout, "profiles_without_externalId=1") || !strings.Contains(r.stdout, "duplicate_externalId=2") {
		t.Errorf("summary misses identity counts: %s", r.stdout)
	}
}

func TestMissingColumnExits2(t *testing.T) {
	p := newProject(t, fmt.Sprintf(onePairConfig, "bidirectional", "newest"))
	testkit.WriteFile(t, p.path("d365.csv"), "contactid,modifiedon\n00000000-0000-0000-0000-000000000001,2026-11-20T10:00:00Z\n")
	testkit.WriteFile(t, p.path("campaign.csv"), testkit.Profiles())
	r := p.backfill(t)
	if r.code != exitUsage || !strings.Contains(r.stderr, "the required column donotemail is missing from the header") || !strings.Contains(r.stderr, "d365.csv") {
		t.Fatalf("exit %d, stderr %s", r.code, r.stderr)
	}
}

func TestPlanWritesOnlyAuditAndRejects(t *testing.T) {
	p := newProject(t, fmt.Sprintf(onePairConfig, "bidirectional", "newest"))
	testkit.WriteFile(t, p.path("d365.csv"), testkit.Contacts("00000000-0000-0000-0000-000000000001,2026-11-20T10:00:00Z,true"))
	testkit.WriteFile(t, p.path("campaign.csv"), testkit.Profiles("@p1,00000000-0000-0000-0000-000000000001,2026-11-20 09:00:00.000Z,false"))
	r := p.cli(t, "plan")
	if r.code != 0 {
		t.Fatalf("exit %d %s", r.code, r.stderr)
	}
	audit := p.out(t, "audit", r.runID)
	if len(audit) != 1 || audit[0]["outcome"] != "planned" {
		t.Fatalf("audit %v", audit)
	}
	entries, _ := os.ReadDir(p.path("out"))
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	want := []string{"audit-" + r.runID + ".csv", "rejects-" + r.runID + ".csv", "report-" + r.runID + ".html"}
	if !slices.Equal(names, want) {
		t.Fatalf("plan wrote %v, want audit, rejects and its preview report only", names)
	}
	if _, err := os.Stat(p.path("optsync.db")); !os.IsNotExist(err) {
		t.Fatalf("plan created a state file")
	}
	// A backfill afterwards still makes the write: plan changed nothing.
	r = p.backfill(t)
	if got := p.out(t, "audit", r.runID); len(got) != 1 || got[0]["outcome"] != "applied" {
		t.Fatalf("backfill after plan: %v", got)
	}
}

func TestOutputFilesArePrivate(t *testing.T) {
	p := newProject(t, fmt.Sprintf(onePairConfig, "bidirectional", "newest"))
	testkit.WriteFile(t, p.path("d365.csv"), testkit.Contacts("00000000-0000-0000-0000-000000000001,2026-11-20T10:00:00Z,true"))
	testkit.WriteFile(t, p.path("campaign.csv"), testkit.Profiles("@p1,00000000-0000-0000-0000-000000000001,2026-11-20 09:00:00.000Z,false"))
	if r := p.backfill(t); r.code != 0 {
		t.Fatal(r.stderr)
	}
	files, _ := filepath.Glob(p.path("out/*"))
	files = append(files, p.path("optsync.db"))
	if len(files) != 7 { // audit, rejects, two update files, the report, the state identity, state
		t.Fatalf("files: %v", files)
	}
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s is %v, want 0600", f, fi.Mode().Perm())
		}
	}
	if fi, _ := os.Stat(p.path("out")); fi.Mode().Perm() != 0o700 {
		t.Errorf("out_dir is %v, want 0700", fi.Mode().Perm())
	}
}

// onlyReport checks that a run which kept nothing left only its report, and
// that the report says why.
func onlyReport(t *testing.T, p *project, says string) {
	t.Helper()
	entries, _ := os.ReadDir(p.path("out"))
	if len(entries) != 1 || !strings.HasPrefix(entries[0].Name(), "report-") || !strings.HasSuffix(entries[0].Name(), ".html") {
		t.Fatalf("a run that kept nothing left %v, want only its report", entries)
	}
	b, err := os.ReadFile(p.path(filepath.Join("out", entries[0].Name())))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), says) {
		t.Fatalf("the report does not say %q", says)
	}
}
