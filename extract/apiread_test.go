package extract_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"optsync/extract"
	"optsync/extract/apiclient"
	"optsync/fixtures/campaignsim"
	"optsync/fixtures/d365sim"
)

func boolp(b bool) *bool { return &b }

// dataverseContacts reads a simulated Dataverse through the shared client.
func dataverseContacts(t *testing.T, tracking bool, n int) (*extract.DataverseContacts, *d365sim.Server) {
	t.Helper()
	sim := d365sim.NewServer(d365sim.Options{Tenant: "t", ClientID: "c", ClientSecret: "s", ChangeTracking: tracking})
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	var cs []d365sim.Contact
	for i := 1; i <= n; i++ {
		cs = append(cs, d365sim.Contact{ID: fmt.Sprintf("00000000-0000-0000-0000-%012d", i),
			ModifiedOn: time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC), Fields: map[string]*bool{"donotemail": boolp(i%2 == 0)}})
	}
	sim.Seed(cs)
	client := apiclient.New(apiclient.Config{TokenURL: srv.URL + sim.TokenURL(), ClientID: "c", ClientSecret: "s", Scopes: []string{srv.URL + "/.default"}, Timeout: 10 * time.Second, MaxTries: 2}, zerolog.Nop())
	api := &extract.Dataverse{Client: client, BaseURL: srv.URL + d365sim.APIPath, Fields: []string{"donotemail"}}
	return &extract.DataverseContacts{API: api, Tracking: tracking, Overlap: time.Minute, Log: zerolog.Nop()}, sim
}

func id(t *testing.T, i int) extract.ID {
	t.Helper()
	v, ok := extract.ParseID(fmt.Sprintf("00000000-0000-0000-0000-%012d", i))
	if !ok {
		t.Fatal("bad id")
	}
	return v
}

func readContacts(t *testing.T, s *extract.DataverseContacts, from extract.Cursor) (extract.Read, []extract.ID) {
	t.Helper()
	var got []extract.ID
	res, err := s.Read(context.Background(), from, func(c *extract.Contact) { got = append(got, c.ID) }, func(r extract.Reject) {
		t.Errorf("reject %+v", r)
	})
	if err != nil {
		t.Fatal(err)
	}
	return res, got
}

// The connector reads from the cursor it is handed and hands the next one
// back; it keeps nothing between reads itself.
func TestDataverseContactsCursor(t *testing.T) {
	s, sim := dataverseContacts(t, true, 3)
	first, got := readContacts(t, s, extract.Cursor{})
	if len(got) != 3 || !first.Complete || first.Next == nil || *first.Next == "" || first.Stats.Rows != 3 {
		t.Fatalf("first read: %+v, %d contacts", first, len(got))
	}
	if src := s.Source(); src.Kind != extract.APISource || src.IsFile() || src.String() != "dataverse" {
		t.Errorf("source %+v", src)
	}
	sim.SetField(id(t, 2).String(), "donotemail", boolp(false))
	sim.Delete(id(t, 3).String())
	next, got := readContacts(t, s, extract.Cursor{Position: *first.Next})
	if next.Complete || !slices.Equal(got, []extract.ID{id(t, 2)}) || !slices.Equal(next.Deleted, []extract.ID{id(t, 3)}) {
		t.Errorf("changes since the cursor: %+v, read %v", next, got)
	}
	if next.Next == nil || *next.Next == *first.Next {
		t.Errorf("no new delta link: %+v", next)
	}
	// The same cursor again reads the same changes: nothing was kept.
	again, got := readContacts(t, s, extract.Cursor{Position: *first.Next})
	if !slices.Equal(got, []extract.ID{id(t, 2)}) || again.Complete {
		t.Errorf("the cursor read again: %+v, read %v", again, got)
	}
	// A queued contact the changes do not hold is read again; one they
	// hold is not read twice.
	queued, got := readContacts(t, s, extract.Cursor{Position: *next.Next, Queue: []extract.Queued{{Contact: id(t, 1)}}})
	if !slices.Equal(got, []extract.ID{id(t, 1)}) || queued.Complete {
		t.Errorf("queue: %+v, read %v", queued, got)
	}
	// A refused delta link is a full read, whose deletions are not known.
	sim.ExpireDeltaTokens()
	refused, got := readContacts(t, s, extract.Cursor{Position: *next.Next})
	if !refused.Complete || len(got) != 2 || len(refused.Deleted) != 0 || refused.Next == nil {
		t.Errorf("refused delta link: %+v, read %v", refused, got)
	}
}

// Without change tracking the cursor is a watermark: the next one is the
// latest modifiedon read, and a read from it less the overlap is not a
// full read.
func TestDataverseContactsWatermark(t *testing.T) {
	s, _ := dataverseContacts(t, false, 2)
	first, got := readContacts(t, s, extract.Cursor{})
	if len(got) != 2 || !first.Complete || first.Next == nil || *first.Next != "2026-11-20T10:00:00Z" {
		t.Fatalf("first read: %+v (next %v)", first, first.Next)
	}
	next, _ := readContacts(t, s, extract.Cursor{Position: *first.Next})
	if next.Complete || next.Next == nil || *next.Next != "2026-11-20T10:00:00Z" {
		t.Errorf("read from the watermark: %+v", next)
	}
	if _, err := s.Read(context.Background(), extract.Cursor{Position: "yesterday"}, func(*extract.Contact) {}, func(extract.Reject) {}); err == nil {
		t.Error("a watermark that does not parse was taken")
	}
}

// campaignProfiles reads a simulated Campaign through the shared client.
func campaignProfiles(t *testing.T, n int) (*extract.CampaignProfiles, *campaignsim.Server) {
	t.Helper()
	return campaignProfilesVia(t, n, func(h http.Handler) http.Handler { return h })
}

// campaignProfilesVia is campaignProfiles with the simulator's answers
// passed through wrap.
func campaignProfilesVia(t *testing.T, n int, wrap func(http.Handler) http.Handler) (*extract.CampaignProfiles, *campaignsim.Server) {
	t.Helper()
	sim := campaignsim.NewServer(campaignsim.Options{Organization: "o", ClientID: "c", ClientSecret: "s",
		ChangedFilter: campaignsim.Filter{Name: "Changed", Param: "since"}})
	srv := httptest.NewServer(wrap(sim))
	t.Cleanup(srv.Close)
	for i := 1; i <= n; i++ {
		sim.Add(campaignsim.Profile{PKey: fmt.Sprintf("@p%d", i), ExternalID: fmt.Sprintf("00000000-0000-0000-0000-%012d", i),
			LastModified: time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC), Fields: map[string]*bool{"blackListEmail": boolp(false)}})
	}
	client := apiclient.New(apiclient.Config{TokenURL: srv.URL + sim.IMSPath(), ClientID: "c", ClientSecret: "s", Scopes: []string{"campaign_sdk"},
		Timeout: 10 * time.Second, MaxTries: 2, Header: http.Header{"X-Api-Key": {"c"}}}, zerolog.Nop())
	api := &extract.Campaign{Client: client, APIURL: srv.URL + "/o/campaign/", Resource: "profileAndServicesExt", Fields: []string{"blackListEmail"}}
	return &extract.CampaignProfiles{API: api, FilterName: "Changed", FilterParam: "since", Overlap: time.Minute, Concurrency: 2, Log: zerolog.Nop()}, sim
}

func readProfiles(t *testing.T, s *extract.CampaignProfiles, from extract.Cursor) (extract.Read, []string) {
	t.Helper()
	var got []string
	ks := extract.NewKeys()
	res, err := s.Read(context.Background(), from, ks.Writer(), func(p *extract.Profile) { got = append(got, ks.Get(p.PKey)) }, func(r extract.Reject) {
		t.Errorf("reject %+v", r)
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	return res, got
}

// Without a watermark the first read is a full scan whose latest change
// is the next cursor; from it, the changed-since filter reads the profiles
// changed since, and queued profiles whose Campaign write was refused are
// read again.
func TestCampaignProfilesCursor(t *testing.T) {
	s, sim := campaignProfiles(t, 3)
	first, got := readProfiles(t, s, extract.Cursor{})
	if len(got) != 3 || !first.Complete || first.Next == nil || *first.Next != "2026-11-20T09:00:00Z" || first.Stats.Rows != 3 {
		t.Fatalf("first read: %+v (next %v), %v", first, first.Next, got)
	}
	if src := s.Source(); src.Kind != extract.APISource || src.String() != "campaign api" {
		t.Errorf("source %+v", src)
	}
	sim.SetField("@p2", "blackListEmail", boolp(true)) // changed now, after every other
	since := "2026-11-21T00:00:00Z"
	next, got := readProfiles(t, s, extract.Cursor{Position: since})
	if next.Complete || !slices.Equal(got, []string{"@p2"}) || next.Next == nil || *next.Next <= since {
		t.Errorf("changes since the watermark: %+v, read %v", next, got)
	}
	queue := []extract.Queued{
		{Contact: id(t, 1), PKey: "@p1", Campaign: true},
		{Contact: id(t, 3), PKey: "@p3"}, // only Dynamics refused: not read again
	}
	queued, got := readProfiles(t, s, extract.Cursor{Position: since, Queue: queue})
	if !slices.Equal(got, []string{"@p1", "@p2"}) || queued.Stats.Rows != 2 {
		t.Errorf("queue: %+v, read %v", queued, got)
	}
	if _, err := s.Read(context.Background(), extract.Cursor{Position: "yesterday"}, extract.NewKeys().Writer(), func(*extract.Profile) {}, func(extract.Reject) {}); err == nil {
		t.Error("a watermark that does not parse was taken")
	}
}

// A queued profile whose answer is bad when it is read again is taken as a
// bad row of the read is: a rejects row naming it, and the profile handed
// on marked bad with its contact, so that the contact is kept out of the
// run rather than decided against what state knew. One that no longer
// exists is not handed on.
func TestCampaignQueuedBadProfileIsRejected(t *testing.T) {
	s, sim := campaignProfilesVia(t, 3, func(sim http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !strings.HasSuffix(r.URL.Path, "/profile/@p1") {
				sim.ServeHTTP(w, r)
				return
			}
			rec := httptest.NewRecorder()
			sim.ServeHTTP(rec, r)
			body := strings.Replace(rec.Body.String(), `"blackListEmail":false`, `"blackListEmail":"yes"`, 1)
			if body == rec.Body.String() {
				t.Errorf("the answer for @p1 has no blackListEmail to spoil: %s", body)
			}
			w.WriteHeader(rec.Code)
			_, _ = w.Write([]byte(body))
		})
	})
	queue := []extract.Queued{
		{Contact: id(t, 1), PKey: "@p1", Campaign: true},
		{Contact: id(t, 3), PKey: "@p3", Campaign: true},
	}
	sim.Delete("@p3") // gone from Campaign since it was queued
	ks := extract.NewKeys()
	var got []extract.Profile
	var rejects []extract.Reject
	res, err := s.Read(context.Background(), extract.Cursor{Position: "2026-11-21T00:00:00Z", Queue: queue}, ks.Writer(),
		func(p *extract.Profile) { got = append(got, *p) }, func(r extract.Reject) { rejects = append(rejects, r) })
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !got[0].Bad || got[0].ID != id(t, 1) || ks.Get(got[0].PKey) != "@p1" || got[0].Line != 1 {
		t.Fatalf("handed on %+v, want @p1 of contact 1, marked bad, record 1", got)
	}
	if len(rejects) != 1 || rejects[0].ID != "@p1" || rejects[0].Line != 1 || rejects[0].Source != extract.CampaignAPI() ||
		!strings.Contains(rejects[0].Reason, "blackListEmail") {
		t.Errorf("rejects %+v, want one for @p1 naming blackListEmail", rejects)
	}
	if res.Stats.Rows != 1 || res.Stats.Rejected != 1 {
		t.Errorf("stats %+v, want 1 row read again, 1 rejected", res.Stats)
	}
}
