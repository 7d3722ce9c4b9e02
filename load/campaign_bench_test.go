package load

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"optsync/extract"
	"optsync/fixtures/campaignsim"
	"optsync/fixtures/simcore"
	"optsync/fixtures/testkit"
)

// BenchmarkCampaignWrites measures PATCH throughput against the Campaign
// simulator answering every request after OPTSYNC_BENCH_LATENCY (default
// 50ms), OPTSYNC_BENCH_CONCURRENCY (default 4) at once. Half the writes clear
// an opt-out and so read the profile again first (two requests).
func BenchmarkCampaignWrites(b *testing.B) {
	latency, concurrency := benchSettings()
	const n = 400
	sim := campaignsim.NewServer(campaignsim.Options{Organization: "o", ClientID: "c", ClientSecret: "s"})
	client, api := campaignAPI(b, sim)
	reader := &extract.Campaign{Client: client, APIURL: api, Resource: "profileAndServices", Fields: []string{"blackListEmail"}}
	w := &CampaignWriter{Client: client, Reader: reader, APIURL: api, Resource: "profileAndServices", Concurrency: concurrency}
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		var ps []campaignsim.Profile
		writes := make([]CampaignWrite, n)
		at := time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)
		for i := range n {
			was := i%2 == 0
			ps = append(ps, campaignsim.Profile{PKey: fmt.Sprintf("@p%d", i), ExternalID: testkit.GUID(i + 1),
				LastModified: at, Fields: map[string]*bool{"blackListEmail": &was}})
			writes[i] = CampaignWrite{PKey: fmt.Sprintf("@p%d", i), Fields: []string{"blackListEmail"}, Values: []bool{!was},
				ClearsOptOut: was, Modified: at.UnixMilli(), Was: []extract.Tri{extract.Of(was)}}
		}
		sim.Seed(ps)
		sim.SetLatency(latency)
		b.StartTimer()
		for i, r := range w.Apply(context.Background(), writes) {
			if !r.OK() {
				b.Fatalf("write %d: %s", i, r.Error())
			}
		}
		b.StopTimer()
		sim.SetLatency(0)
		b.StartTimer()
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "PATCH/s")
}

// BenchmarkCampaignRaceWindow measures the window in which a person's
// unsubscribe can land unseen between the re-read before a clearing PATCH
// and that PATCH: for every clearing PATCH, the time from the simulator
// serving the profile's last re-read to it serving the PATCH (both wait
// the same OPTSYNC_BENCH_LATENCY first), at OPTSYNC_BENCH_CONCURRENCY
// writes in flight. "client-µs" is that window less one latency: the
// client's own share (answer in, PATCH out).
func BenchmarkCampaignRaceWindow(b *testing.B) {
	latency, concurrency := benchSettings()
	const n = 200
	sim := campaignsim.NewServer(campaignsim.Options{Organization: "o", ClientID: "c", ClientSecret: "s"})
	client, api := campaignAPI(b, sim)
	reader := &extract.Campaign{Client: client, APIURL: api, Resource: "profileAndServices", Fields: []string{"blackListEmail"}}
	w := &CampaignWriter{Client: client, Reader: reader, APIURL: api, Resource: "profileAndServices", Concurrency: concurrency, MaxTries: 3}
	var windows []time.Duration
	for range b.N {
		b.StopTimer()
		var ps []campaignsim.Profile
		writes := make([]CampaignWrite, n)
		at := time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)
		yes := true
		for i := range n {
			ps = append(ps, campaignsim.Profile{PKey: fmt.Sprintf("@p%d", i), ExternalID: testkit.GUID(i + 1),
				LastModified: at, Fields: map[string]*bool{"blackListEmail": &yes}})
			writes[i] = CampaignWrite{PKey: fmt.Sprintf("@p%d", i), Fields: []string{"blackListEmail"}, Values: []bool{false},
				ClearsOptOut: true, Modified: at.UnixMilli(), Was: []extract.Tri{extract.True}}
		}
		sim.Seed(ps)
		sim.SetLatency(latency)
		since := len(sim.Requests())
		b.StartTimer()
		for i, r := range w.Apply(context.Background(), writes) {
			if !r.OK() {
				b.Fatalf("write %d: %s", i, r.Error())
			}
		}
		b.StopTimer()
		sim.SetLatency(0)
		lastRead := map[string]time.Time{}
		log := sim.Requests()[since:]
		sort.SliceStable(log, func(i, j int) bool { return log[i].Time.Before(log[j].Time) }) // logged as answered
		for _, q := range log {
			switch {
			case q.Method == "GET" && strings.Contains(q.Path, "/profile/"):
				lastRead[q.Path] = q.Time
			case q.Method == "PATCH":
				windows = append(windows, q.Time.Sub(lastRead[q.Path]))
			}
		}
		b.StartTimer()
	}
	slices.Sort(windows)
	pct := func(p float64) time.Duration { return windows[min(int(p*float64(len(windows))), len(windows)-1)] }
	b.ReportMetric(float64(pct(0.5).Microseconds()), "p50-µs")
	b.ReportMetric(float64(pct(0.99).Microseconds()), "p99-µs")
	b.ReportMetric(float64(windows[len(windows)-1].Microseconds()), "max-µs")
	b.ReportMetric(float64((pct(0.99) - latency).Microseconds()), "client-p99-µs")
}

// campaignAPI serves sim (client "c", secret "s") until the test ends and
// returns a client authenticated against it, as the run's API client is,
// and its API's URL.
func campaignAPI(tb testing.TB, sim *campaignsim.Server) (*http.Client, string) {
	tb.Helper()
	srv := httptest.NewServer(sim)
	tb.Cleanup(srv.Close)
	token := simcore.Token(tb, srv.URL+sim.IMSPath(), url.Values{"grant_type": {"client_credentials"}, "client_id": {"c"}, "client_secret": {"s"}, "scope": {"x"}})
	return &http.Client{Transport: testkit.Bearer{Token: token, APIKey: "c"}}, srv.URL + sim.APIPrefix()
}
