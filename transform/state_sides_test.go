package transform

import (
	"slices"
	"testing"

	"optsync/extract"
)

var (
	emailPair = Pair{D365: "donotemail", Campaign: "blackListEmail"}
	smsPair   = Pair{D365: "xx_smsconsent", Campaign: "blackListMobile", Invert: true}
)

func contactRow(tD int64, vals ...extract.Tri) *extract.Contact {
	c := &extract.Contact{ID: id(5), Modified: tD}
	copy(c.Values[:], vals)
	return c
}

func profileRow(pkey string, tC int64, vals ...extract.Tri) *ProfileSide {
	p := &ProfileSide{Profile: extract.Profile{ID: id(5), Modified: tC}, PKey: pkey}
	copy(p.Values[:], vals)
	return p
}

// writes lists the non-skip decisions for pair 0.
func writes(ds []Decision) []Decision {
	var out []Decision
	for _, d := range ds {
		if d.Pair == 0 && d.Skip == "" {
			out = append(out, d)
		}
	}
	return out
}

// TestReplayKeepsAgreementItDoesNotReplace: pair 0 varies; pair 1 is always
// unknown on both sides, so its agreement must survive every case.
func TestReplayKeepsAgreementItDoesNotReplace(t *testing.T) {
	cases := []struct {
		name    string
		dir     Direction
		replay  bool
		s, d, c extract.Tri
		tD, tC  int64
		to      Side
		wantS   extract.Tri
	}{
		{name: "bi-replay-d365-unknown", dir: Bidirectional, replay: true, s: F, d: U, c: T, tD: t10, tC: t11, wantS: F},
		{name: "bi-replay-campaign-unknown", dir: Bidirectional, replay: true, s: T, d: F, c: U, tD: t11, tC: t10, wantS: T},
		{name: "d2c-replay-source-unknown", dir: D365ToCampaign, replay: true, s: T, d: U, c: F, tD: t10, tC: t11, wantS: T},
		{name: "c2d-replay-source-unknown", dir: CampaignToD365, replay: true, s: F, d: T, c: U, tD: t10, tC: t11, wantS: F},
		{name: "disabled-replay", dir: Disabled, replay: true, s: T, d: F, c: F, tD: t10, tC: t11, wantS: T},
		{name: "d2c-drift-left-alone", dir: D365ToCampaign, s: T, d: T, c: F, tD: t10, tC: t11, wantS: T},
		{name: "c2d-drift-left-alone", dir: CampaignToD365, s: F, d: T, c: F, tD: t11, tC: t10, wantS: F},
		// Replay does not leave one-way drift alone (spec: it writes every
		// known source value that differs), so the agreement is the write.
		{name: "d2c-replay-reverts-drift", dir: D365ToCampaign, replay: true, s: T, d: T, c: F, tD: t10, tC: t11, to: ToCampaign, wantS: T},
		{name: "bi-replay-writes", dir: Bidirectional, replay: true, s: T, d: F, c: T, tD: t11, tC: t09, to: ToCampaign, wantS: F},
		{name: "bi-replay-in-sync", dir: Bidirectional, replay: true, s: F, d: T, c: T, tD: t10, tC: t11, wantS: T},
		{name: "d2c-replay-writes", dir: D365ToCampaign, replay: true, s: T, d: F, c: T, tD: t10, tC: t11, to: ToCampaign, wantS: F},
		{name: "c2d-replay-writes", dir: CampaignToD365, replay: true, s: F, d: F, c: T, tD: t11, tC: t10, to: ToD365, wantS: T},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := &Rules{Direction: tc.dir, Policy: Newest, Replay: tc.replay, Pairs: []Pair{emailPair, {D365: "donotfax", Campaign: "blackListFax"}}}
			prev := &Snapshot{Known: true, DSeen: true, CSeen: true, DModified: t09 - day, CModified: t09 - day, PKey: "@p5", Decided: 42}
			prev.Pairs[0] = PairState{S: tc.s, DRaw: tc.s, CRaw: tc.s}
			prev.Pairs[1] = PairState{S: T, DRaw: T, CRaw: T}
			res, got := Decide(r, contactRow(tc.tD, tc.d, U), profileRow("@p5", tc.tC, tc.c, U), prev, nil)
			w := writes(got)
			if (tc.to == NoSide) != (len(w) == 0) || (len(w) > 0 && (len(w) != 1 || w[0].Target != tc.to)) {
				t.Fatalf("writes %+v, want one to %v", w, tc.to)
			}
			if res.Next.Pairs[0].S != tc.wantS {
				t.Errorf("pair 0 S = %v, want %v", res.Next.Pairs[0].S, tc.wantS)
			}
			if res.Next.Pairs[1].S != T {
				t.Errorf("skipped pair 1 lost its agreement: S = %v", res.Next.Pairs[1].S)
			}
			if res.Next.Decided != 42 {
				t.Errorf("Decided = %d, want 42", res.Next.Decided)
			}
		})
	}
}

// TestReplaySkipKeepsPendingWrite: a run wrote true to Campaign, whose
// export still shows false under the old time. A replay that skips the pair
// must not forget that Campaign holds the written value: otherwise the next
// incremental run (Campaign side rebuilt from state) sees "only Campaign
// changed" to false and clears the Dynamics opt-out nobody cleared.
func TestReplaySkipKeepsPendingWrite(t *testing.T) {
	r := &Rules{Direction: Bidirectional, Policy: Newest, Pairs: []Pair{emailPair}}
	prev := Snapshot{Known: true, DSeen: true, CSeen: true, DModified: t10, CModified: t09, PKey: "@p5"}
	prev.Pairs[0] = PairState{S: T, DRaw: T, CRaw: F, CWritten: T}
	rr := *r
	rr.Replay = true
	res, _ := Decide(&rr, contactRow(t11, U), profileRow("@p5", t09, F), &prev, nil)
	if want := (PairState{S: T, DRaw: U, CRaw: F, CWritten: T}); res.Next.Pairs[0] != want {
		t.Errorf("after replay skip: %+v, want %+v", res.Next.Pairs[0], want)
	}
	known := ProfileFromState(r, id(5), &res.Next)
	_, got := Decide(r, contactRow(t12, T), &known, &res.Next, nil)
	if len(got) != 0 {
		t.Errorf("next run after replay: %+v, want no write", got)
	}
}

func TestStaleRowsUseState(t *testing.T) {
	cases := []struct {
		name           string
		dir            Direction
		replay, invert bool
		prevD, prevC   int64
		d, c           extract.Tri // row values, own polarity
		tD, tC         int64
		want           []Decision
		staleD, staleC bool
		nextD, nextC   int64
		dRaw, cRaw     extract.Tri
		pkey           string
	}{
		{name: "bi-stale-d365", dir: Bidirectional, prevD: t11, prevC: t11, d: F, c: T, tD: t10, tC: t12,
			staleD: true, nextD: t11, nextC: t12, dRaw: T, cRaw: T, pkey: "@state"},
		{name: "bi-stale-campaign", dir: Bidirectional, prevD: t11, prevC: t11, d: T, c: F, tD: t12, tC: t10,
			staleC: true, nextD: t12, nextC: t11, dRaw: T, cRaw: T, pkey: "@state"},
		{name: "bi-both-stale", dir: Bidirectional, prevD: t11, prevC: t11, d: F, c: F, tD: t10, tC: t09,
			staleD: true, staleC: true, nextD: t11, nextC: t11, dRaw: T, cRaw: T, pkey: "@state"},
		{name: "bi-same-time-not-stale", dir: Bidirectional, prevD: t11, prevC: t11, d: F, c: T, tD: t11, tC: t11,
			want:  []Decision{{Target: ToCampaign, Old: T, New: F, Rule: RuleOnlyD365Changed, DModified: t11, CModified: t11, ClearsOptOut: true}},
			nextD: t11, nextC: t11, dRaw: F, cRaw: T, pkey: "@state"},
		{name: "bi-stale-d365-campaign-changed", dir: Bidirectional, prevD: t11, prevC: t11, d: F, c: F, tD: t10, tC: t12,
			want:   []Decision{{Target: ToD365, Old: T, New: F, Rule: RuleOnlyCampaignChanged, DModified: t11, CModified: t12, ClearsOptOut: true}},
			staleD: true, nextD: t11, nextC: t12, dRaw: T, cRaw: F, pkey: "@state"},
		{name: "bi-stale-d365-inverted", dir: Bidirectional, invert: true, prevD: t11, prevC: t11, d: T, c: T, tD: t10, tC: t12,
			staleD: true, nextD: t11, nextC: t12, dRaw: T, cRaw: T, pkey: "@state"},
		{name: "d2c-stale-d365", dir: D365ToCampaign, prevD: t11, prevC: t11, d: F, c: T, tD: t10, tC: t12,
			staleD: true, nextD: t11, nextC: t12, dRaw: T, cRaw: T, pkey: "@state"},
		{name: "c2d-stale-campaign", dir: CampaignToD365, prevD: t11, prevC: t11, d: T, c: F, tD: t12, tC: t10,
			staleC: true, nextD: t12, nextC: t11, dRaw: T, cRaw: T, pkey: "@state"},
		{name: "c2d-stale-d365-target-ignored", dir: CampaignToD365, prevD: t11, prevC: t11, d: F, c: T, tD: t10, tC: t12,
			staleD: true, nextD: t11, nextC: t12, dRaw: T, cRaw: T, pkey: "@state"},
		// An old export replayed must not undo newer knowledge either: the
		// stale false would otherwise win as "newer" and clear the opt-out.
		{name: "bi-replay-stale-d365", dir: Bidirectional, replay: true, prevD: t12, prevC: t09, d: F, c: T, tD: t11, tC: t10,
			staleD: true, nextD: t12, nextC: t10, dRaw: T, cRaw: T, pkey: "@state"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pair := emailPair
			pair.Invert = tc.invert
			r := &Rules{Direction: tc.dir, Policy: Newest, Replay: tc.replay, Pairs: []Pair{pair}}
			prev := &Snapshot{Known: true, DSeen: true, CSeen: true, DModified: tc.prevD, CModified: tc.prevC, PKey: "@state"}
			prev.Pairs[0] = PairState{S: T, DRaw: T, CRaw: T} // opted out everywhere
			res, got := Decide(r, contactRow(tc.tD, tc.d), profileRow("@state", tc.tC, tc.c), prev, nil)
			if len(got) != len(tc.want) || (len(got) == 1 && got[0] != tc.want[0]) {
				t.Fatalf("decisions\n got %+v\nwant %+v", got, tc.want)
			}
			if res.StaleD != tc.staleD || res.StaleC != tc.staleC {
				t.Errorf("StaleD=%v StaleC=%v, want %v %v", res.StaleD, res.StaleC, tc.staleD, tc.staleC)
			}
			n := res.Next
			if n.DModified != tc.nextD || n.CModified != tc.nextC || n.PKey != tc.pkey || !n.DSeen || !n.CSeen {
				t.Errorf("next header %+v, want DModified %d CModified %d PKey %s", n, tc.nextD, tc.nextC, tc.pkey)
			}
			if n.Pairs[0].DRaw != tc.dRaw || n.Pairs[0].CRaw != tc.cRaw {
				t.Errorf("next raw D=%v C=%v, want %v %v", n.Pairs[0].DRaw, n.Pairs[0].CRaw, tc.dRaw, tc.cRaw)
			}
		})
	}
}

// Staleness and pending writes belong to one profile: a contact whose
// profile is now another PKey is decided against it as at first sight, even
// when the new profile's time is older than what state knew of the old one,
// or equal to it with the old one's value (which a write to the old one
// would otherwise stand in for).
func TestNewProfileIsFirstSight(t *testing.T) {
	r := &Rules{Direction: Bidirectional, Policy: Newest, Pairs: []Pair{emailPair}}
	prev := &Snapshot{Known: true, DSeen: true, CSeen: true, DModified: t10, CModified: t11, PKey: "@old"}
	prev.Pairs[0] = PairState{S: F, DRaw: F, CRaw: F}
	// The new profile opted out at 10:30 (older than @old's 11:00), newer
	// than Dynamics (10:00): Campaign wins.
	res, got := Decide(r, contactRow(t10, F), profileRow("@new", t10+1800_000, T), prev, nil)
	want := []Decision{{Target: ToD365, Old: F, New: T, Rule: RuleConflictCampaignNewer, DModified: t10, CModified: t10 + 1800_000}}
	if len(got) != 1 || got[0] != want[0] || res.StaleC {
		t.Fatalf("decisions %+v (stale %v), want %+v", got, res.StaleC, want)
	}
	if n := res.Next; n.PKey != "@new" || n.CModified != t10+1800_000 || n.Pairs[0].S != T {
		t.Errorf("next %+v", n)
	}
	// A write to @old not yet seen does not stand in for @new.
	prev.Pairs[0] = PairState{S: T, DRaw: T, CRaw: F, CWritten: T}
	prev.CModified = t09
	_, got = Decide(r, contactRow(t10, T), profileRow("@new", t09, F), prev, nil)
	want = []Decision{{Target: ToCampaign, Old: F, New: T, Rule: RuleConflictD365Newer, DModified: t10, CModified: t09}}
	if len(got) != 1 || got[0] != want[0] {
		t.Fatalf("decisions %+v, want %+v", got, want)
	}
}

func TestSeeContactAndProfile(t *testing.T) {
	r := &Rules{Direction: Bidirectional, Policy: Newest, Pairs: []Pair{emailPair, smsPair}}
	base := Snapshot{Known: true, DSeen: true, CSeen: true, DModified: t10, CModified: t10, PKey: "@old", Decided: 7}
	base.Pairs[0] = PairState{S: T, DRaw: T, CRaw: F, DWritten: F, CWritten: T}
	base.Pairs[1] = PairState{S: F, DRaw: F, CRaw: T, DWritten: T, CWritten: F} // D365 row shows sms consent T
	cases := []struct {
		name    string
		profile bool // SeeProfile, else SeeContact
		fresh   bool // no previous state
		at      int64
		a, b    extract.Tri // row values, own polarity
		pkey    string
		want    func(s *Snapshot) // applied to a copy of base (zero when fresh)
	}{
		{"contact-new", false, true, t10, T, T, "", func(s *Snapshot) {
			s.Known, s.DSeen, s.DModified, s.Pairs[0].DRaw, s.Pairs[1].DRaw = true, true, t10, T, F
		}},
		{"contact-moved-clears-pending", false, false, t11, T, T, "", func(s *Snapshot) { s.DModified, s.Pairs[0].DWritten, s.Pairs[1].DWritten = t11, U, U }},
		{"contact-same-time-same-value", false, false, t10, T, T, "", func(s *Snapshot) {}},
		{"contact-same-time-value-moved", false, false, t10, F, T, "", func(s *Snapshot) { s.Pairs[0].DRaw, s.Pairs[0].DWritten = F, U }},
		{"contact-older-row", false, false, t09, F, F, "", func(s *Snapshot) {}},
		{"contact-invert-opted-out", false, false, t11, T, F, "", func(s *Snapshot) {
			s.DModified, s.Pairs[0].DWritten, s.Pairs[1].DWritten, s.Pairs[1].DRaw = t11, U, U, T
		}},
		{"profile-new", true, true, t10, T, U, "@new", func(s *Snapshot) { s.Known, s.CSeen, s.CModified, s.PKey, s.Pairs[0].CRaw = true, true, t10, "@new", T }},
		{"profile-moved-clears-pending", true, false, t11, F, T, "@old", func(s *Snapshot) {
			s.CModified, s.Pairs[0].CWritten, s.Pairs[1].CWritten = t11, U, U
		}},
		// Another PKey is another profile: nothing known of @old (its
		// agreement, its write not yet seen) stands in for it.
		{"profile-new-pkey", true, false, t11, F, T, "@new", func(s *Snapshot) {
			s.CModified, s.PKey, s.Pairs[0].CWritten, s.Pairs[1].CWritten = t11, "@new", U, U
			s.Pairs[0].S, s.Pairs[1].S = U, U
		}},
		{"profile-same-time-same-value", true, false, t10, F, T, "@old", func(s *Snapshot) {}},
		{"profile-same-time-value-moved", true, false, t10, T, T, "@old", func(s *Snapshot) { s.Pairs[0].CRaw, s.Pairs[0].CWritten = T, U }},
		{"profile-older-row", true, false, t09, T, F, "@old", func(s *Snapshot) {}},
		{"profile-older-row-of-another-pkey", true, false, t09, T, F, "@other", func(s *Snapshot) {
			s.CModified, s.PKey = t09, "@other"
			s.Pairs[0] = PairState{DRaw: T, CRaw: T, DWritten: F}
			s.Pairs[1] = PairState{DRaw: F, CRaw: F, DWritten: T}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var want Snapshot
			in := &Snapshot{}
			*in = base
			if tc.fresh {
				in = nil
			} else {
				want = base
			}
			tc.want(&want)
			var got Snapshot
			if tc.profile {
				got = SeeProfile(r, profileRow(tc.pkey, tc.at, tc.a, tc.b), in)
			} else {
				got = SeeContact(r, contactRow(tc.at, tc.a, tc.b), in)
			}
			if got != want {
				t.Errorf("\n got %+v\nwant %+v", got, want)
			}
			if in != nil && *in != base {
				t.Errorf("prev was modified")
			}
		})
	}
}

func TestFromStateRoundTrip(t *testing.T) {
	for _, inv := range []bool{false, true} {
		r := &Rules{Direction: Bidirectional, Policy: Newest, Pairs: []Pair{{D365: "donotemail", Campaign: "blackListEmail", Invert: inv}, smsPair, {D365: "donotfax", Campaign: "blackListFax"}}}
		c := contactRow(t10+123, T, F, U)
		p := profileRow("@p5", t11+456, F, T, U)
		s := SeeProfile(r, p, nil)
		s = SeeContact(r, c, &s)
		if gc := ContactFromState(r, c.ID, &s); gc != *c {
			t.Errorf("invert=%v: contact %+v, want %+v", inv, gc, *c)
		}
		if gp := ProfileFromState(r, p.ID, &s); gp != *p {
			t.Errorf("invert=%v: profile %+v, want %+v", inv, gp, *p)
		}
		// Decide's next state rebuilds the rows it was given (in sync: no writes).
		c2, p2 := contactRow(t12, T, T, U), profileRow("@p6", t12, T, F, U)
		if inv {
			c2.Values[0] = F
		}
		res, got := Decide(r, c2, p2, &s, nil)
		if len(writes(got)) != 0 {
			t.Fatalf("invert=%v: unexpected writes %+v", inv, got)
		}
		if gc, gp := ContactFromState(r, c2.ID, &res.Next), ProfileFromState(r, p2.ID, &res.Next); gc != *c2 || gp != *p2 {
			t.Errorf("invert=%v: from Decide: %+v %+v, want %+v %+v", inv, gc, gp, *c2, *p2)
		}
	}
}

// A written opt-out that goes through an update file stands in for the
// export until the export shows it, even once the record has moved (an edit
// before the import): nothing is decided against it, and it is written
// again. A written opt-in, or a write through an API, gives way to a moved
// record as before.
func TestPendingOptOutNotImported(t *testing.T) {
	const run1 = 1_795_000_000_000 // the run that wrote it (Unix ms)
	cases := []struct {
		name     string
		dir      Direction
		pol      Policy
		invert   bool
		side     Side        // the side written to by run1
		written  extract.Tri // what run1 wrote, opted-out polarity
		read     extract.Tri // what the moved record shows now, own polarity
		api      bool        // that side is written through its API
		replay   bool
		other    extract.Tri // the other side's value, opted-out polarity
		want     []Decision  // pair 0
		pending  bool        // the write is still pending afterwards
		changedC bool
		changedD bool
	}{
		{name: "bi-campaign-optout-not-seen", dir: Bidirectional, pol: Newest, side: ToCampaign, written: T, read: F, other: T,
			want:    []Decision{{Target: ToCampaign, Old: F, New: T, DModified: t10, CModified: t12, Pending: true, Since: run1}},
			pending: true, changedC: true},
		{name: "bi-d365-optout-not-seen", dir: Bidirectional, pol: Newest, side: ToD365, written: T, read: F, other: T,
			want:    []Decision{{Target: ToD365, Old: F, New: T, DModified: t12, CModified: t10, Pending: true, Since: run1}},
			pending: true, changedD: true},
		{name: "bi-d365-invert-optout-not-seen", dir: Bidirectional, pol: Newest, invert: true, side: ToD365, written: T, read: T, other: T,
			want:    []Decision{{Target: ToD365, Old: T, New: F, DModified: t12, CModified: t10, Pending: true, Since: run1}},
			pending: true, changedD: true},
		{name: "unknown-shown-is-not-seen", dir: Bidirectional, pol: Newest, side: ToCampaign, written: T, read: U, other: T,
			want:    []Decision{{Target: ToCampaign, Old: U, New: T, DModified: t10, CModified: t12, Pending: true, Since: run1}},
			pending: true, changedC: true},
		{name: "adobe-not-seen", dir: Bidirectional, pol: Adobe, side: ToCampaign, written: T, read: F, other: T,
			want:    []Decision{{Target: ToCampaign, Old: F, New: T, DModified: t10, CModified: t12, Pending: true, Since: run1}},
			pending: true, changedC: true},
		{name: "d2c-not-seen", dir: D365ToCampaign, pol: Newest, side: ToCampaign, written: T, read: F, other: T,
			want:    []Decision{{Target: ToCampaign, Old: F, New: T, DModified: t10, CModified: t12, Pending: true, Since: run1}},
			pending: true, changedC: true},
		{name: "replay-not-seen", dir: Bidirectional, pol: Newest, replay: true, side: ToCampaign, written: T, read: F, other: T,
			want:    []Decision{{Target: ToCampaign, Old: F, New: T, DModified: t10, CModified: t12, Pending: true, Since: run1}},
			pending: true, changedC: true},
		// The other side changed since: its change is decided against the
		// written value, and replaces the write.
		{name: "d365-opts-in-since", dir: Bidirectional, pol: Newest, side: ToCampaign, written: T, read: F, other: F,
			want:     []Decision{{Target: ToCampaign, Old: T, New: F, Rule: RuleOnlyD365Changed, DModified: t10, CModified: t12, ClearsOptOut: true}},
			changedC: true},
		{name: "seen", dir: Bidirectional, pol: Newest, side: ToCampaign, written: T, read: T, other: T},
		// The safe direction: a written opt-in gives way to the export.
		{name: "optin-superseded-by-export", dir: Bidirectional, pol: Newest, side: ToCampaign, written: F, read: T, other: F,
			want:     []Decision{{Target: ToD365, Old: F, New: T, Rule: RuleOnlyCampaignChanged, DModified: t10, CModified: t12}},
			changedD: true},
		// Through an API the write was applied at once: what the system
		// shows now is its answer.
		{name: "api-write-superseded", dir: Bidirectional, pol: Newest, api: true, side: ToCampaign, written: T, read: F, other: T,
			want:     []Decision{{Target: ToD365, Old: T, New: F, Rule: RuleOnlyCampaignChanged, DModified: t10, CModified: t12, ClearsOptOut: true}},
			changedD: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pair := emailPair
			pair.Invert = tc.invert
			r := &Rules{Direction: tc.dir, Policy: tc.pol, Replay: tc.replay, Pairs: []Pair{pair}, Started: run1 + day,
				ImportD365: !(tc.api && tc.side == ToD365), ImportCampaign: !(tc.api && tc.side == ToCampaign)}
			prev := &Snapshot{Known: true, DSeen: true, CSeen: true, DModified: t10, CModified: t10, PKey: "@p"}
			ps := PairState{S: tc.written}
			own := func(v extract.Tri) extract.Tri { // opted-out polarity → the Dynamics field's
				if tc.invert {
					return v.Not()
				}
				return v
			}
			c, p := contactRow(t10, own(tc.other)), profileRow("@p", t10, tc.other)
			if tc.side == ToCampaign {
				ps.DRaw, ps.CRaw, ps.CWritten, ps.CWrittenAt = tc.other, tc.written.Not(), tc.written, run1
				p = profileRow("@p", t12, tc.read) // moved
			} else {
				ps.CRaw, ps.DRaw, ps.DWritten, ps.DWrittenAt = tc.other, tc.written.Not(), tc.written, run1
				c = contactRow(t12, tc.read) // moved; read is the field's own value
			}
			prev.Pairs[0] = ps
			res, got := Decide(r, c, p, prev, nil)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("decisions\n got %+v\nwant %+v", got, tc.want)
			}
			n := res.Next.Pairs[0]
			pend, at := n.CWritten, n.CWrittenAt
			if tc.side == ToD365 {
				pend, at = n.DWritten, n.DWrittenAt
			}
			if (pend == tc.written && at == run1) != tc.pending {
				t.Errorf("pending after: %v at %d, want pending %v", pend, at, tc.pending)
			}
			if res.CampaignChanged != tc.changedC || res.D365Changed != tc.changedD {
				t.Errorf("changed C=%v D=%v, want %v %v", res.CampaignChanged, res.D365Changed, tc.changedC, tc.changedD)
			}
			// The update row carries the written value.
			if tc.pending && tc.side == ToCampaign && res.CampaignAfter[0] != tc.written {
				t.Errorf("Campaign after %v", res.CampaignAfter[0])
			}
			// A record seen without its counterpart keeps the write too.
			var seen Snapshot
			if tc.side == ToCampaign {
				seen = SeeProfile(r, p, prev)
			} else {
				seen = SeeContact(r, c, prev)
			}
			sp := seen.Pairs[0]
			kept := sp.CWritten == tc.written && sp.CWrittenAt == run1
			if tc.side == ToD365 {
				kept = sp.DWritten == tc.written && sp.DWrittenAt == run1
			}
			if wantKept := tc.pending || (tc.name == "d365-opts-in-since"); kept != wantKept {
				t.Errorf("seen alone: pending kept %v, want %v (%+v)", kept, wantKept, sp)
			}
		})
	}
}
