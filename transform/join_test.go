package transform

import (
	"fmt"
	"slices"
	"testing"

	"optsync/extract"
)

// id makes a GUID whose first byte orders it; the last byte keeps it non-trivial.
func id(b byte) extract.ID { return extract.ID{0: b, 15: 0xee} }

func con(b byte, modified int64, line int32, bad bool) extract.Contact {
	return extract.Contact{ID: id(b), Modified: modified, Line: line, Bad: bad}
}

func (tk testKeys) prof(b byte, pkey string, line int32, bad bool) extract.Profile {
	return extract.Profile{ID: id(b), PKey: tk.pk(pkey), Line: line, Bad: bad}
}

// keys summarises rows as "id:line", with "!" for a bad row.
func keys[R extract.Contact | extract.Profile](rows []R) []string {
	var out []string
	for _, r := range rows {
		var idb byte
		var line int32
		var bad bool
		switch r := any(r).(type) {
		case extract.Contact:
			idb, line, bad = r.ID[0], r.Line, r.Bad
		case extract.Profile:
			idb, line, bad = r.ID[0], r.Line, r.Bad
		}
		k := fmt.Sprintf("%d:%d", idb, line)
		if bad {
			k += "!"
		}
		out = append(out, k)
	}
	return out
}

func TestDedupContacts(t *testing.T) {
	const a, b, c = 1, 2, 3
	cases := []struct {
		name     string
		in       []extract.Contact
		kept     []string
		replaced []Superseded
	}{
		{name: "empty"},
		{name: "single", in: []extract.Contact{con(a, 100, 2, false)}, kept: []string{"1:2"}},
		{name: "later-modifiedon-wins-over-later-line",
			in:   []extract.Contact{con(a, 200, 2, false), con(a, 100, 3, false)},
			kept: []string{"1:2"}, replaced: []Superseded{{ID: id(a), Line: 3, By: 2}}},
		{name: "equal-time-later-line-wins",
			in:   []extract.Contact{con(a, 100, 5, false), con(a, 100, 2, false)},
			kept: []string{"1:5"}, replaced: []Superseded{{ID: id(a), Line: 2, By: 5}}},
		{name: "winning-bad-row-blocks",
			in:   []extract.Contact{con(a, 100, 2, false), con(a, 200, 3, true)},
			kept: []string{"1:3!"}, replaced: []Superseded{{ID: id(a), Line: 2, By: 3}}},
		{name: "bad-row-unknown-time-is-newest",
			in:   []extract.Contact{con(a, extract.NoTime, 2, true), con(a, t12, 3, false)},
			kept: []string{"1:2!"}, replaced: []Superseded{{ID: id(a), Line: 3, By: 2, ByUnknownTime: true}}},
		{name: "bad-row-at-the-epoch-is-older", // the epoch is a time, not "unknown"
			in:   []extract.Contact{con(a, 0, 2, true), con(a, t12, 3, false)},
			kept: []string{"1:3"}, replaced: []Superseded{{ID: id(a), Line: 2, By: 3, Bad: true}}},
		{name: "older-bad-row-superseded",
			in:   []extract.Contact{con(a, 100, 3, true), con(a, 200, 2, false)},
			kept: []string{"1:2"}, replaced: []Superseded{{ID: id(a), Line: 3, By: 2, Bad: true}}},
		{name: "two-bad-unknown-times-later-line",
			in:   []extract.Contact{con(a, extract.NoTime, 4, true), con(a, extract.NoTime, 3, true)},
			kept: []string{"1:4!"}, replaced: []Superseded{{ID: id(a), Line: 3, By: 4, Bad: true, ByUnknownTime: true}}},
		{name: "sorted-by-id-all-by-winner",
			in: []extract.Contact{con(b, 1, 2, false), con(a, 300, 3, false), con(a, 100, 4, false),
				con(c, 5, 6, false), con(a, 200, 5, false), con(c, 5, 7, false)},
			kept: []string{"1:3", "2:2", "3:7"},
			replaced: []Superseded{{ID: id(a), Line: 4, By: 3}, {ID: id(a), Line: 5, By: 3},
				{ID: id(c), Line: 6, By: 7}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			kept, sup := DedupContacts(slices.Clone(tc.in))
			if got := keys(kept); !slices.Equal(got, tc.kept) {
				t.Errorf("kept %v, want %v", got, tc.kept)
			}
			if !slices.Equal(sup, tc.replaced) {
				t.Errorf("superseded\n got %+v\nwant %+v", sup, tc.replaced)
			}
		})
	}
}

func TestGroupProfiles(t *testing.T) {
	tk := newTestKeys()
	in := []extract.Profile{
		tk.prof(2, "@b2", 4, false), tk.prof(1, "@a", 3, false), tk.prof(2, "@b1", 2, false),
		tk.prof(3, "@c", 5, false), tk.prof(2, "@b3", 6, false), tk.prof(4, "@d", 7, true),
		tk.prof(5, "@e2", 9, true), tk.prof(5, "@e1", 8, false),
	}
	g := GroupProfiles(tk.ks, slices.Clone(in), false)
	kept, dups, sup := g.Kept, g.Dups, g.Superseded
	if len(sup) != 0 {
		t.Errorf("superseded %+v, want none", sup)
	}
	if got, want := keys(kept), []string{"1:3", "2:2!", "3:5", "4:7!", "5:8!"}; !slices.Equal(got, want) {
		t.Errorf("kept %v, want %v", got, want)
	}
	if tk.pkOf(kept[1].PKey) != "@b1" || kept[0].Bad || kept[2].Bad {
		t.Errorf("kept rows %+v", kept)
	}
	var pk []string
	for _, p := range dups {
		pk = append(pk, tk.pkOf(p.PKey))
	}
	if want := []string{"@b1", "@b2", "@b3", "@e1", "@e2"}; !slices.Equal(pk, want) {
		t.Errorf("dups %v, want %v", pk, want)
	}

	g = GroupProfiles(tk.ks, []extract.Profile{tk.prof(9, "@z", 2, false), tk.prof(8, "@y", 3, false)}, false)
	kept, dups = g.Kept, g.Dups
	if len(dups) != 0 || !slices.Equal(keys(kept), []string{"8:3", "9:2"}) {
		t.Errorf("no duplicates: kept %v dups %v", keys(kept), dups)
	}
}

// One profile in two files of a drop (or twice in one export) is one
// profile: the newest row stands, the others are superseded, not duplicates.
func TestGroupProfilesSamePKey(t *testing.T) {
	tk := newTestKeys()
	older, newer, newest := tk.prof(1, "@a", 5, false), tk.prof(1, "@a", 2, false), tk.prof(1, "@a", 3, false)
	older.Modified, newer.Modified, newest.Modified = 100, 200, 300
	newer.File, newest.File = 1, 2
	g := GroupProfiles(tk.ks, []extract.Profile{newest, older, newer}, false)
	kept, dups, sup := g.Kept, g.Dups, g.Superseded
	if len(dups) != 0 || len(kept) != 1 || kept[0].Line != 3 || kept[0].File != 2 || kept[0].Bad {
		t.Fatalf("kept %+v dups %+v", kept, dups)
	}
	if len(sup) != 2 || sup[0].Line != 5 || sup[1].Line != 2 || sup[0].By != 3 || sup[1].By != 3 || sup[0].ByFile != 2 {
		t.Fatalf("superseded %+v", sup)
	}
	// A second PKey for the same contact is still a duplicate.
	other := tk.prof(1, "@b", 9, false)
	g = GroupProfiles(tk.ks, []extract.Profile{newest, other}, false)
	kept, dups = g.Kept, g.Dups
	if len(dups) != 2 || len(kept) != 1 || !kept[0].Bad {
		t.Fatalf("kept %+v dups %+v", kept, dups)
	}
}

// A profile is its PKey, whatever externalId its rows carry: the latest row
// links it, the others are superseded; a kept-out profile keeps every
// contact its rows name out with it, without counting a duplicate.
func TestGroupProfilesByPKey(t *testing.T) {
	tk := newTestKeys()
	row := func(contact byte, pkey string, modified int64, line int32, bad bool) extract.Profile {
		p := tk.prof(contact, pkey, line, bad)
		p.Modified = modified
		if contact == 0 {
			p.ID, p.Unlinked = extract.ID{}, true
		}
		return p
	}
	cases := []struct {
		name     string
		in       []extract.Profile
		kept     []string // "contact:line", "!" for an entry that keeps its contact out
		dups     int
		sup      []Superseded
		unlinked int
		owners   map[string]OwnerKind
	}{
		{name: "relinked: the later row links it",
			in:   []extract.Profile{row(1, "@p", t09, 2, false), row(2, "@p", t10, 3, false)},
			kept: []string{"2:3"}, sup: []Superseded{{ID: id(1), PKey: "@p", Line: 2, By: 3}},
			owners: map[string]OwnerKind{"@p": OwnerContact}},
		{name: "equal times: the later line",
			in:   []extract.Profile{row(2, "@p", t09, 3, false), row(1, "@p", t09, 2, false)},
			kept: []string{"2:3"}, sup: []Superseded{{ID: id(1), PKey: "@p", Line: 2, By: 3}}},
		{name: "unlinked later row: linked to no contact",
			in:       []extract.Profile{row(1, "@p", t09, 2, false), row(0, "@p", t10, 3, false)},
			sup:      []Superseded{{ID: id(1), PKey: "@p", Line: 2, By: 3}},
			unlinked: 1, owners: map[string]OwnerKind{"@p": OwnerNoContact}},
		{name: "unlinked older row: superseded",
			in:   []extract.Profile{row(0, "@p", t09, 2, false), row(1, "@p", t10, 3, false)},
			kept: []string{"1:3"}, sup: []Superseded{{PKey: "@p", Line: 2, By: 3}}},
		{name: "bad later row of another contact keeps both out",
			in:   []extract.Profile{row(1, "@p", t09, 2, false), row(2, "@p", t10, 3, true)},
			kept: []string{"1:2!", "2:3!"}, sup: []Superseded{{ID: id(1), PKey: "@p", Line: 2, By: 3}},
			owners: map[string]OwnerKind{"@p": OwnerKeptOut}},
		{name: "unreadable time may be the newest",
			in:   []extract.Profile{row(1, "@p", t10, 2, false), row(1, "@p", extract.NoTime, 3, true)},
			kept: []string{"1:3!"}, sup: []Superseded{{ID: id(1), PKey: "@p", Line: 2, By: 3, ByUnknownTime: true}},
			owners: map[string]OwnerKind{"@p": OwnerKeptOut}},
		{name: "unlinked row with an unreadable time keeps the linked one out",
			in:   []extract.Profile{row(1, "@p", t10, 2, false), row(0, "@p", extract.NoTime, 3, false)},
			kept: []string{"1:2!"}, sup: []Superseded{{ID: id(1), PKey: "@p", Line: 2, By: 3, ByUnknownTime: true}},
			owners: map[string]OwnerKind{"@p": OwnerKeptOut}},
		{name: "older bad row: the good row wins",
			in:   []extract.Profile{row(1, "@p", t09, 2, true), row(1, "@p", t10, 3, false)},
			kept: []string{"1:3"}, sup: []Superseded{{ID: id(1), PKey: "@p", Line: 2, By: 3, Bad: true}}},
		{name: "kept-out profile and another profile: two profiles of one contact",
			in:   []extract.Profile{row(1, "@p", t09, 2, false), row(1, "@p", extract.NoTime, 3, true), row(1, "@q", t09, 4, false)},
			kept: []string{"1:3!"}, dups: 2, sup: []Superseded{{ID: id(1), PKey: "@p", Line: 2, By: 3, ByUnknownTime: true}}},
		{name: "kept-out profile another contact's row names: out, not a duplicate",
			in:   []extract.Profile{row(1, "@p", t09, 2, false), row(2, "@p", extract.NoTime, 3, true), row(1, "@q", t09, 4, false)},
			kept: []string{"1:2!", "2:3!"}, sup: []Superseded{{ID: id(1), PKey: "@p", Line: 2, By: 3, ByUnknownTime: true}}},
		{name: "two profiles of one contact, one bad: duplicates",
			in:   []extract.Profile{row(1, "@p", t09, 2, true), row(1, "@q", t09, 3, false)},
			kept: []string{"1:2!"}, dups: 2},
		{name: "a row without a PKey keeps its contact out, no duplicate",
			in:   []extract.Profile{row(1, "", extract.NoTime, 2, true), row(1, "@q", t09, 3, false)},
			kept: []string{"1:2!"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := GroupProfiles(tk.ks, slices.Clone(tc.in), true)
			if got := keys(g.Kept); !slices.Equal(got, tc.kept) {
				t.Errorf("kept %v, want %v", got, tc.kept)
			}
			if len(g.Dups) != tc.dups {
				t.Errorf("dups %+v, want %d", g.Dups, tc.dups)
			}
			if !slices.Equal(g.Superseded, tc.sup) {
				t.Errorf("superseded\n got %+v\nwant %+v", g.Superseded, tc.sup)
			}
			if g.Unlinked != tc.unlinked {
				t.Errorf("unlinked %d, want %d", g.Unlinked, tc.unlinked)
			}
			for pkey, want := range tc.owners {
				if got, _ := g.Owners.Lookup(pkey); got != want {
					t.Errorf("owner of %s: %d, want %d", pkey, got, want)
				}
			}
			if got, _ := g.Owners.Lookup("@absent"); got != OwnerNone {
				t.Errorf("owner of a PKey not in the input: %d", got)
			}
		})
	}
	// Many distinct PKeys (sifted by hash) and a few shared ones, in any order.
	var many []extract.Profile
	for i := range 5000 {
		many = append(many, row(byte(1+i%200), fmt.Sprintf("@k%d", i), t09, int32(i+2), false))
	}
	many = append(many, row(250, "@k17", t10, 9000, false), row(0, "@k4000", t10, 9001, false))
	g := GroupProfiles(tk.ks, many, true)
	if len(g.Superseded) != 2 || g.Unlinked != 1 {
		t.Errorf("superseded %+v unlinked %d", g.Superseded, g.Unlinked)
	}
	if kind, owner := g.Owners.Lookup("@k17"); kind != OwnerContact || owner != id(250) {
		t.Errorf("@k17: %d %v", kind, owner)
	}
}

func TestJoin(t *testing.T) {
	tk := newTestKeys()
	cases := []struct {
		name    string
		cs      []extract.Contact
		ps      []extract.Profile
		calls   []string // "contact line/pkey" in call order
		stats   JoinStats
		ordered bool
	}{
		{name: "empty"},
		{name: "contacts-only", cs: []extract.Contact{con(1, 1, 2, false), con(2, 1, 3, false), con(3, 1, 4, true)},
			stats: JoinStats{ContactsNoMatch: 2}},
		{name: "profiles-only", ps: []extract.Profile{tk.prof(1, "@a", 2, false), tk.prof(2, "@b", 3, true)},
			stats: JoinStats{ProfilesNoMatch: 1}},
		{name: "mixed",
			cs: []extract.Contact{con(1, 1, 10, false), con(2, 1, 11, true), con(3, 1, 12, false),
				con(5, 1, 13, false), con(7, 1, 14, false), con(8, 1, 15, false), con(9, 1, 16, true)},
			ps: []extract.Profile{tk.prof(2, "@b", 2, false), tk.prof(3, "@c", 3, false), tk.prof(4, "@d", 4, true),
				tk.prof(5, "@e", 5, true), tk.prof(6, "@f", 6, false), tk.prof(7, "@g", 7, false), tk.prof(8, "@h", 8, false),
				tk.prof(10, "@j", 9, false)},
			calls: []string{"12/@c", "14/@g", "15/@h"},
			stats: JoinStats{Matched: 3, Blocked: 2, ContactsNoMatch: 1, ProfilesNoMatch: 2}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var calls []string
			st := Join(tc.cs, tc.ps, func(ci, pi int) {
				if ci < 0 || pi < 0 {
					return // one-sided: TestJoinOneSided
				}
				c, p := &tc.cs[ci], &tc.ps[pi]
				if c.ID != p.ID || c.Bad || p.Bad {
					t.Errorf("fn(%+v, %+v)", *c, *p)
				}
				calls = append(calls, fmt.Sprintf("%d/%s", c.Line, tk.pkOf(p.PKey)))
			})
			if !slices.Equal(calls, tc.calls) {
				t.Errorf("calls %v, want %v", calls, tc.calls)
			}
			if st != tc.stats {
				t.Errorf("stats %+v, want %+v", st, tc.stats)
			}
		})
	}
}

// TestJoinAfterGrouping runs the identity steps in the order a run does.
func TestJoinAfterGrouping(t *testing.T) {
	tk := newTestKeys()
	cs, sup := DedupContacts([]extract.Contact{
		con(3, t10, 2, false), con(1, t10, 3, false), con(2, t09, 4, false), con(3, t11, 5, false), con(4, extract.NoTime, 6, true), con(4, t12, 7, false),
	})
	g := GroupProfiles(tk.ks, []extract.Profile{
		tk.prof(2, "@b1", 2, false), tk.prof(3, "@c", 3, false), tk.prof(2, "@b2", 4, false), tk.prof(1, "@a", 5, false), tk.prof(4, "@d", 6, false),
	}, false)
	ps, dups := g.Kept, g.Dups
	if len(sup) != 2 || len(dups) != 2 {
		t.Fatalf("superseded %+v dups %+v", sup, dups)
	}
	var called []byte
	st := Join(cs, ps, func(ci, pi int) {
		if ci < 0 || pi < 0 {
			return
		}
		c := &cs[ci]
		called = append(called, c.ID[0])
		if c.ID[0] == 3 && c.Line != 5 {
			t.Errorf("contact 3 joined with line %d, want the newer line 5", c.Line)
		}
	})
	if !slices.Equal(called, []byte{1, 3}) {
		t.Errorf("fn called for %v, want [1 3]", called)
	}
	if want := (JoinStats{Matched: 2, Blocked: 2}); st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
}

func TestParseDirectionAndPolicy(t *testing.T) {
	for _, s := range []string{"disabled", "d365-to-campaign", "campaign-to-d365", "bidirectional"} {
		if d, err := ParseDirection(s); err != nil || string(d) != s {
			t.Errorf("ParseDirection(%q) = %q, %v", s, d, err)
		}
	}
	for _, p := range policies {
		if got, err := ParsePolicy(string(p)); err != nil || got != p {
			t.Errorf("ParsePolicy(%q) = %q, %v", p, got, err)
		}
	}
	for _, s := range []string{"", "Bidirectional", "both", " newest"} {
		if _, err := ParseDirection(s); err == nil {
			t.Errorf("ParseDirection(%q) accepted", s)
		}
		if _, err := ParsePolicy(s); err == nil {
			t.Errorf("ParsePolicy(%q) accepted", s)
		}
	}
	if ToCampaign.String() != "d365->campaign" || ToD365.String() != "campaign->d365" || NoSide.String() != "" {
		t.Errorf("Side spellings: %q %q %q", ToCampaign, ToD365, NoSide)
	}
}
