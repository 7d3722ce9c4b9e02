package transform

import (
	"testing"

	"optsync/extract"
)

// A change time in state later than the run believes is forgotten, so that
// a present-day row of the record is neither stale nor outranked by it —
// on either side, at first sight (replay) as with a snapshot.
func TestForgetFutureTimes(t *testing.T) {
	const notAfter = int64(1_800_000_000_000) // the run's start plus max_clock_skew
	future, now, earlier := notAfter+2*day, notAfter-3_600_000, notAfter-day
	r := &Rules{Direction: Bidirectional, Policy: Newest, Pairs: []Pair{{D365: "donotemail", Campaign: "blackListEmail"}}}
	id := extract.ID{1}
	for _, tc := range []struct {
		name     string
		replay   bool
		dFuture  bool // which side's stored time is in the future
		target   Side
		wantRule string
	}{
		{"d365 pinned, d365 opts out", false, true, ToCampaign, RuleOnlyD365Changed},
		{"d365 pinned, d365 opts out, replay", true, true, ToCampaign, RuleConflictD365Newer},
		{"campaign pinned, campaign opts out", false, false, ToD365, RuleOnlyCampaignChanged},
		{"campaign pinned, campaign opts out, replay", true, false, ToD365, RuleConflictCampaignNewer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rules := *r
			rules.Replay = tc.replay
			// Both sides agreed on false; one side's time was stored from a
			// clock that ran ahead. Now that side really opts out.
			snap := Snapshot{Known: true, DSeen: true, CSeen: true, DModified: earlier, CModified: earlier, PKey: "@p"}
			snap.Pairs[0] = PairState{S: F, DRaw: F, CRaw: F}
			c := extract.Contact{ID: id, Modified: earlier, Values: [extract.MaxFields]extract.Tri{F}}
			p := ProfileSide{Profile: extract.Profile{ID: id, Modified: earlier, Values: [extract.MaxFields]extract.Tri{F}}, PKey: "@p"}
			if tc.dFuture {
				snap.DModified, c.Modified, c.Values[0] = future, now, T
			} else {
				snap.CModified, p.Modified, p.Values[0] = future, now, T
			}

			// As it was: the real change is taken for a stale row.
			pinned := snap
			res, decs := Decide(&rules, &c, &p, &pinned, nil)
			if len(decs) != 0 || !(res.StaleD || res.StaleC) {
				t.Fatalf("without forgetting: decisions %+v, stale %v %v: the test does not show the pin", decs, res.StaleD, res.StaleC)
			}

			fd, fc := ForgetFutureTimes(&snap, notAfter)
			if fd != tc.dFuture || fc == tc.dFuture {
				t.Fatalf("forgot d=%v c=%v", fd, fc)
			}
			res, decs = Decide(&rules, &c, &p, &snap, nil)
			if len(decs) != 1 || decs[0].Target != tc.target || decs[0].New != T || decs[0].Rule != tc.wantRule {
				t.Fatalf("decisions %+v, want the opt-out carried %v by %s", decs, tc.target, tc.wantRule)
			}
			if res.Next.DModified > notAfter || res.Next.CModified > notAfter {
				t.Errorf("the future time is kept: %+v", res.Next)
			}

			// A one-sided record decided against state: not stale either.
			var seen Snapshot
			if tc.dFuture {
				seen = SeeContact(&rules, &c, &snap)
				if seen.DModified != now || seen.Pairs[0].DRaw != T {
					t.Errorf("SeeContact kept %+v", seen)
				}
			} else {
				seen = SeeProfile(&rules, &p, &snap)
				if seen.CModified != now || seen.Pairs[0].CRaw != T {
					t.Errorf("SeeProfile kept %+v", seen)
				}
			}
		})
	}
}
