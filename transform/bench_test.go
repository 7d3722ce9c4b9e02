package transform_test

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"optsync/extract"
	"optsync/transform"
	"optsync/transform/sorts"
)

// benchRows are n contacts and their profiles, in random order, shaped as
// the generated exports (fixtures/cmd/gen): one profile per contact, four
// mapped pairs, a twentieth of the pairs differing.
func benchRows(n int, ks *extract.Keys) ([]extract.Contact, []extract.Profile) {
	w := ks.Writer()
	rng := rand.New(rand.NewPCG(7, 7))
	const chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
	cs, ps := make([]extract.Contact, n), make([]extract.Profile, n)
	key := make([]byte, 21)
	for i := range cs {
		var id extract.ID
		binary.BigEndian.PutUint64(id[:], rng.Uint64())
		binary.BigEndian.PutUint64(id[8:], rng.Uint64())
		key[0] = '@'
		for k := 1; k < len(key); k++ {
			key[k] = chars[rng.IntN(len(chars))]
		}
		c := extract.Contact{ID: id, Modified: 1.7e12 + rng.Int64N(1e10), Line: int32(i + 2)}
		p := extract.Profile{ID: id, PKey: w.PutBytes(key), Modified: 1.7e12 + rng.Int64N(1e10), Line: int32(i + 2)}
		for f := range 4 {
			v := extract.Of(rng.IntN(3) == 0)
			c.Values[f], p.Values[f] = v, v
			if rng.IntN(20) == 0 {
				p.Values[f] = v.Not()
			}
		}
		cs[i], ps[i] = c, p
	}
	return cs, ps
}

type benchDirty struct{ n int }

func (d *benchDirty) Add(*transform.Entry) error { d.n++; return nil }

type benchBar struct{}

func (benchBar) Add(int64) {}

// BenchmarkIdentifyDecide runs a first backfill's identity rules and
// decisions over rows held in memory, without state or files: what the
// transform stage itself costs.
func BenchmarkIdentifyDecide(b *testing.B) {
	const n = 200_000
	ks := extract.NewKeys()
	cs, ps := benchRows(n, ks)
	files := []extract.InputFile{{}}
	rules := &transform.Rules{Direction: transform.Bidirectional, Policy: transform.Newest, ImportD365: true, ImportCampaign: true,
		Pairs: []transform.Pair{{D365: "donotemail", Campaign: "blackListEmail"}, {D365: "donotbulkemail", Campaign: "blackListMobile"},
			{D365: "donotphone", Campaign: "blackListPhone"}, {D365: "donotsendmm", Campaign: "blackListPostalMail"}}}
	var identify, decide, cpu time.Duration
	for b.Loop() {
		b.StopTimer()
		contacts, profiles := sorts.Contacts(0, ""), sorts.Profiles(ks, false, 0, "")
		contacts.Reserve(n)
		profiles.Reserve(n)
		for i := range cs {
			_ = contacts.Add(&cs[i])
			_ = profiles.Add(&ps[i])
		}
		b.StartTimer()
		t0, c0 := time.Now(), cpuTime()
		id, err := transform.Identify(contacts, profiles, transform.IdentifyOptions{D365Files: files, CampaignFiles: files,
			Later: sorts.Rejects(0, ""), Sorts: sorts.Identity{}, Keys: ks})
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		pkeys := make([]transform.PKeyEntry, 0, n)
		d := transform.NewDecider(transform.DecideOptions{Rules: rules, D365Files: files, CampaignFiles: files, Walk: true,
			Dirty: &benchDirty{}, Collect: func(pkey string, id extract.ID) error {
				pkeys = append(pkeys, transform.PKeyEntry{PKey: pkey, ID: id})
				return nil
			}}, id)
		changes := 0
		if err := d.All(context.Background(), nil, benchBar{}, func(ch *transform.Change, _ *extract.Reject) error {
			if ch != nil {
				changes++
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		identify, decide, cpu = identify+t1.Sub(t0), decide+time.Since(t1), cpu+cpuTime()-c0
		if changes == 0 || len(pkeys) != n {
			b.Fatalf("%d changes, %d PKeys", changes, len(pkeys))
		}
		id.Close()
	}
	b.ReportMetric(float64(identify.Nanoseconds())/float64(b.N), "identify-ns/op")
	b.ReportMetric(float64(decide.Nanoseconds())/float64(b.N), "decide-ns/op")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
}

// cpuTime is the CPU time the process has used: on a machine others share,
// steadier than the wall time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
