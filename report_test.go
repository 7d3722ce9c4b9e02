package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"optsync/fixtures/testkit"
	"optsync/state"
)

// pageCounts reads the "every count" table of a report back.
func pageCounts(t *testing.T, page string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, m := range regexp.MustCompile(`<tr data-count="([^"]+)">.*?<td class="n">([0-9,]+)</td></tr>`).FindAllStringSubmatch(page, -1) {
		n, err := strconv.Atoi(strings.ReplaceAll(m[2], ",", ""))
		if err != nil {
			t.Fatal(err)
		}
		out[strings.ReplaceAll(m[1], "&gt;", ">")] = n
	}
	return out
}

func readReport(t *testing.T, path string) string {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("report: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s is %v, want 0600", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestDemoBackfillLeavesReport: the demo backfill leaves report-<run>.html
// beside its audit file, holding the counts the run history holds, and the
// history keeps what an old run's report needs.
func TestDemoBackfillLeavesReport(t *testing.T) {
	p := demoProject(t)
	res := p.backfill(t, "--allow-mass-optin") // the demo's first sync clears more than 5 % of its opt-outs
	if res.code != 0 {
		t.Fatalf("exit %d\n%s", res.code, res.stderr)
	}
	runs := runsJSON(t, p)
	run := runs[0]
	page := readReport(t, p.path(filepath.Join("out", "report-"+res.runID+".html")))
	got := pageCounts(t, page)
	if len(got) != len(run.Counts) {
		t.Errorf("the page shows %d counts, the run recorded %d", len(got), len(run.Counts))
	}
	for k, v := range run.Counts {
		if got[k] != v {
			t.Errorf("count %s: page %d, runs %d", k, got[k], v)
		}
	}
	unknown := 0
	for k, n := range run.Counts {
		if strings.HasPrefix(k, "skipped:unknown-value: ") { // the reason names the blank side
			unknown += n
		}
	}
	if unknown != run.Counts["skipped"] || run.Counts["skipped"] == 0 {
		t.Errorf("skipped pairs by reason not recorded: %v", run.Counts)
	}
	if run.Version == "" || run.Config == nil || len(run.Config.Mappings) != 5 || run.Config.MaxOptin != "5%" || run.Config.Limit != 112 {
		t.Errorf("version %q, config %+v", run.Version, run.Config)
	}
	// Rejects: by reason, first examples with file, line and id; the id
	// only where its shape was checked.
	total, sawUnchecked := 0, false
	for _, g := range run.Rejects {
		total += g.Count
		for _, e := range g.Examples {
			if e.Source == "" || e.Line == 0 {
				t.Errorf("example without file or line: %+v", e)
			}
			if strings.Contains(g.Reason, "is not a GUID") {
				sawUnchecked = true
				if e.ID != "" {
					t.Errorf("an unreadable contactid was kept: %+v", e)
				}
			}
		}
		for _, q := range regexp.MustCompile(`"([^"]*)"`).FindAllStringSubmatch(g.Reason, -1) {
			if q[1] != "…" {
				t.Errorf("cell text kept in a reason: %q", g.Reason)
			}
		}
	}
	if total != run.Counts["rejected"] || !sawUnchecked {
		t.Errorf("rejects by reason add up to %d of %d (unreadable ids seen: %v): %+v", total, run.Counts["rejected"], sawUnchecked, run.Rejects)
	}
	if !strings.Contains(page, `line 307`) || !strings.Contains(page, "campaign_profiles.csv") {
		t.Error("the page lacks the first reject examples")
	}
}

// TestReportSinceThreeNights: three demo nights, then report --since 30d
// aggregates them, lists them, and charts one point per night.
func TestReportSinceThreeNights(t *testing.T) {
	p := demoProject(t)
	var ids []string
	for night := 1; night <= 3; night++ {
		if night == 2 { // a profile moves on in Campaign between the exports
			b, _ := os.ReadFile(p.path("campaign_profiles.csv"))
			testkit.WriteFile(t, p.path("campaign_profiles.csv"), strings.Replace(string(b), "2026", "2027", 1))
		}
		res := p.backfill(t, "--allow-mass-optin")
		if res.code != 0 {
			t.Fatalf("night %d: exit %d\n%s", night, res.code, res.stderr)
		}
		ids = append(ids, res.runID)
	}
	runs := runsJSON(t, p)
	res := p.cli(t, "report", "--since", "30d")
	if res.code != 0 {
		t.Fatalf("report: exit %d\n%s", res.code, res.stderr)
	}
	path := strings.TrimSpace(res.stdout)
	if filepath.Dir(path) != p.path("out") || !strings.HasPrefix(filepath.Base(path), "report-since-") {
		t.Fatalf("report written to %q", path)
	}
	page := readReport(t, path)
	points := testkit.TrendGlyphs(page)
	if len(points) != 5 {
		t.Fatalf("trend series %v, want 5 colours", points)
	}
	for c, n := range points {
		if n != 3 {
			t.Errorf("series %s has %d points, want 3", c, n)
		}
	}
	for _, id := range ids {
		if !strings.Contains(page, `data-run="`+id+`"`) {
			t.Errorf("the period's runs do not list %s", id)
		}
	}
	sum := map[string]int{}
	for _, r := range runs {
		for k, v := range r.Counts {
			sum[k] += v
		}
	}
	got := pageCounts(t, page)
	for k, v := range sum {
		if got[k] != v {
			t.Errorf("count %s over the period: page %d, runs add up to %d", k, got[k], v)
		}
	}
	// Each reject row once, though all three nights read it.
	if n := strings.Count(page, "line 307<"); n != 1 {
		t.Errorf("line 307 shown %d times", n)
	}
	// A window without those runs has none of them.
	res = p.cli(t, "report", "--since", "2020-01-01T00:00:00Z", "--output", p.path("all.html"))
	if res.code != 0 || !strings.Contains(readReport(t, p.path("all.html")), ids[0]) {
		t.Fatalf("--output: exit %d %s", res.code, res.stderr)
	}
}

func TestReportCommand(t *testing.T) {
	p := demoProject(t)
	if r := p.cli(t, "report"); r.code != exitUsage || !strings.Contains(r.stderr, "no run recorded") {
		t.Fatalf("no runs: exit %d %s", r.code, r.stderr)
	}
	first := p.backfill(t, "--allow-mass-optin").runID
	second := p.backfill(t).runID
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"report"}, 0, "report-" + second + ".html"},
		{[]string{"report", "--run", first, "-o", "first.html"}, 0, "first.html"},
		{[]string{"report", "--run", "20200101T000000Z-000000"}, exitUsage, "no such run"},
		{[]string{"report", "--run", first, "--since", "1d"}, exitUsage, "not both"},
		{[]string{"report", "--since", "yesterday"}, exitUsage, "--since"},
	} {
		args := append([]string{"--config", p.config}, tc.args...)
		for i, a := range args {
			if a == "first.html" {
				args[i] = p.path(a)
			}
		}
		r := runCLI(t, args...)
		if r.code != tc.code || !strings.Contains(r.stdout+r.stderr, tc.want) {
			t.Errorf("%v: exit %d, want %d with %q\n%s%s", tc.args, r.code, tc.code, tc.want, r.stdout, r.stderr)
		}
	}
	// The report of an old run is that run's, with the trend up to it.
	page := readReport(t, p.path("first.html"))
	if !strings.Contains(page, "backfill "+first) || strings.Contains(page, second) || len(testkit.TrendGlyphs(page)) != 5 {
		t.Error("report --run of the first run is not that run's")
	}
	for _, n := range testkit.TrendGlyphs(page) {
		if n != 1 {
			t.Errorf("the first run's trend has %d points, want 1", n)
		}
	}
}

// TestReportShowsFailedWrites: a write refused by the service is recorded
// with the run, message included, and shown in its report.
func TestReportShowsFailedWrites(t *testing.T) {
	p := newAPIProject(t, 6, "  target: api\n")
	if r := p.cli(t, "run"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	testkit.WriteFile(t, p.path("drops/campaign/2.csv"), campaignOptOuts("2026-11-21 09:00:00.000Z", 1, 5))
	r := p.cliWith(t, hooks{afterDecide: func(context.Context) {
		p.dsim.Delete("00000000-0000-0000-0000-000000000005")
	}}, "run")
	if r.code != exitWriteFailed {
		t.Fatalf("exit %d, want 3\n%s", r.code, r.stderr)
	}
	var run state.Run
	for _, x := range runsJSON(t, p.project) {
		if x.ID == r.runID {
			run = x
		}
	}
	if len(run.FailedWrites) != 1 || run.FailedWrites[0].Count != 1 {
		t.Fatalf("failed writes recorded: %+v", run.FailedWrites)
	}
	ex := run.FailedWrites[0].Examples[0]
	if ex.ID != "00000000-0000-0000-0000-000000000005" || ex.Source != "Dynamics 365" || ex.Field != "donotemail" || !strings.Contains(ex.Message, "404") {
		t.Fatalf("example %+v", ex)
	}
	page := readReport(t, p.path(filepath.Join("out", "report-"+r.runID+".html")))
	if !strings.Contains(page, `data-outcome="failed-writes"`) || !strings.Contains(page, "00000000-0000-0000-0000-000000000005") {
		t.Error("the report does not show the failed write")
	}
}
