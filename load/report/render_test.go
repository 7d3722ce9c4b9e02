package report

import (
	"bytes"
	"optsync/fixtures/testkit"
	"strings"
	"testing"
	"time"
)

func sample(kind Kind) *Report {
	t0 := time.Date(2026, 11, 29, 2, 0, 0, 0, time.UTC)
	counts := map[string]int{"d365->campaign": 1200, "campaign->d365": 3, "rule:conflict-d365-newer": 1200,
		"rule:only-campaign-changed": 3, "opt_outs_cleared": 2, "rejected": 1, "failed": 1, "skipped": 4, "skipped:unknown-value": 4,
		"compared_pairs": 11668, "pending_writes_not_seen": 7}
	r := &Report{Kind: kind, Generated: t0.Add(time.Hour), Version: "v1.2.3",
		Run:    Run{ID: "20261129T020000Z-abcdef", Command: "run", Outcome: "failed-writes", ExitCode: 3, Started: t0, Ended: t0.Add(1500 * time.Millisecond), Counts: counts},
		Counts: counts,
		Rejects: []Reasons{{Reason: `donotemail "…" is not a boolean`, Count: 1,
			Examples: []Example{{Source: "/drops/d365/night.csv", Line: 17, ID: "00000000-0000-0000-0000-000000000001"}}}},
		FailedWrites: []Reasons{{Reason: "HTTP N: refused", Count: 1,
			Examples: []Example{{Source: "Campaign", ID: "00000000-0000-0000-0000-000000000002", PKey: "@p2", Field: "blackListEmail", Message: "HTTP 403: refused"}}}},
		Config: &Config{Direction: "bidirectional", Policy: "newest", MaxOptin: "5%", Limit: 583, D365: "csv → csv", Campaign: "csv → api",
			Mappings: []Mapping{{D365: "donotemail", Campaign: "blackListEmail"}, {D365: "xx_smsconsent", Campaign: "blackListMobile", Invert: true}}},
		ConfigChanges: []ConfigChange{{RunID: "20261129T020000Z-abcdef", Started: t0, Change: "policy adobe → newest"}},
	}
	for i := range 3 {
		r.Trend = append(r.Trend, Point{RunID: "r", Started: t0.Add(time.Duration(i-2) * 24 * time.Hour), Outcome: "ok",
			Counts: map[string]int{"d365->campaign": 10 * i, "rejected": i}})
	}
	if kind == Period {
		r.Since, r.Until = t0.Add(-72*time.Hour), t0.Add(time.Hour)
		r.Runs = []Run{r.Run, {ID: "20261128T020000Z-000001", Command: "run", Outcome: "ok", Started: t0.Add(-24 * time.Hour), Counts: map[string]int{}}}
	}
	return r
}

func render(t *testing.T, r *Report) string {
	t.Helper()
	var b bytes.Buffer
	if err := Render(&b, r); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestRenderRun(t *testing.T) {
	page := render(t, sample(OneRun))
	for _, want := range []string{
		`<title>optsync report: run 20261129T020000Z-abcdef</title>`,
		`data-outcome="failed-writes"`, `Failed writes`, `exit code <b data-field="exit_code">3</b>`, `1.5 s`,
		`<tr data-count="compared_pairs">`, `11,668`, `1,200`,
		// a count this package has no label for is still shown, by name
		`<tr data-count="pending_writes_not_seen"><td>pending_writes_not_seen</td>`,
		`night.csv</span> <span class="line">line 17</span>`, `HTTP 403: refused`, `@p2`,
		`opt-in (inverted)`, `policy adobe → newest`, `at most 583 opt-outs`, `Trend over the last 3 runs`,
		`id="chart-directions"`, `id="chart-rules"`, `id="chart-trend"`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	// Self-contained: nothing that a browser would fetch or run.
	for _, bad := range []string{"<script", "<link", "src=", "url(", "@import", "http://", "https://"} {
		s := strings.ReplaceAll(strings.ReplaceAll(page, `xmlns="http://www.w3.org/2000/svg"`, ""), `xmlns:xlink="http://www.w3.org/1999/xlink"`, "")
		if strings.Contains(s, bad) {
			t.Errorf("page holds %q", bad)
		}
	}
	glyphs := testkit.TrendGlyphs(page)
	if len(glyphs) != len(trendSeries) {
		t.Fatalf("trend glyphs %v, want one colour per series", glyphs)
	}
	for c, n := range glyphs {
		if n != 3 {
			t.Errorf("series %s: %d points, want 3", c, n)
		}
	}
}

func TestRenderEscapesEveryValue(t *testing.T) {
	const evil = `<script>alert(1)</script>`
	r := sample(OneRun)
	r.Run.ID, r.Run.Error, r.Version = evil, evil, evil
	r.Counts = map[string]int{"rule:" + evil: 5, "skipped:" + evil: 1, evil: 2}
	r.Rejects[0].Reason, r.Rejects[0].Examples[0].Source, r.Rejects[0].Examples[0].ID = evil, evil, evil
	r.FailedWrites[0].Examples[0].Message = evil
	r.Config.Mappings[0].D365, r.Config.Options = evil, []string{evil}
	r.ConfigChanges[0].Change = evil
	page := render(t, r)
	if strings.Contains(page, "<script") {
		i := strings.Index(page, "<script")
		t.Fatalf("unescaped value in the page: …%s…", page[max(0, i-80):min(len(page), i+40)])
	}
	if !strings.Contains(page, "&lt;script&gt;") {
		t.Fatal("the values are not in the page at all")
	}
}

func TestRenderPreviewAndPeriod(t *testing.T) {
	pre := sample(Preview)
	pre.Run.Outcome, pre.Run.Command = "planned", "plan"
	page := render(t, pre)
	if !strings.Contains(page, `data-outcome="planned"`) || !strings.Contains(page, "Nothing was written and state was not changed") ||
		!strings.Contains(page, "the last point is this preview") {
		t.Error("a plan's report is not marked as a preview")
	}
	if strings.Contains(page, `data-field="exit_code"`) {
		t.Error("a plan has no exit code to show")
	}

	page = render(t, sample(Period))
	for _, want := range []string{`data-outcome="period"`, `<b>1</b> OK`, `<b>1</b> Failed writes`,
		`data-run="20261128T020000Z-000001"`, `Runs from 2026-11-26 02:00 to 2026-11-29 03:00 UTC`, `Trend over the period's 3 runs`} {
		if !strings.Contains(page, want) {
			t.Errorf("period page lacks %q", want)
		}
	}
}

func TestRenderEmptyRun(t *testing.T) {
	// A run that failed before it counted anything still gets a page.
	r := &Report{Kind: OneRun, Run: Run{ID: "x", Command: "run", Outcome: "error", ExitCode: 2, Error: "input d365.csv does not exist"}}
	page := render(t, r)
	if !strings.Contains(page, "input d365.csv does not exist") || !strings.Contains(page, "No writes.") {
		t.Error("the error page lacks the error")
	}
}

func TestNumAndDur(t *testing.T) {
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 11668: "11,668", 1234567: "1,234,567", -4200: "-4,200"} {
		if got := num(n); got != want {
			t.Errorf("num(%d) = %q, want %q", n, got, want)
		}
	}
	for d, want := range map[time.Duration]string{0: "—", 177 * time.Millisecond: "177 ms", 3400 * time.Millisecond: "3.4 s",
		133 * time.Second: "2 min 13 s", 2*time.Hour + 5*time.Minute: "2 h 5 min"} {
		if got := dur(d); got != want {
			t.Errorf("dur(%v) = %q, want %q", d, got, want)
		}
	}
}
