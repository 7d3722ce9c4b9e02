package extract

import (
	"context"
	"encoding/json"
	"optsync/fixtures/testkit"
	"strings"
	"testing"
	"time"
)

// A change time later than the run's start plus max_clock_skew makes the
// row bad, in every reader and every time column: rejected with the
// reason, file, line and id, and emitted Bad so that the record stays out
// of the run. A time at the bound is believed.
func TestFutureTimesAreBadRows(t *testing.T) {
	notAfter := time.Date(2026, 11, 29, 3, 0, 0, 0, time.UTC)
	at, past := "2026-11-29T03:00:00Z", "2026-11-29T02:59:00Z"
	id := testkit.V4GUID(1)
	csvContacts := func(mod string) (Reject, bool, int) {
		r := readContacts(context.Background(), "contactid,modifiedon,donotemail\n"+id+","+mod+",true\n",
			Layout{Fields: []string{"donotemail"}, NotAfter: notAfter})
		if r.err != nil || len(r.contacts) != 1 {
			t.Fatalf("err %v, contacts %v", r.err, r.contacts)
		}
		return first(r.rejects), r.contacts[0].Bad, len(r.rejects)
	}
	csvProfiles := func(mod, fieldMod string) (Reject, bool, int) {
		r := readProfiles(context.Background(), "PKey,externalId,lastModified,blackListMobile,smsOptOutDate\n@p1,"+id+","+mod+",true,"+fieldMod+"\n",
			Layout{Fields: []string{"blackListMobile"}, FieldTimes: []string{"smsOptOutDate"}, NotAfter: notAfter})
		if r.err != nil || len(r.profiles) != 1 {
			t.Fatalf("err %v, profiles %v", r.err, r.profiles)
		}
		return first(r.rejects), r.profiles[0].Bad, len(r.rejects)
	}
	dataverse := func(mod string) (Reject, bool, int) {
		d := &Dataverse{Fields: []string{"donotemail"}, NotAfter: notAfter}
		var rejects []Reject
		var got []Contact
		d.record(entity(t, map[string]any{"contactid": id, "modifiedon": mod, "donotemail": true}), 7,
			func(c *Contact) { got = append(got, *c) }, func(r Reject) { rejects = append(rejects, r) }, nil)
		if len(got) != 1 {
			t.Fatalf("contacts %v", got)
		}
		return first(rejects), got[0].Bad, len(rejects)
	}
	campaign := func(mod, fieldMod string) (Reject, bool, int) {
		c := &Campaign{Fields: []string{"blackListMobile"}, FieldTimes: []string{"smsOptOutDate"}, NotAfter: notAfter}
		var rejects []Reject
		var got []Profile
		var st Stats
		c.record(entity(t, map[string]any{"PKey": "@p1", "externalId": id, "lastModified": mod, "blackListMobile": true, "smsOptOutDate": fieldMod}), 7, &st, NewKeys().Writer(),
			func(p *Profile) { got = append(got, *p) }, func(r Reject) { rejects = append(rejects, r) })
		if len(got) != 1 {
			t.Fatalf("profiles %v", got)
		}
		return first(rejects), got[0].Bad, len(rejects)
	}
	for _, tc := range []struct {
		name   string
		read   func() (Reject, bool, int)
		source Source
		want   string
		line   int
		rowID  string
	}{
		{"csv contact, year 9999", func() (Reject, bool, int) { return csvContacts("9999-12-31T00:00:00Z") }, File("d365.csv"), "modifiedon 9999-12-31T00:00:00Z is in the future", 2, id},
		{"csv contact, a clock an hour and a second ahead", func() (Reject, bool, int) { return csvContacts("2026-11-29T03:00:01Z") }, File("d365.csv"), "modifiedon 2026-11-29T03:00:01Z is in the future: later than 2026-11-29T03:00:00Z", 2, id},
		{"csv contact at the bound", func() (Reject, bool, int) { return csvContacts(at) }, Source{}, "", 0, ""},
		{"csv profile", func() (Reject, bool, int) { return csvProfiles("9999-01-01 00:00:00.000Z", past) }, File("campaign.csv"), "lastModified 9999-01-01T00:00:00Z is in the future", 2, "@p1"},
		{"csv profile, per-field time", func() (Reject, bool, int) { return csvProfiles(past, "2027-01-01 00:00:00.000Z") }, File("campaign.csv"), "smsOptOutDate 2027-01-01T00:00:00Z is in the future", 2, "@p1"},
		{"csv profile at the bound", func() (Reject, bool, int) { return csvProfiles(at, at) }, Source{}, "", 0, ""},
		{"dataverse", func() (Reject, bool, int) { return dataverse("9999-12-31T00:00:00Z") }, DataverseAPI(), "modifiedon 9999-12-31T00:00:00Z is in the future", 7, id},
		{"dataverse at the bound", func() (Reject, bool, int) { return dataverse(at) }, Source{}, "", 0, ""},
		{"campaign api", func() (Reject, bool, int) { return campaign("9999-01-01 00:00:00.000Z", "") }, CampaignAPI(), "lastModified 9999-01-01T00:00:00Z is in the future", 7, "@p1"},
		{"campaign api, per-field time", func() (Reject, bool, int) { return campaign(past, "2027-01-01 00:00:00.000Z") }, CampaignAPI(), "smsOptOutDate 2027-01-01T00:00:00Z is in the future", 7, "@p1"},
		{"campaign api at the bound", func() (Reject, bool, int) { return campaign(at, at) }, Source{}, "", 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rj, bad, n := tc.read()
			if tc.want == "" {
				if bad || n != 0 {
					t.Fatalf("a time at the bound was not believed: %+v", rj)
				}
				return
			}
			if !bad || n != 1 {
				t.Fatalf("bad %v, %d rejects", bad, n)
			}
			checkReject(t, rj, tc.source, tc.line, tc.rowID, []string{tc.want, "max_clock_skew"})
		})
	}
}

func first(rs []Reject) Reject {
	if len(rs) == 0 {
		return Reject{}
	}
	return rs[0]
}

func entity(t *testing.T, v map[string]any) map[string]json.RawMessage {
	t.Helper()
	out := map[string]json.RawMessage{}
	for k, x := range v {
		if s, ok := x.(string); ok && s == "" {
			continue
		}
		b, err := json.Marshal(x)
		if err != nil {
			t.Fatal(err)
		}
		out[k] = b
	}
	return out
}

// Without a bound (zero NotAfter) nothing is held to one.
func TestFutureWithoutBound(t *testing.T) {
	if why := Future("modifiedon", time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli(), time.Time{}); why != "" {
		t.Errorf("%q", why)
	}
	if why := Future("modifiedon", 1, time.UnixMilli(0)); !strings.Contains(why, "in the future") {
		t.Errorf("%q", why)
	}
}
