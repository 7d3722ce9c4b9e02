package state

import (
	"reflect"
	"testing"

	"optsync/extract"
	"optsync/transform"
)

// Entries kept for the commit come back as they were added, whether placed
// in the rows held (their places and, when a row carries it, their id
// taken from the rows) or copied, in memory or through the spill file.
func TestDirtyEntriesComeBackAsAdded(t *testing.T) {
	cItems := make([]extract.Contact, 300)
	pItems := make([]extract.Profile, 300)
	ks := extract.NewKeys()
	kw := ks.Writer()
	for i := range cItems {
		cItems[i] = extract.Contact{ID: id(i), Modified: int64(1000 + i), Line: int32(i + 2), Values: [extract.MaxFields]extract.Tri{extract.True}}
		pItems[i] = extract.Profile{ID: id(i), PKey: kw.Put("@p" + id(i).String()[:8]), Modified: int64(2000 + i), Line: int32(i + 2)}
	}
	pItems[7].ID = id(999) // a profile whose contact id is not its entry's
	side := func(pi int) transform.ProfileSide { return transform.ProfileSideOf(ks, &pItems[pi]) }
	pair := func(ci, pi int) transform.Entry {
		return transform.Entry{Kind: transform.EntryPair, ID: cItems[ci].ID, HasC: true, HasP: true, C: cItems[ci], P: side(pi), CI: int32(ci), PI: int32(pi)}
	}
	var dense []transform.Entry
	for i := range 200 {
		dense = append(dense, pair(i, i))
	}
	onlyP := transform.Entry{Kind: transform.EntryPair, ID: pItems[5].ID, HasP: true, P: side(5), CI: -1, PI: 5}
	otherID := transform.Entry{Kind: transform.EntryConflict, ID: id(7), HasP: true, P: side(7), CI: -1, PI: 7}
	lost := transform.Entry{Kind: transform.EntryLost, ID: id(5000), CI: -1, PI: -1}
	copied := transform.Entry{Kind: transform.EntryBlocked, ID: id(6000), HasC: true, C: extract.Contact{ID: id(6000), Modified: 7, Line: 9},
		HasP: true, P: transform.ProfileSide{Profile: extract.Profile{ID: id(6000), Modified: 8, Line: 10}, PKey: "@copied"}, CI: -1, PI: -1}
	far := pair(299, 0)   // places far apart, and going back
	other := pair(3, 250) // a contact and a profile of different places
	tests := []struct {
		name    string
		entries []transform.Entry
		budget  int64
		held    bool
	}{
		{"dense, in memory", dense, 0, true},
		{"dense, spilled", dense, 64, true},
		{"mixed, in memory", []transform.Entry{pair(0, 0), onlyP, otherID, lost, copied, far, other, pair(1, 1)}, 0, true},
		{"mixed, spilled", []transform.Entry{pair(0, 0), onlyP, otherID, lost, copied, far, other, pair(1, 1)}, 40, true},
		{"no rows held", []transform.Entry{copied, lost}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var d *Dirty
			if tt.held {
				d = NewDirty(tt.budget, t.TempDir(), cItems, pItems, ks, len(tt.entries))
			} else {
				d = NewDirty(tt.budget, t.TempDir(), nil, nil, nil, len(tt.entries))
			}
			defer d.Close()
			for i := range tt.entries {
				e := tt.entries[i]
				if err := d.Add(&e); err != nil {
					t.Fatal(err)
				}
			}
			next, err := d.reader()
			if err != nil {
				t.Fatal(err)
			}
			for i, want := range tt.entries {
				var got transform.Entry
				more, err := next(&got)
				if err != nil || !more {
					t.Fatalf("entry %d: more %v, err %v", i, more, err)
				}
				if !tt.held || want.CI < 0 && want.PI < 0 && want.Kind != transform.EntryLost {
					// Copied entries come back without places.
					want.CI, want.PI = 0, 0
				}
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("entry %d:\n got %+v\nwant %+v", i, got, want)
				}
			}
			var e transform.Entry
			if more, err := next(&e); more || err != nil {
				t.Fatalf("after the last: more %v, err %v", more, err)
			}
		})
	}
}

// A dense backfill's entries take a few bytes each in memory, not the ids
// the rows hold already.
func TestDirtyRefsAreSmall(t *testing.T) {
	const n = 1000
	cItems := make([]extract.Contact, n)
	pItems := make([]extract.Profile, n)
	ks := extract.NewKeys()
	d := NewDirty(0, t.TempDir(), cItems, pItems, ks, n)
	defer d.Close()
	for i := range n {
		cItems[i].ID, pItems[i].ID = id(i), id(i)
		e := transform.Entry{ID: id(i), HasC: true, HasP: true, C: cItems[i], P: transform.ProfileSideOf(ks, &pItems[i]), CI: int32(i), PI: int32(i)}
		if err := d.Add(&e); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(d.buf); got > n*dirtyRefSize {
		t.Fatalf("%d entries take %d bytes, want at most %d", n, got, n*dirtyRefSize)
	}
}
