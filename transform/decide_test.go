package transform

import (
	"encoding/csv"
	"os"
	"slices"
	"strings"
	"testing"

	"optsync/extract"
)

const (
	U = extract.Unknown
	F = extract.False
	T = extract.True
)

func at(s string) int64 {
	ms, ok := extract.ParseTime(s, "")
	if !ok {
		panic("bad test time " + s)
	}
	return ms
}

var (
	t09 = at("2026-11-20T09:00:00Z")
	t10 = at("2026-11-20T10:00:00Z")
	t11 = at("2026-11-20T11:00:00Z")
	t12 = at("2026-11-20T12:00:00Z")
)

const day = 86_400_000

func triOf(t *testing.T, s string) extract.Tri {
	switch s {
	case "":
		return U
	case "true":
		return T
	case "false":
		return F
	}
	t.Fatalf("bad tri %q", s)
	return U
}

// oneCase is one mapped pair (donotemail ↔ blackListEmail) of one contact.
type oneCase struct {
	name   string
	dir    Direction
	pol    Policy
	invert bool
	replay bool
	snap   extract.Tri // agreed value of an earlier run, opted-out polarity; U = no snapshot
	d, c   extract.Tri // as read, each field's own polarity
	tD, tC int64
	ft     *[extract.MaxFields]int64 // Profile.FieldModified
	// expected
	to       Side        // target of the write (or of a one-way skip); NoSide = no write
	old, new extract.Tri // target polarity
	rule     string
	skip     string
	clears   bool
}

func (tc oneCase) optedD(v extract.Tri) extract.Tri {
	if tc.invert {
		return v.Not()
	}
	return v
}

func runOne(t *testing.T, tc oneCase) {
	t.Helper()
	r := &Rules{Direction: tc.dir, Policy: tc.pol, Replay: tc.replay,
		Pairs: []Pair{{D365: "donotemail", Campaign: "blackListEmail", Invert: tc.invert}}}
	c := &extract.Contact{ID: id(1), Modified: tc.tD, Line: 2}
	c.Values[0] = tc.d
	p := &ProfileSide{Profile: extract.Profile{ID: id(1), Modified: tc.tC, Line: 2}, PKey: "@p1", FieldModified: tc.ft}
	p.Values[0] = tc.c
	var prev *Snapshot
	if tc.snap.Known() {
		prev = &Snapshot{Known: true, DModified: tc.tD - day, CModified: tc.tC - day, PKey: "@p1"}
		prev.Pairs[0] = PairState{S: tc.snap, DRaw: tc.snap, CRaw: tc.snap}
	}
	tC := tc.tC
	if tc.ft != nil && tc.ft[0] != extract.NoTime {
		tC = tc.ft[0]
	}
	var want []Decision
	switch {
	case tc.skip != "":
		want = []Decision{{Target: tc.to, Skip: tc.wantSkip(), DModified: tc.tD, CModified: tC}}
	case tc.to != NoSide:
		want = []Decision{{Target: tc.to, Old: tc.old, New: tc.new, Rule: tc.rule, DModified: tc.tD, CModified: tC, ClearsOptOut: tc.clears}}
	}
	res, got := Decide(r, c, p, prev, nil)
	if !slices.Equal(got, want) {
		t.Fatalf("decisions\n got %+v\nwant %+v", got, want)
	}

	// After values, change flags and the next snapshot follow from the write.
	dOpt := tc.optedD(tc.d)
	wantDA, wantCA := tc.d, tc.c
	wantNext := PairState{S: tc.snap, DRaw: dOpt, CRaw: tc.c}
	if tc.ft != nil && tc.ft[0] != extract.NoTime {
		// the field's own time is kept for the next run
		wantNext.CTime, wantNext.CTimeKnown = tc.ft[0], true
	}
	switch {
	case tc.skip != "":
	case tc.to == ToCampaign:
		wantCA, wantNext.S, wantNext.CWritten = tc.new, tc.new, tc.new
	case tc.to == ToD365:
		wantDA, wantNext.S, wantNext.DWritten = tc.new, tc.optedD(tc.new), tc.optedD(tc.new)
	case tc.dir != Disabled && dOpt.Known() && dOpt == tc.c:
		wantNext.S = tc.c // in sync
	}
	if res.D365After[0] != wantDA || res.CampaignAfter[0] != wantCA {
		t.Errorf("after: d365=%v campaign=%v, want %v %v", res.D365After[0], res.CampaignAfter[0], wantDA, wantCA)
	}
	if res.D365Changed != (tc.to == ToD365 && tc.skip == "") || res.CampaignChanged != (tc.to == ToCampaign && tc.skip == "") {
		t.Errorf("changed: d365=%v campaign=%v, want write to %v", res.D365Changed, res.CampaignChanged, tc.to)
	}
	if res.Next.Pairs[0] != wantNext {
		t.Errorf("next pair state %+v, want %+v", res.Next.Pairs[0], wantNext)
	}
	if !res.Next.Known || res.Next.DModified != tc.tD || res.Next.CModified != tc.tC || res.Next.PKey != "@p1" {
		t.Errorf("next snapshot header %+v", res.Next)
	}
}

// scenarioCases reads the project's copy of the decision table.
func scenarioCases(t *testing.T) []oneCase {
	f, err := os.Open("../fixtures/scenarios/rules.csv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[h] = i
	}
	var out []oneCase
	for _, row := range rows[1:] {
		get := func(k string) string {
			i, ok := col[k]
			if !ok {
				t.Fatalf("rules.csv: no column %s", k)
			}
			return row[i]
		}
		tc := oneCase{
			name: "scenario/" + get("case"), dir: Direction(get("direction")), pol: Policy(get("policy")),
			replay: strings.Contains(get("case"), "replay"),
			snap:   triOf(t, get("snapshot")), d: triOf(t, get("d365")), c: triOf(t, get("campaign")),
			tD: at(get("d365_modified")), tC: at(get("campaign_modified")),
		}
		switch w := get("expect_write"); w {
		case "none":
		case "skipped":
			tc.skip = get("expect_rule")
			switch tc.dir {
			case D365ToCampaign:
				tc.to = ToCampaign
			case CampaignToD365:
				tc.to = ToD365
			}
		case ToCampaign.String(), ToD365.String():
			tc.to, tc.old = ToCampaign, tc.c
			if w == ToD365.String() {
				tc.to, tc.old = ToD365, tc.d
			}
			tc.new, tc.rule = triOf(t, get("expect_value")), get("expect_rule")
			tc.clears = tc.old == T && tc.new == F
		default:
			t.Fatalf("rules.csv %s: expect_write %q", get("case"), w)
		}
		out = append(out, tc)
	}
	if len(out) < 21 {
		t.Fatalf("rules.csv: only %d rows", len(out))
	}
	return out
}

var policies = []Policy{Newest, Adobe, OptoutWins, D365Wins, CampaignWins}

func TestDecideOnePair(t *testing.T) {
	const (
		bi  = Bidirectional
		d2c = D365ToCampaign
		c2d = CampaignToD365
	)
	cases := append(scenarioCases(t), []oneCase{
		// newest, timestamps at whole-second precision
		{name: "tie-subsecond-d365-opted-out", dir: bi, pol: Newest, d: T, c: F, tD: t10, tC: t10 + 500,
			to: ToCampaign, old: F, new: T, rule: RuleConflictTieOptout},
		{name: "tie-999ms-later-d365", dir: bi, pol: Newest, d: F, c: T, tD: t10 + 999, tC: t10,
			to: ToD365, old: F, new: T, rule: RuleConflictTieOptout},
		{name: "next-second-is-newer", dir: bi, pol: Newest, d: F, c: T, tD: t10 + 1000, tC: t10 + 999,
			to: ToCampaign, old: T, new: F, rule: RuleConflictD365Newer, clears: true},
		{name: "campaign-newer-clears-optout", dir: bi, pol: Newest, d: T, c: F, tD: t10, tC: t11,
			to: ToD365, old: T, new: F, rule: RuleConflictCampaignNewer, clears: true},
		{name: "only-d365-changed-ignores-times", dir: bi, pol: Newest, snap: T, d: F, c: T, tD: t09, tC: t12,
			to: ToCampaign, old: T, new: F, rule: RuleOnlyD365Changed, clears: true},
		{name: "field-time-overrides-lastModified", dir: bi, pol: Newest, d: T, c: F, tD: t10, tC: t09, ft: &[extract.MaxFields]int64{t11},
			to: ToD365, old: T, new: F, rule: RuleConflictCampaignNewer, clears: true},
		{name: "unknown-field-time-falls-back", dir: bi, pol: Newest, d: T, c: F, tD: t09, tC: t10, ft: extract.NewFieldTimes(),
			to: ToD365, old: T, new: F, rule: RuleConflictCampaignNewer, clears: true},
		// The epoch is a time like any other, not "no per-field time".
		{name: "epoch-field-time-is-a-time", dir: bi, pol: Newest, d: T, c: F, tD: t09, tC: t10, ft: &[extract.MaxFields]int64{0},
			to: ToCampaign, old: F, new: T, rule: RuleConflictD365Newer},
		{name: "both-unknown", dir: bi, pol: Newest, d: U, c: U, tD: t10, tC: t09, skip: "unknown-value: d365 and campaign blank"},
		{name: "campaign-unknown-no-snapshot", dir: bi, pol: Newest, d: T, c: U, tD: t10, tC: t09, skip: "unknown-value: campaign blank"},
		{name: "replay-ignores-snapshot", dir: bi, pol: Newest, replay: true, snap: F, d: T, c: F, tD: t09, tC: t11,
			to: ToD365, old: T, new: F, rule: RuleConflictCampaignNewer, clears: true},
		{name: "without-replay-same-input", dir: bi, pol: Newest, snap: F, d: T, c: F, tD: t09, tC: t11,
			to: ToCampaign, old: F, new: T, rule: RuleOnlyD365Changed},
		// other policies
		{name: "adobe-subsecond-not-newer", dir: bi, pol: Adobe, d: F, c: T, tD: t10, tC: t10 + 700,
			to: ToD365, old: F, new: T, rule: RuleAdobeOptoutWins},
		{name: "adobe-d365-newer-optout", dir: bi, pol: Adobe, d: T, c: F, tD: t12, tC: t11,
			to: ToCampaign, old: F, new: T, rule: RuleAdobeOptoutWins},
		{name: "adobe-campaign-newer-clears", dir: bi, pol: Adobe, snap: F, d: T, c: F, tD: t10, tC: t11,
			to: ToD365, old: T, new: F, rule: RuleAdobeCampaignNewer, clears: true},
		{name: "optout-wins-d365-side", dir: bi, pol: OptoutWins, d: T, c: F, tD: t09, tC: t12,
			to: ToCampaign, old: F, new: T, rule: RulePolicyOptoutWins},
		{name: "d365-wins-ignores-snapshot", dir: bi, pol: D365Wins, snap: F, d: F, c: T, tD: t09, tC: t12,
			to: ToCampaign, old: T, new: F, rule: RulePolicyD365Wins, clears: true},
		{name: "campaign-wins-clears", dir: bi, pol: CampaignWins, d: T, c: F, tD: t12, tC: t09,
			to: ToD365, old: T, new: F, rule: RulePolicyCampaignWins, clears: true},
		{name: "campaign-wins-opts-out", dir: bi, pol: CampaignWins, snap: F, d: F, c: T, tD: t12, tC: t09,
			to: ToD365, old: F, new: T, rule: RulePolicyCampaignWins},
		// invert: the Dynamics field is an opt-in flag
		{name: "invert-campaign-newer", dir: bi, pol: Newest, invert: true, d: T, c: T, tD: t10, tC: t11,
			to: ToD365, old: T, new: F, rule: RuleConflictCampaignNewer},
		{name: "invert-d365-newer", dir: bi, pol: Newest, invert: true, d: F, c: F, tD: t11, tC: t10,
			to: ToCampaign, old: F, new: T, rule: RuleConflictD365Newer},
		{name: "invert-clears-on-d365", dir: bi, pol: Newest, invert: true, snap: T, d: F, c: F, tD: t11, tC: t10,
			to: ToD365, old: F, new: T, rule: RuleOnlyCampaignChanged, clears: true},
		{name: "invert-in-sync", dir: bi, pol: Newest, invert: true, snap: T, d: T, c: F, tD: t11, tC: t10},
		{name: "invert-unknown", dir: bi, pol: OptoutWins, invert: true, d: U, c: T, tD: t11, tC: t10, skip: ReasonUnknownValue},
		{name: "invert-uni-c2d", dir: c2d, pol: Newest, invert: true, d: T, c: T, tD: t11, tC: t10,
			to: ToD365, old: T, new: F, rule: RuleSourceOfTruth},
		{name: "invert-uni-d2c-clears", dir: d2c, pol: Newest, invert: true, d: T, c: T, tD: t09, tC: t10,
			to: ToCampaign, old: T, new: F, rule: RuleSourceOfTruth, clears: true},
		// one-way
		{name: "d2c-source-unknown", dir: d2c, pol: Newest, snap: T, d: U, c: F, tD: t10, tC: t09, to: ToCampaign, skip: "unknown-value: d365 blank"},
		{name: "d2c-target-unknown-skip-not", dir: d2c, pol: Newest, d: T, c: U, tD: t10, tC: t09,
			to: ToCampaign, old: U, new: T, rule: RuleSourceOfTruth},
		{name: "d2c-opt-in-to-unknown-target-not-clearing", dir: d2c, pol: Newest, d: F, c: U, tD: t10, tC: t09,
			to: ToCampaign, old: U, new: F, rule: RuleSourceOfTruth},
		{name: "d2c-target-unknown-source-unchanged", dir: d2c, pol: Newest, snap: T, d: T, c: U, tD: t10, tC: t09},
		{name: "d2c-source-changed-target-agrees", dir: d2c, pol: Newest, snap: F, d: T, c: T, tD: t10, tC: t09},
		{name: "d2c-source-changed-clears", dir: d2c, pol: Newest, snap: T, d: F, c: T, tD: t09, tC: t12,
			to: ToCampaign, old: T, new: F, rule: RuleSourceOfTruth, clears: true},
		{name: "c2d-source-unknown", dir: c2d, pol: Newest, d: T, c: U, tD: t10, tC: t09, to: ToD365, skip: "unknown-value: campaign blank"},
		{name: "c2d-drift-not-reverted", dir: c2d, pol: Newest, snap: F, d: T, c: F, tD: t12, tC: t09},
		{name: "c2d-source-changed", dir: c2d, pol: Newest, snap: F, d: F, c: T, tD: t12, tC: t09,
			to: ToD365, old: F, new: T, rule: RuleSourceOfTruth},
		{name: "c2d-target-unknown", dir: c2d, pol: Newest, d: U, c: F, tD: t12, tC: t09,
			to: ToD365, old: U, new: F, rule: RuleSourceOfTruth},
		{name: "c2d-replay-reverts-drift", dir: c2d, pol: Newest, replay: true, snap: F, d: T, c: F, tD: t12, tC: t09,
			to: ToD365, old: T, new: F, rule: RuleSourceOfTruth, clears: true},
		{name: "c2d-ignores-policy", dir: c2d, pol: D365Wins, d: F, c: T, tD: t12, tC: t09,
			to: ToD365, old: F, new: T, rule: RuleSourceOfTruth},
		// disabled
		{name: "disabled-keeps-snapshot", dir: Disabled, pol: Newest, snap: T, d: F, c: T, tD: t12, tC: t09},
		{name: "disabled-unknown-not-skipped", dir: Disabled, pol: Newest, d: U, c: T, tD: t12, tC: t09},
	}...)
	for _, pol := range policies {
		p := string(pol)
		cases = append(cases,
			oneCase{name: p + "/d365-unknown", dir: Bidirectional, pol: pol, snap: T, d: U, c: F, tD: t12, tC: t09, skip: ReasonUnknownValue},
			oneCase{name: p + "/campaign-unknown", dir: Bidirectional, pol: pol, d: F, c: U, tD: t12, tC: t09, skip: ReasonUnknownValue},
			oneCase{name: p + "/in-sync", dir: Bidirectional, pol: pol, snap: T, d: F, c: F, tD: t12, tC: t09},
		)
	}
	rules := map[string]bool{}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { runOne(t, tc) })
		rules[tc.rule] = true
	}
	for _, r := range []string{RuleOnlyD365Changed, RuleOnlyCampaignChanged, RuleConflictD365Newer,
		RuleConflictCampaignNewer, RuleConflictTieOptout, RuleAdobeCampaignNewer, RuleAdobeOptoutWins,
		RulePolicyOptoutWins, RulePolicyD365Wins, RulePolicyCampaignWins, RuleSourceOfTruth} {
		if !rules[r] {
			t.Errorf("rule %s is not exercised", r)
		}
	}
}

func TestDecideMultiplePairs(t *testing.T) {
	r := &Rules{Direction: Bidirectional, Policy: Newest, Pairs: []Pair{
		{D365: "donotemail", Campaign: "blackListEmail"},
		{D365: "donotphone", Campaign: "blackListPhone"},
		{D365: "xx_smsconsent", Campaign: "blackListMobile", Invert: true},
		{D365: "donotfax", Campaign: "blackListFax"},
	}}
	c := &extract.Contact{ID: id(7), Modified: t10, Values: [extract.MaxFields]extract.Tri{T, T, T, U}}
	p := &ProfileSide{Profile: extract.Profile{ID: id(7), Modified: t09, Values: [extract.MaxFields]extract.Tri{T, F, T, T}}, PKey: "@p7"}
	prev := &Snapshot{Known: true, DModified: t09, CModified: t09 - day, PKey: "@p7"}
	prev.Pairs[1] = PairState{S: F, DRaw: F, CRaw: F} // pair 0: newly mapped, no snapshot
	prev.Pairs[2] = PairState{S: F, DRaw: F, CRaw: F}
	prev.Pairs[3] = PairState{S: F, DRaw: F, CRaw: F}
	sentinel := Decision{Pair: 99, Rule: "earlier contact"}

	res, got := Decide(r, c, p, prev, []Decision{sentinel})
	want := []Decision{sentinel,
		{Pair: 1, Target: ToCampaign, Old: F, New: T, Rule: RuleOnlyD365Changed, DModified: t10, CModified: t09},
		{Pair: 2, Target: ToD365, Old: T, New: F, Rule: RuleOnlyCampaignChanged, DModified: t10, CModified: t09},
		{Pair: 3, Skip: "unknown-value: d365 blank", DModified: t10, CModified: t09},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("decisions\n got %+v\nwant %+v", got, want)
	}
	if res.D365After != [extract.MaxFields]extract.Tri{T, T, F, U} {
		t.Errorf("D365After = %v", res.D365After)
	}
	if res.CampaignAfter != [extract.MaxFields]extract.Tri{T, T, T, T} {
		t.Errorf("CampaignAfter = %v", res.CampaignAfter)
	}
	if !res.D365Changed || !res.CampaignChanged {
		t.Errorf("changed flags: %v %v", res.D365Changed, res.CampaignChanged)
	}
	wantPairs := [extract.MaxFields]PairState{
		{S: T, DRaw: T, CRaw: T},
		{S: T, DRaw: T, CRaw: F, CWritten: T},
		{S: T, DRaw: F, CRaw: T, DWritten: T},
		{S: F, DRaw: U, CRaw: T},
	}
	if res.Next.Pairs != wantPairs {
		t.Errorf("next pairs\n got %+v\nwant %+v", res.Next.Pairs, wantPairs)
	}
}

// TestDecidePendingWrites follows one written value through the exports that
// come after it: stale ones still show the old value under the old time.
func TestDecidePendingWrites(t *testing.T) {
	r := &Rules{Direction: Bidirectional, Policy: Newest, Pairs: []Pair{{D365: "donotemail", Campaign: "blackListEmail"}}}
	decide := func(r *Rules, d extract.Tri, tD int64, cv extract.Tri, tC int64, prev *Snapshot) (Result, []Decision) {
		c := &extract.Contact{ID: id(3), Modified: tD}
		c.Values[0] = d
		p := &ProfileSide{Profile: extract.Profile{ID: id(3), Modified: tC}, PKey: "@p3"}
		p.Values[0] = cv
		return Decide(r, c, p, prev, nil)
	}
	res1, got := decide(r, T, t10, F, t09, nil)
	if len(got) != 1 || got[0].Target != ToCampaign || got[0].New != T {
		t.Fatalf("first run: %+v", got)
	}
	if want := (PairState{S: T, DRaw: T, CRaw: F, CWritten: T}); res1.Next.Pairs[0] != want {
		t.Fatalf("first run state %+v, want %+v", res1.Next.Pairs[0], want)
	}
	prev := res1.Next

	cases := []struct {
		name     string
		replay   bool
		d        extract.Tri
		tD       int64
		c        extract.Tri
		tC       int64
		want     []Decision
		wantPS   PairState
		campaign extract.Tri // CampaignAfter
	}{
		{name: "stale-export-no-repeat", d: T, tD: t10, c: F, tC: t09,
			wantPS: PairState{S: T, DRaw: T, CRaw: F, CWritten: T}, campaign: T},
		{name: "moved-and-applied", d: T, tD: t10, c: T, tC: t11,
			wantPS: PairState{S: T, DRaw: T, CRaw: T}, campaign: T},
		{name: "moved-still-old-value", d: T, tD: t10, c: F, tC: t11,
			want:   []Decision{{Target: ToD365, Old: T, New: F, Rule: RuleOnlyCampaignChanged, DModified: t10, CModified: t11, ClearsOptOut: true}},
			wantPS: PairState{S: F, DRaw: T, CRaw: F, DWritten: F}, campaign: F},
		{name: "same-time-value-moved", d: T, tD: t10, c: T, tC: t09,
			wantPS: PairState{S: T, DRaw: T, CRaw: T}, campaign: T},
		{name: "stale-campaign-d365-changed", d: F, tD: t11, c: F, tC: t09,
			want:   []Decision{{Target: ToCampaign, Old: T, New: F, Rule: RuleOnlyD365Changed, DModified: t11, CModified: t09, ClearsOptOut: true}},
			wantPS: PairState{S: F, DRaw: F, CRaw: F, CWritten: F}, campaign: F},
		// Replay ignores the agreement, not the write waiting to be
		// imported: the stale export does not make it write again (or,
		// were Campaign newer, clear the opt-out it set).
		{name: "replay-keeps-pending", replay: true, d: T, tD: t10, c: F, tC: t09,
			want:   nil,
			wantPS: PairState{S: T, DRaw: T, CRaw: F, CWritten: T}, campaign: T},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rr := *r
			rr.Replay = tc.replay
			p := prev
			res, got := decide(&rr, tc.d, tc.tD, tc.c, tc.tC, &p)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("decisions\n got %+v\nwant %+v", got, tc.want)
			}
			if res.Next.Pairs[0] != tc.wantPS {
				t.Errorf("state %+v, want %+v", res.Next.Pairs[0], tc.wantPS)
			}
			if res.CampaignAfter[0] != tc.campaign {
				t.Errorf("CampaignAfter = %v, want %v", res.CampaignAfter[0], tc.campaign)
			}
			if p != prev {
				t.Errorf("Decide modified prev")
			}
		})
	}

	// The same on the Dynamics side of an inverted (opt-in) field.
	t.Run("inverted-d365-side", func(t *testing.T) {
		r := &Rules{Direction: Bidirectional, Policy: Newest, Pairs: []Pair{{D365: "xx_smsconsent", Campaign: "blackListMobile", Invert: true}}}
		res1, got := decide(r, T, t09, T, t10, nil) // may contact vs opted out, Campaign newer
		want := []Decision{{Target: ToD365, Old: T, New: F, Rule: RuleConflictCampaignNewer, DModified: t09, CModified: t10}}
		if !slices.Equal(got, want) {
			t.Fatalf("first run\n got %+v\nwant %+v", got, want)
		}
		res2, got := decide(r, T, t09, T, t10, &res1.Next)
		if len(got) != 0 {
			t.Fatalf("stale export repeated the write: %+v", got)
		}
		if res2.D365After[0] != F || res2.Next.Pairs[0] != (PairState{S: T, DRaw: F, CRaw: T, DWritten: T}) {
			t.Errorf("stale: after %v, state %+v", res2.D365After[0], res2.Next.Pairs[0])
		}
		res3, got := decide(r, F, t09, T, t10, &res2.Next) // same time, value moved: the write shows
		if len(got) != 0 || res3.Next.Pairs[0] != (PairState{S: T, DRaw: T, CRaw: T}) {
			t.Errorf("value moved: %+v, state %+v", got, res3.Next.Pairs[0])
		}
		_, got = decide(r, T, t11, T, t10, &res2.Next) // record moved: someone opted back in
		want = []Decision{{Target: ToCampaign, Old: T, New: F, Rule: RuleOnlyD365Changed, DModified: t11, CModified: t10, ClearsOptOut: true}}
		if !slices.Equal(got, want) {
			t.Fatalf("moved\n got %+v\nwant %+v", got, want)
		}
	})
}

// wantSkip is the skip reason a case expects: a reason code alone (as the
// decision table gives it) is completed with the side that is blank.
func (tc oneCase) wantSkip() string {
	if strings.Contains(tc.skip, ":") {
		return tc.skip
	}
	var blank []string
	switch tc.dir {
	case D365ToCampaign:
		blank = []string{"d365"}
	case CampaignToD365:
		blank = []string{"campaign"}
	default:
		if !tc.d.Known() {
			blank = append(blank, "d365")
		}
		if !tc.c.Known() {
			blank = append(blank, "campaign")
		}
	}
	return tc.skip + ": " + strings.Join(blank, " and ") + " blank"
}
