package extract

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"optsync/fixtures/campaignsim"
	"optsync/fixtures/simcore"
	"optsync/fixtures/testkit"
)

// Campaign leaves "next" out of a list of a table larger than its
// XtkBigTableThreshold (100,000 profiles by default) unless the request
// says _forcePagination=true: a reader that does not ask for it reads a
// big table one page deep and takes that for all of it.
func TestCampaignReadsPastTheBigTableThreshold(t *testing.T) {
	const n = 23
	sim := campaignsim.NewServer(campaignsim.Options{Organization: "o", ClientID: "c", ClientSecret: "s", BigTableThreshold: n - 1,
		ChangedFilter: campaignsim.Filter{Name: "Changed", Param: "since"}})
	at := time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)
	var ps []campaignsim.Profile
	for i := 1; i <= n; i++ {
		ps = append(ps, campaignsim.Profile{PKey: fmt.Sprintf("@p%d", i), ExternalID: testkit.V4GUID(i), LastModified: at})
	}
	sim.Seed(ps)
	srv := httptest.NewServer(sim)
	defer srv.Close()
	tok := simcore.Token(t, srv.URL+sim.IMSPath(), url.Values{"grant_type": {"client_credentials"}, "client_id": {"c"}, "client_secret": {"s"}})
	c := &Campaign{Client: &http.Client{Transport: testkit.Bearer{Token: tok, APIKey: "c"}}, APIURL: srv.URL + sim.APIPrefix(), Resource: "profileAndServicesExt",
		Fields: []string{"blackListEmail"}, PageSize: 5}
	for _, read := range []struct {
		name string
		read func(emit func(*Profile)) (Stats, error)
	}{
		{"list", func(emit func(*Profile)) (Stats, error) {
			return c.List(context.Background(), NewKeys().Writer(), emit, func(Reject) {})
		}},
		{"changed since", func(emit func(*Profile)) (Stats, error) {
			return c.ChangedSince(context.Background(), "Changed", "since", at.Add(-time.Hour), NewKeys().Writer(), emit, func(Reject) {})
		}},
	} {
		got := 0
		st, err := read.read(func(*Profile) { got++ })
		if err != nil || got != n || st.Rows != n {
			t.Errorf("%s: %d of %d profiles read (%d rows): %v", read.name, got, n, st.Rows, err)
		}
	}
	// A profile's history is read newest first until a page holds nothing
	// newer; on a big history table it asks for the pages too, or an
	// unsubscribe past the first page would go unseen.
	for range n {
		sim.Unsubscribe("@p1", "blackListEmail")
	}
	if h, err := c.UnsubscribedAfter(context.Background(), "@p1", at.UnixMilli()); err != nil || h.OptOut == 0 {
		t.Fatalf("history: %+v %v", h, err)
	}
	log := sim.Requests()
	if q := log[len(log)-1]; q.Path != "/o/campaign/profileAndServicesExt/history/@p1/events" || !strings.Contains(q.Query, "_forcePagination=true") {
		t.Errorf("the history read %s?%s does not ask for the pages", q.Path, q.Query)
	}
}
