package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"optsync/fixtures/d365sim"
	"optsync/fixtures/testkit"
)

func TestD365EndToEndTwice(t *testing.T) {
	p := newAPIProject(t, 12, "  target: api\n  page_size: 5\n  batch_size: 2\n")
	r := p.cli(t, "run")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	// Contacts 4 and 8 are opted out in Campaign only: Dynamics is newer, so
	// Campaign is cleared in the update file; 3, 6, 9, 12 opted out in
	// Dynamics only go to Campaign; 12 is opted out on both.
	audit := p.out(t, "audit", r.runID)
	if len(audit) != 5 {
		t.Fatalf("want 5 decisions, got %d: %v", len(audit), audit)
	}
	var pages int
	for _, req := range p.dsim.Requests() {
		if req.Method == "GET" && strings.HasSuffix(req.Path, "/contacts") {
			pages++
			if strings.Contains(req.Query, "skiptoken") && strings.Contains(req.Query, "$select") == false {
				t.Errorf("a next link was not followed as given: %s", req.Query)
			}
		}
	}
	if pages != 3 {
		t.Fatalf("12 contacts at 5 a page: want 3 page reads, got %d", pages)
	}
	// Second run: nothing changed anywhere, so nothing is written.
	r = p.cli(t, "run")
	if r.code != 0 {
		t.Fatalf("second run: exit %d\n%s", r.code, r.stderr)
	}
	if got := p.out(t, "audit", r.runID); len(got) != 0 {
		t.Fatalf("second run wrote %v", got)
	}
	if patches, _ := p.dsim.Stats(); patches != 0 {
		t.Fatalf("no Dynamics write was due, but %d PATCHes were sent", patches)
	}
}

func TestD365WritesThroughBatchAndDelta(t *testing.T) {
	p := newAPIProject(t, 8, "  target: api\n")
	r := p.cli(t, "run")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	// Campaign 4 and 8 opted out and older: first sight, Dynamics newer,
	// so Campaign is cleared (update file); nothing goes to Dynamics yet.
	if patches, _ := p.dsim.Stats(); patches != 0 {
		t.Fatalf("patches %d", patches)
	}
	// Night 2: Campaign opts contact 5 out (newer); Dynamics deletes 7 and
	// a user opts 2 out in Dynamics.
	testkit.WriteFile(t, p.path("drops/campaign/2.csv"), campaignOptOuts("2026-11-21 09:00:00.000Z", 5))
	p.dsim.Delete("00000000-0000-0000-0000-000000000007")
	p.dsim.SetField("00000000-0000-0000-0000-000000000002", "donotemail", testkit.Bool(true))
	r = p.cli(t, "run")
	if r.code != 0 {
		t.Fatalf("night 2: exit %d\n%s", r.code, r.stderr)
	}
	if v := p.donotemail(t, 5); v == nil || !*v {
		t.Fatalf("contact 5 should be opted out in Dynamics now: %v", v)
	}
	audit := p.out(t, "audit", r.runID)
	got := map[string]string{}
	for _, a := range audit {
		got[a["contact_id"][len(a["contact_id"])-1:]] = a["direction"] + " " + a["rule"] + " " + a["outcome"]
	}
	want := map[string]string{"5": "campaign->d365 only-campaign-changed applied", "2": "d365->campaign only-d365-changed applied"}
	if len(got) != 2 || got["5"] != want["5"] || got["2"] != want["2"] {
		t.Fatalf("night 2 audit %v, want %v", got, want)
	}
	if !strings.Contains(r.stdout, "deleted_in_d365=1") {
		t.Fatalf("the deletion was not counted: %s", r.stdout)
	}
	// The delta read asked only for changes: no full page of 8.
	reqs := p.dsim.Requests()
	var deltaReads int
	for _, q := range reqs {
		if q.Method == "GET" && strings.Contains(q.Query, "deltatoken") {
			deltaReads++
		}
	}
	if deltaReads == 0 {
		t.Fatalf("night 2 did not follow the stored delta link")
	}
	out := p.path("export.csv")
	p.cli(t, "state", "export", "--output", out)
	b, _ := os.ReadFile(out)
	if strings.Contains(string(b), "00000000-0000-0000-0000-000000000007") {
		t.Fatalf("the deleted contact kept its snapshot")
	}
}

func TestD365ExpiredDeltaFallsBackToFullRead(t *testing.T) {
	p := newAPIProject(t, 6, "")
	if r := p.cli(t, "run"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	p.dsim.ExpireDeltaTokens()
	r := p.cli(t, "run")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	// Every contact was read again, and none had changed: none is compared
	// (a read of the changes alone would not have seen them).
	if !strings.Contains(r.stderr, "reading every contact again") || !strings.Contains(r.stdout, "compared=0 pairs") || !strings.Contains(r.stdout, "unchanged=6") {
		t.Fatalf("no full read after the refused delta link:\n%s\n%s", r.stdout, r.stderr)
	}
	if got := p.out(t, "audit", r.runID); len(got) != 0 {
		t.Fatalf("a full read of unchanged contacts wrote %v", got)
	}
}

func TestD365RetryAfterIsHonoured(t *testing.T) {
	p := newAPIProject(t, 3, "")
	p.dsim.Throttle(2*time.Second, 1)
	if r := p.cli(t, "run"); r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	reqs := p.dsim.Requests()
	for i, q := range reqs {
		if q.Status == 429 {
			if i+1 >= len(reqs) {
				t.Fatal("nothing after the 429")
			}
			var next d365sim.RequestLog
			for _, n := range reqs[i+1:] {
				if !strings.Contains(n.Path, "oauth2") {
					next = n
					break
				}
			}
			if gap := next.Time.Sub(q.Time); gap < 2*time.Second {
				t.Fatalf("the next API request came %v after a 429 with Retry-After: 2", gap)
			}
			return
		}
	}
	t.Fatal("the simulator never answered 429")
}

func TestD365TokenExpiryAndFaultsAreRetried(t *testing.T) {
	p := newAPIProject(t, 20, "  target: api\n  page_size: 4\n  max_tries: 12\n")
	p.dsim.ExpireTokens()
	p.dsim.SetFailRate(0.3)
	p.dsim.SetResetRate(0.2)
	r := p.cli(t, "run")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	if !strings.Contains(r.stdout, "compared=20 pairs") {
		t.Fatalf("not every contact was read: %s", r.stdout)
	}
	var s5xx int
	for _, q := range p.dsim.Requests() {
		if q.Status >= 500 {
			s5xx++
		}
	}
	if s5xx == 0 {
		t.Fatalf("no 5xx was served; the test proves nothing")
	}
	// The expired token: the client held none yet, so it got a fresh one;
	// expire again mid-run through a hook and the run still completes.
	p.dsim.SetFailRate(0)
	p.dsim.SetResetRate(0)
	testkit.WriteFile(t, p.path("drops/campaign/2.csv"), campaignOptOuts("2026-11-22 09:00:00.000Z", 2))
	r = p.cliWith(t, hooks{afterDecide: func(context.Context) { p.dsim.ExpireTokens() }}, "run")
	if r.code != 0 {
		t.Fatalf("token expired mid-run: exit %d\n%s", r.code, r.stderr)
	}
	// The write after the expiry got a 401, then went through with a new token.
	reqs := p.dsim.Requests()
	last := reqs[len(reqs)-1]
	if last.Method != "POST" || !strings.HasSuffix(last.Path, "$batch") || last.Status != 200 {
		t.Fatalf("the last request was %s %s %d, want the $batch after a new token", last.Method, last.Path, last.Status)
	}
	var after401 bool
	for _, q := range reqs[len(reqs)-4:] {
		after401 = after401 || q.Status == 401
	}
	if !after401 {
		t.Fatal("no 401 was served before the write went through")
	}
	if v := p.donotemail(t, 2); v == nil || !*v {
		t.Fatalf("contact 2 was not written after the token expired")
	}
}

func TestD365WatermarkWithoutChangeTracking(t *testing.T) {
	p := newAPIProject(t, 5, "  change_tracking: false\n  overlap: 10m\n")
	if r := p.cli(t, "run"); r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	first := len(p.dsim.Requests())
	for _, q := range p.dsim.Requests() {
		if strings.Contains(q.Query, "deltatoken") || strings.Contains(q.Query, "track-changes") {
			t.Fatalf("change tracking used although disabled: %s", q.Query)
		}
	}
	p.dsim.SetField(testkit.GUID(2), "donotemail", testkit.Bool(true))
	r := p.cli(t, "run")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	var filter string
	for _, q := range p.dsim.Requests()[first:] {
		if q.Method == "GET" && strings.HasSuffix(q.Path, "/contacts") {
			filter = q.Query
		}
	}
	// The watermark is the latest modifiedon read (2026-11-20T10:00:00Z),
	// less the 10-minute overlap.
	// a space is %20, never '+': only Dataverse reads '+' as a space
	if !strings.Contains(filter, "$filter=modifiedon%20gt%202026-11-20T09%3A50%3A00Z") {
		t.Fatalf("second read's filter %q, want modifiedon gt 2026-11-20T09:50:00Z", filter)
	}
	audit := p.out(t, "audit", r.runID)
	if len(audit) != 1 || audit[0]["contact_id"] != testkit.GUID(2) {
		t.Fatalf("audit %v", audit)
	}
}

func TestD365RefusedWritesAreQueued(t *testing.T) {
	p := newAPIProject(t, 6, "  target: api\n")
	if r := p.cli(t, "run"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	// Night 2: Campaign opts 1, 2 and 5 out. Contact 2 was also edited in
	// Dynamics (another column), so this run reads it with its ETag; between
	// the read and the write a user edits it again (412 on the stale ETag)
	// and contact 5 is deleted (404).
	p.dsim.SetField("00000000-0000-0000-0000-000000000002", "donotphone", testkit.Bool(true))
	testkit.WriteFile(t, p.path("drops/campaign/2.csv"), campaignOptOuts("2026-11-21 09:00:00.000Z", 1, 2, 5, 4))
	// Contact 4 is not read this run (it did not change in Dynamics): its
	// write goes with the row version state kept from the last read, so an
	// edit made meanwhile is refused too, not overwritten.
	r := p.cliWith(t, hooks{afterDecide: func(context.Context) {
		p.dsim.SetField("00000000-0000-0000-0000-000000000002", "donotbulkemail", testkit.Bool(true))
		p.dsim.Delete("00000000-0000-0000-0000-000000000005")
		p.dsim.SetField("00000000-0000-0000-0000-000000000004", "donotphone", testkit.Bool(true))
	}}, "run")
	if r.code != exitWriteFailed {
		t.Fatalf("exit %d, want 3\n%s", r.code, r.stderr)
	}
	outcomes := map[string]string{}
	for _, a := range p.out(t, "audit", r.runID) {
		outcomes[a["contact_id"][len(a["contact_id"])-1:]] = a["outcome"] + " " + a["error"]
	}
	if !strings.HasPrefix(outcomes["1"], "applied") || !strings.Contains(outcomes["2"], "failed HTTP 412") ||
		!strings.Contains(outcomes["4"], "failed HTTP 412") || !strings.Contains(outcomes["5"], "failed HTTP 404") {
		t.Fatalf("outcomes %v", outcomes)
	}
	if v := p.donotemail(t, 1); v == nil || !*v {
		t.Fatalf("contact 1 was not written")
	}
	// Night 3: the queue is read again; contact 2 is decided again with its
	// new version and written; 5 is gone and leaves the queue.
	r = p.cli(t, "run")
	if r.code != 0 {
		t.Fatalf("night 3: exit %d\n%s", r.code, r.stderr)
	}
	if v := p.donotemail(t, 2); v == nil || !*v {
		t.Fatalf("contact 2 was not written on the retry")
	}
	runs := p.cli(t, "runs")
	if !strings.Contains(runs.stdout, "failed-writes") {
		t.Fatalf("runs:\n%s", runs.stdout)
	}
}

func TestD365ValidateOnline(t *testing.T) {
	p := newAPIProject(t, 1, "")
	// A mapping to a field that does not exist, and one that is not boolean.
	cfg, _ := os.ReadFile(p.config)
	bad := strings.Replace(string(cfg), "  - d365: donotemail\n    campaign: blackListEmail\n",
		"  - d365: donotemail\n    campaign: blackListEmail\n  - d365: xx_missing\n    campaign: blackListMobile\n  - d365: modifiedon\n    campaign: blackListPhone\n", 1)
	testkit.WriteFile(t, p.config, bad)
	r := p.cli(t, "validate", "--online")
	if r.code != exitUsage || !strings.Contains(r.stdout, "xx_missing does not exist") || !strings.Contains(r.stdout, "modifiedon is DateTime, not Boolean") {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	testkit.WriteFile(t, p.config, string(cfg))
	if r := p.cli(t, "validate", "--online"); r.code != 0 || !strings.Contains(r.stdout, "token ok") {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
}

func TestD365SecretIsNeverWritten(t *testing.T) {
	p := newAPIProject(t, 4, "  target: api\n")
	testkit.WriteFile(t, p.path("drops/campaign/2.csv"), campaignOptOuts("2026-11-21 09:00:00.000Z", 1))
	r := p.cli(t, "--log-level", "debug", "run")
	// A failing run too: a wrong secret.
	t.Setenv("OPTSYNC_TEST_D365_SECRET", testSecret+"-wrong")
	bad := p.cli(t, "--log-level", "debug", "run")
	if bad.code == 0 || !strings.Contains(bad.stderr, "access token") {
		t.Fatalf("a wrong secret: exit %d\n%s", bad.code, bad.stderr)
	}
	texts := []string{r.stdout, r.stderr, bad.stdout, bad.stderr}
	err := filepath.Walk(p.dir, func(path string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			b, _ := os.ReadFile(path)
			texts = append(texts, string(b))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range texts {
		if strings.Contains(s, testSecret) || strings.Contains(s, "Vr8~q") {
			t.Fatalf("the client secret was written somewhere:\n%.400s", s)
		}
	}
}

func TestD365MalformedPageIsFetchedAgain(t *testing.T) {
	p := newAPIProject(t, 9, "  page_size: 4\n")
	p.dsim.MalformAnswers(1)
	r := p.cli(t, "run")
	if r.code != 0 || !strings.Contains(r.stdout, "compared=9 pairs") {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
}

// A mapping added between runs needs both sides read for it: a system read
// through its API is read in full, not from its delta link.
func TestD365AddedMappingReadsInFull(t *testing.T) {
	p := newAPIProject(t, 4, "")
	if r := p.cli(t, "run"); r.code != 0 {
		t.Fatal(r.stderr)
	}
	cfg, _ := os.ReadFile(p.config)
	testkit.WriteFile(t, p.config, strings.Replace(string(cfg), "    campaign: blackListEmail\n",
		"    campaign: blackListEmail\n  - d365: donotphone\n    campaign: blackListPhone\n", 1))
	testkit.WriteFile(t, p.path("drops/campaign/2.csv"), testkit.Profiles2())
	n := len(p.dsim.Requests())
	r := p.cli(t, "run")
	if r.code != 0 || !strings.Contains(r.stderr, "mapping added") {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	for _, q := range p.dsim.Requests()[n:] {
		if strings.Contains(q.Query, "deltatoken") {
			t.Fatalf("the run after adding a mapping followed the old delta link: %s", q.Query)
		}
	}
}

// Dynamics read from CSV drops and written through the API: the retry
// queue is read again through the API, and a drop row of a queued contact
// is superseded by it. The reject names the queue as a source, not as a
// file: "retry queue (dataverse) line 1", the name it has always had.
func TestD365QueueReadAgainSupersedesADropRow(t *testing.T) {
	p := newAPIProject(t, 4, "  target: api\n")
	cfg, _ := os.ReadFile(p.config)
	testkit.WriteFile(t, p.config, strings.Replace(string(cfg), "d365:\n  source: api\n", "d365:\n  source: csv\n  csv: drops/d365\n", 1))
	var rows []string
	for i := 1; i <= 4; i++ {
		rows = append(rows, fmt.Sprintf("%s,2026-11-20T10:00:00Z,%v", testkit.GUID(i), i%3 == 0))
	}
	testkit.WriteFile(t, p.path("drops/d365/1.csv"), testkit.Contacts(rows...))
	if r := p.cli(t, "run"); r.code != 0 {
		t.Fatalf("night 1: exit %d\n%s", r.code, r.stderr)
	}
	// Night 2: Campaign opts 2 out; a user edits 2 in Dynamics before the
	// write: refused, queued.
	testkit.WriteFile(t, p.path("drops/campaign/2.csv"), testkit.Profiles("@p2,"+testkit.GUID(2)+",2026-11-21 09:00:00.000Z,true"))
	r := p.cliWith(t, hooks{afterDecide: func(context.Context) {
		p.dsim.SetField(testkit.GUID(2), "donotphone", testkit.Bool(true))
	}}, "run")
	if r.code != exitWriteFailed {
		t.Fatalf("night 2: exit %d, want %d\n%s", r.code, exitWriteFailed, r.stderr)
	}
	// Night 3: an export still holding 2 as it was arrives; the queue,
	// read again through the API, is the later row.
	testkit.WriteFile(t, p.path("drops/d365/2.csv"), testkit.Contacts(rows[1]))
	r = p.cli(t, "run")
	if r.code != 0 {
		t.Fatalf("night 3: exit %d\n%s", r.code, r.stderr)
	}
	var got []string
	for _, rj := range p.out(t, "rejects", r.runID) {
		got = append(got, filepath.Base(rj["source"])+" "+rj["line"]+" "+rj["id"]+" "+rj["reason"])
	}
	want := "2.csv 2 " + testkit.GUID(2) + " superseded: retry queue (dataverse) line 1 is a later row for this contact"
	if len(got) != 1 || got[0] != want {
		t.Fatalf("rejects %q, want %q", got, want)
	}
}
