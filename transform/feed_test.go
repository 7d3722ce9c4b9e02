package transform_test

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"slices"
	"testing"

	"optsync/extract"
	"optsync/extract/spill"
	"optsync/transform"
	"optsync/transform/sorts"
)

// feedRows are n contacts and their profiles (benchRows), and rows the
// identity rules set aside: a second row of a contact (superseded), and a
// second profile of a contact (both duplicates), some of them on the
// contact read last.
func feedRows(n int, ks *extract.Keys) ([]extract.Contact, []extract.Profile) {
	cs, ps := benchRows(n, ks)
	w := ks.Writer()
	last := slices.MaxFunc(cs, func(a, b extract.Contact) int { return a.ID.Compare(b.ID) })
	for _, c := range []extract.Contact{cs[3], cs[n/2], last} {
		c.Line, c.Modified = int32(n+len(cs)+2), c.Modified+1
		cs = append(cs, c)
	}
	for i, c := range []extract.Contact{cs[7], cs[n/3], last} {
		ps = append(ps, extract.Profile{ID: c.ID, PKey: w.Put("@second" + string(rune('a'+i))), Modified: c.Modified, Line: int32(n + len(ps) + 2)})
	}
	return cs, ps
}

// identifyRows runs the identity rules over the rows, its rejects into
// later.
func identifyRows(t *testing.T, ks *extract.Keys, cs []extract.Contact, ps []extract.Profile, later *spillRejects) *transform.Identity {
	t.Helper()
	contacts, profiles := sorts.Contacts(0, ""), sorts.Profiles(ks, false, 0, "")
	for i := range cs {
		_ = contacts.Add(&cs[i])
	}
	for i := range ps {
		_ = profiles.Add(&ps[i])
	}
	files := []extract.InputFile{{}}
	id, err := transform.Identify(contacts, profiles, transform.IdentifyOptions{D365Files: files, CampaignFiles: files,
		Later: later, Sorts: sorts.Identity{}, Keys: ks})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

type spillRejects = spill.Sorter[extract.Reject]

// benchRules are the bench's rules: four pairs, both ways, newest wins.
func benchRules() *transform.Rules {
	return &transform.Rules{Direction: transform.Bidirectional, Policy: transform.Newest, ImportD365: true, ImportCampaign: true,
		Pairs: []transform.Pair{{D365: "donotemail", Campaign: "blackListEmail"}, {D365: "donotbulkemail", Campaign: "blackListMobile"},
			{D365: "donotphone", Campaign: "blackListPhone"}, {D365: "donotsendmm", Campaign: "blackListPostalMail"}}}
}

// rejectsOf lists what a rejects' sorter holds, in its order.
func rejectsOf(t *testing.T, later *spillRejects) []extract.Reject {
	t.Helper()
	s, err := later.Sorted()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var rs []extract.Reject
	for r := s.Next(); r != nil; r = s.Next() {
		rs = append(rs, *r)
	}
	return rs
}

// The decisions read the entries on another goroutine (feed.go): the
// rejects the identity rules find on the way reach the sorter as when the
// entries are read in turn (Drain), none lost; the conflicts are still
// marked (and kept for the commit).
func TestAllKeepsTheRulesRejects(t *testing.T) {
	const n = 3000
	ks := extract.NewKeys()
	cs, ps := feedRows(n, ks)
	rules := benchRules()
	files := []extract.InputFile{{}}

	want := sorts.Rejects(0, "")
	if err := identifyRows(t, ks, cs, ps, want).Drain(); err != nil {
		t.Fatal(err)
	}
	later := sorts.Rejects(0, "")
	id := identifyRows(t, ks, cs, ps, later)
	defer id.Close()
	dirty := &benchDirty{}
	d := transform.NewDecider(transform.DecideOptions{Rules: rules, D365Files: files, CampaignFiles: files, Walk: true, Dirty: dirty}, id)
	if err := d.All(context.Background(), nil, benchBar{}, func(*transform.Change, *extract.Reject) error { return nil }); err != nil {
		t.Fatal(err)
	}
	got, wantRs := rejectsOf(t, later), rejectsOf(t, want)
	if len(wantRs) != 3+6 {
		t.Fatalf("the rules found %d rejects, want 9: the test's rows are not what it means", len(wantRs))
	}
	if !slices.Equal(got, wantRs) {
		t.Fatalf("rejects while deciding:\n%v\nwant (read in turn):\n%v", got, wantRs)
	}
	if id.Duplicates != 6 || id.Superseded != 3 || id.Stats.Matched != n-3 {
		t.Fatalf("the rules counted %d duplicates, %d superseded, %d matched", id.Duplicates, id.Superseded, id.Stats.Matched)
	}
	if dirty.n != n { // every contact, the three in conflict too
		t.Fatalf("%d entries kept for the commit, want %d", dirty.n, n)
	}
}

// All stopped early (the sink failed) stops the reading of the entries
// before it returns, and returns the sink's error: the Identity is its
// caller's again (read here, which the race detector checks against a
// reading left running, and the goroutines' stacks against one left
// blocked).
func TestAllStopsReadingWhenItFails(t *testing.T) {
	const n = 20000
	ks := extract.NewKeys()
	cs, ps := benchRows(n, ks)
	id := identifyRows(t, ks, cs, ps, sorts.Rejects(0, ""))
	defer id.Close()
	files := []extract.InputFile{{}}
	d := transform.NewDecider(transform.DecideOptions{Rules: benchRules(), D365Files: files, CampaignFiles: files, Walk: true, Dirty: &benchDirty{}}, id)
	failed := errors.New("sink failed")
	changes := 0
	err := d.All(context.Background(), nil, benchBar{}, func(ch *transform.Change, _ *extract.Reject) error {
		if changes++; changes == 10 {
			return failed
		}
		return nil
	})
	if !errors.Is(err, failed) {
		t.Fatalf("All: %v, want %v", err, failed)
	}
	rest := 0
	for e := id.Next(); e != nil; e = id.Next() {
		rest++
	}
	if rest == 0 || rest >= n {
		t.Fatalf("%d entries left after a stop, want some but not all", rest)
	}
	// The feed's goroutine was stopped (All waits for it to say so): it is
	// gone, or on its way out. One left running would have raced with the
	// reads above, and ends blocked, waiting for a batch All never frees:
	// it shows so in the stacks. (Counting goroutines instead was flaky
	// under -race: it caught goroutines that were not the feed's.)
	for {
		g, found := feedStack()
		if !found {
			break
		}
		if header, _, _ := bytes.Cut(g, []byte("\n")); bytes.Contains(header, []byte("[select")) || bytes.Contains(header, []byte("[chan")) {
			t.Fatalf("the feed was left running after All returned:\n%s", g)
		}
		runtime.Gosched()
	}
}

// feedStack is the stack of an entry feed's goroutine, if one is there.
func feedStack() ([]byte, bool) {
	stacks := make([]byte, 1<<20)
	for _, g := range bytes.Split(stacks[:runtime.Stack(stacks, true)], []byte("\n\n")) {
		if bytes.Contains(g, []byte("entryFeed).read")) {
			return g, true
		}
	}
	return nil, false
}
