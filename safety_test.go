package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"optsync/fixtures/testkit"
	"optsync/load/show"
	"optsync/state"
	"optsync/transform"
)

// people writes one export per system from rows "d,c,dTime,cTime" per
// contact n (d and c: true, false or blank).
type person struct {
	n                    int
	d, c                 string
	dTime, cTime         string
	noContact, noProfile bool
}

func exports(people []person) (d365, campaign string) {
	var ds, cs []string
	for _, p := range people {
		if !p.noContact {
			ds = append(ds, fmt.Sprintf("%s,%s,%s", testkit.GUID(p.n), p.dTime, p.d))
		}
		if !p.noProfile {
			cs = append(cs, fmt.Sprintf("@p%d,%s,%s,%s", p.n, testkit.GUID(p.n), p.cTime, p.c))
		}
	}
	return testkit.Contacts(ds...), testkit.Profiles(cs...)
}

const (
	older = "2026-11-20T08:00:00Z"
	newer = "2026-11-20T10:00:00Z"
	cOld  = "2026-11-20 09:00:00.000Z"
)

// agreed is n people opted out on both sides (from), and m in step and not
// opted out after them.
func agreed(from, optedOut, notOptedOut int) []person {
	var ps []person
	for i := range optedOut + notOptedOut {
		v := "true"
		if i >= optedOut {
			v = "false"
		}
		ps = append(ps, person{n: from + i, d: v, c: v, dTime: newer, cTime: cOld})
	}
	return ps
}

func fivePercent(direction string) string {
	return strings.Replace(fmt.Sprintf(onePairConfig, direction, "newest"), `"100%"`, `"5%"`, 1)
}

// TestOneResubscribeInANightlyDropPasses: under "5%", a quiet night's one
// legitimate re-subscribe goes through — 5 % of what is at stake, never
// below min_optin, not 5 % of the night's two compared pairs.
func TestOneResubscribeInANightlyDropPasses(t *testing.T) {
	p := newProject(t, strings.Replace(fmt.Sprintf(dropConfig, ""), `"100%"`, `"5%"`, 1))
	night1(t, p)
	p.run(t)
	// Contact 2 (opted out of email on both sides since night 1) opts back
	// in through Dynamics.
	testkit.WriteFile(t, p.path("drops/d365/2026-11-28.csv"), testkit.Contacts2(guid2+",2026-11-28T01:00:00Z,false,false"))
	r := p.run(t)
	audit := p.out(t, "audit", r.runID)
	if len(audit) != 1 || audit[0]["old_value"] != "true" || audit[0]["new_value"] != "false" || !strings.Contains(r.stdout, "opt_outs_cleared=1") {
		t.Fatalf("the re-subscribe: %v\n%s", audit, r.stdout)
	}
}

// TestInterruptedBackfillFinishedByRunPasses: a backfill that passes the
// limit is killed after its first transaction; the next nightly run reads
// only the contacts it did not commit and clears their opt-outs, which are
// few of those at stake (though all of that run's pairs).
func TestInterruptedBackfillFinishedByRunPasses(t *testing.T) {
	p := newProject(t, strings.Replace(fmt.Sprintf(dropConfig, ""), `"100%"`, `"5%"`, 1))
	people := agreed(1, 300, 85) // 385 contacts in step, 300 of them opted out
	var tail []person
	for n := 386; n <= 400; n++ { // 15 re-subscribes in Dynamics, newer
		tail = append(tail, person{n: n, d: "false", c: "true", dTime: newer, cTime: cOld})
	}
	// Two pairs, as dropConfig maps them; the phone flags stay false.
	write := func(d365, campaign string, ps []person) {
		var ds, cs []string
		for _, x := range ps {
			ds = append(ds, fmt.Sprintf("%s,%s,%s,false", testkit.GUID(x.n), x.dTime, x.d))
			cs = append(cs, fmt.Sprintf("@p%d,%s,%s,%s,false", x.n, testkit.GUID(x.n), x.cTime, x.c))
		}
		testkit.WriteFile(t, p.path(d365), testkit.Contacts2(ds...))
		testkit.WriteFile(t, p.path(campaign), testkit.Profiles2(cs...))
	}
	write("full/d365.csv", "full/campaign.csv", append(append([]person{}, people...), tail...))
	// 15 of the 315 opt-outs at stake (4.8 %): within 5 %.
	_, _, stderr, signaled := helperProcessEnv(t, []string{"OPTSYNC_HELPER_CHUNK=385"}, "kill-after-first-chunk",
		"--config", p.config, "backfill", "--d365-csv", p.path("full/d365.csv"), "--campaign-csv", p.path("full/campaign.csv"))
	if !signaled {
		t.Fatalf("the backfill was meant to be killed after its first transaction:\n%s", stderr)
	}
	if tot := checkTotalsPairs(t, p, 2); tot.D365 != 385 || tot.OptOutSum() != 300 {
		t.Fatalf("after the kill: %+v", tot)
	}
	// The night's drop holds the 15 contacts not committed.
	write("drops/d365/tail.csv", "drops/campaign/tail.csv", tail)
	r := p.cli(t, "run")
	if r.code != 0 || !strings.Contains(r.stdout, "compared=30 pairs (15 contacts)") || !strings.Contains(r.stdout, "opt_outs_cleared=15") {
		t.Fatalf("the run finishing the backfill: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if tot := checkTotalsPairs(t, p, 2); tot.D365 != 400 || tot.OptOutSum() != 300 {
		t.Fatalf("after the run: %+v", tot)
	}
}

func checkTotalsPairs(t *testing.T, p *project, pairs int) state.Totals {
	t.Helper()
	all := []transform.Pair{{D365: "donotemail", Campaign: "blackListEmail"}, {D365: "donotphone", Campaign: "blackListPhone"}}
	st, err := state.OpenReadOnly(p.path("optsync.db"), all[:pairs])
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	kept, err := st.Totals()
	if err != nil {
		t.Fatal(err)
	}
	full, err := st.Recount()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(kept, full) {
		t.Fatalf("kept totals %+v differ from a full recount %+v", kept, full)
	}
	return kept
}

// TestMaxOptinIsAShareOfKnownOptOuts: with 400 opt-outs agreed, a backfill
// that would clear 24 (6 %) stops, names the share and the limit, records
// would_clear and no writes (history and metrics); 20 (5 %) go through.
func TestMaxOptinIsAShareOfKnownOptOuts(t *testing.T) {
	for _, tc := range []struct {
		clears int
		stops  bool
	}{{24, true}, {20, false}} {
		t.Run(fmt.Sprint(tc.clears), func(t *testing.T) {
			p := newProject(t, fivePercent("bidirectional")+"metrics_file: optsync.prom\n")
			base := agreed(1, 400, 100)
			d, c := exports(base)
			testkit.WriteFile(t, p.path("d365.csv"), d)
			testkit.WriteFile(t, p.path("campaign.csv"), c)
			if r := p.backfill(t); r.code != 0 {
				t.Fatalf("first backfill: exit %d\n%s%s", r.code, r.stdout, r.stderr)
			}
			for i := range tc.clears { // Dynamics opts them back in, later
				base[i].d, base[i].dTime = "false", "2026-11-21T10:00:00Z"
			}
			d, c = exports(base)
			testkit.WriteFile(t, p.path("d365.csv"), d)
			r := p.backfill(t)
			if !tc.stops {
				if r.code != 0 || !strings.Contains(r.stdout, "opt_outs_cleared=20") {
					t.Fatalf("5 %%: exit %d\n%s%s", r.code, r.stdout, r.stderr)
				}
				return
			}
			if r.code != exitSafety {
				t.Fatalf("exit %d, want 4\n%s%s", r.code, r.stdout, r.stderr)
			}
			want := "safety stop: this run would clear 24 of 400 known opt-outs (6 %), limit 20 (safety.max_optin 5% of 400 known opt-outs). Nothing was written."
			if !strings.Contains(r.stdout, want) || !strings.Contains(r.stdout, testkit.GUID(1)+" profile @p1: d365->campaign blackListEmail true → false (rule only-d365-changed)") {
				t.Fatalf("message:\n%s\nwant %s", r.stdout, want)
			}
			if table := p.cli(t, "runs").stdout; !strings.Contains(table, "safety-stop  4     0               0               0 (would clear 24)") {
				t.Errorf("runs table:\n%s", table)
			}
			var runs []state.Run
			if err := json.Unmarshal([]byte(p.cli(t, "runs", "--format", "json").stdout), &runs); err != nil {
				t.Fatal(err)
			}
			c0 := runs[0].Counts
			if runs[0].Outcome != "safety-stop" || c0["would_clear"] != 24 || c0["d365->campaign"] != 0 || c0["campaign->d365"] != 0 ||
				c0["opt_outs_cleared"] != 0 || c0["rule:only-d365-changed"] != 0 || c0["known_opt_outs"] != 400 || c0["max_optin_limit"] != 20 {
				t.Fatalf("the stop's record: %s %v", runs[0].Outcome, c0)
			}
			m := parseMetrics(t, p.path("optsync.prom"))
			if v := m["optsync_last_run_would_clear"].Metric[0].Gauge.GetValue(); v != 24 {
				t.Errorf("would_clear metric %v", v)
			}
			if v := m["optsync_last_run_opt_outs_cleared"].Metric[0].Gauge.GetValue(); v != 0 {
				t.Errorf("opt_outs_cleared metric %v", v)
			}
			for _, w := range m["optsync_last_run_writes"].Metric {
				if w.Gauge.GetValue() != 0 {
					t.Errorf("a stopped run's writes metric: %v", w)
				}
			}
			if v := m["optsync_last_run_exit_code"].Metric[0].Gauge.GetValue(); v != exitSafety {
				t.Errorf("exit code metric %v", v)
			}
		})
	}
}

// TestHeaderOnlyExportStops: an export with its header only, against a
// state that knows records on that side, stops with exit 4 whatever the
// limit, naming the side; state's data stays byte for byte as it was (only
// the run history records the stop). Both sides.
func TestHeaderOnlyExportStops(t *testing.T) {
	for _, side := range []string{"Dynamics", "Campaign"} {
		t.Run(side, func(t *testing.T) {
			// Even a limit that would allow everything to be missing.
			p := newProject(t, strings.Replace(fmt.Sprintf(onePairConfig, "bidirectional", "newest"), `max_optin: "100%"`, "max_optin: \"100%\"\n  max_missing: \"100%\"", 1))
			d, c := exports(agreed(1, 3, 2))
			testkit.WriteFile(t, p.path("d365.csv"), d)
			testkit.WriteFile(t, p.path("campaign.csv"), c)
			if r := p.backfill(t); r.code != 0 {
				t.Fatal(r.stderr)
			}
			before := testkit.StateData(t, p.path("optsync.db"))
			if side == "Dynamics" {
				testkit.WriteFile(t, p.path("d365.csv"), testkit.Contacts())
			} else {
				testkit.WriteFile(t, p.path("campaign.csv"), testkit.Profiles())
			}
			r := p.backfill(t)
			if r.code != exitSafety {
				t.Fatalf("exit %d, want 4\n%s%s", r.code, r.stdout, r.stderr)
			}
			record := map[string]string{"Dynamics": "contacts", "Campaign": "profiles"}[side]
			if !strings.Contains(r.stdout, "safety stop: the "+side+" input") || !strings.Contains(r.stdout, "has no rows, and state knows 5 "+record+" from "+side) ||
				!strings.Contains(r.stdout, testkit.GUID(1)) {
				t.Fatalf("message:\n%s", r.stdout)
			}
			if after := testkit.StateData(t, p.path("optsync.db")); !reflect.DeepEqual(before, after) {
				t.Fatal("a stopped run changed state")
			}
			// The first backfill's four files; of the stopped run, its report only.
			csvs, _ := filepath.Glob(p.path("out/*.csv"))
			if partial, _ := filepath.Glob(p.path("out/*.partial")); len(csvs) != 4 || len(partial) != 0 {
				t.Fatalf("a stopped run left files: %v %v", csvs, partial)
			}
			runs := p.cli(t, "runs")
			if !strings.Contains(runs.stdout, "safety-stop") {
				t.Fatalf("the stop is not in the history:\n%s", runs.stdout)
			}
		})
	}
}

// TestShrinkGuard: a full read lacking more than max_missing (10 %) of the
// records state knows on a side stops before anything is written or
// dropped, naming the side, the counts and the first examples; within the
// limit, or with --allow-missing, it goes on; a first run is not affected.
func TestShrinkGuard(t *testing.T) {
	p := newProject(t, fmt.Sprintf(onePairConfig, "bidirectional", "newest"))
	all := agreed(1, 10, 10)
	// First run: half the profiles missing is no shrink, nothing was known.
	first := append([]person{}, all...)
	for i := range 10 {
		first[i].noProfile = true
	}
	d, c := exports(first)
	testkit.WriteFile(t, p.path("d365.csv"), d)
	testkit.WriteFile(t, p.path("campaign.csv"), c)
	if r := p.backfill(t); r.code != 0 {
		t.Fatalf("first run: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	d, c = exports(all)
	testkit.WriteFile(t, p.path("campaign.csv"), c)
	if r := p.backfill(t); r.code != 0 {
		t.Fatalf("all profiles back: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	before := testkit.StateData(t, p.path("optsync.db"))
	// 3 of 20 contacts missing (15 %), 2 of 20 profiles (10 %, allowed).
	shrunk := append([]person{}, all...)
	for _, i := range []int{4, 9, 14} {
		shrunk[i].noContact = true
	}
	shrunk[0].noProfile, shrunk[1].noProfile = true, true
	d, c = exports(shrunk)
	testkit.WriteFile(t, p.path("d365.csv"), d)
	testkit.WriteFile(t, p.path("campaign.csv"), c)
	r := p.backfill(t)
	if r.code != exitSafety {
		t.Fatalf("exit %d, want 4\n%s%s", r.code, r.stdout, r.stderr)
	}
	want := "safety stop: the Dynamics input (" + p.path("d365.csv") + ") lacks 3 of the 20 contacts state knows from Dynamics (15 %); safety.max_missing 10% allows 2. Nothing was written or dropped."
	if !strings.Contains(r.stdout, want) || strings.Contains(r.stdout, "Campaign input") {
		t.Fatalf("message:\n%s\nwant %s", r.stdout, want)
	}
	for _, n := range []int{5, 10, 15} {
		if !strings.Contains(r.stdout, "contact "+testkit.GUID(n)+" (Dynamics record last read") {
			t.Errorf("example %s missing:\n%s", testkit.GUID(n), r.stdout)
		}
	}
	if after := testkit.StateData(t, p.path("optsync.db")); !reflect.DeepEqual(before, after) {
		t.Fatal("a stopped run changed state")
	}
	// Once, with --allow-missing: the missing contacts are taken as gone.
	r = p.backfill(t, "--allow-missing")
	if r.code != 0 {
		t.Fatalf("--allow-missing: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if tot := checkTotalsPairs(t, p, 1); tot.D365 != 17 || tot.Campaign != 18 {
		t.Fatalf("after --allow-missing: %+v", tot)
	}
	// A disabled run decides and drops nothing: complete exports pass.
	testkit.WriteFile(t, p.config, fmt.Sprintf(onePairConfig, "disabled", "newest"))
	d, c = exports(all)
	testkit.WriteFile(t, p.path("d365.csv"), d)
	testkit.WriteFile(t, p.path("campaign.csv"), c)
	if r := p.backfill(t); r.code != 0 {
		t.Fatalf("disabled: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestTotalsEqualARecountAfterRuns runs a sequence of every kind of run
// (backfills, runs over drops, a reset, a removed mapping, a kill after the
// first transaction) and checks after each that the totals state keeps
// equal a full recount.
func TestTotalsEqualARecountAfterRuns(t *testing.T) {
	p := newProject(t, fmt.Sprintf(dropConfig, ""))
	night1(t, p)
	p.run(t)
	checkTotalsPairs(t, p, 2)
	testkit.WriteFile(t, p.path("drops/campaign/2026-11-28.csv"), testkit.Profiles2("@p2,"+guid2+",2026-11-28 09:00:00.000Z,false,true", "@p4,"+testkit.GUID(4)+",2026-11-28 09:00:00.000Z,true,true"))
	p.run(t)
	checkTotalsPairs(t, p, 2)
	if r := p.cli(t, "state", "reset", "--field", "donotphone"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	checkTotalsPairs(t, p, 2)
	// A backfill killed after its first transaction of two contacts.
	var ds, cs []string
	for n := 1; n <= 9; n++ {
		ds = append(ds, fmt.Sprintf("%s,2026-11-29T01:00:00Z,true,%v", testkit.GUID(n), n%2 == 0))
		cs = append(cs, fmt.Sprintf("@p%d,%s,2026-11-29 00:00:00.000Z,%v,false", n, testkit.GUID(n), n%3 == 0))
	}
	testkit.WriteFile(t, p.path("full/d.csv"), testkit.Contacts2(ds...))
	testkit.WriteFile(t, p.path("full/c.csv"), testkit.Profiles2(cs...))
	backfill := []string{"--config", p.config, "backfill", "--d365-csv", p.path("full/d.csv"), "--campaign-csv", p.path("full/c.csv")}
	if _, _, stderr, signaled := helperProcessEnv(t, []string{"OPTSYNC_HELPER_CHUNK=2"}, "kill-after-first-chunk", backfill...); !signaled {
		t.Fatalf("not killed:\n%s", stderr)
	}
	checkTotalsPairs(t, p, 2)
	if r := runCLI(t, backfill...); r.code != 0 {
		t.Fatalf("backfill after the kill: %d %s", r.code, r.stderr)
	}
	checkTotalsPairs(t, p, 2)
	// The phone mapping removed: its opt-outs leave the totals.
	testkit.WriteFile(t, p.config, strings.Replace(fmt.Sprintf(dropConfig, ""), "  - d365: donotphone\n    campaign: blackListPhone\n", "", 1))
	testkit.WriteFile(t, p.path("drops/d365/2026-11-30.csv"), testkit.Contacts2(guid3+",2026-11-30T01:00:00Z,false"))
	if r := p.cli(t, "run"); r.code != 0 {
		t.Fatalf("run after removing a mapping: %d %s", r.code, r.stderr)
	}
	tot := checkTotalsPairs(t, p, 1)
	if tot.D365 != 9 || tot.OptOutSum() == 0 {
		t.Fatalf("totals at the end: %+v", tot)
	}
}

// TestAuditExplainsTheInSyncContact: a person whose flags agree, about whom
// nothing was ever decided, still gets an answer: the agreement, since
// which run, what each side last read.
func TestAuditExplainsTheInSyncContact(t *testing.T) {
	p := newProject(t, fmt.Sprintf(dropConfig, ""))
	night1(t, p)
	r1 := p.run(t)
	r := p.cli(t, "audit", "--contact", guid1)
	for _, want := range []string{
		"contact " + guid1 + ", profile @p1: what state holds now (as of the last commit)",
		"Dynamics: last read with modifiedon 2026-11-27T01:00:00Z",
		"Campaign: last read with lastModified 2026-11-27T00:30:00Z",
		"donotemail ↔ blackListEmail", "not opted out", "run " + r1.runID,
		"donotemail=false", "blackListEmail=false",
		"history: no decisions recorded for this contact",
	} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Fatalf("audit --contact of an in-sync contact lacks %q: exit %d\n%s%s", want, r.code, r.stdout, r.stderr)
		}
	}
	r = p.cli(t, "audit", "--contact", guid1, "--format", "json")
	var answer show.Contact
	if err := json.Unmarshal([]byte(r.stdout), &answer); err != nil {
		t.Fatalf("json: %v\n%s", err, r.stdout)
	}
	if !answer.Known || len(answer.Pairs) != 2 || answer.Pairs[0].AgreedOptedOut != "false" || answer.Pairs[0].AgreedSince == nil ||
		answer.Pairs[0].AgreedSince.RunID != r1.runID || answer.History == nil || len(answer.History) != 0 {
		t.Fatalf("json: %+v", answer)
	}
	// Never seen: said so.
	r = p.cli(t, "audit", "--contact", testkit.GUID(99))
	if r.code != 0 || !strings.Contains(r.stdout, "state has never seen this contact") {
		t.Fatalf("unknown contact: exit %d\n%s", r.code, r.stdout)
	}
	// --field narrows both parts; a field that is not mapped is an error.
	r = p.cli(t, "audit", "--contact", guid2, "--field", "blackListPhone")
	if r.code != 0 || strings.Contains(r.stdout, "donotemail ↔") || !strings.Contains(r.stdout, "donotphone ↔ blackListPhone") {
		t.Fatalf("--field: exit %d\n%s", r.code, r.stdout)
	}
	r = p.cli(t, "audit", "--contact", guid2, "--field", "blacklistemail")
	if r.code != exitUsage || !strings.Contains(r.stderr, "--field blacklistemail is not a mapped field; the mapped fields are donotemail, blackListEmail, donotphone, blackListPhone") {
		t.Fatalf("unknown --field: exit %d\n%s", r.code, r.stderr)
	}
	// state export --contact: that contact's rows only.
	r = p.cli(t, "state", "export", "--contact", strings.ToUpper(guid2))
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[1], guid2+",@p2,donotemail,blackListEmail,true,") {
		t.Fatalf("state export --contact: exit %d\n%s", r.code, r.stdout)
	}
	if !bytes.Contains([]byte(lines[0]), []byte("agreed_since")) {
		t.Fatalf("header: %s", lines[0])
	}
}

// A run a safety limit stops writes no update file, so it writes no
// pending write again either (issue 14's re-emitted rows are writes): its
// record counts none, while the writes not yet seen stay counted.
func TestSafetyStopWritesNoPendingWriteAgain(t *testing.T) {
	p := newProject(t, fmt.Sprintf(onePairConfig, "bidirectional", "newest"))
	var d, c []string
	for n := 1; n <= 3; n++ {
		d = append(d, testkit.GUID(n)+",2026-03-01T10:00:00Z,true")
		c = append(c, fmt.Sprintf("@p%d,%s,2026-03-01 09:00:00.000Z,false", n, testkit.GUID(n)))
	}
	testkit.WriteFile(t, p.path("d365.csv"), testkit.Contacts(d...))
	testkit.WriteFile(t, p.path("campaign.csv"), testkit.Profiles(c...))
	if r := p.backfill(t); r.code != 0 || !strings.Contains(r.stdout, "d365->campaign=3") {
		t.Fatalf("first backfill: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// The profiles were edited before the update file was imported (the
	// opt-outs are written again), and the Dynamics export lacks contact 3.
	c = c[:0]
	for n := 1; n <= 3; n++ {
		c = append(c, fmt.Sprintf("@p%d,%s,2026-03-02 09:00:00.000Z,false", n, testkit.GUID(n)))
	}
	testkit.WriteFile(t, p.path("d365.csv"), testkit.Contacts(d[:2]...))
	testkit.WriteFile(t, p.path("campaign.csv"), testkit.Profiles(c...))
	if r := p.backfill(t); r.code != exitSafety {
		t.Fatalf("second backfill: exit %d, want %d\n%s%s", r.code, exitSafety, r.stdout, r.stderr)
	}
	var runs []state.Run
	if err := json.Unmarshal([]byte(p.cli(t, "runs", "--format", "json").stdout), &runs); err != nil {
		t.Fatal(err)
	}
	if c0 := runs[0].Counts; runs[0].Outcome != "safety-stop" || c0["pending_written_again"] != 0 || c0["pending_not_seen"] != 3 {
		t.Fatalf("the stop's record: %s %v", runs[0].Outcome, c0)
	}
	if _, err := os.Stat(p.path(filepath.Join("out", "campaign-updates-"+runs[0].ID+".csv"))); !os.IsNotExist(err) {
		t.Fatalf("the stopped run left an update file: %v", err)
	}
}

// TestShrinkGuardCountsProfilesByPKey: the Campaign side of the shrink
// guard counts profiles, by PKey: a profile that moved to another contact
// (Campaign relinked it) is in the export, not missing; one gone from it is.
func TestShrinkGuardCountsProfilesByPKey(t *testing.T) {
	p := newProject(t, fmt.Sprintf(onePairConfig, "bidirectional", "newest"))
	all := agreed(1, 10, 10)
	d, c := exports(all)
	testkit.WriteFile(t, p.path("d365.csv"), d)
	testkit.WriteFile(t, p.path("campaign.csv"), c)
	if r := p.backfill(t); r.code != 0 {
		t.Fatalf("first run: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// 3 of the 20 profiles now name contacts new to state: counted by
	// contact, 15 % of them would be missing (max_missing allows 10 %).
	_, c = exports(all[3:])
	var moved []string
	for n := 1; n <= 3; n++ {
		moved = append(moved, fmt.Sprintf("@p%d,%s,%s,%s", n, testkit.GUID(20+n), cOld, "true"))
	}
	testkit.WriteFile(t, p.path("campaign.csv"), c+strings.Join(moved, "\n")+"\n")
	if r := p.backfill(t); r.code != 0 {
		t.Fatalf("relinked profiles: exit %d, want 0\n%s%s", r.code, r.stdout, r.stderr)
	}
	// 3 of the 20 gone from the export: a shrink.
	before := testkit.StateData(t, p.path("optsync.db"))
	_, c = exports(all[3:])
	testkit.WriteFile(t, p.path("campaign.csv"), c)
	r := p.backfill(t)
	if r.code != exitSafety {
		t.Fatalf("3 profiles gone: exit %d, want 4\n%s%s", r.code, r.stdout, r.stderr)
	}
	if want := "lacks 3 of the 20 profiles state knows from Campaign (15 %)"; !strings.Contains(r.stdout, want) {
		t.Fatalf("message:\n%s\nwant %s", r.stdout, want)
	}
	if after := testkit.StateData(t, p.path("optsync.db")); !reflect.DeepEqual(before, after) {
		t.Fatal("a stopped run changed state")
	}
}
