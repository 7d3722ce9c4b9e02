package extract

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"optsync/fixtures/testkit"
)

// rowsIn reads in's rows as a table, one goroutine reading row after row
// (c.workers 0) or in parts: every row, bad row and the error the file
// stops on, in the order handed on.
func rowsIn(in string, lim Limits, c chunking) string {
	tb, err := openTableSize(strings.NewReader(in), "f", lim, 4096)
	if err != nil {
		return fmt.Sprintf("ERR %v", err)
	}
	var out []string
	rows := func(emit func(*string), reject func(Reject), st *Stats) (func(int, []string), func(int, []string, string), func() func()) {
		return func(line int, rec []string) {
				st.Rows++
				s := fmt.Sprintf("%d %q", line, rec)
				emit(&s)
			}, func(line int, rec []string, reason string) {
				st.Rows++
				st.Rejected++
				reject(Reject{Line: line, Reason: fmt.Sprintf("bad %d %q %s", line, rec, reason)})
			}, nil
	}
	var st Stats
	err = readRows(context.Background(), tb, c, rows,
		func(s *string) { out = append(out, *s) },
		func(r Reject) { out = append(out, r.Reason) }, &st)
	if err != nil {
		out = append(out, fmt.Sprintf("ERR %v", err))
	}
	out = append(out, fmt.Sprintf("%+v", st))
	return strings.Join(out, " | ")
}

// TestPartsAgreeWithOneReader: a file cut into parts wherever a record
// ends, however small the parts (one byte: every record a part of its
// own, longer ones growing their part), parsed on several goroutines,
// hands on the rows, bad rows, their lines and reasons, and the error a
// broken file stops on exactly as one goroutine reading row after row
// does: quoted newlines, doubled quotes, bare quotes, \r\n, blank lines,
// rows of the wrong width, a last row without its end, stray quotes past
// the limits or to the end of the file.
func TestPartsAgreeWithOneReader(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 21))
	cells := []string{"a", "bb", "", " ", "x y", "\"q\"", "\"q,\n\"", "\"\"\"\"", "\"r\r\n\"", "c\"d", "\"e\"f", "\r", "é",
		"\"l1\nl2\nl3\n\"", "\"\n\n\"", "\"a,\"\"b\"\"\nc\"", "\"open\n"}
	ends := []string{"\n", "\n", "\n", "\r\n", "\n\n", "\r\n\r\n", "\r\r\n"}
	for n := range 800 {
		var b strings.Builder
		if rng.IntN(10) == 0 {
			b.WriteString("\ufeff")
		}
		if rng.IntN(10) == 0 {
			b.WriteString("\n\n") // blank lines before the header
		}
		b.WriteString("h1,\"h\n2\",h3\n")
		for range rng.IntN(300) {
			width := 3
			if rng.IntN(20) == 0 {
				width = 1 + rng.IntN(5)
			}
			for i := range width {
				if i > 0 {
					b.WriteByte(',')
				}
				switch {
				case rng.IntN(8) == 0:
					b.WriteString(cells[rng.IntN(len(cells))])
				case rng.IntN(200) == 0:
					b.WriteString(strings.Repeat("w", 100+rng.IntN(200))) // past a part
				default:
					b.WriteString(strings.Repeat("v", rng.IntN(12)))
				}
			}
			b.WriteString(ends[rng.IntN(len(ends))])
		}
		if rng.IntN(4) == 0 {
			b.WriteString("t1,t2\r") // no end of line
		}
		lim := Limits{}
		if rng.IntN(3) == 0 {
			lim = Limits{MaxFieldBytes: 4 + rng.IntN(40), MaxFieldLines: 2 + rng.IntN(3)}
		}
		in := b.String()
		want := rowsIn(in, lim, chunking{})
		for _, c := range []chunking{
			{workers: 1, size: 1 + rng.IntN(8)},
			{workers: 2, size: 1 << 20, rows: 1 + rng.IntN(20), step: 1 + rng.IntN(64)},
			{workers: 1 + rng.IntN(4), size: 1 + rng.IntN(256)},
			{workers: 3, size: 4096},
		} {
			if got := rowsIn(in, lim, c); got != want {
				t.Fatalf("input %d %q, limits %+v, %d workers, parts of %d bytes:\none reader %s\nin parts   %s", n, in, lim, c.workers, c.size, want, got)
			}
		}
	}
}

// read is what a reader handed on, in order.
type read struct {
	Contacts []Contact
	Profiles []prow
	// Keys are the keys the profiles were given (Profile.PKey): one
	// reader's, in the order it put them
	Keys    []Key
	Rejects []Reject
	St      Stats
	Err     string
}

func readInParts(t *testing.T, in []byte, contacts bool, l Layout, c chunking) read {
	t.Helper()
	var r read
	var err error
	if contacts {
		r.St, err = readContactRows(context.Background(), strings.NewReader(string(in)), "d365.csv", l, c,
			func(x *Contact) { r.Contacts = append(r.Contacts, *x) },
			func(x Reject) { r.Rejects = append(r.Rejects, x) })
	} else {
		ks := NewKeys()
		r.St, err = readProfileRows(context.Background(), strings.NewReader(string(in)), "campaign.csv", l, ks.Writer(), c,
			func(x *Profile) {
				r.Profiles = append(r.Profiles, prowOf(ks, x))
				r.Keys = append(r.Keys, x.PKey, x.FieldModified)
			},
			func(x Reject) { r.Rejects = append(r.Rejects, x) })
	}
	if err != nil {
		r.Err = err.Error()
	}
	return r
}

// messyExport writes n rows of a contacts (or profiles) export with what
// real exports hold now and then: duplicates, quoted cells with commas and
// newlines, bad ids, PKeys, flags and times, times in the future, rows of
// the wrong width, bare and stray quotes, blank lines, \r\n.
func messyExport(seed uint64, n int, contacts bool) []byte {
	rng := rand.New(rand.NewPCG(seed, 77))
	var b strings.Builder
	if contacts {
		b.WriteString("contactid,\"Full Name\",modifiedon,donotemail,donotphone\r\n")
	} else {
		b.WriteString("PKey,externalId,\"e\nmail\",lastModified,blackListEmail,blackListMobile,smsOptOutDate\n")
	}
	flag := func() string {
		return []string{"true", "false", "", "True", "maybe", "1"}[rng.IntN(6)%4+rng.IntN(2)*rng.IntN(3)]
	}
	when := func() string {
		switch rng.IntN(30) {
		case 0:
			return "yesterday"
		case 1:
			return "2031-01-01T00:00:00Z" // after NotAfter
		}
		return time.Date(2026, 11, 1+rng.IntN(20), rng.IntN(24), rng.IntN(60), rng.IntN(60), 0, time.UTC).Format(time.RFC3339)
	}
	name := func() string {
		switch rng.IntN(12) {
		case 0:
			return "\"Smith, Jo\""
		case 1:
			return "\"line one\nline two\r\nthree\""
		case 2:
			return "\"say \"\"hi\"\"\""
		case 3:
			return "bare \" quote"
		case 4:
			return "\"closed\" then"
		}
		return "Jo"
	}
	var ids []string
	for i := range n {
		id := testkit.V4GUID(1000 + i)
		if len(ids) > 0 && rng.IntN(15) == 0 {
			id = ids[rng.IntN(len(ids))] // a duplicate
		}
		ids = append(ids, id)
		if rng.IntN(25) == 0 {
			id = []string{"not-a-guid", "", "\"" + id + "\""}[rng.IntN(3)]
		}
		end := "\n"
		if rng.IntN(6) == 0 {
			end = "\r\n"
		}
		if rng.IntN(40) == 0 {
			end += "\n" // a blank line
		}
		if contacts {
			fmt.Fprintf(&b, "%s,%s,%s,%s,%s", id, name(), when(), flag(), flag())
		} else {
			pkey := fmt.Sprintf("@p%d", i)
			switch rng.IntN(30) {
			case 0:
				pkey = "no key"
			case 1:
				pkey = fmt.Sprintf("@p%d", rng.IntN(i+1)) // a PKey again
			}
			if rng.IntN(20) == 0 {
				id = "" // linked to no contact
			}
			sms := ""
			if rng.IntN(3) == 0 {
				sms = when()
			}
			fmt.Fprintf(&b, "%s,%s,%s,%s,%s,%s,%s", pkey, id, name(), strings.Replace(when(), "T", " ", 1), flag(), flag(), sms)
		}
		if rng.IntN(50) == 0 {
			b.WriteString(",extra")
		}
		b.WriteString(end)
	}
	return []byte(b.String())
}

// TestReadersAgreeInParts: the contacts and profiles readers hand on the
// same records, in the same order (the order a sorter's ties keep), with
// the same lines, the same rejects (order, line, id, reason) and counts,
// and stop on the same error, whether one goroutine reads the file row
// after row or several read it in parts: the demo's exports (Excel's
// labels, quoted cells, per-field times), messy exports, and a broken one.
func TestReadersAgreeInParts(t *testing.T) {
	notAfter := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	demoD365 := Layout{Fields: []string{"donotemail", "donotphone", "donotpostalmail", "donotfax", "xx_smsconsent"}, NotAfter: notAfter,
		Columns: map[string]string{"donotemail": "Do not allow Emails", "donotphone": "Do not allow Phone Calls", "donotpostalmail": "Do not allow Mails", "donotfax": "Do not allow Faxes", "xx_smsconsent": "SMS Consent"}}
	demoCampaign := Layout{Fields: []string{"blackListEmail", "blackListPhone", "blackListPostalMail", "blackListFax", "blackListMobile"},
		FieldTimes: []string{"", "", "", "", "smsOptOutDate"}, NotAfter: notAfter}
	messyD365 := Layout{Fields: []string{"donotemail", "donotphone"}, NotAfter: notAfter, Limits: Limits{MaxRejectShare: 1}}
	messyCampaign := Layout{Fields: []string{"blackListEmail", "blackListMobile"}, FieldTimes: []string{"", "smsOptOutDate"}, NotAfter: notAfter, Limits: Limits{MaxRejectShare: 1}}
	demo := func(name string) []byte {
		b, err := os.ReadFile("../fixtures/demo/" + name)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	messyC, messyP := messyExport(1, 4000, true), messyExport(2, 4000, false)
	strayAt := func(b []byte) []byte { // a stray quote two thirds in, no quote after it
		i := 2 * len(b) / 3
		for b[i-1] != '\n' {
			i++
		}
		return append(append(append([]byte{}, b[:i]...), "\"stray"...), bytes.ReplaceAll(b[i:], []byte{'"'}, nil)...)
	}
	tests := []struct {
		name     string
		in       []byte
		contacts bool
		l        Layout
	}{
		{"demo contacts", demo("d365_contacts.csv"), true, demoD365},
		{"demo profiles", demo("campaign_profiles.csv"), false, demoCampaign},
		{"messy contacts", messyC, true, messyD365},
		{"messy profiles", messyP, false, messyCampaign},
		{"messy contacts, too many rejects", messyC, true, Layout{Fields: messyD365.Fields, NotAfter: notAfter, Limits: Limits{MaxRejectShare: 0.01}}},
		{"broken contacts", strayAt(messyC), true, messyD365},
		{"broken profiles", strayAt(messyP), false, messyCampaign},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := readInParts(t, tt.in, tt.contacts, tt.l, chunking{})
			if len(want.Contacts)+len(want.Profiles) < 1000 || len(want.Rejects) == 0 && !strings.HasPrefix(tt.name, "demo") {
				t.Fatalf("the export says little: %d records, %d rejects", len(want.Contacts)+len(want.Profiles), len(want.Rejects))
			}
			if strings.HasPrefix(tt.name, "broken") && !strings.Contains(want.Err, "broken") {
				t.Fatalf("want a broken file, got %q", want.Err)
			}
			for _, c := range []chunking{{workers: 1, size: 64}, {workers: 2, size: 300}, {workers: 4, size: 4096}, {workers: 2, size: 1 << 20, rows: 7, step: 100}, defaultChunking()} {
				got := readInParts(t, tt.in, tt.contacts, tt.l, c)
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("%d workers, parts of %d bytes: differs from one reader:\n%s", c.workers, c.size, firstDifference(want, got))
				}
			}
		})
	}
}

func firstDifference(want, got read) string {
	switch {
	case got.Err != want.Err:
		return fmt.Sprintf("error %q, want %q", got.Err, want.Err)
	case got.St != want.St:
		return fmt.Sprintf("stats %+v, want %+v", got.St, want.St)
	}
	for i := range min(len(got.Contacts), len(want.Contacts)) {
		if got.Contacts[i] != want.Contacts[i] {
			return fmt.Sprintf("contact %d: %+v, want %+v", i, got.Contacts[i], want.Contacts[i])
		}
	}
	for i := range min(len(got.Profiles), len(want.Profiles)) {
		if !reflect.DeepEqual(got.Profiles[i], want.Profiles[i]) {
			return fmt.Sprintf("profile %d: %+v, want %+v", i, got.Profiles[i], want.Profiles[i])
		}
	}
	for i := range min(len(got.Rejects), len(want.Rejects)) {
		if got.Rejects[i] != want.Rejects[i] {
			return fmt.Sprintf("reject %d: %+v, want %+v", i, got.Rejects[i], want.Rejects[i])
		}
	}
	return fmt.Sprintf("%d contacts, %d profiles, %d rejects; want %d, %d, %d",
		len(got.Contacts), len(got.Profiles), len(got.Rejects), len(want.Contacts), len(want.Profiles), len(want.Rejects))
}

// TestPartsHoldFewRows: a part ends after about partRows lines however
// short they are (a junk file's lines are rejects all, held until the part
// is handed on: bounded by its lines, not by its bytes), and after about
// partBytes however long.
func TestPartsHoldFewRows(t *testing.T) {
	for _, tc := range []struct {
		name string
		line string
	}{
		{"junk", "x\n"},
		{"rows", strings.Repeat("v", 200) + "\n"},
	} {
		in := "contactid,modifiedon,donotemail\n" + strings.Repeat(tc.line, 300_000)
		tb, err := openTable(strings.NewReader(in), "junk.csv", Limits{})
		if err != nil {
			t.Fatal(err)
		}
		const parts = 1 << 12
		free, work, order := make(chan *part[Contact], parts), make(chan *part[Contact], parts), make(chan *part[Contact], parts)
		for range parts {
			free <- &part[Contact]{}
		}
		split(context.Background(), tb, defaultChunking(), free, work, order)
		close(order)
		lines, n := 0, 0
		for p := range order {
			l := bytes.Count(p.buf, []byte{'\n'})
			if l > partRows+readStep/len(tc.line) || len(p.buf) > partBytes+readStep {
				t.Errorf("%s: a part of %d lines, %d bytes", tc.name, l, len(p.buf))
			}
			lines += l
			n++
		}
		if lines != 300_000 || n < 300_000*len(tc.line)/partBytes {
			t.Errorf("%s: %d lines in %d parts", tc.name, lines, n)
		}
	}
}
