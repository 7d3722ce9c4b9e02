package transform_test

import (
	"testing"
	"time"

	"optsync/extract"
	"optsync/transform"
	"optsync/transform/sorts"
)

// BenchmarkIdentifySpilling runs a first backfill's identity rules over
// rows sorted in runs on disk, as a backfill past memory_budget does (the
// 10 M shape: the profiles in three runs by PKey, then three by contact):
// identify-ns is what Identify takes (the merge by PKey, the rule, the
// sort by contact), join-ns the join that follows as the decider reads.
func BenchmarkIdentifySpilling(b *testing.B) {
	benchIdentify(b, 30<<20, b.TempDir()) // a third of the profiles' rows
}

// BenchmarkIdentifyHeld runs a first backfill's identity rules over rows
// all held in memory (the 1 M shape): identify-ns is what Identify takes
// (the sorts by PKey and by contact, the rule by PKey), join-ns the join
// that follows as the decider reads.
func BenchmarkIdentifyHeld(b *testing.B) {
	benchIdentify(b, 0, "")
}

// benchIdentify times the identity rules and the join over a million
// matched rows, sorted within budget in dir (0, "": held in memory).
func benchIdentify(b *testing.B, budget int64, dir string) {
	const n = 1_000_000
	ks := extract.NewKeys()
	cs, ps := benchRows(n, ks)
	files := []extract.InputFile{{}}
	var identify, join, cpu time.Duration
	for b.Loop() {
		b.StopTimer()
		contacts, profiles := sorts.Contacts(budget, dir), sorts.Profiles(ks, false, budget, dir)
		if budget == 0 {
			contacts.Reserve(n)
			profiles.Reserve(n)
		}
		for i := range cs {
			if err := contacts.Add(&cs[i]); err != nil {
				b.Fatal(err)
			}
			if err := profiles.Add(&ps[i]); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		t0, c0 := time.Now(), cpuTime()
		id, err := transform.Identify(contacts, profiles, transform.IdentifyOptions{D365Files: files, CampaignFiles: files,
			Later: sorts.Rejects(budget, dir), Sorts: sorts.Identity{Budget: budget, Dir: dir}, Keys: ks})
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := id.Drain(); err != nil {
			b.Fatal(err)
		}
		identify, join, cpu = identify+t1.Sub(t0), join+time.Since(t1), cpu+cpuTime()-c0
		if id.Stats.Matched != n {
			b.Fatalf("%d matched", id.Stats.Matched)
		}
		id.Close()
	}
	b.ReportMetric(float64(identify.Nanoseconds())/float64(b.N), "identify-ns/op")
	b.ReportMetric(float64(join.Nanoseconds())/float64(b.N), "join-ns/op")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
}
