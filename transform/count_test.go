package transform

import (
	"fmt"
	"slices"
	"testing"

	"optsync/extract"
	"optsync/extract/spill"
)

// testSorts are the identity rules' sorts, in memory or spilling under dir
// past budget (as transform/sorts makes them).
type testSorts struct {
	budget int64
	dir    string
}

func (s testSorts) ProfilesByContact(ks *extract.Keys) *spill.Sorter[extract.Profile] {
	return spill.NewSorter(ProfileCodec(ks, true), s.budget, s.dir, ProfileSize)
}
func (s testSorts) HeldByContact(ks *extract.Keys, held []extract.Profile) *spill.Sorter[extract.Profile] {
	return spill.FromSlice(ProfileCodec(ks, true), s.budget, s.dir, ProfileSize, held)
}
func (s testSorts) ProfilesByPKey(ks *extract.Keys) *spill.Sorter[extract.Profile] {
	return spill.NewSorter(ProfileCodec(ks, false), s.budget, s.dir, ProfileSize)
}
func (s testSorts) PKeysByID() *spill.Sorter[PKeyEntry] {
	return spill.NewSorter(PKeyCodec(true), s.budget, s.dir, PKeySize)
}

// countAsked is a PKey index's count that notes what it is asked.
type countAsked struct {
	asked    []string
	finished int
	failAt   int // the call (from 1) that fails; 0: none
	missed   func(PKeyEntry) error
}

func (c *countAsked) Count(pkey string) (int, error) {
	c.asked = append(c.asked, pkey)
	if len(c.asked) == c.failAt {
		return 0, fmt.Errorf("count failed at %s", pkey)
	}
	if len(c.asked)%3 == 0 {
		return 2, nil
	}
	return 0, nil
}

func (c *countAsked) Finish() error {
	c.finished++
	return c.missed(PKeyEntry{PKey: "gone", ID: extract.ID{15: 1}})
}

// The count of the input's PKeys in state's index runs beside the rule by
// PKey: it is asked for every PKey the rule keeps, once, in increasing
// order, whether the profiles are held in memory or spilled, and what it
// counts (and what it missed) is the Identity's, as if counted inline; its
// first error is Identify's.
func TestIdentifyCountsEveryPKeyKept(t *testing.T) {
	const n = 10*pkeyBatch + 7
	for _, tc := range []struct {
		name   string
		budget int64
		failAt int
	}{{"in memory", 0, 0}, {"spilled", 64 * ProfileSize, 0}, {"failing", 0, 5 * pkeyBatch}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			contacts := spill.NewSorter(ContactCodec(), tc.budget, dir, ContactSize)
			ks := extract.NewKeys()
			kw := ks.Writer()
			profiles := spill.NewSorter(ProfileCodec(ks, false), tc.budget, dir, ProfileSize)
			var want []string
			for i := range n {
				id := extract.ID{12: byte(i >> 24), 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)}
				if err := contacts.Add(&extract.Contact{ID: id, Modified: 1, Line: int32(i + 2)}); err != nil {
					t.Fatal(err)
				}
				pkey := fmt.Sprintf("p%07d", n-i)
				p := extract.Profile{ID: id, PKey: kw.Put(pkey), Modified: 1, Line: int32(i + 2)}
				if err := profiles.Add(&p); err != nil {
					t.Fatal(err)
				}
				want = append(want, pkey)
			}
			slices.Sort(want)
			c := &countAsked{failAt: tc.failAt}
			files := []extract.InputFile{{}}
			id, err := Identify(contacts, profiles, IdentifyOptions{D365Files: files, CampaignFiles: files,
				Later: spill.NewSorter(RejectCodec(), 0, "", RejectSize), Sorts: testSorts{tc.budget, dir}, Keys: ks, ReadKeys: kw,
				CountPKeys: func(missed func(PKeyEntry) error) PKeyCounter { c.missed = missed; return c }})
			if tc.failAt > 0 {
				if err == nil || err.Error() != fmt.Sprintf("count failed at %s", want[tc.failAt-1]) {
					t.Fatalf("Identify: %v, want the count's error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer id.Close()
			if !slices.Equal(c.asked, want) || c.finished != 1 {
				t.Fatalf("asked %d PKeys (want %d in order), finished %d times", len(c.asked), len(want), c.finished)
			}
			if id.presentC != n/3*2 {
				t.Fatalf("presentC %d, want %d", id.presentC, n/3*2)
			}
			if e := id.missed.Next(); e == nil || e.PKey != "gone" {
				t.Fatalf("missed: %+v", e)
			}
		})
	}
}

// countEmpty is the count of a PKey index that holds nothing (a first
// backfill's), which says so.
type countEmpty struct{ countAsked }

func (c *countEmpty) Empty() bool { return true }

// An index that says it holds nothing is asked for no PKey (each would
// count 0, and none is missed), in memory or spilled, with or without
// owners: the input's PKeys count as counted, none present.
func TestIdentifyAsksAnEmptyIndexNothing(t *testing.T) {
	const n = 3*pkeyBatch + 5
	for _, tc := range []struct {
		name   string
		budget int64
		owners bool
	}{{"in memory", 0, false}, {"spilled", 64 * ProfileSize, false}, {"in memory, owners", 0, true}, {"spilled, owners", 64 * ProfileSize, true}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			contacts := spill.NewSorter(ContactCodec(), tc.budget, dir, ContactSize)
			ks := extract.NewKeys()
			kw := ks.Writer()
			profiles := spill.NewSorter(ProfileCodec(ks, false), tc.budget, dir, ProfileSize)
			for i := range n {
				id := extract.ID{12: byte(i >> 24), 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)}
				if err := contacts.Add(&extract.Contact{ID: id, Modified: 1, Line: int32(i + 2)}); err != nil {
					t.Fatal(err)
				}
				p := extract.Profile{ID: id, PKey: kw.Put(fmt.Sprintf("p%07d", n-i)), Modified: 1, Line: int32(i + 2)}
				if err := profiles.Add(&p); err != nil {
					t.Fatal(err)
				}
			}
			c := &countEmpty{}
			files := []extract.InputFile{{}}
			id, err := Identify(contacts, profiles, IdentifyOptions{D365Files: files, CampaignFiles: files, WithOwners: tc.owners,
				Later: spill.NewSorter(RejectCodec(), 0, "", RejectSize), Sorts: testSorts{tc.budget, dir}, Keys: ks, ReadKeys: kw,
				CountPKeys: func(missed func(PKeyEntry) error) PKeyCounter { c.missed = missed; return c }})
			if err != nil {
				t.Fatal(err)
			}
			defer id.Close()
			if len(c.asked) != 0 || !id.pkeyCounted || id.presentC != 0 {
				t.Fatalf("asked %d PKeys, counted %v, present %d; want none asked, counted, none present", len(c.asked), id.pkeyCounted, id.presentC)
			}
			if tc.owners && id.Owners().Len() != n {
				t.Fatalf("%d owners, want %d", id.Owners().Len(), n)
			}
			if err := id.Drain(); err != nil || id.Stats.Matched != n {
				t.Fatalf("drain: %v, %d matched", err, id.Stats.Matched)
			}
		})
	}
}
