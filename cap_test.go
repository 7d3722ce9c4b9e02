package main

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"optsync/fixtures/campaignsim"
	"optsync/fixtures/odatacap"
)

// capProject is a project whose Dynamics side is SAP CAP serving a
// Dataverse-shaped contacts set (an OData v4 server this project does not
// write) and whose Campaign side is the Campaign simulator; both are read
// and written through their APIs.
type capProject struct {
	*project
	cap  *odatacap.Server
	csim *campaignsim.Server
	n    int
}

// newCAPProject seeds n contacts in CAP (donotemail = i%3==0, modified two
// hours ago) and n profiles (blackListEmail = i%4==0, three hours ago, but
// one hour ago for every fourth: those are newer in Campaign). d365Extra
// goes into the d365 section of the config.
func newCAPProject(t *testing.T, n int, o odatacap.Options, d365Extra string) *capProject {
	t.Helper()
	o.Tenant, o.ClientID, o.ClientSecret = "tenant-1", "client-1", testSecret
	cs := odatacap.Start(t, o)
	t.Setenv("OPTSYNC_TEST_D365_SECRET", testSecret)
	csim := campaignsim.NewServer(campaignsim.Options{Organization: "acme", ClientID: "camp-client", ClientSecret: campaignSecret,
		ChangedFilter: campaignsim.Filter{Name: "Changed", Param: "since"}, Seed: 1})
	csrv := httptest.NewServer(csim)
	t.Cleanup(csrv.Close)
	t.Setenv("OPTSYNC_TEST_CAMPAIGN_SECRET", campaignSecret)
	now := time.Now().UTC().Truncate(time.Second)
	var contacts []odatacap.Contact
	var profiles []campaignsim.Profile
	for i := 1; i <= n; i++ {
		contacts = append(contacts, odatacap.Contact{ID: contactID(i), ModifiedOn: now.Add(-2 * time.Hour),
			Fields: map[string]*bool{"donotemail": boolp(i%3 == 0), "donotphone": boolp(false)}})
		pt := now.Add(-3 * time.Hour)
		if i%4 == 0 {
			pt = now.Add(-time.Hour)
		}
		profiles = append(profiles, campaignsim.Profile{PKey: fmt.Sprintf("@p%d", i), ExternalID: contactID(i), LastModified: pt,
			Fields: map[string]*bool{"blackListEmail": boolp(i%4 == 0)}})
	}
	cs.Seed(t, contacts)
	csim.Seed(profiles)
	cfg := fmt.Sprintf(`direction: bidirectional
mappings:
  - d365: donotemail
    campaign: blackListEmail
safety:
  max_optin: "100%%"
d365:
  source: api
  target: api
  url: %s
  authority_url: %s
  tenant_id: tenant-1
  client_id: client-1
  client_secret_env: OPTSYNC_TEST_D365_SECRET
  change_tracking: false
  overlap: 1s
%scampaign:
  source: api
  target: api
  base_url: %s
  ims_url: %s
  organization: acme
  client_id: camp-client
  client_secret_env: OPTSYNC_TEST_CAMPAIGN_SECRET
  changed_filter: {name: Changed, param: since}
`, cs.URL, cs.URL, d365Extra, csrv.URL, csrv.URL)
	return &capProject{project: newProject(t, cfg), cap: cs, csim: csim, n: n}
}

func (p *capProject) run(t *testing.T, h hooks, args ...string) cliResult {
	t.Helper()
	return (&apiProject{project: p.project}).runWith(t, h, args...)
}

func (p *capProject) donotemail(t *testing.T, i int) *bool {
	t.Helper()
	c, ok := p.cap.Contact(t, contactID(i))
	if !ok {
		t.Fatalf("contact %d is gone from CAP", i)
	}
	return c.Fields["donotemail"]
}

func (p *capProject) blackListEmail(t *testing.T, i int) *bool {
	t.Helper()
	pr, ok := p.csim.Profile(fmt.Sprintf("@p%d", i))
	if !ok {
		t.Fatalf("profile %d is gone", i)
	}
	return pr.Fields["blackListEmail"]
}

// batches counts the $batch requests CAP has received.
func (p *capProject) batches() int {
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
		r := p.run(t, hooks{}, args...)
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
	p.cap.SetField(t, contactID(1), "donotemail", boolp(true))
	p.csim.SetField("@p2", "blackListEmail", boolp(true))
	p.cap.SetField(t, contactID(5), "donotphone", boolp(true))
	want[1], want[2] = true, true
	night("the night that carries them", "run")

	// Campaign opts 7 out; 7 was also edited in CAP (another column), so the
	// night reads it with its ETag; between the read and the write a user
	// edits it again: CAP refuses the stale ETag with 412.
	p.csim.SetField("@p7", "blackListEmail", boolp(true))
	p.cap.SetField(t, contactID(7), "donotfax", boolp(true))
	r = p.run(t, hooks{afterDecide: func(context.Context) {
		p.cap.SetField(t, contactID(7), "donotphone", boolp(true))
	}}, "run")
	if r.code != exitWriteFailed {
		t.Fatalf("stale ETag night: exit %d, want %d\n%s\n%s", r.code, exitWriteFailed, r.stdout, r.stderr)
	}
	var refused string
	for _, a := range p.out(t, "audit", r.runID) {
		if a["contact_id"] == contactID(7) && a["direction"] == "campaign->d365" {
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
