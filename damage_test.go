package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"optsync/fixtures/d365sim"
	"optsync/fixtures/testkit"
	"optsync/state"
)

// One stray quote in a Campaign drop: the run stops with exit 2 naming the
// file and the line where the quote opened, marks nothing processed and
// writes nothing; once the file is fixed, the next run carries every
// unsubscribe after the quote — the ten that the old reader lost.
func TestStrayQuoteStopsTheRun(t *testing.T) {
	p := newProject(t, fmt.Sprintf(dropConfig, ""))
	var contacts, profiles []string
	for i := 1; i <= 20; i++ {
		id := testkit.GUID(i)
		contacts = append(contacts, id+",2026-11-20T10:00:00Z,false,false")
		profiles = append(profiles, fmt.Sprintf("@p%d,%s,2026-11-28 09:00:00.000Z,%v,false", i, id, i > 10))
	}
	testkit.WriteFile(t, p.path("drops/d365/2026-11-28.csv"), testkit.Contacts2(contacts...))
	broken := slices.Clone(profiles)
	broken[9] = strings.Replace(broken[9], ",2026-11-28", `,"2026-11-28`, 1) // line 11
	testkit.WriteFile(t, p.path("drops/campaign/2026-11-28.csv"), testkit.Profiles2(broken...))

	for _, cmd := range []string{"validate", "plan", "run"} {
		r := p.cli(t, cmd)
		if r.code != exitUsage || !strings.Contains(r.stderr, "2026-11-28.csv: line 11: a quoted field opened here runs to the end of the file") {
			t.Fatalf("%s: exit %d, want 2 naming the file and line 11\n%s%s", cmd, r.code, r.stdout, r.stderr)
		}
	}
	onlyReport(t, p, "line 11")
	runs := p.cli(t, "runs", "--format", "json")
	if !strings.Contains(runs.stdout, `"exit_code": 2`) {
		t.Fatalf("the stopped run is not in the history: %s", runs.stdout)
	}

	// Fixed: both files are new still, and the ten unsubscribes arrive.
	testkit.WriteFile(t, p.path("drops/campaign/2026-11-28.csv"), testkit.Profiles2(profiles...))
	r := p.run(t)
	if !strings.Contains(r.stdout, "campaign->d365=10") {
		t.Fatalf("after the fix: %s", r.stdout)
	}
	for _, u := range p.out(t, "d365-updates", r.runID) {
		if u["donotemail"] != "true" {
			t.Errorf("update %v", u)
		}
	}
}

// A drop whose rows are mostly junk is not an export: the run stops with
// exit 2 naming the file and the share, writes nothing and marks nothing
// processed. Below the share, every bad row is in the rejects file, in
// order. (fixtures/junk.sh measures 5 M junk lines against the binary.)
func TestRejectShareStopsTheRun(t *testing.T) {
	p := newProject(t, fmt.Sprintf(dropConfig, ""))
	good := func(n int) []string {
		var rows []string
		for i := 1; i <= n; i++ {
			rows = append(rows, testkit.GUID(i)+",2026-11-20T10:00:00Z,false,false")
		}
		return rows
	}
	junk := func(n int) []string {
		var rows []string
		for range n {
			rows = append(rows, "x")
		}
		return rows
	}
	testkit.WriteFile(t, p.path("drops/campaign/1.csv"), testkit.Profiles2("@p1,00000000-0000-0000-0000-000000000001,2026-11-20 09:00:00.000Z,true,false"))
	testkit.WriteFile(t, p.path("drops/d365/1.csv"), testkit.Contacts2(slices.Concat(good(10), junk(11))...))
	r := p.cli(t, "run")
	if r.code != exitUsage || !strings.Contains(r.stderr, "1.csv: 11 of its 21 rows were rejected (52.4 %), more than max_reject_share 50 %") {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	onlyReport(t, p, "max_reject_share")

	// At 50 % the file is an export with bad rows: every one reported, in
	// line order, the good rows decided.
	testkit.WriteFile(t, p.path("drops/d365/1.csv"), testkit.Contacts2(slices.Concat(junk(6), good(11), junk(5))...))
	r = p.run(t)
	rej := p.out(t, "rejects", r.runID)
	if len(rej) != 11 || !strings.Contains(r.stdout, "rejected=11") {
		t.Fatalf("rejects %v\n%s", rej, r.stdout)
	}
	for i, row := range rej {
		want := i + 2
		if i >= 6 {
			want = i + 13
		}
		if row["line"] != fmt.Sprint(want) || !strings.Contains(row["reason"], "the header has 4") {
			t.Errorf("reject %d: %v, want line %d", i, row, want)
		}
	}
	entries, _ := os.ReadDir(p.path("out"))
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".partial") {
			t.Errorf("a spill was left behind: %s", e.Name())
		}
	}
}

// A run killed after its last commit, while it wrote its report, is
// recorded as it ended (ok), not interrupted; the next run removes the
// report's temporary file all the same (the kill check found one left).
func TestPartialsOfARunKilledAfterItsCommitAreRemoved(t *testing.T) {
	p := killScenario(t)
	first := p.backfill(t)
	if first.code != 0 || first.runID == "" {
		t.Fatalf("exit %d %s", first.code, first.stderr)
	}
	left := "report-" + first.runID + ".html.5a04f027.partial"
	testkit.WriteFile(t, p.path("out/"+left), "<html>")
	if r := p.backfill(t); r.code != 0 {
		t.Fatalf("exit %d %s", r.code, r.stderr)
	}
	if _, err := os.Stat(p.path("out/" + left)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the report's temporary file of a run that ended is left: %v", err)
	}
}

// Killed runs leave their files under temporary names; the next run
// removes those of runs recorded as interrupted, and nothing else.
func TestPartialsOfInterruptedRunsAreRemoved(t *testing.T) {
	p := killScenario(t)
	for range 3 {
		if _, _, stderr, signaled := helperProcess(t, "kill-after-decide", "--config", p.config, "backfill"); !signaled {
			t.Fatalf("the helper was meant to die by SIGKILL; stderr:\n%s", stderr)
		}
	}
	partials := func() []string {
		var names []string
		entries, _ := os.ReadDir(p.path("out"))
		for _, e := range entries {
			if strings.HasSuffix(e.Name(), ".partial") {
				names = append(names, e.Name())
			}
		}
		return names
	}
	// Each run removed its killed predecessor's: only the last one's are
	// left (audit, rejects, two update files), not three runs' worth.
	if left := partials(); len(left) != 4 {
		t.Fatalf("the killed runs left %v", left)
	}
	// Not ours to remove: another run's (not interrupted), or another name.
	others := []string{"audit-20991231T000000Z-abcdef.csv.0123abcd.partial", "audit-x.csv.partial", "notes.txt.0123abcd.partial"} // as listed
	for _, n := range others {
		testkit.WriteFile(t, p.path("out/"+n), "x")
	}
	r := p.backfill(t)
	if r.code != 0 {
		t.Fatalf("exit %d %s", r.code, r.stderr)
	}
	if got := partials(); !slices.Equal(got, others) {
		t.Fatalf("after the next run: %v, want only %v", got, others)
	}
	if !strings.Contains(r.stderr, "removed the temporary files of interrupted runs") {
		t.Errorf("the removal is not logged: %s", r.stderr)
	}
}

// A throttled request waits as long as the service asks, and the waits are
// not tries: eight 429s in a row do not exhaust max_tries: 2.
func TestThrottlingIsNotATry(t *testing.T) {
	p := newCampaignProject(t, 6, false, "  source: api\n  target: api\n  max_tries: 2\n")
	p.csim.Throttle(0, 8)
	if r := p.cli(t, "run"); r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	n := 0
	for _, q := range p.csim.Requests() {
		if q.Status == 429 {
			n++
		}
	}
	if n != 8 {
		t.Fatalf("%d requests throttled, want 8", n)
	}
	if v := p.blackListEmail(t, 4); v == nil || *v {
		t.Fatalf("profile 4 not cleared: %v", v)
	}
}

// Sustained throttling is bounded by max_run_time: the run stops as on
// SIGTERM — what was applied is kept, the rest audited and queued, exit 143,
// interrupted in the history — and the next run does the rest.
func TestMaxRunTimeStopsLikeSIGTERM(t *testing.T) {
	p := newCampaignProject(t, 10, false, "  source: api\n  target: api\n  concurrency: 1\n")
	testkit.WriteFile(t, p.config, strings.Replace(testkit.ReadFile(t, p.config), "direction:", "max_run_time: 2s\ndirection:", 1))
	r := p.cliWith(t, hooks{afterDecide: func(context.Context) {
		// One call more goes through (profile 3's PATCH); every one after
		// it is told to wait an hour.
		p.csim.SetRequestLimit(1, time.Hour)
	}}, "run")
	if r.code != 143 || !strings.Contains(r.stderr, "stopped after max_run_time 2s, as on SIGTERM while writing") {
		t.Fatalf("exit %d, want 143\n%s", r.code, r.stderr)
	}
	if v := p.blackListEmail(t, 3); v == nil || !*v {
		t.Fatalf("profile 3's write, applied before the limit, was not kept: %v", v)
	}
	outcomes := map[string]string{}
	for _, a := range p.out(t, "audit", r.runID) {
		outcomes[a["profile_pkey"]] = a["outcome"]
	}
	if outcomes["@p3"] != "applied" || outcomes["@p4"] != "failed" || outcomes["@p9"] != "failed" {
		t.Fatalf("audit outcomes %v", outcomes)
	}
	runs := p.cli(t, "runs", "--format", "json")
	if !strings.Contains(runs.stdout, `"outcome": "interrupted"`) {
		t.Fatalf("history: %s", runs.stdout)
	}
	p.csim.SetRequestLimit(0, 0)
	r = p.cli(t, "run")
	if r.code != 0 {
		t.Fatalf("next run: exit %d\n%s", r.code, r.stderr)
	}
	for i, want := range map[int]bool{3: true, 4: false, 6: true, 8: false, 9: true} {
		if v := p.blackListEmail(t, i); v == nil || *v != want {
			t.Errorf("profile %d: %v, want %v", i, deref(v), want)
		}
	}
}

// A header that does not parse is a broken export, exit 2 like a missing
// column (it was exit 1, a runtime failure).
func TestUnparseableHeaderExits2(t *testing.T) {
	p := newProject(t, fmt.Sprintf(onePairConfig, "bidirectional", "newest"))
	testkit.WriteFile(t, p.path("d365.csv"), "contactid,modified\"on,donotemail\n00000000-0000-0000-0000-000000000001,2026-11-20T10:00:00Z,true\n")
	testkit.WriteFile(t, p.path("campaign.csv"), testkit.Profiles())
	for _, cmd := range []string{"backfill", "validate"} {
		r := p.cli(t, cmd)
		if r.code != exitUsage || !strings.Contains(r.stderr, "d365.csv: line 1: the header row does not parse") {
			t.Fatalf("%s: exit %d\n%s", cmd, r.code, r.stderr)
		}
	}
}

// A watermark stored in the future (kept before change times were bounded,
// or while max_clock_skew allowed it) is not used: the run reads in full,
// says so, and the real changes made since reach the other system; the new
// watermarks lie within the run's start plus max_clock_skew. (A row dated
// in the future does not move them: TestFutureDatedRecordsThroughTheAPIs.)
func TestStoredFutureWatermarkIsNotUsed(t *testing.T) {
	p := newCampaignProject(t, 4, true, "  source: api\n  target: api\n  changed_filter: {name: Changed, param: since}\n")
	cfg := testkit.ReadFile(t, p.config)
	cfg = strings.Replace(cfg, "OPTSYNC_TEST_D365_SECRET\n", "OPTSYNC_TEST_D365_SECRET\n  change_tracking: false\n", 1)
	testkit.WriteFile(t, p.config, "max_clock_skew: 2000h\n"+cfg) // a setting that let a clock 6 weeks ahead in
	ahead := time.Now().UTC().Add(1000 * time.Hour).Truncate(time.Second)
	c1, _ := p.dsim.Contact(testkit.GUID(1))
	p.dsim.Seed([]d365sim.Contact{{ID: testkit.GUID(1), ModifiedOn: ahead, Fields: c1.Fields}})
	p1, _ := p.csim.Profile("@p1")
	p1.LastModified = ahead
	p.csim.Add(p1)
	if r := p.cli(t, "run"); r.code != 0 {
		t.Fatalf("night 1: exit %d\n%s", r.code, r.stderr)
	}
	watermarks := func() (d365, campaign string) {
		st, err := state.OpenReadOnly(p.path("optsync.db"), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		d365, _ = st.Meta(state.KeyD365Watermark)
		campaign, _ = st.Meta(state.KeyCampaignWatermark)
		return d365, campaign
	}
	if d, c := watermarks(); d != ahead.Format(time.RFC3339) || c != ahead.Format(time.RFC3339Nano) {
		t.Fatalf("the setup did not store future watermarks: %q %q", d, c)
	}

	testkit.WriteFile(t, p.config, cfg) // max_clock_skew back to its default
	p.dsim.SetField(testkit.GUID(2), "donotemail", testkit.Bool(true))
	p.csim.SetField("@p4", "blackListEmail", testkit.Bool(true))
	started := time.Now()
	r := p.cli(t, "run")
	if r.code != 0 {
		t.Fatalf("night 2: exit %d\n%s", r.code, r.stderr)
	}
	for _, w := range []string{"the stored Dynamics watermark is later than the run's start plus max_clock_skew", "the stored Campaign watermark is later than the run's start plus max_clock_skew"} {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("not reported: %q", w)
		}
	}
	if v := p.blackListEmail(t, 2); v == nil || !*v {
		t.Errorf("contact 2's opt-out did not reach Campaign: %s", deref(v))
	}
	if v := p.donotemail(t, 4); v == nil || !*v {
		t.Errorf("profile @p4's opt-out did not reach Dynamics: %s", deref(v))
	}
	d, c := watermarks()
	for _, wm := range []string{d, c} {
		at, err := time.Parse(time.RFC3339Nano, wm)
		if err != nil || at.After(started.Add(time.Hour+time.Minute)) {
			t.Errorf("watermark %q after night 2: not within the run's start plus max_clock_skew", wm)
		}
	}
}
