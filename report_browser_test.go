package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"optsync/fixtures/testkit"
	"optsync/state"
)

// chromium finds the browser, or skips the test when there is none and CI
// did not ask for it: .ci/run installs Chromium and sets
// OPTSYNC_REQUIRE_CHROMIUM=1, so there the test always runs.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("OPTSYNC_REQUIRE_CHROMIUM") != "" {
		t.Fatal("OPTSYNC_REQUIRE_CHROMIUM is set but no Chromium is installed (apt-get install -y chromium)")
	}
	t.Skip("no Chromium installed (apt-get install -y chromium); .ci/run installs it and sets OPTSYNC_REQUIRE_CHROMIUM=1")
	return ""
}

// pageLog records what the page asked of the network and wrote to its
// console. The listener runs on chromedp's reader goroutine.
type pageLog struct {
	mu       sync.Mutex
	requests []string
	console  []string
}

func (l *pageLog) add(ev any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch e := ev.(type) {
	case *network.EventRequestWillBeSent:
		l.requests = append(l.requests, e.Request.URL)
	case *runtime.EventConsoleAPICalled:
		if e.Type == runtime.ConsoleAPICalledTypeError || e.Type == runtime.ConsoleAPICalledTypeWarning || e.Type == runtime.ConsoleAPICalledTypeAssert {
			l.console = append(l.console, string(e.Type)+": console call")
		}
	case *runtime.EventExceptionThrown:
		l.console = append(l.console, "exception: "+e.ExceptionDetails.Text)
	case *cdplog.EventEntryAdded:
		if e.Entry.Level == cdplog.EntryLevelError || e.Entry.Level == cdplog.EntryLevelWarning {
			l.console = append(l.console, string(e.Entry.Level)+": "+e.Entry.Text+" "+e.Entry.URL)
		}
	}
}

// TestReportInBrowser opens the report of a demo backfill in headless
// Chromium with the network switched off: the page asks for nothing but
// itself, logs no error, shows the counts that runs --format json holds for
// the run, and draws its charts.
func TestReportInBrowser(t *testing.T) {
	exe := chromium(t)
	p := demoProject(t)
	res := p.backfill(t, "--allow-mass-optin")
	if res.code != 0 {
		t.Fatalf("demo backfill: exit %d\n%s", res.code, res.stderr)
	}
	runs := runsJSON(t, p)
	if len(runs) != 1 || runs[0].ID != res.runID {
		t.Fatalf("runs --format json: %+v, want the one run %s", runs, res.runID)
	}
	run := runs[0]
	file := p.path(filepath.Join("out", "report-"+run.ID+".html"))

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(exe), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.NoFirstRun, chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1100, 900),
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true), chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-dev-shm-usage", true))
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()

	var log pageLog
	if err := chromedp.Do(bctx); err != nil { // start the browser and open the tab
		t.Fatalf("starting Chromium: %v", err)
	}
	if err := chromedp.Listen(bctx, log.add); err != nil {
		t.Fatal(err)
	}
	// Network off: any fetch the page tried would fail, and show up here.
	if _, err := chromedp.Call(bctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(bctx, network.EmulateNetworkConditionsByRule, network.EmulateNetworkConditionsByRuleParams{
		MatchedNetworkConditions: []*network.Conditions{{Offline: true}},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(bctx, cdplog.Enable, struct{}{}); err != nil {
		t.Fatal(err)
	}
	url := "file://" + file
	if err := chromedp.Do(bctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("opening %s: %v", url, err)
	}

	type shown struct {
		Outcome  string            `json:"outcome"`
		ExitCode string            `json:"exitCode"`
		Counts   map[string]string `json:"counts"`
		Tiles    map[string]string `json:"tiles"`
		Charts   map[string][2]float64
		Trend    map[string]int `json:"trend"`
		Title    string         `json:"title"`
	}
	got, err := chromedp.Run(bctx, chromedp.Evaluate[shown](`(() => {
		const text = (el) => el.textContent.trim();
		const counts = {}, tiles = {}, charts = {}, trend = {};
		for (const tr of document.querySelectorAll('#counts tr[data-count]')) counts[tr.dataset.count] = text(tr.querySelector('td.n'));
		for (const el of document.querySelectorAll('[data-tile]')) tiles[el.dataset.tile] = text(el.querySelector('.v'));
		for (const fig of document.querySelectorAll('figure.chart')) {
			const r = fig.querySelector('svg').getBoundingClientRect();
			charts[fig.id] = [r.width, r.height];
		}
		// One glyph (a filled circle: a path of arcs) per run and series.
		for (const p of document.querySelectorAll('#chart-trend svg path')) {
			const m = /fill:(#[0-9a-f]{6})/i.exec(p.getAttribute('style') || '');
			if (m && /A/.test(p.getAttribute('d'))) trend[m[1].toLowerCase()] = (trend[m[1].toLowerCase()] || 0) + 1;
		}
		return {outcome: document.querySelector('#outcome').dataset.outcome,
			exitCode: text(document.querySelector('#outcome [data-field=exit_code]')),
			counts, tiles, Charts: charts, trend, title: document.title};
	})()`))
	if err != nil {
		t.Fatalf("reading the page: %v", err)
	}

	if got.Outcome != run.Outcome || got.ExitCode != strconv.Itoa(run.ExitCode) {
		t.Errorf("page shows outcome %q exit %s, runs says %q exit %d", got.Outcome, got.ExitCode, run.Outcome, run.ExitCode)
	}
	if !strings.Contains(got.Title, run.ID) {
		t.Errorf("title %q does not name the run", got.Title)
	}
	for name, want := range run.Counts {
		if v, ok := got.Counts[name]; !ok || v != groupDigits(want) {
			t.Errorf("count %s: page shows %q, runs --format json has %d", name, v, want)
		}
	}
	for name := range got.Counts {
		if _, ok := run.Counts[name]; !ok {
			t.Errorf("page shows count %s that the run did not record", name)
		}
	}
	for name, v := range got.Tiles {
		if v != groupDigits(run.Counts[name]) {
			t.Errorf("tile %s shows %q, runs --format json has %d", name, v, run.Counts[name])
		}
	}
	if len(got.Tiles) < 7 {
		t.Errorf("tiles: %v", got.Tiles)
	}
	for _, id := range []string{"chart-directions", "chart-rules", "chart-trend"} {
		wh, ok := got.Charts[id]
		if !ok || wh[0] < 100 || wh[1] < 50 {
			t.Errorf("chart %s: size %v (present %v), want drawn", id, wh, ok)
		}
	}
	if len(got.Trend) != 5 {
		t.Errorf("trend glyphs by colour: %v, want one per series", got.Trend)
	}
	for c, n := range got.Trend {
		if n != 1 {
			t.Errorf("trend series %s has %d points, want 1 (one run)", c, n)
		}
	}

	png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	shot := filepath.Join(t.TempDir(), "report.png")
	if err := os.WriteFile(shot, png, 0o600); err != nil {
		t.Fatal(err)
	}
	if dir := os.Getenv("OPTSYNC_SCREENSHOT_DIR"); dir != "" { // to keep one to look at
		if err := os.WriteFile(filepath.Join(dir, "report.png"), png, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("screenshot: %s (%d bytes)", shot, len(png))

	log.mu.Lock()
	defer log.mu.Unlock()
	if !slices.Equal(log.requests, []string{url}) {
		t.Errorf("requests made by the page: %q, want only the file itself", log.requests)
	}
	if len(log.console) > 0 {
		t.Errorf("console: %q", log.console)
	}
}

func groupDigits(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// demoProject is a copy of fixtures/demo in a temporary folder.
func demoProject(t *testing.T) *project {
	t.Helper()
	p := &project{dir: t.TempDir()}
	for _, name := range []string{"optsync.yaml", "d365_contacts.csv", "campaign_profiles.csv"} {
		b, err := os.ReadFile(filepath.Join("fixtures", "demo", name))
		if err != nil {
			t.Fatal(err)
		}
		testkit.WriteFile(t, p.path(name), string(b))
	}
	p.config = p.path("optsync.yaml")
	return p
}

func runsJSON(t *testing.T, p *project) []state.Run {
	t.Helper()
	res := p.cli(t, "runs", "--format", "json")
	if res.code != 0 {
		t.Fatalf("runs: exit %d\n%s", res.code, res.stderr)
	}
	var runs []state.Run
	if err := json.Unmarshal([]byte(res.stdout), &runs); err != nil {
		t.Fatalf("runs --format json: %v\n%s", err, res.stdout)
	}
	return runs
}
