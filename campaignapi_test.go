package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"optsync/fixtures/campaignsim"
	"optsync/fixtures/testkit"
)

func (p *simProject) patches(since int) []campaignsim.RequestLog {
	var out []campaignsim.RequestLog
	for _, r := range p.csim.Requests()[since:] {
		if r.Method == "PATCH" {
			out = append(out, r)
		}
	}
	return out
}

func TestCampaignFullScanWritesOnlyDifferences(t *testing.T) {
	p := newCampaignProject(t, 12, false, "  source: api\n  target: api\n  page_size: 5\n")
	r := p.cli(t, "run")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	var lists int
	for _, q := range p.csim.Requests() {
		if q.Method == "GET" && strings.HasSuffix(q.Path, "/profile") {
			lists++
		}
	}
	if lists != 3 {
		t.Fatalf("12 profiles at 5 a page: want 3 list reads, got %d", lists)
	}
	// Dynamics (newer) wins the differences: 3, 6, 9 opt out in Campaign; 4
	// and 8 are cleared there. 12 is opted out on both: no write.
	for i, want := range map[int]bool{3: true, 6: true, 9: true, 4: false, 8: false, 12: true, 1: false} {
		if v := p.blackListEmail(t, i); v == nil || *v != want {
			t.Errorf("profile %d: blackListEmail %v, want %v", i, v, want)
		}
	}
	patches := p.patches(0)
	if len(patches) != 5 {
		t.Fatalf("want 5 PATCHes (only differing values), got %d", len(patches))
	}
	for _, q := range patches {
		if q.Body != `{"blackListEmail":true}` && q.Body != `{"blackListEmail":false}` {
			t.Fatalf("a PATCH carried more than the changed field: %s", q.Body)
		}
	}
	// A full scan again: the snapshots say nothing differs; nothing is sent.
	n := len(p.csim.Requests())
	r = p.cli(t, "run")
	if r.code != 0 || len(p.patches(n)) != 0 {
		t.Fatalf("second full scan: exit %d, %d PATCHes\n%s", r.code, len(p.patches(n)), r.stderr)
	}
}

func TestCampaignChangedFilterWatermark(t *testing.T) {
	p := newCampaignProject(t, 6, false, "  source: api\n  target: api\n  changed_filter: {name: Changed, param: since}\n  overlap: 10m\n")
	if r := p.cli(t, "run"); r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	n := len(p.csim.Requests())
	// A user unsubscribes profile 1 in Campaign.
	p.csim.SetField("@p1", "blackListEmail", testkit.Bool(true))
	r := p.cli(t, "run")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	var query string
	for _, q := range p.csim.Requests()[n:] {
		if strings.Contains(q.Path, "/byChanged") {
			query = q.Query
		}
	}
	q, _ := url.ParseQuery(query)
	since, err := time.Parse("2006-01-02 15:04:05.000Z", q.Get("since"))
	if err != nil {
		t.Fatalf("the second run did not ask for changes since its watermark: %q", query)
	}
	// The watermark is the latest lastModified the first run read (09:00;
	// its own writes come after and are read again, harmlessly), less the
	// 10-minute overlap.
	if want := time.Date(2026, 11, 20, 8, 50, 0, 0, time.UTC); !since.Equal(want) {
		t.Fatalf("since=%s, want %s", since, want)
	}
	audit := p.out(t, "audit", r.runID)
	if len(audit) != 1 || audit[0]["contact_id"] != testkit.GUID(1) || audit[0]["direction"] != "campaign->d365" {
		t.Fatalf("audit %v", audit)
	}
	if upd := p.out(t, "d365-updates", r.runID); len(upd) != 1 || upd[0]["donotemail"] != "true" {
		t.Fatalf("d365 updates %v", upd)
	}
}

// runUnsubscribedMeanwhile makes a project of 8 contacts through both APIs
// and runs it once: profile 4 is about to be cleared (Dynamics newer says
// may contact) when its person unsubscribes from SMS in Campaign, so the
// re-read guard refuses that write (exit 3) and queues the contact.
func runUnsubscribedMeanwhile(t *testing.T) (*simProject, cliResult) {
	t.Helper()
	p := newCampaignProject(t, 8, false, "  source: api\n  target: api\n")
	r := p.cliWith(t, hooks{afterDecide: func(context.Context) {
		p.csim.SetField("@p4", "blackListMobile", testkit.Bool(true))
	}}, "run")
	if r.code != exitWriteFailed {
		t.Fatalf("exit %d, want 3\n%s", r.code, r.stderr)
	}
	return p, r
}

// The re-read guard: Campaign has no conditional write, so a write that
// clears an opt-out reads the profile again first; one unsubscribed again
// meanwhile keeps its opt-out and waits in the retry queue.
func TestCampaignReReadGuardKeepsAFreshOptOut(t *testing.T) {
	p, r := runUnsubscribedMeanwhile(t)
	if v := p.blackListEmail(t, 4); v == nil || !*v {
		t.Fatalf("profile 4 lost its opt-out: %v", v)
	}
	if v := p.blackListEmail(t, 8); v == nil || *v {
		t.Fatalf("profile 8 (not touched meanwhile) should be cleared: %v", v)
	}
	var failed []string
	for _, a := range p.out(t, "audit", r.runID) {
		if a["outcome"] == "failed" {
			failed = append(failed, a["contact_id"]+" "+a["error"])
		}
	}
	if len(failed) != 1 || !strings.HasPrefix(failed[0], testkit.GUID(4)) || !strings.Contains(failed[0], "changed in Campaign since it was read") {
		t.Fatalf("failed rows %v", failed)
	}
	// Next run: the queued contact is decided again against the profile as
	// it is now. Its change makes Campaign the newer side: the opt-out
	// stands and goes to Dynamics.
	r = p.cli(t, "run")
	if r.code != 0 {
		t.Fatalf("retry run: exit %d\n%s", r.code, r.stderr)
	}
	if v := p.blackListEmail(t, 4); v == nil || !*v {
		t.Fatalf("profile 4 after the retry: %v", v)
	}
	var got []string
	for _, a := range p.out(t, "audit", r.runID) {
		got = append(got, a["contact_id"]+" "+a["direction"]+" "+a["new_value"]+" "+a["rule"])
	}
	if len(got) != 1 || got[0] != testkit.GUID(4)+" campaign->d365 true conflict-campaign-newer" {
		t.Fatalf("retry run decided %v", got)
	}
}

// A queued contact the next run keeps out (its Dynamics row is bad) is
// not decided, so the write it waits for is still to do: it stays in the
// retry queue (it once left it, and waited for its row to change again),
// and the run after, which reads its row fixed, decides it and settles it.
func TestQueuedContactKeptOutStaysQueued(t *testing.T) {
	p, r := runUnsubscribedMeanwhile(t)
	queued := func(night string) bool {
		t.Helper()
		a := p.cli(t, "audit", "--contact", testkit.GUID(4), "--format", "json")
		if a.code != 0 {
			t.Fatalf("%s: audit: exit %d\n%s", night, a.code, a.stderr)
		}
		return strings.Contains(a.stdout, `"queued_retry"`)
	}
	if !queued("night 1") {
		t.Fatal("night 1: contact 4's refused write is not queued")
	}
	// night k: Dynamics exports contact 4 with donotemail as given.
	night := func(k int, donotemail string) {
		t.Helper()
		testkit.WriteFile(t, p.path(fmt.Sprintf("drops/d365/%d.csv", k)), testkit.Contacts(testkit.GUID(4)+","+testkit.D365At(seedD365Time.Add(time.Duration(k)*24*time.Hour))+","+donotemail))
		if r = p.cli(t, "run"); r.code != 0 {
			t.Fatalf("night %d: exit %d\n%s", k, r.code, r.stderr)
		}
	}
	night(2, "maybe") // no boolean
	bad := false
	for _, rj := range p.out(t, "rejects", r.runID) {
		bad = bad || rj["id"] == testkit.GUID(4) && strings.Contains(rj["reason"], "is not a boolean")
	}
	if !bad {
		t.Fatalf("night 2: rejects %v, want contact 4's bad row", p.out(t, "rejects", r.runID))
	}
	for _, a := range p.out(t, "audit", r.runID) {
		if a["contact_id"] == testkit.GUID(4) {
			t.Fatalf("night 2 decided contact 4, kept out: %v", a)
		}
	}
	if !queued("night 2") {
		t.Fatal("night 2: contact 4, kept out, left the retry queue")
	}
	night(3, "false") // its row fixed
	if queued("night 3") {
		t.Fatal("night 3: contact 4, decided, is still queued")
	}
}

func TestCampaignFaultsAndTokens(t *testing.T) {
	p := newCampaignProject(t, 10, false, "  source: api\n  target: api\n  page_size: 3\n  max_tries: 12\n")
	p.csim.Throttle(time.Second, 1)
	p.csim.ExpireTokens()
	p.csim.SetFailRate(0.3)
	r := p.cliWith(t, hooks{afterDecide: func(context.Context) { p.csim.ExpireTokens() }}, "run")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	var s401, s429, s5xx int
	var after429 time.Duration
	reqs := p.csim.Requests()
	for i, q := range reqs {
		switch {
		case q.Status == 401:
			s401++
		case q.Status == 429:
			s429++
			for _, n := range reqs[i+1:] {
				if !strings.Contains(n.Path, "/ims/") {
					after429 = n.Time.Sub(q.Time)
					break
				}
			}
		case q.Status >= 500:
			s5xx++
		}
	}
	if s401 == 0 || s429 == 0 || s5xx == 0 {
		t.Fatalf("faults served: 401 %d, 429 %d, 5xx %d; the test proves nothing", s401, s429, s5xx)
	}
	if after429 < time.Second {
		t.Fatalf("the next request came %v after a 429 with Retry-After: 1", after429)
	}
	for i, want := range map[int]bool{3: true, 4: false, 8: false} {
		if v := p.blackListEmail(t, i); v == nil || *v != want {
			t.Errorf("profile %d: %v, want %v", i, v, want)
		}
	}
}

// The vendor's own setup: Campaign's changes come from the daily export
// file, writes go through the API.
func TestCampaignCSVSourceAPITarget(t *testing.T) {
	p := newCampaignProject(t, 4, false, "  source: csv\n  target: api\n  csv: drops/campaign\n")
	testkit.WriteFile(t, p.path("drops/campaign/1.csv"), testkit.Profiles(
		"@p1,"+testkit.GUID(1)+",2026-11-20 09:00:00.000Z,false",
		"@p2,"+testkit.GUID(2)+",2026-11-20 09:00:00.000Z,false",
		"@p3,"+testkit.GUID(3)+",2026-11-20 09:00:00.000Z,false",
		"@p4,"+testkit.GUID(4)+",2026-11-20 09:00:00.000Z,true"))
	r := p.cli(t, "run")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	if v := p.blackListEmail(t, 3); v == nil || !*v {
		t.Fatalf("profile 3 not written through the API: %v", v)
	}
	if v := p.blackListEmail(t, 4); v == nil || *v {
		t.Fatalf("profile 4 not cleared: %v", v)
	}
	if _, err := os.Stat(p.path(filepath.Join("out", "campaign-updates-"+r.runID+".csv"))); !os.IsNotExist(err) {
		t.Fatalf("a Campaign update file was written although the target is the API")
	}
}

func TestCampaignValidateOnlineAndSecret(t *testing.T) {
	p := newCampaignProject(t, 2, false, "  source: api\n  target: api\n  changed_filter: {name: Changed, param: since}\n")
	r := p.cli(t, "validate", "--online")
	if r.code != 0 || !strings.Contains(r.stdout, "organization acme answers") {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	cfg, _ := os.ReadFile(p.config)
	testkit.WriteFile(t, p.config, strings.Replace(strings.Replace(string(cfg), "name: Changed", "name: Nope", 1),
		"    campaign: blackListEmail\n", "    campaign: blackListEmail\n  - d365: donotphone\n    campaign: ccpaOptOut\n", 1))
	r = p.cli(t, "validate", "--online")
	if r.code != exitUsage || !strings.Contains(r.stdout, "changed_filter") {
		t.Fatalf("a filter that does not answer: exit %d\n%s", r.code, r.stdout)
	}
	testkit.WriteFile(t, p.config, string(cfg))
	t.Setenv("OPTSYNC_TEST_CAMPAIGN_SECRET", campaignSecret+"x")
	bad := p.cli(t, "--log-level", "debug", "run")
	if bad.code == 0 {
		t.Fatal("a wrong secret ran")
	}
	t.Setenv("OPTSYNC_TEST_CAMPAIGN_SECRET", campaignSecret)
	good := p.cli(t, "--log-level", "debug", "run")
	texts := []string{bad.stdout, bad.stderr, good.stdout, good.stderr}
	_ = filepath.Walk(p.dir, func(path string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			b, _ := os.ReadFile(path)
			texts = append(texts, string(b))
		}
		return nil
	})
	for _, s := range texts {
		if strings.Contains(s, campaignSecret) {
			t.Fatalf("the Campaign secret was written somewhere:\n%.300s", s)
		}
	}
}

// Both systems through their APIs, three nights of changes made through
// the simulators' own endpoints, and the final values of every contact in
// both checked against the rules.
func TestBothAPIsThreeNights(t *testing.T) {
	const n = 12
	p := newCampaignProject(t, n, true, "  source: api\n  target: api\n  changed_filter: {name: Changed, param: since}\n")
	want := map[int]bool{}
	for i := 1; i <= n; i++ {
		want[i] = i%3 == 0 // night 1: first sight, Dynamics newer, Dynamics wins
	}
	check := func(night string) {
		t.Helper()
		for i := 1; i <= n; i++ {
			d := p.donotemail(t, i)
			c := p.blackListEmail(t, i)
			if d == nil || c == nil || *d != want[i] || *c != want[i] {
				t.Errorf("%s: contact %d: dynamics %v, campaign %v, want both %v", night, i, deref(d), deref(c), want[i])
			}
		}
	}
	night := func(name string) {
		t.Helper()
		if r := p.cli(t, "run"); r.code != 0 {
			t.Fatalf("%s: exit %d\n%s\n%s", name, r.code, r.stdout, r.stderr)
		}
		check(name)
	}
	night("night 1")

	// Night 2: a person unsubscribes in Campaign; another opts back in in
	// Dynamics (an opt-out cleared, guarded by the re-read).
	p.csim.SetField("@p1", "blackListEmail", testkit.Bool(true))
	p.dsim.SetField(testkit.GUID(3), "donotemail", testkit.Bool(false))
	want[1], want[3] = true, false
	night("night 2")

	// Night 3: one change on each side, and a Dynamics edit of another
	// column that changes no mapped value.
	p.csim.SetField("@p7", "blackListEmail", testkit.Bool(true))
	p.dsim.SetField(testkit.GUID(10), "donotemail", testkit.Bool(true))
	p.dsim.SetField(testkit.GUID(11), "donotphone", testkit.Bool(true))
	want[7], want[10] = true, true
	night("night 3")

	// Night 4, nothing changed: not a single write is sent again.
	dp, _ := p.dsim.Stats()
	cp := p.csim.Patches()
	night("night 4")
	if dp2, _ := p.dsim.Stats(); dp2 != dp || p.csim.Patches() != cp {
		t.Fatalf("a quiet night sent writes: Dynamics %d → %d, Campaign %d → %d", dp, dp2, cp, p.csim.Patches())
	}
}

func deref(b *bool) string {
	if b == nil {
		return "null"
	}
	return fmt.Sprint(*b)
}

// A profile is its PKey, through the API as in files (issue 8): after a
// full scan shows @p2 linked to no contact and @p3 linked to contact 2,
// contact 3's change is not written to @p3 (its profile left it), and
// contact 2 is decided against @p3 as at first sight, not held back as
// having a second profile.
func TestCampaignAPIProfileRelinked(t *testing.T) {
	p := newCampaignProject(t, 4, false, "  source: api\n  target: api\n")
	if r := p.cli(t, "run"); r.code != 0 {
		t.Fatalf("night 1: exit %d\n%s", r.code, r.stderr)
	}
	moved := time.Date(2026, 11, 21, 8, 0, 0, 0, time.UTC)
	p.csim.Add(campaignsim.Profile{PKey: "@p2", LastModified: moved, Fields: map[string]*bool{"blackListEmail": testkit.Bool(false)}})
	p.csim.Add(campaignsim.Profile{PKey: "@p3", ExternalID: testkit.GUID(2), LastModified: moved, Fields: map[string]*bool{"blackListEmail": testkit.Bool(true)}})
	testkit.WriteFile(t, p.path("drops/d365/2.csv"), testkit.Contacts(testkit.GUID(3)+",2026-11-21T09:00:00Z,false"))
	n := len(p.csim.Requests())
	// The full scan has no profile for contact 3 any more: 1 of the 4
	// records state knows on the Campaign side (the shrink guard counts by
	// contact), more than max_missing's 10 %.
	r := p.cli(t, "run", "--allow-missing")
	if r.code != 0 {
		t.Fatalf("night 2: exit %d\n%s", r.code, r.stderr)
	}
	if patches := p.patches(n); len(patches) != 0 {
		t.Fatalf("night 2 wrote to Campaign: %+v", patches)
	}
	if v := p.blackListEmail(t, 3); v == nil || !*v {
		t.Fatalf("@p3 (contact 2's now) lost its opt-out: %v", v)
	}
	upd := p.out(t, "d365-updates", r.runID)
	if len(upd) != 1 || upd[0]["contactid"] != testkit.GUID(2) || upd[0]["donotemail"] != "true" {
		t.Fatalf("want contact 2 opted out from @p3 (first sight, Campaign newer), got %v\n%s", upd, r.stdout)
	}
	if rej := p.out(t, "rejects", r.runID); len(rej) != 0 {
		t.Fatalf("rejects %v", rej)
	}
}

// A run that reads Campaign in full (a full scan) has every profile, as a
// backfill has: a profile state links to a contact and that the scan does
// not hold is gone. So a new profile for that contact is the contact's,
// decided as at first sight — not held back as a second profile until a
// backfill — and a contact of state without a row in the run (so decided
// by nobody) loses the gone profile in state, where before it kept it as if
// it still were its own.
func TestCampaignFullScanProfileGone(t *testing.T) {
	p := newCampaignProject(t, 4, false, "  source: api\n  target: api\n") // no changed_filter: every read is a full scan
	if r := p.cli(t, "run"); r.code != 0 {
		t.Fatalf("night 1: exit %d\n%s", r.code, r.stderr)
	}
	// Contact 2's profile @p2 is deleted and a new one, @p9, opted out,
	// links to contact 2; contact 3's profile @p3 is deleted. Neither
	// contact changes in Dynamics.
	if !p.csim.Delete("@p2") || !p.csim.Delete("@p3") {
		t.Fatal("profiles not deleted")
	}
	p.csim.Add(campaignsim.Profile{PKey: "@p9", ExternalID: testkit.GUID(2), LastModified: time.Date(2026, 11, 21, 8, 0, 0, 0, time.UTC),
		Fields: map[string]*bool{"blackListEmail": testkit.Bool(true)}})
	testkit.WriteFile(t, p.path("drops/d365/2.csv"), testkit.Contacts(testkit.GUID(1)+",2026-11-20T10:00:00Z,false"))
	// Contact 3 has no profile in the full scan: 1 of the 4 records state
	// knows on the Campaign side (the shrink guard counts by contact; @p9
	// stands for contact 2's), more than max_missing's 10 %. The night
	// stops, and changes nothing, until told the profile is really gone.
	r := p.cli(t, "run")
	if r.code != exitSafety || !strings.Contains(r.stderr, "lacks 1 of the 4 profiles state knows") {
		t.Fatalf("night 2 without --allow-missing: exit %d\n%s", r.code, r.stderr)
	}
	r = p.cli(t, "run", "--allow-missing")
	if r.code != 0 {
		t.Fatalf("night 2: exit %d\n%s", r.code, r.stderr)
	}
	if rej := p.out(t, "rejects", r.runID); len(rej) != 0 {
		t.Fatalf("rejects %v", rej)
	}
	upd := p.out(t, "d365-updates", r.runID)
	if len(upd) != 1 || upd[0]["contactid"] != testkit.GUID(2) || upd[0]["donotemail"] != "true" {
		t.Fatalf("want contact 2 opted out from @p9 (first sight, Campaign newer), got %v\n%s", upd, r.stdout)
	}
	out := p.path("export.csv")
	if er := p.cli(t, "state", "export", "--output", out); er.code != 0 {
		t.Fatalf("state export: exit %d\n%s", er.code, er.stderr)
	}
	_, rows := testkit.ReadCSV(t, out)
	pkeys := map[string]string{}
	for _, row := range rows {
		pkeys[row["contact_id"]] = row["profile_pkey"]
	}
	if pkeys[testkit.GUID(2)] != "@p9" || pkeys[testkit.GUID(3)] != "" || pkeys[testkit.GUID(4)] != "@p4" {
		t.Fatalf("profiles in state after night 2: %v; want contact 2 on @p9, contact 3 on none, contact 4 still on @p4", pkeys)
	}
}
