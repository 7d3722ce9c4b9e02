package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"optsync/fixtures/campaignsim"
	"optsync/fixtures/d365sim"
	"optsync/fixtures/testkit"
)

// BenchmarkRetryQueueReread measures a night that reads a retry queue of
// OPTSYNC_BENCH_QUEUE contacts (default 462) again, against the Dataverse
// simulator answering every request after OPTSYNC_BENCH_LATENCY (default
// 400ms). It reports the requests that read the queue and the time from
// the first of them arriving to the last one answered, and the whole
// night's wall time:
//
//	OPTSYNC_BENCH_LATENCY=400ms go test -run XXX -bench RetryQueueReread -benchtime 1x .
func BenchmarkRetryQueueReread(b *testing.B) {
	n := 462
	if v, err := strconv.Atoi(os.Getenv("OPTSYNC_BENCH_QUEUE")); err == nil && v > 0 {
		n = v
	}
	latency := 400 * time.Millisecond
	if v, err := time.ParseDuration(os.Getenv("OPTSYNC_BENCH_LATENCY")); err == nil && v > 0 {
		latency = v
	}
	for range b.N {
		b.StopTimer()
		dir := b.TempDir()
		sim := d365sim.NewServer(d365sim.Options{Tenant: "t", ClientID: "c", ClientSecret: "queue-bench-secret", ChangeTracking: true})
		srv := httptest.NewServer(sim)
		b.Setenv("OPTSYNC_BENCH_D365_SECRET", "queue-bench-secret")
		var cs []d365sim.Contact
		night1 := "PKey,externalId,lastModified,blackListEmail\n"
		night2 := night1
		for i := 1; i <= n; i++ {
			id := testkit.GUID(i)
			f := false
			cs = append(cs, d365sim.Contact{ID: id, ModifiedOn: time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC), Fields: map[string]*bool{"donotemail": &f}})
			night1 += fmt.Sprintf("@p%d,%s,2026-11-20 09:00:00.000Z,false\n", i, id)
			night2 += fmt.Sprintf("@p%d,%s,2026-11-21 09:00:00.000Z,true\n", i, id)
		}
		sim.Seed(cs)
		cfg := fmt.Sprintf("direction: bidirectional\nmappings:\n  - {d365: donotemail, campaign: blackListEmail}\nsafety: {max_optin: \"100%%\"}\n"+
			"d365:\n  source: api\n  target: api\n  url: %s\n  authority_url: %s\n  tenant_id: t\n  client_id: c\n  client_secret_env: OPTSYNC_BENCH_D365_SECRET\n  max_tries: 1\n"+
			"campaign: {csv: drops}\n", srv.URL, srv.URL)
		must := func(err error) {
			if err != nil {
				b.Fatal(err)
			}
		}
		must(os.MkdirAll(filepath.Join(dir, "drops"), 0o700))
		must(os.WriteFile(filepath.Join(dir, "optsync.yaml"), []byte(cfg), 0o600))
		must(os.WriteFile(filepath.Join(dir, "drops", "1.csv"), []byte(night1), 0o600))
		night := func(h hooks) int {
			var out, errb bytes.Buffer
			code := cmdline{stdout: &out, stderr: &errb, hooks: h}.run(context.Background(), []string{"optsync", "--log-format", "json", "--config", filepath.Join(dir, "optsync.yaml"), "run"})
			if code != 0 && code != exitWriteFailed && code != 143 {
				b.Fatalf("exit %d\n%s", code, errb.String())
			}
			return code
		}
		night(hooks{})
		// Night 2: every contact gets a write, throttled until the run's
		// max_run_time (a wait is not a try): all of them wait in the retry
		// queue.
		must(os.WriteFile(filepath.Join(dir, "drops", "2.csv"), []byte(night2), 0o600))
		must(os.WriteFile(filepath.Join(dir, "optsync.yaml"), []byte("max_run_time: 2s\n"+cfg), 0o600))
		if night(hooks{afterDecide: func(context.Context) { sim.Throttle(time.Second, 1<<20) }}) != 143 {
			b.Fatal("night 2 queued nothing")
		}
		must(os.WriteFile(filepath.Join(dir, "optsync.yaml"), []byte(cfg), 0o600))
		sim.Throttle(0, 0)
		sim.SetLatency(latency)
		first := len(sim.Requests())
		b.StartTimer()
		start := time.Now()
		night(hooks{})
		wall := time.Since(start)
		b.StopTimer()
		var reqs int
		var from, to time.Time
		for _, q := range sim.Requests()[first:] {
			point := q.Method == "GET" && strings.Contains(q.Path, "/contacts(")
			bulk := q.Method == "GET" && strings.Contains(q.Query, "contactid%20eq")
			if !point && !bulk {
				continue
			}
			reqs++
			if from.IsZero() {
				from = q.Time
			}
			to = q.Time
		}
		srv.Close()
		b.ReportMetric(float64(reqs), "queue_requests")
		b.ReportMetric(to.Add(latency).Sub(from).Seconds(), "queue_s")
		b.ReportMetric(wall.Seconds(), "night_s")
	}
}

// BenchmarkCampaignRetryQueueReread is BenchmarkRetryQueueReread for
// Campaign's queued profiles: its API reads one profile a request, so they
// are read campaign.concurrency (4) at a time.
//
//	OPTSYNC_BENCH_LATENCY=400ms go test -run XXX -bench CampaignRetryQueueReread -benchtime 1x .
func BenchmarkCampaignRetryQueueReread(b *testing.B) {
	n := 462
	if v, err := strconv.Atoi(os.Getenv("OPTSYNC_BENCH_QUEUE")); err == nil && v > 0 {
		n = v
	}
	latency := 400 * time.Millisecond
	if v, err := time.ParseDuration(os.Getenv("OPTSYNC_BENCH_LATENCY")); err == nil && v > 0 {
		latency = v
	}
	for range b.N {
		b.StopTimer()
		dir := b.TempDir()
		sim := campaignsim.NewServer(campaignsim.Options{Organization: "acme", ClientID: "c", ClientSecret: "queue-bench-secret", Seed: 1,
			ChangedFilter: campaignsim.Filter{Name: "Changed", Param: "since"}})
		srv := httptest.NewServer(sim)
		b.Setenv("OPTSYNC_BENCH_CAMPAIGN_SECRET", "queue-bench-secret")
		var ps []campaignsim.Profile
		night1 := "contactid,modifiedon,donotemail\n"
		night2 := night1
		for i := 1; i <= n; i++ {
			id := testkit.GUID(i)
			f := false
			ps = append(ps, campaignsim.Profile{PKey: fmt.Sprintf("@p%d", i), ExternalID: id, LastModified: time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC),
				Fields: map[string]*bool{"blackListEmail": &f}})
			night1 += fmt.Sprintf("%s,2026-11-20T10:00:00Z,false\n", id)
			night2 += fmt.Sprintf("%s,2026-11-21T10:00:00Z,true\n", id)
		}
		// a later profile puts the watermark past the others: the nights
		// after the first read only what changed, and the queue
		f := false
		ps = append(ps, campaignsim.Profile{PKey: "@later", ExternalID: testkit.GUID(n + 1),
			LastModified: time.Date(2026, 11, 20, 11, 0, 0, 0, time.UTC), Fields: map[string]*bool{"blackListEmail": &f}})
		sim.Seed(ps)
		cfg := fmt.Sprintf("direction: bidirectional\nmappings:\n  - {d365: donotemail, campaign: blackListEmail}\nsafety: {max_optin: \"100%%\"}\n"+
			"d365: {csv: drops}\n"+
			"campaign:\n  source: api\n  target: api\n  base_url: %s\n  ims_url: %s\n  organization: acme\n  client_id: c\n  client_secret_env: OPTSYNC_BENCH_CAMPAIGN_SECRET\n  max_tries: 1\n  changed_filter: {name: Changed, param: since}\n  overlap: 0s\n",
			srv.URL, srv.URL)
		must := func(err error) {
			if err != nil {
				b.Fatal(err)
			}
		}
		must(os.MkdirAll(filepath.Join(dir, "drops"), 0o700))
		must(os.WriteFile(filepath.Join(dir, "optsync.yaml"), []byte(cfg), 0o600))
		must(os.WriteFile(filepath.Join(dir, "drops", "1.csv"), []byte(night1), 0o600))
		night := func(h hooks) int {
			var out, errb bytes.Buffer
			code := cmdline{stdout: &out, stderr: &errb, hooks: h}.run(context.Background(), []string{"optsync", "--log-format", "json", "--config", filepath.Join(dir, "optsync.yaml"), "run"})
			if code != 0 && code != exitWriteFailed && code != 143 {
				b.Fatalf("exit %d\n%s", code, errb.String())
			}
			return code
		}
		night(hooks{})
		must(os.WriteFile(filepath.Join(dir, "drops", "2.csv"), []byte(night2), 0o600))
		must(os.WriteFile(filepath.Join(dir, "optsync.yaml"), []byte("max_run_time: 2s\n"+cfg), 0o600))
		if night(hooks{afterDecide: func(context.Context) { sim.Throttle(time.Second, 1<<20) }}) != 143 {
			b.Fatal("night 2 queued nothing")
		}
		must(os.WriteFile(filepath.Join(dir, "optsync.yaml"), []byte(cfg), 0o600))
		sim.Throttle(0, 0)
		sim.SetLatency(latency)
		first := len(sim.Requests())
		b.StartTimer()
		start := time.Now()
		night(hooks{})
		wall := time.Since(start)
		b.StopTimer()
		var reqs int
		var from, to time.Time
		for _, q := range sim.Requests()[first:] {
			if q.Method != "GET" || !strings.Contains(q.Path, "/profile/@") {
				continue
			}
			reqs++
			if from.IsZero() {
				from = q.Time
			}
			to = q.Time
		}
		srv.Close()
		b.ReportMetric(float64(reqs), "queue_requests")
		b.ReportMetric(to.Add(latency).Sub(from).Seconds(), "queue_s")
		b.ReportMetric(wall.Seconds(), "night_s")
	}
}
