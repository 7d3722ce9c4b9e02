package extract

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"math/rand/v2"
	"optsync/fixtures/testkit"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"
)

type result struct {
	contacts []Contact
	profiles []prow
	rejects  []Reject
	st       Stats
	err      error
}

func readContacts(ctx context.Context, in string, l Layout) result {
	var r result
	r.st, r.err = ReadContacts(ctx, strings.NewReader(in), "d365.csv", l,
		func(c *Contact) { r.contacts = append(r.contacts, *c) },
		func(rj Reject) { r.rejects = append(r.rejects, rj) })
	return r
}

// prow is a profile read, with what it names at hand.
type prow struct {
	Profile
	PKey          string
	FieldModified *[MaxFields]int64
}

func prowOf(ks *Keys, p *Profile) prow {
	r := prow{Profile: *p, PKey: ks.Get(p.PKey)}
	if !p.FieldModified.Empty() {
		r.FieldModified = new([MaxFields]int64)
		ks.Times(p.FieldModified, r.FieldModified)
	}
	return r
}

func readProfiles(ctx context.Context, in string, l Layout) result {
	var r result
	ks := NewKeys()
	r.st, r.err = ReadProfiles(ctx, strings.NewReader(in), "campaign.csv", l, ks.Writer(),
		func(p *Profile) { r.profiles = append(r.profiles, prowOf(ks, p)) },
		func(rj Reject) { r.rejects = append(r.rejects, rj) })
	return r
}

func mustID(t *testing.T, s string) ID {
	t.Helper()
	id, ok := ParseID(s)
	if !ok {
		t.Fatalf("bad test GUID %q", s)
	}
	return id
}

func checkReject(t *testing.T, got Reject, source Source, line int, id string, reason []string) {
	t.Helper()
	if got.Source != source || got.Line != line || got.ID != id {
		t.Errorf("reject = %+v; want source %+v line %d id %q", got, source, line, id)
	}
	for _, w := range reason {
		if !strings.Contains(got.Reason, w) {
			t.Errorf("reject reason %q does not mention %q", got.Reason, w)
		}
	}
}

var contactLayout = Layout{Fields: []string{"donotemail", "donotphone"}}

const t0 = "2026-11-29T02:00:00Z"

func TestReadContactsExcelExport(t *testing.T) {
	data, err := os.ReadFile("testdata/contacts_excel.csv")
	if err != nil {
		t.Fatal(err)
	}
	l := Layout{Fields: []string{"donotemail", "donotphone"}, Columns: map[string]string{"donotemail": "Do not allow Emails"}}
	r := readContacts(context.Background(), string(data), l)
	if r.err != nil || len(r.rejects) != 0 {
		t.Fatalf("err %v, rejects %+v", r.err, r.rejects)
	}
	base := ms(2026, time.November, 29, 2, 0, 0, 0)
	want := []Contact{
		{ID: mustID(t, "6f9619ff-8b86-d011-b42d-00c04fc964ff"), Modified: base, Values: [MaxFields]Tri{True, False}, Line: 2},
		{ID: mustID(t, "0a1b2c3d-0000-4000-8000-00000000beef"), Modified: base, Values: [MaxFields]Tri{False, Unknown}, Line: 3},
		{ID: mustID(t, "a0000000-0000-4000-8000-000000000001"), Modified: base + 250, Values: [MaxFields]Tri{True, Unknown}, Line: 5},
	}
	if len(r.contacts) != len(want) {
		t.Fatalf("got %d contacts, want %d: %+v", len(r.contacts), len(want), r.contacts)
	}
	for i := range want {
		if r.contacts[i] != want[i] {
			t.Errorf("contact %d = %+v, want %+v", i, r.contacts[i], want[i])
		}
	}
	if r.st != (Stats{Rows: 3}) {
		t.Errorf("stats = %+v", r.st)
	}
}

func TestReadContactsHeaders(t *testing.T) {
	row := testkit.V4GUID(1) + "," + t0 + ",true,false\n"
	cases := []struct {
		name, header string
		columns      map[string]string
	}{
		{"plain", "contactid,modifiedon,donotemail,donotphone", nil},
		{"upper case", "CONTACTID,ModifiedOn,DoNotEmail,DONOTPHONE", nil},
		{"padded", " contactid , modifiedon ,donotemail, donotphone", nil},
		{"hidden columns", "(Do Not Modify) Contact,(Do Not Modify) Modified On,donotemail,donotphone", nil},
		{"hidden columns any case", "(do not modify) contact,(DO NOT MODIFY) MODIFIED ON,donotemail,donotphone", nil},
		{"configured", "id,changed,Do not allow Emails,Phone",
			map[string]string{"contactid": "id", "modifiedon": "changed", "donotemail": "Do not allow Emails", "donotphone": "phone"}},
		{"BOM", "\uFEFFcontactid,modifiedon,donotemail,donotphone", nil},
		{"reordered", "donotphone,x,modifiedon,contactid,donotemail", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := c.header + "\n" + row
			if c.name == "reordered" {
				in = c.header + "\nfalse,zz," + t0 + "," + testkit.V4GUID(1) + ",true\n"
			}
			for _, crlf := range []bool{false, true} {
				if crlf {
					in = strings.ReplaceAll(in, "\n", "\r\n")
				}
				r := readContacts(context.Background(), in, Layout{Fields: contactLayout.Fields, Columns: c.columns})
				if r.err != nil || len(r.rejects) != 0 || len(r.contacts) != 1 {
					t.Fatalf("crlf=%v: err %v, rejects %+v, contacts %+v", crlf, r.err, r.rejects, r.contacts)
				}
				got := r.contacts[0]
				if got.ID.String() != testkit.V4GUID(1) || got.Modified != ms(2026, 11, 29, 2, 0, 0, 0) ||
					got.Values != [MaxFields]Tri{True, False} || got.Line != 2 || got.Bad {
					t.Errorf("crlf=%v: contact = %+v", crlf, got)
				}
			}
		})
	}
}

func TestReadMissingColumn(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name, header string
		profiles     bool
		l            Layout
		want         []string // in MissingColumnError.Columns, in this order
	}{
		{"contactid", "id,modifiedon,donotemail,donotphone", false, contactLayout, []string{"contactid"}},
		{"modifiedon", "contactid,modified,donotemail,donotphone", false, contactLayout, []string{"modifiedon"}},
		{"mapped field", "contactid,modifiedon,donotemail", false, contactLayout, []string{"donotphone"}},
		{"configured alias", "contactid,modifiedon,Do not allow Phone Calls,donotphone", false,
			Layout{Fields: []string{"donotemail"}, Columns: map[string]string{"donotemail": "Do not allow Emails"}},
			[]string{`donotemail (configured as "Do not allow Emails")`}},
		{"PKey", "key,externalId,lastModified,blackListEmail,blackListMobile", true, profileLayout(false), []string{"PKey"}},
		{"externalId", "PKey,external,lastModified,blackListEmail,blackListMobile", true, profileLayout(false), []string{"externalId"}},
		{"lastModified", "PKey,externalId,modified,blackListEmail,blackListMobile", true, profileLayout(false), []string{"lastModified"}},
		{"campaign field", "PKey,externalId,lastModified,blackListEmail", true,
			Layout{Fields: []string{"blackListEmail", "blackListMobile"}}, []string{"blackListMobile"}},
		{"change time column", "PKey,externalId,lastModified,blackListEmail,blackListMobile", true,
			profileLayout(true), []string{"smsOptOutDate"}},
		{"every missing column at once", "Contact,Modified On,Do not allow Emails,Do not allow Phone Calls", false, contactLayout,
			[]string{"contactid", "modifiedon", "donotemail", "donotphone"}},
		{"every missing profile column", "PKey,blackListEmail", true, profileLayout(true),
			[]string{"externalId", "lastModified", "blackListMobile", "smsOptOutDate"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := c.header + "\n"
			var r result
			if c.profiles {
				r = readProfiles(ctx, in, c.l)
			} else {
				r = readContacts(ctx, in, c.l)
			}
			var mc *MissingColumnError
			if !errors.As(r.err, &mc) {
				t.Fatalf("err = %v, want *MissingColumnError", r.err)
			}
			if len(mc.Columns) != len(c.want) {
				t.Fatalf("missing %q, want %q", mc.Columns, c.want)
			}
			for i, w := range c.want {
				if !strings.Contains(mc.Columns[i], w) || !strings.Contains(mc.Error(), w) {
					t.Errorf("error %q (columns %q) does not name %q", mc.Error(), mc.Columns, w)
				}
			}
			if want := map[bool]string{false: "d365.csv", true: "campaign.csv"}[c.profiles]; mc.Source != want {
				t.Errorf("source = %q, want %q", mc.Source, want)
			}
		})
	}
	// The hint names the config entry that maps labels.
	l := contactLayout
	l.ColumnsKey = "d365.columns"
	r := readContacts(ctx, "(Do Not Modify) Contact,(Do Not Modify) Modified On,Do not allow Emails,Do not allow Phone Calls\n", l)
	want := `d365.csv: 2 required columns are missing from the header: donotemail, donotphone (the header has: (Do Not Modify) Contact, (Do Not Modify) Modified On, Do not allow Emails, Do not allow Phone Calls). A Dynamics "Export to Excel" file names columns by their display labels: map each logical name to its label under d365.columns, e.g. d365.columns: {donotemail: "Do not allow Emails"}`
	if r.err == nil || r.err.Error() != want {
		t.Errorf("message:\n got %v\nwant %s", r.err, want)
	}
}

// An export without a header row cannot be read at all: the same class of
// error as a missing column (rerunning will not fix it), naming the file
// and every column it must have.
func TestReadEmptyExport(t *testing.T) {
	ctx := context.Background()
	withAlias := Layout{Fields: []string{"donotemail"}, Columns: map[string]string{"donotemail": "Do not allow Emails"}}
	for _, in := range []string{"", "\uFEFF", "\n\n", "\r\n\r\n", "\uFEFF\r\n"} {
		for _, c := range []struct {
			profiles bool
			l        Layout
			want     string
		}{
			{false, contactLayout, "contactid, modifiedon, donotemail, donotphone"},
			{false, withAlias, "contactid, modifiedon, Do not allow Emails"},
			{true, profileLayout(true), "PKey, externalId, lastModified, blackListEmail, blackListMobile, smsOptOutDate"},
		} {
			var r result
			if c.profiles {
				r = readProfiles(ctx, in, c.l)
			} else {
				r = readContacts(ctx, in, c.l)
			}
			var mc *MissingColumnError
			if !errors.As(r.err, &mc) || !mc.Empty || strings.Join(mc.Columns, ", ") != c.want {
				t.Errorf("%q: err = %v, want a MissingColumnError (empty) naming %s", in, r.err, c.want)
				continue
			}
			if !strings.Contains(mc.Error(), mc.Source+": the file is empty") || !strings.Contains(mc.Error(), c.want) {
				t.Errorf("%q: message %q", in, mc.Error())
			}
		}
	}
}

// A malformed row's cells may be shifted: its time is not read, so it may
// be the newest row of its record.
func TestMalformedRowTimeIsUnknown(t *testing.T) {
	ctx := context.Background()
	r := readContacts(ctx, "contactid,modifiedon,donotemail,donotphone\n"+testkit.V4GUID(1)+","+t0+",true\n", contactLayout)
	if len(r.contacts) != 1 || !r.contacts[0].Bad || r.contacts[0].Modified != NoTime {
		t.Errorf("contacts = %+v", r.contacts)
	}
	r = readProfiles(ctx, "PKey,externalId,lastModified,blackListEmail,blackListMobile\n@p1,"+testkit.V4GUID(1)+","+t0+",true\n@p2,nope,"+t0+",x,y,z\n", profileLayout(false))
	if len(r.profiles) != 2 || !r.profiles[0].Bad || r.profiles[0].Modified != NoTime || r.profiles[0].PKey != "@p1" || r.profiles[0].ID != mustID(t, testkit.V4GUID(1)) ||
		!r.profiles[1].Bad || !r.profiles[1].Unlinked || r.profiles[1].PKey != "@p2" {
		t.Errorf("profiles = %+v", r.profiles)
	}
}

func TestReadContactsBadRows(t *testing.T) {
	const header = "contactid,modifiedon,donotemail,donotphone\n"
	cases := []struct {
		name    string
		row     string // the bad record, at line 3; may span lines
		id      string // Reject.ID
		reason  []string
		emitBad bool // the row is also emitted, marked Bad
	}{
		{"not a GUID", "not-a-guid," + t0 + ",true,false", "not-a-guid", []string{"contactid", "not-a-guid", "GUID"}, false},
		{"empty id", "," + t0 + ",true,false", "", []string{"contactid", "GUID"}, false},
		{"GUID too short", testkit.V4GUID(2)[:35] + "," + t0 + ",true,false", testkit.V4GUID(2)[:35], []string{"contactid"}, false},
		{"one brace", "{" + testkit.V4GUID(2) + "," + t0 + ",true,false", "{" + testkit.V4GUID(2), []string{"contactid"}, false},
		{"bad boolean", testkit.V4GUID(2) + "," + t0 + ",maybe,false", testkit.V4GUID(2), []string{"donotemail", "maybe", "boolean"}, true},
		{"bad second boolean", "{" + strings.ToUpper(testkit.V4GUID(2)) + "}," + t0 + ",true,2", testkit.V4GUID(2), []string{"donotphone", `"2"`}, true},
		{"bad timestamp", testkit.V4GUID(2) + ",yesterday,true,false", testkit.V4GUID(2), []string{"modifiedon", "yesterday", "timestamp"}, true},
		{"31 February", testkit.V4GUID(2) + ",2026-02-31T00:00:00Z,true,false", testkit.V4GUID(2), []string{"modifiedon", "2026-02-31"}, true},
		{"month 13", testkit.V4GUID(2) + ",2026-13-01 00:00:00,true,false", testkit.V4GUID(2), []string{"modifiedon"}, true},
		{"blank timestamp", testkit.V4GUID(2) + ",,true,false", testkit.V4GUID(2), []string{"modifiedon"}, true},
		{"two problems", testkit.V4GUID(2) + ",never,yes,perhaps", testkit.V4GUID(2), []string{"modifiedon", "never", "donotphone", "perhaps"}, true},
		{"multi-line bad value", testkit.V4GUID(2) + "," + t0 + ",\"tr\nue\",false", testkit.V4GUID(2), []string{"donotemail"}, true},
		// A row of the wrong width that still names a contact blocks it.
		{"too few fields", testkit.V4GUID(2) + "," + t0 + ",true", testkit.V4GUID(2), []string{"3 fields", "4"}, true},
		{"too many fields", testkit.V4GUID(2) + "," + t0 + ",true,false,x", testkit.V4GUID(2), []string{"5 fields", "4"}, true},
		{"too many, multi-line", testkit.V4GUID(2) + "," + t0 + ",\"a\nb\",false,x", testkit.V4GUID(2), []string{"5 fields"}, true},
		{"too few, no id", "x," + t0, "", []string{"2 fields", "4"}, false},
		{"bare quote", testkit.V4GUID(2) + "," + t0 + ",tr\"ue,false", "", []string{"malformed CSV", "quote"}, false},
		{"quote after quoted", testkit.V4GUID(2) + "," + t0 + ",\"true\"x,false", "", []string{"malformed CSV", "quote"}, false},
		{"bad quote, multi-line", testkit.V4GUID(2) + "," + t0 + ",\"a\nb\"c,false", "", []string{"lines 3-4", "quote"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			after := 4 + strings.Count(c.row, "\n")
			in := header + testkit.V4GUID(1) + "," + t0 + ",true,false\n" + c.row + "\n" + testkit.V4GUID(3) + "," + t0 + ",no,Do Not Allow\n"
			r := readContacts(context.Background(), in, contactLayout)
			if r.err != nil {
				t.Fatal(r.err)
			}
			if len(r.rejects) != 1 {
				t.Fatalf("rejects = %+v, want 1", r.rejects)
			}
			checkReject(t, r.rejects[0], File("d365.csv"), 3, c.id, c.reason)
			want := []Contact{{ID: mustID(t, testkit.V4GUID(1)), Values: [MaxFields]Tri{True, False}, Line: 2}}
			if c.emitBad {
				want = append(want, Contact{ID: mustID(t, testkit.V4GUID(2)), Line: 3, Bad: true})
			}
			want = append(want, Contact{ID: mustID(t, testkit.V4GUID(3)), Values: [MaxFields]Tri{False, True}, Line: int32(after)})
			if len(r.contacts) != len(want) {
				t.Fatalf("emitted %+v, want %d contacts", r.contacts, len(want))
			}
			for i, w := range want {
				g := r.contacts[i]
				if g.ID != w.ID || g.Line != w.Line || g.Bad != w.Bad || (!w.Bad && (g.Values != w.Values || g.Modified != ms(2026, 11, 29, 2, 0, 0, 0))) {
					t.Errorf("contact %d = %+v, want %+v", i, g, w)
				}
			}
			if r.st != (Stats{Rows: 3, Rejected: 1}) {
				t.Errorf("stats = %+v", r.st)
			}
		})
	}
}

// Dynamics two-option labels are Dynamics-only: Campaign has no such export.
func TestLabelsOnlyForDynamics(t *testing.T) {
	c := readContacts(context.Background(), "contactid,modifiedon,donotemail,donotsendmm\n"+
		testkit.V4GUID(1)+","+t0+",Do Not Allow,Send\n"+testkit.V4GUID(2)+","+t0+",allow,do not send\n",
		Layout{Fields: []string{"donotemail", "donotsendmm"}})
	if len(c.rejects) != 0 || len(c.contacts) != 2 ||
		c.contacts[0].Values != [MaxFields]Tri{True, False} || c.contacts[1].Values != [MaxFields]Tri{False, True} {
		t.Errorf("contacts %+v, rejects %+v", c.contacts, c.rejects)
	}
	p := readProfiles(context.Background(), "PKey,externalId,lastModified,blackListEmail\n@p1,"+testkit.V4GUID(1)+","+t0+",Do Not Allow\n",
		Layout{Fields: []string{"blackListEmail"}})
	if len(p.rejects) != 1 || len(p.profiles) != 1 || !p.profiles[0].Bad {
		t.Fatalf("profiles %+v, rejects %+v", p.profiles, p.rejects)
	}
	checkReject(t, p.rejects[0], File("campaign.csv"), 2, "@p1", []string{"blackListEmail", "Do Not Allow", "boolean"})
}

func profileLayout(times bool) Layout {
	l := Layout{Fields: []string{"blackListEmail", "blackListMobile"}}
	if times {
		l.FieldTimes = []string{"", "smsOptOutDate"}
	}
	return l
}

func TestReadProfiles(t *testing.T) {
	in := "\uFEFFpkey,External ID,LASTMODIFIED,blacklistemail,blackListMobile,SMSOptOutDate\r\n" +
		"@abc_1-X," + testkit.V4GUID(1) + ",2026-11-29 02:00:00.000Z,true,false,2026-11-30T00:00:00Z\r\n" +
		"@p2,,2026-11-29 02:00:00.000Z,true,false,\r\n" +
		"@p3,not-a-guid,garbage,maybe,false,\r\n" +
		"@p4,\"{" + strings.ToUpper(testkit.V4GUID(4)) + "}\",2026-11-29T03:00:00+01:00,,NULL,\r\n" +
		"\"@p5\"," + testkit.V4GUID(5) + ",2026-11-29 02:00:00,\"n\",\"y\",\"2026-11-29 01:00:00\"\r\n"
	l := profileLayout(true)
	l.Columns = map[string]string{"externalId": "external id"}
	r := readProfiles(context.Background(), in, l)
	if r.err != nil || len(r.rejects) != 0 {
		t.Fatalf("err %v, rejects %+v", r.err, r.rejects)
	}
	base := ms(2026, time.November, 29, 2, 0, 0, 0)
	times := func(t ...int64) *[MaxFields]int64 {
		ft := NewFieldTimes()
		copy(ft[:], t)
		return ft
	}
	// Rows linked to no contact are emitted Unlinked, with their PKey and
	// time only (an unreadable one is NoTime): they are not bad rows.
	want := []prow{
		{Profile: Profile{ID: mustID(t, testkit.V4GUID(1)), Modified: base, Values: [MaxFields]Tri{True, False}, Line: 2}, PKey: "@abc_1-X", FieldModified: times(NoTime, base+22*3600*1000)},
		{Profile: Profile{Modified: base, Line: 3, Unlinked: true}, PKey: "@p2"},
		{Profile: Profile{Modified: NoTime, Line: 4, Unlinked: true}, PKey: "@p3"},
		{Profile: Profile{ID: mustID(t, testkit.V4GUID(4)), Modified: base, Line: 5}, PKey: "@p4", FieldModified: times(NoTime, NoTime)},
		{Profile: Profile{ID: mustID(t, testkit.V4GUID(5)), Modified: base, Values: [MaxFields]Tri{False, True}, Line: 6}, PKey: "@p5", FieldModified: times(NoTime, base-3600*1000)},
	}
	if len(r.profiles) != len(want) {
		t.Fatalf("profiles = %+v, want %d", r.profiles, len(want))
	}
	for i, w := range want {
		g := r.profiles[i]
		if g.ID != w.ID || g.PKey != w.PKey || g.Modified != w.Modified || g.Values != w.Values || g.Line != w.Line || g.Bad || g.Unlinked != w.Unlinked ||
			(g.FieldModified == nil) != (w.FieldModified == nil) || (g.FieldModified != nil && *g.FieldModified != *w.FieldModified) {
			t.Errorf("profile %d = %+v, want %+v", i, g, w)
		}
	}
	if r.st != (Stats{Rows: 5, Unlinked: 2}) {
		t.Errorf("stats = %+v, want 5 rows, 2 unlinked", r.st)
	}
	// Without change-time columns FieldModified stays nil.
	r = readProfiles(context.Background(), "PKey,externalId,lastModified,blackListEmail,blackListMobile\n@p1,"+testkit.V4GUID(1)+","+t0+",1,0\n", profileLayout(false))
	if len(r.profiles) != 1 || r.profiles[0].FieldModified != nil || r.profiles[0].Values != [MaxFields]Tri{True, False} {
		t.Errorf("profiles = %+v", r.profiles)
	}
}

func TestReadProfilesBadRows(t *testing.T) {
	const header = "PKey,externalId,lastModified,blackListEmail,blackListMobile,smsOptOutDate\n"
	row := func(pkey, ext, mod, email, mobile, when string) string {
		return strings.Join([]string{pkey, ext, mod, email, mobile, when}, ",")
	}
	cases := []struct {
		name    string
		row     string
		id      string
		reason  []string
		emitted string // what the bad row leaves among the profiles
	}{
		{"PKey without @", row("p2", testkit.V4GUID(2), t0, "true", "false", ""), "p2", []string{"PKey", "p2"}, "@3 bad=true"},
		{"PKey formula", row("=cmd|x", testkit.V4GUID(2), t0, "true", "false", ""), "=cmd|x", []string{"PKey"}, "@3 bad=true"},
		{"PKey with space", row("\"@p 2\"", testkit.V4GUID(2), t0, "true", "false", ""), "@p 2", []string{"PKey"}, "@3 bad=true"},
		{"PKey only @", row("@", testkit.V4GUID(2), t0, "true", "false", ""), "@", []string{"PKey"}, "@3 bad=true"},
		{"PKey empty", row("", testkit.V4GUID(2), t0, "true", "false", ""), "", []string{"PKey"}, "@3 bad=true"},
		{"PKey dot", row("@a.b", testkit.V4GUID(2), t0, "true", "false", ""), "@a.b", []string{"PKey"}, "@3 bad=true"},
		{"bad lastModified", row("@p2", testkit.V4GUID(2), "2026-02-31 00:00:00.000Z", "true", "false", ""), "@p2", []string{"lastModified", "2026-02-31"}, "@p2@3 bad=true"},
		{"bad boolean", row("@p2", testkit.V4GUID(2), t0, "true", "opted-out", ""), "@p2", []string{"blackListMobile", "opted-out", "boolean"}, "@p2@3 bad=true"},
		{"bad change time", row("@p2", testkit.V4GUID(2), t0, "true", "false", "soon"), "@p2", []string{"smsOptOutDate", "soon", "timestamp"}, "@p2@3 bad=true"},
		// A malformed row whose PKey reads is a bad row of that profile.
		{"too few fields", row("@p2", testkit.V4GUID(2), t0, "true", "false", "")[:50], "@p2", []string{"fields", "6"}, "@p2@3 bad=true"},
		{"bare quote", row("@p2", testkit.V4GUID(2), t0, "tr\"ue", "false", ""), "", []string{"quote"}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := header + row("@p1", testkit.V4GUID(1), t0, "true", "false", "") + "\n" + c.row + "\n" + row("@p3", testkit.V4GUID(3), t0, "no", "yes", t0) + "\n"
			r := readProfiles(context.Background(), in, profileLayout(true))
			if r.err != nil {
				t.Fatal(r.err)
			}
			if len(r.rejects) != 1 {
				t.Fatalf("rejects = %+v, want 1", r.rejects)
			}
			checkReject(t, r.rejects[0], File("campaign.csv"), 3, c.id, c.reason)
			var got []string
			for _, p := range r.profiles {
				got = append(got, fmt.Sprintf("%s@%d bad=%v", p.PKey, p.Line, p.Bad))
			}
			want := []string{"@p1@2 bad=false", "@p3@4 bad=false"}
			if c.emitted != "" {
				want = []string{"@p1@2 bad=false", c.emitted, "@p3@4 bad=false"}
			}
			if strings.Join(got, "|") != strings.Join(want, "|") {
				t.Errorf("emitted %v, want %v", got, want)
			}
			if last := r.profiles[len(r.profiles)-1]; last.Values != [MaxFields]Tri{False, True} ||
				last.FieldModified[1] != ms(2026, 11, 29, 2, 0, 0, 0) {
				t.Errorf("row after the bad one = %+v", last)
			}
			if r.st != (Stats{Rows: 3, Rejected: 1}) {
				t.Errorf("stats = %+v", r.st)
			}
		})
	}
}

func TestReadCancelled(t *testing.T) {
	var b strings.Builder
	b.WriteString("contactid,modifiedon,donotemail,PKey,externalId,lastModified,blackListEmail\n")
	const n = 20000
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "%s,%s,true,@p%d,%s,%s,false\n", testkit.V4GUID(i), t0, i, testkit.V4GUID(i), t0)
	}
	in := b.String()
	cl, pl := Layout{Fields: []string{"donotemail"}}, Layout{Fields: []string{"blackListEmail"}}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if r := readContacts(ctx, in, cl); !errors.Is(r.err, context.Canceled) || len(r.contacts) != 0 {
		t.Errorf("contacts, cancelled before: err %v, %d emitted", r.err, len(r.contacts))
	}
	if r := readProfiles(ctx, in, pl); !errors.Is(r.err, context.Canceled) || len(r.profiles) != 0 {
		t.Errorf("profiles, cancelled before: err %v, %d emitted", r.err, len(r.profiles))
	}

	// Cancelled while reading: the reader stops well before the end.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	emitted := 0
	_, err := ReadContacts(ctx, strings.NewReader(in), "d365.csv", cl,
		func(*Contact) {
			if emitted++; emitted == 10 {
				cancel()
			}
		}, func(Reject) {})
	if !errors.Is(err, context.Canceled) || emitted >= n {
		t.Errorf("cancelled while reading: err %v, %d of %d emitted", err, emitted, n)
	}
}

// Excel "CSV UTF-8" and PowerShell's Export-Csv write a BOM, and some
// exporters quote every cell, the header included.
func TestReadQuotedHeaderAfterBOM(t *testing.T) {
	in := "\uFEFF\"contactid\",\"modifiedon\",\"donotemail\"\r\n\"" + testkit.V4GUID(1) + "\",\"" + t0 + "\",\"true\"\r\n"
	r := readContacts(context.Background(), in, Layout{Fields: []string{"donotemail"}})
	if r.err != nil || len(r.rejects) != 0 || len(r.contacts) != 1 || r.contacts[0].Values[0] != True {
		t.Errorf("err %v, rejects %+v, contacts %+v; want one contact", r.err, r.rejects, r.contacts)
	}
}

// A bad row whose record still names a contact is emitted Bad, so that a
// second profile with the same externalId is seen as a duplicate (SPEC: none is touched).
func TestProfileWithBadPKeyIsEmittedBad(t *testing.T) {
	in := "PKey,externalId,lastModified,blackListEmail\n=bad," + testkit.V4GUID(1) + "," + t0 + ",true\n@ok," + testkit.V4GUID(1) + "," + t0 + ",false\n"
	r := readProfiles(context.Background(), in, Layout{Fields: []string{"blackListEmail"}})
	if len(r.profiles) != 2 || r.profiles[0].ID != mustID(t, testkit.V4GUID(1)) || !r.profiles[0].Bad || r.profiles[0].Line != 2 {
		t.Errorf("profiles = %+v; want the bad one emitted Bad at line 2", r.profiles)
	}
}

// A million contacts and profiles are held at once: the records' sizes are
// part of the memory budget (README, Performance), so growing them is a
// decision, not an accident of field order.
func TestRecordSizes(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"Contact", unsafe.Sizeof(Contact{}), 48},
		{"Profile", unsafe.Sizeof(Profile{}), 56},
	} {
		// 32-bit platforms align 8-byte fields to 4: a record may be smaller there
		if c.got > c.want || (bits.UintSize == 64 && c.got != c.want) {
			t.Errorf("%s is %d bytes, want %d", c.name, c.got, c.want)
		}
	}
}

// TestRecordsHoldNoPointers: the arrays of a million rows a run sorts and
// holds are not scanned by the collector, nor their copies write-barriered,
// only while the records hold no pointer (a string, a slice, a map, a
// pointer); what a profile keeps besides is named in a Keys.
func TestRecordsHoldNoPointers(t *testing.T) {
	var pointers func(t reflect.Type) []string
	pointers = func(t reflect.Type) []string {
		switch t.Kind() {
		case reflect.Struct:
			var found []string
			for i := range t.NumField() {
				for _, p := range pointers(t.Field(i).Type) {
					found = append(found, t.Field(i).Name+p)
				}
			}
			return found
		case reflect.Array:
			if t.Len() == 0 {
				return nil
			}
			return pointers(t.Elem())
		case reflect.Pointer, reflect.String, reflect.Slice, reflect.Map, reflect.Chan, reflect.Func, reflect.Interface, reflect.UnsafePointer:
			return []string{" (" + t.Kind().String() + ")"}
		}
		return nil
	}
	for _, r := range []any{Contact{}, Profile{}} {
		if p := pointers(reflect.TypeOf(r)); len(p) > 0 {
			t.Errorf("%T holds pointers: %v", r, p)
		}
	}
}

// TestTableRowsAgreeWithEncodingCSV: the rows a table reads (lines without
// a quote split by the fast path, the rest by encoding/csv, from one
// buffer) are what encoding/csv alone reads, with the same lines, fields
// and reasons for bad rows, across buffer boundaries, CRLF, blank lines,
// quoted fields spanning lines, stray quotes and rows of the wrong width.
func TestTableRowsAgreeWithEncodingCSV(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 13))
	cells := []string{"a", "bb", "", " ", "x y", "\"q\"", "\"q,\n\"", "\"\"\"\"", "\"r\r\n\"", "c\"d", "\"e\"f", "\r", "é"}
	ends := []string{"\n", "\n", "\n", "\r\n", "\n\n", "\r\n\r\n", "\r\r\n"}
	for n := range 3000 {
		var b strings.Builder
		if rng.IntN(10) == 0 {
			b.WriteString("\ufeff")
		}
		b.WriteString("h1,h2,h3\n")
		for range rng.IntN(400) {
			width := 3
			if rng.IntN(20) == 0 {
				width = 1 + rng.IntN(5)
			}
			for i := range width {
				if i > 0 {
					b.WriteByte(',')
				}
				if rng.IntN(8) == 0 {
					b.WriteString(cells[rng.IntN(len(cells))])
				} else {
					b.WriteString(strings.Repeat("v", rng.IntN(12)))
				}
			}
			b.WriteString(ends[rng.IntN(len(ends))])
		}
		if rng.IntN(4) == 0 {
			b.WriteString("t1,t2") // no end of line
		}
		in := b.String()
		want := referenceRows(in)
		got := tableRows(in)
		if got != want {
			t.Fatalf("input %d %q:\nencoding/csv %s\ntable        %s", n, in, want, got)
		}
	}
}

func tableRows(in string) string {
	var out []string
	tb, err := openTableSize(strings.NewReader(in), "f", Limits{}, 4096)
	if err != nil {
		return fmt.Sprintf("ERR %v", err)
	}
	err = tb.rows(context.Background(), func(line int, rec []string) {
		out = append(out, fmt.Sprintf("%d %q", line, rec))
	}, func(line int, rec []string, reason string) {
		out = append(out, fmt.Sprintf("bad %d %q %s", line, rec, reason))
	})
	if err != nil {
		out = append(out, fmt.Sprintf("ERR %v", err))
	}
	return strings.Join(out, " | ")
}

// referenceRows reads as tables did before the fast path: encoding/csv
// alone.
func referenceRows(in string) string {
	br := bufio.NewReader(strings.NewReader(in))
	if b, err := br.Peek(3); err == nil && string(b) == "\ufeff" {
		_, _ = br.Discard(3)
	}
	cr := csv.NewReader(newQuoteGuard(br, "f", Limits{}))
	cr.ReuseRecord = true
	header, err := cr.Read()
	if err != nil {
		return fmt.Sprintf("ERR header %v", err)
	}
	width := len(header)
	var out []string
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		var pe *csv.ParseError
		switch {
		case errors.Is(err, csv.ErrFieldCount):
			line, _ := cr.FieldPos(0)
			out = append(out, fmt.Sprintf("bad %d %q row has %d field%s, the header has %d", line, rec, len(rec), map[bool]string{true: "", false: "s"}[len(rec) == 1], width))
			continue
		case errors.As(err, &pe):
			reason := fmt.Sprintf("malformed CSV: %v", pe.Err)
			if pe.StartLine != pe.Line {
				reason = fmt.Sprintf("malformed CSV in the record spanning lines %d-%d: %v", pe.StartLine, pe.Line, pe.Err)
			}
			out = append(out, fmt.Sprintf("bad %d %q %s", pe.StartLine, []string(nil), reason))
			continue
		case err != nil:
			var broken *BrokenFileError
			if errors.As(err, &broken) {
				out = append(out, fmt.Sprintf("ERR %v", broken))
			} else {
				out = append(out, fmt.Sprintf("ERR f: %v", err))
			}
			return strings.Join(out, " | ")
		}
		line, _ := cr.FieldPos(0)
		out = append(out, fmt.Sprintf("%d %q", line, rec))
	}
	return strings.Join(out, " | ")
}

// TestRowsKeptPastTheReadBuffer: what a reader keeps of a row (a PKey, the
// id a reject names) is its own copy, not the read buffer the row was
// split in, which later rows overwrite: files of several buffers' worth
// with bad rows throughout keep every PKey and reject id as written.
func TestRowsKeptPastTheReadBuffer(t *testing.T) {
	const n = 60000 // about 5 MB: several read buffers
	var c, p strings.Builder
	c.WriteString("contactid,modifiedon,donotemail,donotphone\n")
	p.WriteString("PKey,externalId,lastModified,blackListEmail\n")
	guid := func(i int) string { return fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i) }
	for i := range n {
		switch i % 7 {
		case 3: // a bad id, a bad PKey
			fmt.Fprintf(&c, "bad-%d,%s,false,false\n", i, t0)
			fmt.Fprintf(&p, "bad-%d,%s,2026-11-29 02:00:00.000Z,true\n", i, guid(i))
		case 5: // a bad value, a bad row of a good PKey
			fmt.Fprintf(&c, "%s,%s,maybe,false\n", guid(i), t0)
			fmt.Fprintf(&p, "@p%d,%s,2026-11-29 02:00:00.000Z,maybe\n", i, guid(i))
		default:
			fmt.Fprintf(&c, "%s,%s,true,false\n", guid(i), t0)
			fmt.Fprintf(&p, "@p%d,%s,2026-11-29 02:00:00.000Z,false,extra\n", i, guid(i))
		}
	}
	rc := readContacts(context.Background(), c.String(), Layout{Fields: []string{"donotemail", "donotphone"}, Limits: Limits{MaxRejectShare: 1}})
	rp := readProfiles(context.Background(), p.String(), Layout{Fields: []string{"blackListEmail"}, Limits: Limits{MaxRejectShare: 1}})
	for _, r := range []result{rc, rp} {
		if r.err != nil {
			t.Fatal(r.err)
		}
		if len(r.rejects) < n/7 {
			t.Fatalf("%d rejects", len(r.rejects))
		}
	}
	for _, rj := range rc.rejects {
		i := rj.Line - 2
		want := guid(i)
		if i%7 == 3 {
			want = fmt.Sprintf("bad-%d", i)
		}
		if rj.ID != want {
			t.Fatalf("contact reject of line %d names %q, want %q", rj.Line, rj.ID, want)
		}
	}
	for _, rj := range rp.rejects {
		i := rj.Line - 2
		want := fmt.Sprintf("@p%d", i)
		if i%7 == 3 {
			want = fmt.Sprintf("bad-%d", i)
		}
		if rj.ID != want {
			t.Fatalf("profile reject of line %d names %q, want %q", rj.Line, rj.ID, want)
		}
	}
	for _, pr := range rp.profiles {
		if (pr.Line-2)%7 == 3 {
			continue // no PKey: a bad row of its contact
		}
		if want := fmt.Sprintf("@p%d", pr.Line-2); pr.PKey != want {
			t.Fatalf("profile of line %d has PKey %q, want %q", pr.Line, pr.PKey, want)
		}
	}
}

// TestSplitLineAgrees: splitting eight bytes at a time finds the same
// line end, quote and fields as a byte at a time does, wherever they fall
// among the eight, among bytes that differ from , " and \n in one bit.
func TestSplitLineAgrees(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	alphabet := []byte{',', '"', '\n', '\r', 'a', ',' ^ 0x80, '"' ^ 0x80, '\n' ^ 0x80, ',' ^ 1, '"' ^ 1, '\n' ^ 1, 0, 0xff, 0x7f}
	for n := range 200000 {
		b := make([]byte, rng.IntN(40))
		for i := range b {
			if rng.IntN(3) == 0 {
				b[i] = alphabet[rng.IntN(len(alphabet))]
			} else {
				b[i] = 'v'
			}
		}
		rec, end, quoted := splitLine(b, nil)
		wantEnd, wantQuoted, want := -1, false, []string(nil)
		nl := bytes.IndexByte(b, '\n')
		q := bytes.IndexByte(b, '"')
		switch {
		case q >= 0 && (nl < 0 || q < nl):
			wantQuoted = true
		case nl >= 0:
			wantEnd = nl
			want = strings.Split(strings.TrimSuffix(string(b[:nl]), "\r"), ",")
		}
		if end != wantEnd || quoted != wantQuoted || (end >= 0 && !slices.Equal(rec, want)) {
			t.Fatalf("%d: splitLine(%q) = %q, %d, %v; want %q, %d, %v", n, b, rec, end, quoted, want, wantEnd, wantQuoted)
		}
	}
}
