package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"optsync/fixtures/d365sim"
	"optsync/fixtures/testkit"
)

// Issue 9 against the simulator: each point with the simulator's Dataverse
// behaviour, or with the standard variant it now also speaks.

func since(sim *d365sim.Server, n int) []d365sim.RequestLog { return sim.Requests()[n:] }

func isBatch(q d365sim.RequestLog) bool {
	return q.Method == "POST" && strings.HasSuffix(q.Path, "$batch")
}

// importCampaignUpdates does what the operator does with a night's Campaign
// update file: imports it, so that the next export shows its values (dated
// 2026-11-20 12:00, after night 1's reads), and runs the night that reads
// that export, which has nothing to write. Until an export shows it, a
// written opt-out is taken as not imported yet, and a later export showing
// the old value does not clear it (issue 14): a test that has Campaign
// clear such an opt-out imports the update file first.
func (p *simProject) importCampaignUpdates(t *testing.T, runID string) {
	t.Helper()
	var rows []string
	for _, u := range p.out(t, "campaign-updates", runID) {
		rows = append(rows, u["PKey"]+","+u["externalId"]+",2026-11-20 12:00:00.000Z,"+u["blackListEmail"])
	}
	if len(rows) == 0 {
		t.Fatalf("run %s wrote no Campaign update rows", runID)
	}
	testkit.WriteFile(t, p.path("drops/campaign/1-imported.csv"), testkit.Profiles(rows...))
	r := p.cli(t, "run")
	if r.code != 0 || !strings.Contains(r.stdout, "d365->campaign=0 campaign->d365=0") || !strings.Contains(r.stdout, "pending_not_seen=0") {
		t.Fatalf("the night that reads the imported updates: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
}

// Point 1: an ETag that is no number is sent back exactly as read — the
// one stored from an earlier night as well as one read tonight — and a
// contact saved again after it was read is refused (412), not overwritten.
func TestD365OpaqueETagIsSentBackAsRead(t *testing.T) {
	p := newAPIProjectWith(t, 6, "  target: api\n", func(o *d365sim.Options) { o.OpaqueETags = true })
	r := p.cli(t, "run")
	if r.code != 0 {
		t.Fatalf("night 1: exit %d\n%s", r.code, r.stderr)
	}
	// Night 1 opted @p3 out through the update file; it is imported, and
	// the night after reads it (contact 3 is not read again).
	p.importCampaignUpdates(t, r.runID)
	// Night 2: Campaign clears 3's opt-out and opts 1 and 2 out, later than
	// Dynamics; 2 was also edited in Dynamics, so tonight reads it with a
	// new ETag. After the read a user saves 3 "do not email" again.
	p.dsim.SetField(testkit.GUID(2), "donotphone", testkit.Bool(true))
	testkit.WriteFile(t, p.path("drops/campaign/2.csv"), testkit.Profiles(
		"@p1,"+testkit.GUID(1)+",2026-11-21 09:00:00.000Z,true",
		// later than tonight's edit in Dynamics, within max_clock_skew
		"@p2,"+testkit.GUID(2)+","+testkit.CampaignAt(time.Now().Add(30*time.Minute))+",true",
		"@p3,"+testkit.GUID(3)+",2026-11-21 09:00:00.000Z,false"))
	n := len(p.dsim.Requests())
	r = p.cliWith(t, hooks{afterDecide: func(context.Context) {
		p.dsim.SetField(testkit.GUID(3), "donotemail", testkit.Bool(true))
	}}, "run")
	if r.code != exitWriteFailed {
		t.Fatalf("night 2: exit %d, want %d\n%s", r.code, exitWriteFailed, r.stderr)
	}
	got := p.outcomes(t, r.runID)
	if got[1] != "campaign->d365 applied" || got[2] != "campaign->d365 applied" || !strings.HasPrefix(got[3], "campaign->d365 failed HTTP 412 0x80060882") {
		t.Fatalf("outcomes %v", got)
	}
	if v := p.donotemail(t, 3); v == nil || !*v {
		t.Fatal("contact 3's opt-out was cleared over the user's save")
	}
	for _, q := range since(p.dsim, n) {
		for _, im := range q.IfMatch {
			if !strings.HasPrefix(im, `W/"`) || strings.Trim(im[2:], `"`) == "" {
				t.Fatalf("If-Match %q sent", im)
			}
		}
	}
}

// csvTargetProject: Dynamics read from a CSV drop and written through the
// API (the simulator holds the same contacts as the drop).
func csvTargetProject(t *testing.T, n int, mod func(*d365sim.Options)) *simProject {
	t.Helper()
	p := newAPIProjectWith(t, n, "  target: api\n  csv: drops/d365\n", mod)
	cfg, _ := os.ReadFile(p.config)
	testkit.WriteFile(t, p.config, strings.Replace(string(cfg), "  source: api\n", "  source: csv\n", 1))
	var rows []string
	for i := 1; i <= n; i++ {
		rows = append(rows, fmt.Sprintf("%s,2026-11-20T10:00:00Z,%v", testkit.GUID(i), i%3 == 0))
	}
	testkit.WriteFile(t, p.path("drops/d365/1.csv"), testkit.Contacts(rows...))
	return p
}

// Point 2: with a CSV source there is no ETag to send: the contacts are
// read first, in bulk; one that moved since the export is not written but
// queued, the others go with the ETag just read. The night after, the
// queue is read again from the API and the contact decided again.
func TestD365NoWriteInTheDark(t *testing.T) {
	p := csvTargetProject(t, 6, nil)
	if r := p.cli(t, "run"); r.code != 0 {
		t.Fatalf("night 1: exit %d\n%s", r.code, r.stderr)
	}
	// Campaign opts 1, 2 and 4 out. Contact 2 is edited in Dynamics after
	// the export this night reads: its write must not go in the dark.
	testkit.WriteFile(t, p.path("drops/campaign/2.csv"), campaignOptOuts("2026-11-21 09:00:00.000Z", 1, 2, 4))
	p.dsim.SetField(testkit.GUID(2), "donotphone", testkit.Bool(true))
	n := len(p.dsim.Requests())
	r := p.cli(t, "run")
	if r.code != exitWriteFailed {
		t.Fatalf("night 2: exit %d\n%s", r.code, r.stderr)
	}
	got := p.outcomes(t, r.runID)
	if got[1] != "campaign->d365 applied" || got[4] != "campaign->d365 applied" ||
		got[2] != "campaign->d365 failed the contact changed in Dynamics after it was read; not overwritten" {
		t.Fatalf("outcomes %v", got)
	}
	if v := p.donotemail(t, 2); v == nil || *v {
		t.Fatal("contact 2 was written in the dark")
	}
	var reads, writes int
	for _, q := range since(p.dsim, n) {
		if q.Method == "GET" && strings.Contains(q.Query, "contactid%20eq%20") {
			reads++
		}
		if isBatch(q) {
			writes++
			if len(q.IfMatch) != 2 || q.IfMatch[0] == "*" || q.IfMatch[1] == "*" {
				t.Fatalf("the writes went with If-Match %v", q.IfMatch)
			}
		}
	}
	if reads != 1 || writes != 1 {
		t.Fatalf("%d bulk reads and %d $batch, want one of each", reads, writes)
	}
	// Night 3: no new file; the queue is read from the API and 2 written.
	r = p.cli(t, "run")
	if r.code != 0 {
		t.Fatalf("night 3: exit %d\n%s", r.code, r.stderr)
	}
	if v := p.donotemail(t, 2); v == nil || !*v {
		t.Fatal("contact 2 was not written after the queue was read again")
	}
}

// Point 3: a $batch whose answer is lost (the connection dropped after it
// ran), garbled, or in the JSON batch format is not audited failed: the
// contacts are read back and the writes recorded applied.
func TestD365UnknownOutcomeIsReadBack(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*d365sim.Options)
		lose func(*d365sim.Server)
	}{
		{"answer dropped", nil, func(s *d365sim.Server) { s.DropAnswers(1) }},
		{"answer garbled", nil, func(s *d365sim.Server) { s.GarbleAnswers(1) }},
		{"JSON batch answer", func(o *d365sim.Options) { o.JSONBatchAlways = true }, func(*d365sim.Server) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newAPIProjectWith(t, 6, "  target: api\n", tc.mod)
			if r := p.cli(t, "run"); r.code != 0 {
				t.Fatalf("night 1: exit %d\n%s", r.code, r.stderr)
			}
			testkit.WriteFile(t, p.path("drops/campaign/2.csv"), campaignOptOuts("2026-11-21 09:00:00.000Z", 1, 2, 4))
			tc.lose(p.dsim)
			n := len(p.dsim.Requests())
			r := p.cliWith(t, hooks{afterDecide: func(context.Context) {
				p.dsim.SetField(testkit.GUID(4), "donotphone", testkit.Bool(true)) // 4's write is refused: 412
			}}, "run")
			if r.code != exitWriteFailed {
				t.Fatalf("exit %d\n%s", r.code, r.stderr)
			}
			got := p.outcomes(t, r.runID)
			if got[1] != "campaign->d365 applied" || got[2] != "campaign->d365 applied" || !strings.Contains(got[4], "failed") {
				t.Fatalf("outcomes %v", got)
			}
			batches := 0
			for _, q := range since(p.dsim, n) {
				if isBatch(q) {
					batches++
					if q.Accept != "multipart/mixed" {
						t.Fatalf("$batch sent with Accept %q", q.Accept)
					}
				}
			}
			if batches != 1 {
				t.Fatalf("%d $batch requests: a batch that ran was sent again", batches)
			}
			// Night 3: 1 and 2 are in sync, and only 4 is tried again.
			r = p.cli(t, "run")
			if r.code != 0 {
				t.Fatalf("night 3: exit %d\n%s", r.code, r.stderr)
			}
			got = p.outcomes(t, r.runID)
			if len(got) != 1 || got[4] != "campaign->d365 applied" {
				t.Fatalf("night 3 outcomes %v", got)
			}
		})
	}
}

// Point 3 for Campaign: a PATCH whose answer never came after its last try
// is read back.
func TestCampaignUnknownOutcomeIsReadBack(t *testing.T) {
	p := newCampaignProject(t, 4, false, "  source: api\n  target: api\n  max_tries: 1\n")
	if r := p.cli(t, "run"); r.code != 0 {
		t.Fatalf("night 1: exit %d\n%s", r.code, r.stderr)
	}
	testkit.WriteFile(t, p.path("drops/d365/2.csv"), testkit.Contacts(testkit.GUID(1)+",2026-11-22T10:00:00Z,true"))
	p.csim.DropAnswers(1)
	r := p.cli(t, "run")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	if got := p.outcomes(t, r.runID); got[1] != "d365->campaign applied" {
		t.Fatalf("outcomes %v", got)
	}
	if v := p.blackListEmail(t, 1); v == nil || !*v {
		t.Fatal("not applied")
	}
}

// Point 4: against a simulator that speaks the standard's variants —
// opaque ETags, '+' read as a plus sign, relative links, JSON batch answers
// when asked, batch URLs relative to the service root only — both read
// modes and the writes work, nights after nights.
func TestD365StandardWireFormat(t *testing.T) {
	for _, tracking := range []bool{true, false} {
		t.Run(fmt.Sprintf("change_tracking=%v", tracking), func(t *testing.T) {
			p := newAPIProjectWith(t, 12, fmt.Sprintf("  target: api\n  page_size: 5\n  batch_size: 2\n  change_tracking: %v\n", tracking), func(o *d365sim.Options) {
				o.OpaqueETags, o.PlusIsLiteral, o.RelativeLinks, o.JSONBatch, o.RelativeBatchURLs = true, true, true, true, true
			})
			if r := p.cli(t, "run"); r.code != 0 {
				t.Fatalf("night 1: exit %d\n%s", r.code, r.stderr)
			}
			p.dsim.SetField(testkit.GUID(5), "donotemail", testkit.Bool(true))
			testkit.WriteFile(t, p.path("drops/campaign/2.csv"), testkit.Profiles(
				"@p1,"+testkit.GUID(1)+",2026-11-21 09:00:00.000Z,true",
				// later than tonight's edit in Dynamics, within max_clock_skew
				"@p2,"+testkit.GUID(2)+","+testkit.CampaignAt(time.Now().Add(30*time.Minute))+",true",
				"@p7,"+testkit.GUID(7)+",2026-11-21 09:00:00.000Z,true"))
			n := len(p.dsim.Requests())
			r := p.cli(t, "run")
			if r.code != 0 {
				t.Fatalf("night 2: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
			}
			for _, i := range []int{1, 2, 5, 7} {
				if v := p.donotemail(t, i); v == nil || !*v {
					t.Fatalf("contact %d: %v", i, deref(v))
				}
			}
			got := p.outcomes(t, r.runID)
			if got[5] != "d365->campaign applied" || got[1] != "campaign->d365 applied" {
				t.Fatalf("outcomes %v", got)
			}
			for _, q := range since(p.dsim, n) {
				if q.Status >= 400 {
					t.Fatalf("the simulator refused %s %s?%s: %d", q.Method, q.Path, q.Query, q.Status)
				}
			}
		})
	}
}

// Point 5: a batch the server finds too large (413) is halved until it
// fits; the size that fits stays for the rest of the run, and is logged.
func TestD365PayloadTooLargeHalvesTheBatch(t *testing.T) {
	// 12 writes in batches of 12, one in flight; the server takes bodies
	// of about three change sets.
	p := newAPIProjectWith(t, 12, "  target: api\n  batch_size: 12\n  concurrency: 1\n", func(o *d365sim.Options) { o.MaxBodyBytes = 1500 })
	r := p.cli(t, "run")
	if r.code != 0 {
		t.Fatalf("night 1: exit %d\n%s", r.code, r.stderr)
	}
	p.importCampaignUpdates(t, r.runID)
	var rows []string
	for i := 1; i <= 12; i++ {
		rows = append(rows, fmt.Sprintf("@p%d,%s,2026-11-21 09:00:00.000Z,%v", i, testkit.GUID(i), i%3 != 0))
	}
	testkit.WriteFile(t, p.path("drops/campaign/2.csv"), testkit.Profiles(rows...))
	n := len(p.dsim.Requests())
	r = p.cli(t, "run")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	if got := p.outcomes(t, r.runID); len(got) != 12 {
		t.Fatalf("outcomes %v", got)
	}
	var refused, sent []int
	for _, q := range since(p.dsim, n) {
		if isBatch(q) {
			if q.Status == 413 {
				refused = append(refused, q.BatchParts)
			} else {
				sent = append(sent, q.BatchParts)
			}
		}
	}
	// 12 → 413, 6 → 413, then every batch at 3: nothing refused twice.
	if fmt.Sprint(refused) != "[12 6]" || fmt.Sprint(sent) != "[3 3 3 3]" {
		t.Fatalf("batches refused %v, sent %v", refused, sent)
	}
	if !strings.Contains(r.stderr, "sending smaller batches for the rest of this run") || !strings.Contains(r.stderr, `"batch_size":3`) {
		t.Fatalf("the new batch size was not logged:\n%s", r.stderr)
	}
}

// Point 6: the retry queue is read in bulk, not one GET per contact.
func TestD365RetryQueueIsReadInBulk(t *testing.T) {
	const n = 150
	p := newAPIProject(t, n, "  target: api\n  max_tries: 1\n")
	r := p.cli(t, "run")
	if r.code != 0 {
		t.Fatalf("night 1: exit %d\n%s", r.code, r.stderr)
	}
	p.importCampaignUpdates(t, r.runID)
	var rows []string
	for i := 1; i <= n; i++ {
		rows = append(rows, fmt.Sprintf("@p%d,%s,2026-11-21 09:00:00.000Z,%v", i, testkit.GUID(i), i%3 != 0))
	}
	testkit.WriteFile(t, p.path("drops/campaign/2.csv"), testkit.Profiles(rows...))
	// The writes are throttled until the run's max_run_time (a wait is not
	// a try): none sent, all queued, and nothing changes in Dynamics, so
	// only the queue brings them back.
	cfg, err := os.ReadFile(p.config)
	if err != nil {
		t.Fatal(err)
	}
	testkit.WriteFile(t, p.config, "max_run_time: 2s\n"+string(cfg))
	r = p.cliWith(t, hooks{afterDecide: func(context.Context) { p.dsim.Throttle(time.Second, 1000) }}, "run")
	p.dsim.Throttle(0, 0)
	testkit.WriteFile(t, p.config, string(cfg))
	if r.code != 143 || !strings.Contains(r.stdout, fmt.Sprintf("failed=%d", n)) {
		t.Fatalf("night 2: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	n3 := len(p.dsim.Requests())
	r = p.cli(t, "run")
	if r.code != 0 {
		t.Fatalf("night 3: exit %d\n%s", r.code, r.stderr)
	}
	if got := p.outcomes(t, r.runID); len(got) != n {
		t.Fatalf("night 3 decided %d contacts again, want %d", len(got), n)
	}
	var point, bulk int
	for _, q := range since(p.dsim, n3) {
		switch {
		case q.Method == "GET" && strings.Contains(q.Path, "contacts("):
			point++
		case q.Method == "GET" && strings.Contains(q.Query, "contactid%20eq%20"):
			bulk++
		}
	}
	// 150 contacts, 100 a request
	if point != 0 || bulk != 2 {
		t.Fatalf("the queue of %d was read with %d point reads and %d bulk reads, want 0 and 2", n, point, bulk)
	}
}

// Point 7: what the messages say. A refused secret shows Entra's reason; a
// transport error names the request without its query string; a code that
// repeats the status is not printed twice (extract.TestStatusText); a
// missing state folder is created 0700.
func TestD365MessagesNameTheProblem(t *testing.T) {
	p := newAPIProject(t, 3, "  max_tries: 2\n")
	cfg, _ := os.ReadFile(p.config)
	testkit.WriteFile(t, p.config, strings.Replace(string(cfg), "direction:", "state: var/lib/optsync/optsync.db\ndirection:", 1))
	t.Setenv("OPTSYNC_TEST_D365_SECRET", testSecret+"-wrong")
	r := p.cli(t, "run")
	if r.code != 1 || !strings.Contains(r.stderr, "AADSTS7000215: Invalid client secret provided.") || strings.Contains(r.stderr, testSecret) {
		t.Fatalf("a refused secret: exit %d\n%s", r.code, r.stderr)
	}
	t.Setenv("OPTSYNC_TEST_D365_SECRET", testSecret)
	p.dsim.SetResetRate(1)
	r = p.cli(t, "run")
	if r.code != 1 || !strings.Contains(r.stderr, "dataverse: GET http://") || strings.Contains(r.stderr, "select") || strings.Contains(r.stderr, "?") {
		t.Fatalf("a transport error: exit %d\n%s", r.code, r.stderr)
	}
	fi, err := os.Stat(p.path("var/lib/optsync"))
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("state folder: %v %v", fi, err)
	}
	p.dsim.SetResetRate(0)
	if r := p.cli(t, "run"); r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
}

// Point 7: a first plan that reads both sides in full counts no contact as
// waiting for its counterpart: one without a profile has none.
func TestFirstPlanWithBothSidesReadWaitsForNothing(t *testing.T) {
	p := newCampaignProject(t, 6, true, "  source: api\n  target: api\n")
	// two contacts more in Dynamics, with no profile
	p.dsim.Seed([]d365sim.Contact{
		{ID: testkit.GUID(7), ModifiedOn: time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC), Fields: map[string]*bool{"donotemail": testkit.Bool(true)}},
		{ID: testkit.GUID(8), ModifiedOn: time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC), Fields: map[string]*bool{"donotemail": testkit.Bool(false)}},
	})
	for _, cmd := range []string{"plan", "run"} {
		r := p.cli(t, cmd)
		if r.code != 0 {
			t.Fatalf("%s: exit %d\n%s", cmd, r.code, r.stderr)
		}
		if !strings.Contains(r.stdout, "contacts_without_profile=2") || strings.Contains(r.stdout, "waiting_for_counterpart=2") {
			t.Fatalf("first %s: %s", cmd, r.stdout)
		}
	}
}

// Point 8: the execution-time limit. The simulator spends 4 ms per
// operation and allows 60 ms per 1 s window, a $batch counting once against
// the request count but each of its operations against the time; a night
// of 40 writes in batches of 10 (40 ms each) is throttled with 0x80072321,
// slows down (fewer batches in flight, each 429's Retry-After waited), and
// finishes. Pages are capped by the server at 8 whatever page_size asks.
func TestD365ExecutionTimeLimitSlowsTheRunDown(t *testing.T) {
	const n = 40
	p := newAPIProjectWith(t, n, "  target: api\n  batch_size: 10\n", func(o *d365sim.Options) {
		o.OperationTime = 4 * time.Millisecond
		o.ExecutionLimit = 60 * time.Millisecond
		o.Window = time.Second
		o.MaxPageSize = 8
	})
	r := p.cli(t, "run")
	if r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("compared=%d pairs", n)) {
		t.Fatalf("night 1: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	p.importCampaignUpdates(t, r.runID)
	var rows []string
	for i := 1; i <= n; i++ {
		rows = append(rows, fmt.Sprintf("@p%d,%s,2026-11-21 09:00:00.000Z,%v", i, testkit.GUID(i), i%3 != 0))
	}
	testkit.WriteFile(t, p.path("drops/campaign/2.csv"), testkit.Profiles(rows...))
	first := len(p.dsim.Requests())
	r = p.cli(t, "run")
	if r.code != 0 {
		t.Fatalf("night 2: exit %d\n%s", r.code, r.stderr)
	}
	if got := p.outcomes(t, r.runID); len(got) != n {
		t.Fatalf("%d decisions, want %d", len(got), n)
	}
	for i := 1; i <= n; i++ {
		if v := p.donotemail(t, i); v == nil || *v != (i%3 != 0) {
			t.Fatalf("contact %d not written", i)
		}
	}
	throttled, batches := 0, 0
	for _, q := range since(p.dsim, first) {
		if isBatch(q) && q.Status == 200 {
			batches++
		}
		if q.Status == 429 {
			if q.Code != "0x80072321" {
				t.Fatalf("429 with code %q", q.Code)
			}
			throttled++
		}
	}
	if throttled == 0 || batches != n/10 {
		t.Fatalf("%d throttled requests, %d batches through: the test shows nothing", throttled, batches)
	}
	if !strings.Contains(r.stderr, "the service is throttling: fewer $batch requests in flight") {
		t.Fatalf("the slowdown was not logged:\n%s", r.stderr)
	}
}
