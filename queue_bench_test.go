package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"optsync/fixtures/campaignsim"
	"optsync/fixtures/d365sim"
	"optsync/fixtures/simcore"
	"optsync/fixtures/testkit"
)

// queueBenchSize is the queue (OPTSYNC_BENCH_QUEUE, default 462) and the
// simulator's latency (OPTSYNC_BENCH_LATENCY, default 400ms) of the
// retry-queue benchmarks.
func queueBenchSize() (int, time.Duration) {
	n := 462
	if v, err := strconv.Atoi(os.Getenv("OPTSYNC_BENCH_QUEUE")); err == nil && v > 0 {
		n = v
	}
	latency := 400 * time.Millisecond
	if v, err := time.ParseDuration(os.Getenv("OPTSYNC_BENCH_LATENCY")); err == nil && v > 0 {
		latency = v
	}
	return n, latency
}

// queueSim is what the benchmarks ask of either simulator.
type queueSim interface {
	Throttle(retryAfter time.Duration, n int)
	SetLatency(time.Duration)
	Requests() []simcore.Request
}

// benchQueueReread runs night 1 of p (drops/1.csv in place), then night 2
// (drops/2.csv: night2) with every write throttled until the run's
// max_run_time (a wait is not a try), so that all of them wait in the
// retry queue; then it times night 3 with the simulator answering after
// latency, and reports the requests that read the queue (queueRead), the
// time from the first of them arriving to the last one answered, and the
// night's wall time.
func benchQueueReread(b *testing.B, p *project, sim queueSim, night2 string, latency time.Duration, queueRead func(simcore.Request) bool) {
	night := func(h hooks) int {
		r := p.cliWith(b, h, "run")
		if r.code != 0 && r.code != exitWriteFailed && r.code != 143 {
			b.Fatalf("exit %d\n%s", r.code, r.stderr)
		}
		return r.code
	}
	night(hooks{})
	cfg := testkit.ReadFile(b, p.config)
	testkit.WriteFile(b, p.path("drops/2.csv"), night2)
	testkit.WriteFile(b, p.config, "max_run_time: 2s\n"+cfg)
	if night(hooks{afterDecide: func(context.Context) { sim.Throttle(time.Second, 1<<20) }}) != 143 {
		b.Fatal("night 2 queued nothing")
	}
	testkit.WriteFile(b, p.config, cfg)
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
		if !queueRead(q) {
			continue
		}
		reqs++
		if from.IsZero() {
			from = q.Time
		}
		to = q.Time
	}
	b.ReportMetric(float64(reqs), "queue_requests")
	b.ReportMetric(to.Add(latency).Sub(from).Seconds(), "queue_s")
	b.ReportMetric(wall.Seconds(), "night_s")
}

// BenchmarkRetryQueueReread measures a night that reads a retry queue of
// OPTSYNC_BENCH_QUEUE contacts (default 462) again, against the Dataverse
// simulator answering every request after OPTSYNC_BENCH_LATENCY (default
// 400ms). It reports the requests that read the queue and the time from
// the first of them arriving to the last one answered, and the whole
// night's wall time:
//
//	OPTSYNC_BENCH_LATENCY=400ms go test -run XXX -bench RetryQueueReread -benchtime 1x .
func BenchmarkRetryQueueReread(b *testing.B) {
	n, latency := queueBenchSize()
	for range b.N {
		b.StopTimer()
		sim := newD365Sim(b, d365sim.Options{ChangeTracking: true})
		url := serve(b, sim)
		var cs []d365sim.Contact
		var night1, night2 []string
		for i := 1; i <= n; i++ {
			cs = append(cs, d365sim.Contact{ID: testkit.GUID(i), ModifiedOn: seedD365Time, Fields: map[string]*bool{"donotemail": testkit.Bool(false)}})
			night1 = append(night1, fmt.Sprintf("%s,%s,2026-11-20 09:00:00.000Z,false", testkit.PKey(i), testkit.GUID(i)))
			night2 = append(night2, fmt.Sprintf("%s,%s,2026-11-21 09:00:00.000Z,true", testkit.PKey(i), testkit.GUID(i)))
		}
		sim.Seed(cs)
		p := newProject(b, oneMapping+d365APISection(url, "  target: api\n  max_tries: 1\n")+"campaign: {csv: drops}\n")
		testkit.WriteFile(b, p.path("drops/1.csv"), testkit.Profiles(night1...))
		benchQueueReread(b, p, sim, testkit.Profiles(night2...), latency, func(q simcore.Request) bool {
			point := q.Method == "GET" && strings.Contains(q.Path, "/contacts(")
			bulk := q.Method == "GET" && strings.Contains(q.Query, "contactid%20eq")
			return point || bulk
		})
	}
}

// BenchmarkCampaignRetryQueueReread is BenchmarkRetryQueueReread for
// Campaign's queued profiles: its API reads one profile a request, so they
// are read campaign.concurrency (4) at a time.
//
//	OPTSYNC_BENCH_LATENCY=400ms go test -run XXX -bench CampaignRetryQueueReread -benchtime 1x .
func BenchmarkCampaignRetryQueueReread(b *testing.B) {
	n, latency := queueBenchSize()
	for range b.N {
		b.StopTimer()
		sim := newCampaignSim(b, campaignsim.Options{Seed: 1, ChangedFilter: campaignsim.Filter{Name: "Changed", Param: "since"}})
		url := serve(b, sim)
		var ps []campaignsim.Profile
		var night1, night2 []string
		for i := 1; i <= n; i++ {
			ps = append(ps, campaignsim.Profile{PKey: testkit.PKey(i), ExternalID: testkit.GUID(i), LastModified: seedCampaignTime,
				Fields: map[string]*bool{"blackListEmail": testkit.Bool(false)}})
			night1 = append(night1, testkit.GUID(i)+",2026-11-20T10:00:00Z,false")
			night2 = append(night2, testkit.GUID(i)+",2026-11-21T10:00:00Z,true")
		}
		// a later profile puts the watermark past the others: the nights
		// after the first read only what changed, and the queue
		ps = append(ps, campaignsim.Profile{PKey: "@later", ExternalID: testkit.GUID(n + 1),
			LastModified: time.Date(2026, 11, 20, 11, 0, 0, 0, time.UTC), Fields: map[string]*bool{"blackListEmail": testkit.Bool(false)}})
		sim.Seed(ps)
		p := newProject(b, oneMapping+"d365: {csv: drops}\n"+
			campaignAPISection(url, "  source: api\n  target: api\n  max_tries: 1\n  changed_filter: {name: Changed, param: since}\n  overlap: 0s\n"))
		testkit.WriteFile(b, p.path("drops/1.csv"), testkit.Contacts(night1...))
		benchQueueReread(b, p, sim, testkit.Contacts(night2...), latency, func(q simcore.Request) bool {
			return q.Method == "GET" && strings.Contains(q.Path, "/profile/@")
		})
	}
}
