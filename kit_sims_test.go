package main

// The kit's projects against the simulators: the one way a root test
// starts a Dataverse, Campaign or SAP CAP simulator over loopback, names it
// in a config and reads back what optsync wrote to it.

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"optsync/fixtures/campaignsim"
	"optsync/fixtures/d365sim"
	"optsync/fixtures/odatacap"
	"optsync/fixtures/testkit"
)

// The simulators' client secrets: tests check that neither reaches a log,
// a file or an error.
const (
	testSecret     = "s3cr3t-Vr8~q.XQ_do-not-log"
	campaignSecret = "camp-S3cret_7Yq!do-not-log"
)

// serve serves h over loopback until the test ends and returns its URL.
func serve(t testing.TB, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

// newD365Sim is the Dataverse simulator with the credentials d365APISection
// names (the secret in $OPTSYNC_TEST_D365_SECRET); the rest of o is the
// test's.
func newD365Sim(t testing.TB, o d365sim.Options) *d365sim.Server {
	t.Helper()
	o.Tenant, o.ClientID, o.ClientSecret = "tenant-1", "client-1", testSecret
	t.Setenv("OPTSYNC_TEST_D365_SECRET", testSecret)
	return d365sim.NewServer(o)
}

// newCampaignSim is the Campaign simulator with the credentials
// campaignAPISection names (the secret in $OPTSYNC_TEST_CAMPAIGN_SECRET); the rest
// of o is the test's.
func newCampaignSim(t testing.TB, o campaignsim.Options) *campaignsim.Server {
	t.Helper()
	o.Organization, o.ClientID, o.ClientSecret = "acme", "camp-client", campaignSecret
	t.Setenv("OPTSYNC_TEST_CAMPAIGN_SECRET", campaignSecret)
	return campaignsim.NewServer(o)
}

// oneMapping is the head of a config syncing donotemail ↔ blackListEmail
// both ways, with no limit on opt-ins.
const oneMapping = `direction: bidirectional
mappings:
  - d365: donotemail
    campaign: blackListEmail
safety:
  max_optin: "100%"
`

// d365APISection is the config's d365 section for the Dataverse API at url (the
// simulator's, or CAP's: the same credentials); extra lines (indented two
// spaces) end it.
func d365APISection(url, extra string) string {
	return fmt.Sprintf("d365:\n  source: api\n  url: %s\n  authority_url: %s\n  tenant_id: tenant-1\n  client_id: client-1\n  client_secret_env: OPTSYNC_TEST_D365_SECRET\n%s", url, url, extra)
}

// campaignAPISection is the config's campaign section for the Campaign API at url.
func campaignAPISection(url, extra string) string {
	return fmt.Sprintf("campaign:\n  base_url: %s\n  ims_url: %s\n  organization: acme\n  client_id: camp-client\n  client_secret_env: OPTSYNC_TEST_CAMPAIGN_SECRET\n%s", url, url, extra)
}

// simProject is a project with one side or both behind a simulator: dsim
// (Dataverse) or cap (SAP CAP serving Dataverse-shaped contacts), and csim
// (Campaign). A side without one is a CSV drop.
type simProject struct {
	*project
	dsim *d365sim.Server
	cap  *odatacap.Server
	csim *campaignsim.Server
	n    int
}

// donotemail is contact i's donotemail as the Dynamics side holds it now.
func (p *simProject) donotemail(t *testing.T, i int) *bool {
	t.Helper()
	if p.cap != nil {
		c, ok := p.cap.Contact(t, testkit.GUID(i))
		if !ok {
			t.Fatalf("contact %d is gone from CAP", i)
		}
		return c.Fields["donotemail"]
	}
	c, ok := p.dsim.Contact(testkit.GUID(i))
	if !ok {
		t.Fatalf("contact %d is gone", i)
	}
	return c.Fields["donotemail"]
}

// blackListEmail is profile i's blackListEmail as Campaign holds it now.
func (p *simProject) blackListEmail(t *testing.T, i int) *bool {
	t.Helper()
	pr, ok := p.csim.Profile(testkit.PKey(i))
	if !ok {
		t.Fatalf("profile %d is gone", i)
	}
	return pr.Fields["blackListEmail"]
}

// The seeds: contact i opted out of email when i%3==0, profile i when
// i%4==0, so that some pairs agree and some differ both ways.
func seedContact(i int, at time.Time) d365sim.Contact {
	return d365sim.Contact{ID: testkit.GUID(i), ModifiedOn: at, Fields: map[string]*bool{"donotemail": testkit.Bool(i%3 == 0)}}
}

func seedProfile(i int, at time.Time) campaignsim.Profile {
	return campaignsim.Profile{PKey: testkit.PKey(i), ExternalID: testkit.GUID(i), LastModified: at,
		Fields: map[string]*bool{"blackListEmail": testkit.Bool(i%4 == 0)}}
}

// seedContactRow is seedContact as a row of a Dynamics export.
func seedContactRow(i int, at time.Time) string {
	return fmt.Sprintf("%s,%s,%v", testkit.GUID(i), testkit.D365At(at), i%3 == 0)
}

// seedProfileRow is seedProfile as a row of a Campaign export.
func seedProfileRow(i int, at time.Time) string {
	return fmt.Sprintf("%s,%s,%s,%v", testkit.PKey(i), testkit.GUID(i), testkit.CampaignAt(at), i%4 == 0)
}

// The seeds' change times: Dynamics is newer than Campaign, so first
// sight makes Dynamics win the pairs that differ.
var (
	seedD365Time     = time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	seedCampaignTime = time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)
)

// newAPIProject: Dynamics is the simulator (n seeded contacts), Campaign a
// drop of their n profiles; extra ends the d365 section.
func newAPIProject(t *testing.T, n int, extra string) *simProject {
	t.Helper()
	return newAPIProjectWith(t, n, extra, nil)
}

// newAPIProjectWith is newAPIProject with the simulator's options changed
// by mod first.
func newAPIProjectWith(t *testing.T, n int, extra string, mod func(*d365sim.Options)) *simProject {
	t.Helper()
	o := d365sim.Options{ChangeTracking: true}
	if mod != nil {
		mod(&o)
	}
	sim := newD365Sim(t, o)
	url := serve(t, sim)
	var cs []d365sim.Contact
	var profiles []string
	for i := 1; i <= n; i++ {
		cs = append(cs, seedContact(i, seedD365Time))
		profiles = append(profiles, seedProfileRow(i, seedCampaignTime))
	}
	sim.Seed(cs)
	p := &simProject{project: newProject(t, oneMapping+d365APISection(url, extra)+"campaign:\n  csv: drops/campaign\n"), dsim: sim, n: n}
	testkit.WriteFile(t, p.path("drops/campaign/1.csv"), testkit.Profiles(profiles...))
	return p
}

// newCampaignProject: Campaign is the simulator (n seeded profiles);
// Dynamics is a drop of the n contacts, or with withD365 the Dataverse
// simulator (source and target api) holding them. campaignExtra ends the
// campaign section.
func newCampaignProject(t *testing.T, n int, withD365 bool, campaignExtra string) *simProject {
	t.Helper()
	csim := newCampaignSim(t, campaignsim.Options{ChangedFilter: campaignsim.Filter{Name: "Changed", Param: "since"}, ValidationStatus: 400,
		Seed: 1}) // fault draws repeat from run to run: a test cannot pass by luck
	curl := serve(t, csim)
	var ps []campaignsim.Profile
	var rows []string
	var cs []d365sim.Contact
	for i := 1; i <= n; i++ {
		ps = append(ps, seedProfile(i, seedCampaignTime))
		rows = append(rows, seedContactRow(i, seedD365Time))
		cs = append(cs, seedContact(i, seedD365Time))
	}
	csim.Seed(ps)
	p := &simProject{csim: csim, n: n}
	d365 := "d365:\n  csv: drops/d365\n"
	if withD365 {
		p.dsim = newD365Sim(t, d365sim.Options{ChangeTracking: true})
		p.dsim.Seed(cs)
		d365 = d365APISection(serve(t, p.dsim), "  target: api\n")
	}
	p.project = newProject(t, oneMapping+d365+campaignAPISection(curl, campaignExtra))
	if !withD365 {
		testkit.WriteFile(t, p.path("drops/d365/1.csv"), testkit.Contacts(rows...))
	}
	return p
}

// newCAPProject: Dynamics is SAP CAP serving a Dataverse-shaped contacts
// set (an OData v4 server this project does not write), Campaign the
// simulator, both read and written through their APIs. n contacts
// (modified two hours ago) and n profiles (three hours ago, but one hour
// ago for every fourth: those are newer in Campaign). d365Extra ends the
// d365 section.
func newCAPProject(t *testing.T, n int, o odatacap.Options, d365Extra string) *simProject {
	t.Helper()
	o.Tenant, o.ClientID, o.ClientSecret = "tenant-1", "client-1", testSecret
	cs := odatacap.Start(t, o)
	t.Setenv("OPTSYNC_TEST_D365_SECRET", testSecret)
	csim := newCampaignSim(t, campaignsim.Options{ChangedFilter: campaignsim.Filter{Name: "Changed", Param: "since"}, Seed: 1})
	curl := serve(t, csim)
	now := time.Now().UTC().Truncate(time.Second)
	var contacts []odatacap.Contact
	var profiles []campaignsim.Profile
	for i := 1; i <= n; i++ {
		c := seedContact(i, now.Add(-2*time.Hour))
		c.Fields["donotphone"] = testkit.Bool(false)
		contacts = append(contacts, odatacap.Contact{ID: c.ID, ModifiedOn: c.ModifiedOn, Fields: c.Fields})
		pt := now.Add(-3 * time.Hour)
		if i%4 == 0 {
			pt = now.Add(-time.Hour)
		}
		profiles = append(profiles, seedProfile(i, pt))
	}
	cs.Seed(t, contacts)
	csim.Seed(profiles)
	cfg := oneMapping + d365APISection(cs.URL, "  target: api\n  change_tracking: false\n  overlap: 1s\n"+d365Extra) +
		campaignAPISection(curl, "  source: api\n  target: api\n  changed_filter: {name: Changed, param: since}\n")
	return &simProject{project: newProject(t, cfg), cap: cs, csim: csim, n: n}
}

// campaignOptOuts is a Campaign export (one mapping) in which the seeded
// profiles nums opted out of email at lastModified (Campaign's layout).
func campaignOptOuts(lastModified string, nums ...int) string {
	var rows []string
	for _, i := range nums {
		rows = append(rows, testkit.PKey(i)+","+testkit.GUID(i)+","+lastModified+",true")
	}
	return testkit.Profiles(rows...)
}
