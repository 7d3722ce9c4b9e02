package load

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"testing"
	"time"

	"optsync/extract"
	"optsync/fixtures/d365sim"
	"optsync/fixtures/simcore"
	"optsync/fixtures/testkit"
)

// BenchmarkDataverseWrites measures PATCH throughput through $batch against
// the simulator answering every request after a fixed latency, as a
// distant service would: OPTSYNC_BENCH_LATENCY (default 50ms),
// OPTSYNC_BENCH_CONCURRENCY (default 4), batch size 500, 20,000 contacts.
func BenchmarkDataverseWrites(b *testing.B) {
	latency, concurrency := benchSettings()
	const n = 20000
	sim := d365sim.NewServer(d365sim.Options{Tenant: "t", ClientID: "c", ClientSecret: "s"})
	var cs []d365sim.Contact
	writes := make([]DataverseWrite, n)
	for i := range n {
		id := testkit.GUID(i + 1)
		f := false
		cs = append(cs, d365sim.Contact{ID: id, ModifiedOn: time.Now().UTC().Truncate(time.Second), Fields: map[string]*bool{"donotemail": &f}})
		writes[i].ID, _ = extract.ParseID(id)
		writes[i].Fields, writes[i].Values = []string{"donotemail"}, []bool{true}
	}
	sim.Seed(cs)
	sim.SetLatency(latency)
	srv := httptest.NewServer(sim)
	defer srv.Close()
	// Authentication is the bearer's job, not this benchmark's.
	token := simcore.Token(b, srv.URL+sim.TokenURL(), url.Values{"grant_type": {"client_credentials"}, "client_id": {"c"}, "client_secret": {"s"}, "scope": {"https://org.crm.dynamics.com/.default"}})
	client := &http.Client{Transport: testkit.Bearer{Token: token}}
	reader := &extract.Dataverse{Client: client, BaseURL: srv.URL + d365sim.APIPath, Fields: []string{"donotemail"}, Concurrency: concurrency}
	w := &DataverseWriter{Client: client, Reader: reader, BaseURL: srv.URL + d365sim.APIPath, BatchSize: 500, Concurrency: concurrency}
	ids := make([]extract.ID, n)
	for i := range writes {
		ids[i] = writes[i].ID
	}
	b.ResetTimer()
	for range b.N {
		// The writes go with the ETags a run would have read; reading them
		// is not what this measures.
		b.StopTimer()
		sim.SetLatency(0)
		cur, err := reader.Current(context.Background(), ids)
		if err != nil {
			b.Fatal(err)
		}
		sim.SetLatency(latency)
		b.StartTimer()
		for i := range writes {
			writes[i].Values[0] = !writes[i].Values[0]
			writes[i].ETag = cur[writes[i].ID].ETag
		}
		for i, r := range w.Apply(context.Background(), writes) {
			if !r.OK() {
				b.Fatalf("write %d: %s", i, r.Error())
			}
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "updates/s")
}

// benchSettings reads the simulated latency and the concurrency both write
// benchmarks take: OPTSYNC_BENCH_LATENCY (default 50ms) and
// OPTSYNC_BENCH_CONCURRENCY (default 4).
func benchSettings() (time.Duration, int) {
	latency, _ := time.ParseDuration(os.Getenv("OPTSYNC_BENCH_LATENCY"))
	if latency == 0 {
		latency = 50 * time.Millisecond
	}
	concurrency, _ := strconv.Atoi(os.Getenv("OPTSYNC_BENCH_CONCURRENCY"))
	if concurrency == 0 {
		concurrency = 4
	}
	return latency, concurrency
}
