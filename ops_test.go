package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"optsync/fixtures/testkit"
	"os"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

const dropConfig = `direction: bidirectional
policy: newest
mappings:
  - d365: donotemail
    campaign: blackListEmail
  - d365: donotphone
    campaign: blackListPhone
state: optsync.db
out_dir: out
safety:
  max_optin: "100%%"
d365:
  csv: drops/d365
campaign:
  csv: drops/campaign/*.csv
%s`

const (
	guid1 = "00000000-0000-0000-0000-000000000001"
	guid2 = "00000000-0000-0000-0000-000000000002"
	guid3 = "00000000-0000-0000-0000-000000000003"
)

// night1 lays the first night's drop: three contacts on both sides.
func night1(t *testing.T, p *project) {
	testkit.WriteFile(t, p.path("drops/d365/2026-11-27.csv"), testkit.Contacts2(
		guid1+",2026-11-27T01:00:00Z,false,false",
		guid2+",2026-11-27T01:00:00Z,true,false",
		guid3+",2026-11-27T01:00:00Z,false,false"))
	testkit.WriteFile(t, p.path("drops/campaign/2026-11-27.csv"), testkit.Profiles2(
		"@p1,"+guid1+",2026-11-27 00:30:00.000Z,false,false",
		"@p2,"+guid2+",2026-11-27 00:30:00.000Z,false,false",
		"@p3,"+guid3+",2026-11-27 00:30:00.000Z,false,false"))
}

func TestRunOverDropsIsIncremental(t *testing.T) {
	p := newProject(t, fmt.Sprintf(dropConfig, ""))
	night1(t, p)
	r := p.run(t)
	audit := p.out(t, "audit", r.runID)
	if len(audit) != 1 || audit[0]["contact_id"] != guid2 || audit[0]["direction"] != "d365->campaign" {
		t.Fatalf("night 1: %v", audit)
	}

	// The same drop again: nothing new, nothing written.
	r = p.run(t)
	if got := p.out(t, "audit", r.runID); len(got) != 0 {
		t.Fatalf("re-run over the same drop wrote %v", got)
	}
	if !strings.Contains(r.stdout, "compared=0 pairs") {
		t.Fatalf("re-run read something: %s", r.stdout)
	}

	// Night 2: only Campaign changed, for contact 3. It is decided against
	// what state knows of its Dynamics side.
	testkit.WriteFile(t, p.path("drops/campaign/2026-11-28.csv"), testkit.Profiles2("@p3,"+guid3+",2026-11-28 09:00:00.000Z,false,true"))
	r = p.run(t)
	audit = p.out(t, "audit", r.runID)
	if len(audit) != 1 || audit[0]["contact_id"] != guid3 || audit[0]["d365_field"] != "donotphone" ||
		audit[0]["rule"] != "only-campaign-changed" || audit[0]["new_value"] != "true" ||
		audit[0]["d365_modified"] != "2026-11-27T01:00:00Z" {
		t.Fatalf("night 2: %v", audit)
	}
	// A profile decided against what state knows of its contact is not a
	// profile without a contact.
	for _, want := range []string{"decided_against_state=1", "compared=2 pairs (1 contact)", "profiles_without_contact=0"} {
		if !strings.Contains(r.stdout, want) {
			t.Fatalf("night 2 summary lacks %q: %s", want, r.stdout)
		}
	}

	// --force processes the whole drop again; nothing is decided twice.
	r = p.run(t, "--force")
	if got := p.out(t, "audit", r.runID); len(got) != 0 {
		t.Fatalf("--force re-decided %v", got)
	}
}

func TestRunProcessesFilesOldestFirst(t *testing.T) {
	p := newProject(t, fmt.Sprintf(dropConfig, ""))
	night1(t, p)
	p.run(t)
	// Two days' Dynamics files arrive together; the later one (by name) wins
	// even though it is written first.
	testkit.WriteFile(t, p.path("drops/d365/2026-11-29.csv"), testkit.Contacts2(guid1+",2026-11-29T01:00:00Z,false,false"))
	testkit.WriteFile(t, p.path("drops/d365/2026-11-28.csv"), testkit.Contacts2(guid1+",2026-11-28T01:00:00Z,true,false"))
	r := p.run(t)
	if got := p.out(t, "audit", r.runID); len(got) != 0 {
		t.Fatalf("the later file sets contact 1 back to false, which Campaign has: want no write, got %v", got)
	}
	rejects := p.out(t, "rejects", r.runID)
	if len(rejects) != 1 || !strings.HasSuffix(rejects[0]["source"], "2026-11-28.csv") || !strings.Contains(rejects[0]["reason"], "2026-11-29.csv line 2") {
		t.Fatalf("the earlier row should be superseded by the later file: %v", rejects)
	}
	// An old file processed again cannot undo newer knowledge.
	r = p.run(t, "--force")
	if got := p.out(t, "audit", r.runID); len(got) != 0 {
		t.Fatalf("--force over older files wrote %v", got)
	}
}

func TestRunWaitsForACounterpart(t *testing.T) {
	p := newProject(t, fmt.Sprintf(dropConfig, ""))
	testkit.WriteFile(t, p.path("drops/d365/a.csv"), testkit.Contacts2(guid1+",2026-11-27T01:00:00Z,true,false"))
	testkit.WriteFile(t, p.path("drops/campaign/a.csv"), testkit.Profiles2())
	r := p.run(t)
	if !strings.Contains(r.stdout, "waiting_for_counterpart=1") {
		t.Fatalf("summary: %s", r.stdout)
	}
	// The profile shows up a night later: the contact is decided then.
	testkit.WriteFile(t, p.path("drops/campaign/b.csv"), testkit.Profiles2("@p1,"+guid1+",2026-11-26 00:00:00.000Z,false,false"))
	r = p.run(t)
	audit := p.out(t, "audit", r.runID)
	if len(audit) != 1 || audit[0]["direction"] != "d365->campaign" || audit[0]["rule"] != "conflict-d365-newer" {
		t.Fatalf("counterpart arrived: %v", audit)
	}
	// A second profile for the same contact in a later drop is not touched.
	testkit.WriteFile(t, p.path("drops/campaign/c.csv"), testkit.Profiles2("@other,"+guid1+",2026-11-28 00:00:00.000Z,false,true"))
	r = p.run(t)
	if got := p.out(t, "audit", r.runID); len(got) != 0 {
		t.Fatalf("a second profile was acted on: %v", got)
	}
	if rej := p.out(t, "rejects", r.runID); len(rej) != 1 || !strings.HasPrefix(rej[0]["reason"], "duplicate-externalId") {
		t.Fatalf("rejects: %v", rej)
	}
}

func TestAuditHistoryAcrossRuns(t *testing.T) {
	p := newProject(t, fmt.Sprintf(dropConfig, ""))
	night1(t, p)
	r1 := p.run(t)
	testkit.WriteFile(t, p.path("drops/campaign/2026-11-28.csv"), testkit.Profiles2("@p2,"+guid2+",2026-11-28 09:00:00.000Z,false,false"))
	r2 := p.run(t)
	testkit.WriteFile(t, p.path("drops/d365/2026-11-29.csv"), testkit.Contacts2(guid2+",2026-11-29T09:00:00Z,true,true"))
	r3 := p.run(t)
	wantRuns := []string{r1.runID, r2.runID, r3.runID}

	// json: what state holds now, then the history: every field, in time order
	r := p.cli(t, "audit", "--contact", strings.ToUpper(guid2), "--format", "json")
	var answer struct {
		Contact string
		Known   bool
		Pairs   []map[string]any
		History []map[string]string
	}
	if err := json.Unmarshal([]byte(r.stdout), &answer); err != nil {
		t.Fatalf("json: %v\n%s", err, r.stdout)
	}
	if answer.Contact != guid2 || !answer.Known || len(answer.Pairs) != 2 || answer.Pairs[0]["agreed_opted_out"] != "true" {
		t.Fatalf("json present part: %+v", answer)
	}
	// The opt-outs in Campaign's update files, not seen yet: the email
	// one written by night 1 (night 2 wrote it again), the phone one by
	// night 3.
	for i, want := range []string{r1.runID, r3.runID} {
		by, _ := answer.Pairs[i]["campaign_written_by"].(map[string]any)
		if answer.Pairs[i]["campaign_written_not_seen"] != "true" || by["run_id"] != want {
			t.Fatalf("pair %d: written, not yet seen: %v by %v, want true by %s", i, answer.Pairs[i]["campaign_written_not_seen"], by, want)
		}
	}
	rows := answer.History
	var runs, rules []string
	for _, row := range rows {
		if row["contact_id"] != guid2 {
			t.Fatalf("row of another contact: %v", row)
		}
		runs, rules = append(runs, row["run_id"]), append(rules, row["rule"])
	}
	// night 1: D opted out → Campaign; night 2: Campaign's export shows the
	// profile edited but not the opt-out (the update file not imported yet):
	// nothing is decided against it, it is written again; night 3: Dynamics
	// opts out of the phone too.
	wantRules := []string{"conflict-d365-newer", "", "only-d365-changed"}
	if strings.Join(rules, ",") != strings.Join(wantRules, ",") {
		t.Fatalf("rules %v, want %v\n%s", rules, wantRules, r.stdout)
	}
	if runs[0] != wantRuns[0] || runs[1] != wantRuns[1] || runs[2] != wantRuns[2] || rows[1]["outcome"] != "pending-write-not-seen" {
		t.Fatalf("runs %v, want in order %v (%v)", runs, wantRuns, rows[1])
	}
	// csv: the audit file's columns
	r = p.cli(t, "audit", "--contact", guid2, "--format", "csv")
	if !strings.HasPrefix(r.stdout, "run_id,decided_at,contact_id,profile_pkey,d365_field,campaign_field,direction,old_value,new_value,rule,d365_modified,campaign_modified,outcome,error\n") ||
		strings.Count(r.stdout, "\n") != 4 {
		t.Fatalf("csv:\n%s", r.stdout)
	}
	// table: the present, then the history's header and three rows
	r = p.cli(t, "audit", "--contact", guid2)
	_, history, _ := strings.Cut(r.stdout, "history, oldest first:\n")
	if strings.Count(history, "\n") != 4 || !strings.Contains(history, "pending-write-not-seen") || !strings.Contains(history, "donotemail ↔ blackListEmail") ||
		!strings.Contains(r.stdout, "blackListEmail=true by run "+r1.runID) {
		t.Fatalf("table:\n%s", r.stdout)
	}
	// --run, --field, --since
	r = p.cli(t, "audit", "--run", r3.runID, "--field", "blackListPhone", "--format", "csv")
	if strings.Count(r.stdout, "\n") != 2 || !strings.Contains(r.stdout, "donotphone,blackListPhone") {
		t.Fatalf("--run --field:\n%s", r.stdout)
	}
	r = p.cli(t, "audit", "--since", "1h", "--format", "csv")
	if strings.Count(r.stdout, "\n") != 4 {
		t.Fatalf("--since 1h:\n%s", r.stdout)
	}
	if r := p.cli(t, "audit"); r.code != exitUsage {
		t.Fatalf("audit without a query: exit %d", r.code)
	}
}

func TestAuditRetentionPrunes(t *testing.T) {
	p := newProject(t, fmt.Sprintf(dropConfig, "audit_retention: 1ms\n"))
	night1(t, p)
	p.run(t)
	r := p.cli(t, "audit", "--contact", guid2, "--format", "csv")
	if strings.Count(r.stdout, "\n") != 2 {
		t.Fatalf("the run's own decisions must survive its pruning:\n%s", r.stdout)
	}
	// The next run prunes everything older than 1 ms before its start.
	testkit.WriteFile(t, p.path("drops/d365/2026-11-28.csv"), testkit.Contacts2(guid3+",2026-11-28T01:00:00Z,true,false"))
	p.run(t)
	r = p.cli(t, "audit", "--contact", guid2, "--format", "csv")
	if strings.Count(r.stdout, "\n") != 1 {
		t.Fatalf("not pruned:\n%s", r.stdout)
	}
	r = p.cli(t, "audit", "--contact", guid3, "--format", "csv")
	if strings.Count(r.stdout, "\n") != 2 {
		t.Fatalf("the newest run's decisions were pruned:\n%s", r.stdout)
	}
}

func TestStateResetField(t *testing.T) {
	p := newProject(t, fmt.Sprintf(dropConfig, ""))
	night1(t, p)
	p.run(t)
	// Both pairs of contact 1 change in Campaign, with a time older than
	// Dynamics': incrementally that is only-campaign-changed for both.
	// After resetting donotphone, that pair is first sight: Dynamics is newer.
	if r := p.cli(t, "state", "reset", "--field", "donotphone"); r.code != 0 || !strings.Contains(r.stdout, "forgot") {
		t.Fatalf("reset: %d %s %s", r.code, r.stdout, r.stderr)
	}
	testkit.WriteFile(t, p.path("drops/campaign/2026-11-28.csv"), testkit.Profiles2("@p1,"+guid1+",2026-11-27 00:45:00.000Z,true,true"))
	r := p.run(t)
	byField := map[string]map[string]string{}
	for _, row := range p.out(t, "audit", r.runID) {
		byField[row["d365_field"]] = row
	}
	if byField["donotemail"]["rule"] != "only-campaign-changed" || byField["donotphone"]["rule"] != "conflict-d365-newer" {
		t.Fatalf("after reset --field donotphone: %v", byField)
	}
	if r := p.cli(t, "state", "reset", "--field", "nosuchfield"); r.code != exitUsage {
		t.Fatalf("unknown field: exit %d", r.code)
	}
	if runs := p.cli(t, "runs"); !strings.Contains(runs.stdout, "state reset") {
		t.Fatalf("reset not in the history:\n%s", runs.stdout)
	}
}

// TestStateCompact: the compacted state decides the next night as the
// state did, and the run history shows the compact.
func TestStateCompact(t *testing.T) {
	p := newProject(t, fmt.Sprintf(dropConfig, ""))
	night1(t, p)
	p.run(t)
	before := p.cli(t, "state", "export")
	if r := p.cli(t, "state", "compact"); r.code != 0 || !strings.Contains(r.stdout, "compacted ") {
		t.Fatalf("compact: %d %s %s", r.code, r.stdout, r.stderr)
	}
	if after := p.cli(t, "state", "export"); after.code != 0 || after.stdout != before.stdout {
		t.Fatalf("the compacted state exports otherwise:\n%s\nbefore:\n%s", after.stdout, before.stdout)
	}
	testkit.WriteFile(t, p.path("drops/campaign/2026-11-28.csv"), testkit.Profiles2("@p1,"+guid1+",2026-11-27 00:45:00.000Z,true,true"))
	r := p.run(t)
	for _, row := range p.out(t, "audit", r.runID) {
		if row["rule"] != "only-campaign-changed" {
			t.Fatalf("the night after the compact: %v", row)
		}
	}
	if runs := p.cli(t, "runs"); !strings.Contains(runs.stdout, "state compact") {
		t.Fatalf("compact not in the history:\n%s", runs.stdout)
	}
}

func TestStateExport(t *testing.T) {
	p := newProject(t, fmt.Sprintf(dropConfig, ""))
	night1(t, p)
	p.run(t)
	out := p.path("export.csv")
	if r := p.cli(t, "state", "export", "--output", out); r.code != 0 {
		t.Fatal(r.stderr)
	}
	fi, _ := os.Stat(out)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("export is %v", fi.Mode().Perm())
	}
	_, rows := testkit.ReadCSV(t, out)
	if len(rows) != 6 {
		t.Fatalf("want 3 contacts × 2 pairs, got %d", len(rows))
	}
	for _, r := range rows {
		if r["contact_id"] == guid2 && r["d365_field"] == "donotemail" {
			if r["agreed_opted_out"] != "true" || r["profile_pkey"] != "@p2" || r["last_decided"] == "" || r["campaign_written_pending"] != "true" {
				t.Fatalf("contact 2: %v", r)
			}
		}
	}
}

func TestRemovedMappingDropsSnapshots(t *testing.T) {
	p := newProject(t, fmt.Sprintf(dropConfig, ""))
	night1(t, p)
	p.run(t)
	oneMapping := strings.Replace(fmt.Sprintf(dropConfig, ""), "  - d365: donotphone\n    campaign: blackListPhone\n", "", 1)
	testkit.WriteFile(t, p.config, oneMapping)
	testkit.WriteFile(t, p.path("drops/d365/2026-11-28.csv"), testkit.Contacts2(guid3+",2026-11-28T01:00:00Z,false,false"))
	r := p.cli(t, "run")
	if r.code != 0 || !strings.Contains(r.stderr, "mapping removed") {
		t.Fatalf("exit %d, no log of the removal:\n%s", r.code, r.stderr)
	}
	runs := p.cli(t, "runs", "--format", "json")
	if !strings.Contains(runs.stdout, "mapping removed, its snapshots dropped with the run's commit: donotphone ↔ blackListPhone") {
		t.Fatalf("the change is not in the run history:\n%s", runs.stdout)
	}
	// Added back, the pair starts from first sight: no snapshot survives.
	testkit.WriteFile(t, p.config, fmt.Sprintf(dropConfig, ""))
	out := p.path("export.csv")
	p.cli(t, "state", "export", "--output", out)
	_, rows := testkit.ReadCSV(t, out)
	for _, row := range rows {
		if row["d365_field"] == "donotphone" && row["agreed_opted_out"] != "" {
			t.Fatalf("a removed mapping kept its snapshot: %v", row)
		}
	}
}

func TestMetricsFileAfterEveryRun(t *testing.T) {
	p := newProject(t, fmt.Sprintf(dropConfig, "metrics_file: optsync.prom\n"))
	night1(t, p)
	p.run(t)
	families := parseMetrics(t, p.path("optsync.prom"))
	want := map[string]float64{"optsync_last_run_exit_code": 0, "optsync_last_run_success": 1, "optsync_last_run_compared_pairs": 6}
	for name, v := range want {
		if got := families[name].Metric[0].Gauge.GetValue(); got != v {
			t.Errorf("%s = %v, want %v", name, got, v)
		}
	}
	writes := map[string]float64{}
	for _, m := range families["optsync_last_run_writes"].Metric {
		writes[m.Label[len(m.Label)-1].GetValue()] = m.Gauge.GetValue()
	}
	if writes["d365->campaign"] != 1 || writes["campaign->d365"] != 0 {
		t.Errorf("writes: %v", writes)
	}
	// A failed run writes the file too, with its exit code.
	os.Remove(p.path("drops/d365/2026-11-27.csv"))
	testkit.WriteFile(t, p.path("drops/d365/bad.csv"), "contactid,modifiedon\n")
	r := p.cli(t, "run")
	if r.code != exitUsage {
		t.Fatalf("missing column: exit %d", r.code)
	}
	families = parseMetrics(t, p.path("optsync.prom"))
	if got := families["optsync_last_run_exit_code"].Metric[0].Gauge.GetValue(); got != exitUsage {
		t.Fatalf("exit code metric %v", got)
	}
}

func parseMetrics(t *testing.T, path string) map[string]*dto.MetricFamily {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("%s does not parse: %v\n%s", path, err, b)
	}
	return fams
}

func TestNoProgressWhenStderrIsNotATerminal(t *testing.T) {
	p := newProject(t, fmt.Sprintf(dropConfig, ""))
	night1(t, p)
	r := p.run(t)
	for _, marker := range []string{"\r", "\x1b[", "MB/s", "contacts/s", "reading "} {
		if strings.Contains(r.stderr, marker) {
			t.Fatalf("stderr (not a terminal) has progress output %q:\n%q", marker, r.stderr)
		}
	}
}

// TestSIGTERMMidRun stops a run with a real SIGTERM while it decides: it
// exits 143, keeps nothing, is recorded as interrupted, and the next run
// makes exactly the decisions the interrupted one would have.
func TestSIGTERMMidRun(t *testing.T) {
	ref := newProject(t, fmt.Sprintf(dropConfig, ""))
	night1(t, ref)
	want := ref.out(t, "audit", ref.run(t).runID)

	p := newProject(t, fmt.Sprintf(dropConfig, ""))
	night1(t, p)
	code, _, stderr, _ := helperProcess(t, "sigterm-while-deciding", "--config", p.config, "run")
	if code != 143 {
		t.Fatalf("exit %d, want 143\n%s", code, stderr)
	}
	// Only its report, which says what happened: no file that looks done.
	onlyReport(t, p, "Interrupted")
	runs := p.cli(t, "runs")
	if !strings.Contains(runs.stdout, "interrupted") || !strings.Contains(runs.stdout, " 143 ") {
		t.Fatalf("runs:\n%s", runs.stdout)
	}
	r := p.run(t)
	got := p.out(t, "audit", r.runID)
	if !equalRows(stable(want), stable(got)) {
		t.Fatalf("after the interruption:\nwant %v\ngot  %v", want, got)
	}
	if again := p.out(t, "audit", p.run(t).runID); len(again) != 0 {
		t.Fatalf("decisions repeated: %v", again)
	}
}

// A run that stops — at the safety limit (exit 4) or on a missing column
// (exit 2) — after a mapping was removed keeps every snapshot of that
// mapping: config housekeeping belongs to the run's commit, and a run that
// writes nothing changes nothing in state but its own history entry.
func TestStoppedRunAfterRemovedMappingKeepsState(t *testing.T) {
	both := strings.Replace(fmt.Sprintf(dropConfig, ""), `"100%"`, "1", 1)
	oneMapping := strings.Replace(both, "  - d365: donotphone\n    campaign: blackListPhone\n", "", 1)
	oneMappingAdded := strings.Replace(oneMapping, "    campaign: blackListEmail\n", "    campaign: blackListEmail\n  - d365: donotfax\n    campaign: blackListFax\n", 1)
	p := newProject(t, both)
	testkit.WriteFile(t, p.path("drops/d365/1.csv"), testkit.Contacts2(guid1+",2026-11-27T01:00:00Z,true,true", guid2+",2026-11-27T01:00:00Z,true,false"))
	testkit.WriteFile(t, p.path("drops/campaign/1.csv"), testkit.Profiles2("@p1,"+guid1+",2026-11-27 00:30:00.000Z,true,true", "@p2,"+guid2+",2026-11-27 00:30:00.000Z,true,false"))
	p.run(t)
	export := func(name string) string {
		t.Helper()
		testkit.WriteFile(t, p.config, both) // the old config: the removed mapping's rows
		out := p.path(name)
		if r := p.cli(t, "state", "export", "--output", out); r.code != 0 {
			t.Fatalf("state export: %s", r.stderr)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	before, dump := export("before.csv"), testkit.StateData(t, p.path("optsync.db"))
	if !strings.Contains(before, "donotphone,blackListPhone,true") {
		t.Fatalf("no snapshot of the mapping to remove:\n%s", before)
	}
	stops := []struct {
		name   string
		config string
		drop   string
		code   int
	}{
		// Both contacts clear their e-mail opt-out: two opt-outs cleared, limit 1.
		{"safety limit", oneMapping, testkit.Contacts2(guid1+",2026-11-28T01:00:00Z,false,true", guid2+",2026-11-28T01:00:00Z,false,false"), exitSafety},
		{"missing column", oneMapping, "contactid,modifiedon,donotphone\n" + guid1 + ",2026-11-28T01:00:00Z,true\n", exitUsage},
		{"safety limit, a mapping added too", oneMappingAdded, "contactid,modifiedon,donotemail,donotfax\n" +
			guid1 + ",2026-11-28T01:00:00Z,false,\n" + guid2 + ",2026-11-28T01:00:00Z,false,\n", exitSafety},
	}
	for i, s := range stops {
		drop := p.path(fmt.Sprintf("drops/d365/2-%d.csv", i))
		testkit.WriteFile(t, drop, s.drop)
		testkit.WriteFile(t, p.config, s.config)
		r := p.cli(t, "run")
		if r.code != s.code || !strings.Contains(r.stderr, "mapping removed") {
			t.Fatalf("%s: exit %d, want %d, and the removal logged\n%s%s", s.name, r.code, s.code, r.stdout, r.stderr)
		}
		if after := export(fmt.Sprintf("after-%d.csv", i)); after != before {
			t.Fatalf("%s: state export changed:\nbefore\n%s\nafter\n%s", s.name, before, after)
		}
		if got := testkit.StateData(t, p.path("optsync.db")); !maps.Equal(got, dump) {
			t.Fatalf("%s: state changed beyond the run history", s.name)
		}
		if err := os.Remove(drop); err != nil {
			t.Fatal(err)
		}
	}
	runs := p.cli(t, "runs", "--format", "json")
	if strings.Count(runs.stdout, `"outcome": "safety-stop"`) != 2 || !strings.Contains(runs.stdout, "mapping removed") {
		t.Fatalf("the stops are not in the history:\n%s", runs.stdout)
	}
	// The run that commits drops them.
	testkit.WriteFile(t, p.config, oneMapping)
	testkit.WriteFile(t, p.path("drops/d365/3.csv"), testkit.Contacts2(guid1+",2026-11-29T01:00:00Z,true,true"))
	r := p.cli(t, "run")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	if after := export("dropped.csv"); strings.Contains(after, "donotphone,blackListPhone,true") {
		t.Fatalf("the removed mapping kept its snapshots after a run that committed:\n%s", after)
	}
}

// Writes to update files that no export shows yet are counted with their
// age in the metrics file and in runs, every run until an export shows them.
func TestPendingWritesInMetricsAndRuns(t *testing.T) {
	p := newProject(t, fmt.Sprintf(dropConfig, "metrics_file: optsync.prom\n"))
	night1(t, p) // contact 2 opts out in Dynamics: written to Campaign
	p.run(t)
	// Campaign's next drop shows profile 2 edited, without the opt-out.
	testkit.WriteFile(t, p.path("drops/campaign/2026-11-28.csv"), testkit.Profiles2("@p2,"+guid2+",2026-11-28 09:00:00.000Z,false,false"))
	r := p.run(t)
	if !strings.Contains(r.stdout, " pending_not_seen=1 pending_oldest=") || !strings.Contains(r.stdout, " pending_written_again=1") {
		t.Fatalf("summary: %s", r.stdout)
	}
	families := parseMetrics(t, p.path("optsync.prom"))
	if got := families["optsync_last_run_pending_writes_not_seen"].Metric[0].Gauge.GetValue(); got != 1 {
		t.Errorf("pending writes not seen: %v", got)
	}
	if got := families["optsync_last_run_pending_writes_oldest_age_seconds"].Metric[0].Gauge.GetValue(); got <= 0 || got > 60 {
		t.Errorf("oldest pending write's age: %v s", got)
	}
	runs := p.cli(t, "runs")
	if !strings.Contains(runs.stdout, "PENDING NOT SEEN") || !strings.Contains(runs.stdout, "1 (oldest ") {
		t.Fatalf("runs:\n%s", runs.stdout)
	}
	// The import: the drop shows the opt-out; nothing is pending any more.
	testkit.WriteFile(t, p.path("drops/campaign/2026-11-29.csv"), testkit.Profiles2("@p2,"+guid2+",2026-11-29 09:00:00.000Z,true,false"))
	r = p.run(t)
	if !strings.Contains(r.stdout, " pending_not_seen=0 ") {
		t.Fatalf("after the import: %s", r.stdout)
	}
	families = parseMetrics(t, p.path("optsync.prom"))
	if got := families["optsync_last_run_pending_writes_not_seen"].Metric[0].Gauge.GetValue(); got != 0 {
		t.Errorf("pending writes not seen after the import: %v", got)
	}
}
