package load

import (
	"slices"
	"testing"

	"optsync/extract"
	"optsync/transform"
)

// A held change asks each API for the fields decided only, in the target
// field's polarity, with what the decision was based on; a skipped or
// pending decision, or a target written to files, asks nothing.
func TestHold(t *testing.T) {
	pairs := []transform.Pair{{D365: "donotemail", Campaign: "blackListEmail"}, {D365: "donotphone", Campaign: "blackListPhone"}, {D365: "donotfax", Campaign: "blackListFax"}}
	id, _ := extract.ParseID("00000000-0000-0000-0000-000000000001")
	ch := &Change{Change: transform.Change{ID: id, PKey: "@p1", ETag: `W/"7"`, ContactModified: 10, ProfileModified: 20, D365Changed: true, CampaignChanged: true,
		Decisions: []transform.Decision{
			{Pair: 0, Target: transform.ToD365, Old: extract.False, New: extract.True},
			{Pair: 1, Target: transform.ToCampaign, Old: extract.True, New: extract.False, ClearsOptOut: true},
			{Pair: 2, Target: transform.ToCampaign, New: extract.True, Skip: "unknown"},
			{Pair: 2, Target: transform.ToD365, New: extract.True, Pending: true},
		}}}
	ch.D365Read[0], ch.CampaignRead[1] = extract.False, extract.True
	both := &APIWriters{Dataverse: &DataverseWriter{}, Campaign: &CampaignWriter{}, Pairs: pairs}
	h := both.Hold(ch)
	if h.d365 == nil || !slices.Equal(h.d365.Fields, []string{"donotemail"}) || !slices.Equal(h.d365.Values, []bool{true}) ||
		h.d365.ETag != `W/"7"` || h.d365.Modified != 10 || h.d365.Was[0] != extract.False {
		t.Errorf("Dataverse write %+v", h.d365)
	}
	if h.campaign == nil || !slices.Equal(h.campaign.Fields, []string{"blackListPhone"}) || !slices.Equal(h.campaign.Values, []bool{false}) ||
		!h.campaign.ClearsOptOut || h.campaign.Modified != 20 || h.campaign.Was[0] != extract.True {
		t.Errorf("Campaign write %+v", h.campaign)
	}
	ch.Decisions[0].Rule = "changed after Hold" // the decider reuses its buffers
	if h.change.Decisions[0].Rule != "" {
		t.Error("the held change shares the decider's buffer")
	}
	filesOnly := &APIWriters{Dataverse: &DataverseWriter{}, Pairs: pairs}
	if h := filesOnly.Hold(ch); h.campaign != nil {
		t.Errorf("a target written to files got an API write: %+v", h.campaign)
	}
	if filesOnly.Holds(&Change{Change: transform.Change{CampaignChanged: true}}) || !filesOnly.Holds(&Change{Change: transform.Change{D365Changed: true}}) || (&APIWriters{}).Holds(ch) {
		t.Error("Holds holds a change for a target written to files")
	}
}
