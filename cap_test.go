package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"optsync/fixtures/odatacap"
	"optsync/fixtures/testkit"
)

// batches counts the $batch requests CAP has received.
func (p *simProject) batches() int {
	n := 0
	for _, r := range p.cap.Requests() {
		if r.Method == "POST" && strings.HasSuffix(r.Path, "$batch") {
			n++
		}
	}
	return n
}

// The nights of issue 9 against a standard OData v4 server: a backfill, a
// quiet night with no writes, edits on both sides and the night that
// carries them, a write refused for a stale ETag that is queued and decided
// again the night after.
func TestCAPEndToEndNights(t *testing.T) {
	const n = 12
	p := newCAPProject(t, n, odatacap.Options{PageSize: 5}, "  batch_size: 3\n")
	want := map[int]bool{}
	for i := 1; i <= n; i++ {
		// first sight: the newer side wins; Campaign is newer for every fourth
		want[i] = i%3 == 0
		if i%4 == 0 {
			want[i] = true
		}
	}
	check := func(night string) {
		t.Helper()
		for i := 1; i <= n; i++ {
			d, c := p.donotemail(t, i), p.blackListEmail(t, i)
			if d == nil || c == nil || *d != want[i] || *c != want[i] {
				t.Errorf("%s: contact %d: CAP %v, Campaign %v, want both %v", night, i, deref(d), deref(c), want[i])
			}
		}
	}
	night := func(name string, args ...string) cliResult {
		t.Helper()
		r := p.cli(t, args...)
		if r.code != 0 {
			t.Fatalf("%s: exit %d\n%s\n%s", name, r.code, r.stdout, r.stderr)
		}
		check(name)
		return r
	}
	r := night("backfill", "backfill")
	if got := p.out(t, "audit", r.runID); len(got) == 0 {
		t.Fatal("the backfill decided nothing")
	}
	// Dynamics got its writes for 4 and 8 through $batch.
	if p.batches() == 0 {
		t.Fatal("no $batch reached CAP")
	}

	// A quiet night: nothing is written anywhere.
	b, cp := p.batches(), p.csim.Patches()
	r = night("quiet night", "run")
	if p.batches() != b || p.csim.Patches() != cp {
		t.Fatalf("a quiet night wrote: %d $batch, %d Campaign PATCHes", p.batches()-b, p.csim.Patches()-cp)
	}
	if got := p.out(t, "audit", r.runID); len(got) != 0 {
		t.Fatalf("a quiet night decided %v", got)
	}

	// Edits on both sides, and an edit of an unmapped column.
	p.cap.SetField(t, testkit.GUID(1), "donotemail", testkit.Bool(true))
	p.csim.SetField("@p2", "blackListEmail", testkit.Bool(true))
	p.cap.SetField(t, testkit.GUID(5), "donotphone", testkit.Bool(true))
	want[1], want[2] = true, true
	night("the night that carries them", "run")

	// Campaign opts 7 out; 7 was also edited in CAP (another column), so the
	// night reads it with its ETag; between the read and the write a user
	// edits it again: CAP refuses the stale ETag with 412.
	p.csim.SetField("@p7", "blackListEmail", testkit.Bool(true))
	p.cap.SetField(t, testkit.GUID(7), "donotfax", testkit.Bool(true))
	r = p.cliWith(t, hooks{afterDecide: func(context.Context) {
		p.cap.SetField(t, testkit.GUID(7), "donotphone", testkit.Bool(true))
	}}, "run")
	if r.code != exitWriteFailed {
		t.Fatalf("stale ETag night: exit %d, want %d\n%s\n%s", r.code, exitWriteFailed, r.stdout, r.stderr)
	}
	var refused string
	for _, a := range p.out(t, "audit", r.runID) {
		if a["contact_id"] == testkit.GUID(7) && a["direction"] == "campaign->d365" {
			refused = a["outcome"] + " " + a["error"]
		}
	}
	if refused != "failed HTTP 412: Precondition Failed" {
		t.Fatalf("contact 7's write: %q, want it refused with HTTP 412", refused)
	}
	if v := p.donotemail(t, 7); v == nil || *v {
		t.Fatalf("contact 7 was overwritten despite the stale ETag: %v", deref(v))
	}

	// The night after: the queue is read again and 7 decided again.
	want[7] = true
	night("the night after the refusal", "run")
	b, cp = p.batches(), p.csim.Patches()
	night("quiet night again", "run")
	if p.batches() != b || p.csim.Patches() != cp {
		t.Fatalf("the last quiet night wrote: %d $batch, %d Campaign PATCHes", p.batches()-b, p.csim.Patches()-cp)
	}
}

// Points 2 and 6 against CAP: Dynamics read from a CSV export and written
// through the API. A contact edited in CAP after the export is not written
// in the dark; the others go with the ETag CAP just gave; the night after,
// the retry queue is read from CAP in bulk.
func TestCAPNoWriteInTheDark(t *testing.T) {
	const n = 8
	p := newCAPProject(t, n, odatacap.Options{}, "")
	cfg, _ := os.ReadFile(p.config)
	testkit.WriteFile(t, p.config, strings.Replace(string(cfg), "d365:\n  source: api\n", "d365:\n  source: csv\n  csv: drops/d365\n", 1))
	var rows []string
	for i := 1; i <= n; i++ {
		c, _ := p.cap.Contact(t, testkit.GUID(i))
		rows = append(rows, fmt.Sprintf("%s,%s,%v", testkit.GUID(i), c.ModifiedOn.UTC().Format(time.RFC3339), i%3 == 0))
	}
	testkit.WriteFile(t, p.path("drops/d365/1.csv"), testkit.Contacts(rows...))
	// Campaign is newer for 4 and 8 (opted out): both go to Dynamics. A
	// user opts 8 out in CAP after the export was taken.
	p.cap.SetField(t, testkit.GUID(8), "donotemail", testkit.Bool(true))
	before := len(p.cap.Requests())
	r := p.cli(t, "run")
	if r.code != exitWriteFailed {
		t.Fatalf("night 1: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	got := p.outcomes(t, r.runID)
	if got[4] != "campaign->d365 applied" || got[8] != "campaign->d365 failed the contact changed in Dynamics after it was read; not overwritten" {
		t.Fatalf("outcomes %v", got)
	}
	if v := p.donotemail(t, 4); v == nil || !*v {
		t.Fatal("contact 4 was not written")
	}
	bulk := 0
	for _, q := range p.cap.Requests()[before:] {
		if q.Method == "GET" && strings.Contains(q.Query, "contactid%20eq%20") {
			bulk++
		}
	}
	if bulk != 1 {
		t.Fatalf("%d bulk reads before writing, want 1", bulk)
	}
	// Night 2: the queue is read from CAP in bulk; 8 is in sync now.
	before = len(p.cap.Requests())
	r = p.cli(t, "run")
	if r.code != 0 {
		t.Fatalf("night 2: exit %d\n%s", r.code, r.stderr)
	}
	bulk = 0
	for _, q := range p.cap.Requests()[before:] {
		if q.Method == "GET" && strings.Contains(q.Query, "contactid%20eq%2000000000-0000-0000-0000-000000000008") {
			bulk++
		}
		if q.Method == "GET" && strings.Contains(q.Path, "contacts(") {
			t.Fatalf("a point read: %s", q.Path)
		}
	}
	if bulk != 1 {
		t.Fatalf("the queue was not read in bulk: %d", bulk)
	}
	if v, c := p.donotemail(t, 8), p.blackListEmail(t, 8); v == nil || !*v || c == nil || !*c {
		t.Fatalf("contact 8: CAP %v Campaign %v", deref(v), deref(c))
	}
}

// Point 3 against CAP: a $batch CAP ran whose answer the client lost (the
// connection dropped, the answer garbled on the way) or got in CAP's JSON
// batch format is read back, not audited failed.
func TestCAPUnknownOutcomeIsReadBack(t *testing.T) {
	for _, tc := range []struct {
		name string
		lose func(*odatacap.Server)
	}{
		{"answer dropped", func(s *odatacap.Server) { s.DropAnswers(1) }},
		{"answer garbled", func(s *odatacap.Server) { s.GarbleAnswers(1) }},
		{"JSON batch answer", func(s *odatacap.Server) { s.SetBatchAccept("application/json") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newCAPProject(t, 6, odatacap.Options{}, "")
			if r := p.cli(t, "backfill"); r.code != 0 {
				t.Fatalf("backfill: exit %d\n%s", r.code, r.stderr)
			}
			for _, i := range []int{1, 2, 5} {
				p.csim.SetField(fmt.Sprintf("@p%d", i), "blackListEmail", testkit.Bool(true))
			}
			tc.lose(p.cap)
			b := p.batches()
			r := p.cliWith(t, hooks{afterDecide: func(context.Context) {
				p.cap.SetField(t, testkit.GUID(5), "donotphone", testkit.Bool(true)) // 5's write is refused
			}}, "run")
			if r.code != exitWriteFailed {
				t.Fatalf("exit %d\n%s", r.code, r.stderr)
			}
			got := p.outcomes(t, r.runID)
			if got[1] != "campaign->d365 applied" || got[2] != "campaign->d365 applied" || !strings.HasPrefix(got[5], "campaign->d365 failed") {
				t.Fatalf("outcomes %v", got)
			}
			if tc.name == "JSON batch answer" && got[5] != "campaign->d365 failed HTTP 412: Precondition Failed" {
				t.Fatalf("the JSON answer's 412: %q", got[5])
			}
			if p.batches()-b != 1 {
				t.Fatalf("%d $batch requests: one that ran was sent again", p.batches()-b)
			}
			r = p.cli(t, "run")
			if got := p.outcomes(t, r.runID); r.code != 0 || len(got) != 1 || got[5] != "campaign->d365 applied" {
				t.Fatalf("the night after: exit %d, outcomes %v\n%s", r.code, got, r.stderr)
			}
		})
	}
}

// Point 5 against CAP: CAP refuses a body over its limit with 413; the
// batch is halved until it fits and stays at that size.
func TestCAPPayloadTooLargeHalvesTheBatch(t *testing.T) {
	const n = 12
	p := newCAPProject(t, n, odatacap.Options{BodyLimit: "2kb"}, "  batch_size: 12\n  concurrency: 1\n")
	if r := p.cli(t, "backfill"); r.code != 0 {
		t.Fatalf("backfill: exit %d\n%s", r.code, r.stderr)
	}
	for i := 1; i <= n; i++ {
		p.csim.SetField(fmt.Sprintf("@p%d", i), "blackListEmail", testkit.Bool(i%3 != 0))
	}
	before := len(p.cap.Requests())
	r := p.cli(t, "run")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	var refused, sent int
	for _, q := range p.cap.Requests()[before:] {
		if q.Method == "POST" && strings.HasSuffix(q.Path, "$batch") {
			if q.Status == 413 {
				refused++
			} else {
				sent++
			}
		}
	}
	if refused == 0 || sent == 0 || !strings.Contains(r.stderr, "sending smaller batches for the rest of this run") {
		t.Fatalf("%d refused, %d sent\n%s", refused, sent, r.stderr)
	}
	for i := 1; i <= n; i++ {
		if v := p.donotemail(t, i); v == nil || *v != (i%3 != 0) {
			t.Fatalf("contact %d: %v", i, deref(v))
		}
	}
}

// Point 7 against CAP (and its token endpoint): Entra's reason for a
// refused secret, a transport error without its query string, a missing
// state folder created 0700, and a first plan reading both sides in full
// that counts nobody as waiting.
func TestCAPMessages(t *testing.T) {
	p := newCAPProject(t, 4, odatacap.Options{}, "  max_tries: 2\n")
	cfg, _ := os.ReadFile(p.config)
	testkit.WriteFile(t, p.config, strings.Replace(string(cfg), "direction:", "state: state/optsync.db\ndirection:", 1))
	p.cap.Seed(t, []odatacap.Contact{{ID: testkit.GUID(9), ModifiedOn: time.Now().Add(-time.Hour), Fields: map[string]*bool{"donotemail": testkit.Bool(true)}}})
	r := p.cli(t, "plan")
	if r.code != 0 || !strings.Contains(r.stdout, "contacts_without_profile=1") || strings.Contains(r.stdout, "waiting_for_counterpart=1") {
		t.Fatalf("first plan: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	t.Setenv("OPTSYNC_TEST_D365_SECRET", testSecret+"-wrong")
	r = p.cli(t, "run")
	if r.code != 1 || !strings.Contains(r.stderr, "AADSTS7000215: Invalid client secret provided.") {
		t.Fatalf("a refused secret: exit %d\n%s", r.code, r.stderr)
	}
	t.Setenv("OPTSYNC_TEST_D365_SECRET", testSecret)
	p.cap.ResetGets(100)
	r = p.cli(t, "run")
	p.cap.ResetGets(0)
	if r.code != 1 || !strings.Contains(r.stderr, "dataverse: GET http://") || strings.Contains(r.stderr, "select") || strings.Contains(r.stderr, "?") {
		t.Fatalf("a transport error: exit %d\n%s", r.code, r.stderr)
	}
	if fi, err := os.Stat(p.path("state")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("state folder: %v %v", fi, err)
	}
	if r := p.cli(t, "run"); r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
}

// The proxy in front of CAP has the simulators' fault switches
// (fixtures/simcore): a 429 and 5xx it answers itself and a page of CAP's
// cut short are retried, and every contact is read and decided.
func TestCAPProxyFaultsAreRetried(t *testing.T) {
	const n = 8
	p := newCAPProject(t, n, odatacap.Options{PageSize: 3}, "  max_tries: 6\n")
	p.cap.Throttle(time.Second, 1)
	p.cap.SetFailRate(0.25)
	p.cap.MalformAnswers(1)
	r := p.cli(t, "backfill")
	if r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("compared=%d pairs", n)) {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	seen := map[int]int{}
	pages := 0
	for _, q := range p.cap.Requests() {
		seen[q.Status]++
		if q.Method == "GET" && strings.HasSuffix(q.Path, "/contacts") && q.Status == 200 {
			pages++
		}
	}
	// three pages, and the one cut short read again
	if seen[429] != 1 || seen[503] == 0 || pages != 4 {
		t.Fatalf("statuses served %v, %d pages of contacts: the test proves nothing", seen, pages)
	}
}
