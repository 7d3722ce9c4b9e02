package extract

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"optsync/fixtures/testkit"
	"runtime"
	"strings"
	"testing"
)

// A stray quote makes the file broken, whichever way it shows: the field
// runs to the end of the file, past the byte bound or past the line bound.
// The error names the file and the line where the quote opened, and no row
// after it is read as part of the field.
func TestStrayQuoteBreaksTheFile(t *testing.T) {
	head := "contactid,modifiedon,donotemail\n" + testkit.V4GUID(1) + "," + t0 + ",true\n\n"
	rows := func(from, n int) string {
		var b strings.Builder
		for i := from; i < from+n; i++ {
			fmt.Fprintf(&b, "%s,%s,false\n", testkit.V4GUID(i), t0)
		}
		return b.String()
	}
	tests := []struct {
		name string
		in   string
		lim  Limits
		line int
		why  string
	}{
		{"to the end of the file", head + testkit.V4GUID(2) + "," + t0 + ",\"true\n" + rows(3, 20), Limits{}, 4, "runs to the end of the file"},
		{"past the line bound", head + testkit.V4GUID(2) + "," + t0 + ",\"true\n" + rows(3, 200) + "\"\n", Limits{MaxFieldLines: 100}, 4, "runs past 65536 bytes or 100 lines"},
		{"past the byte bound", head + testkit.V4GUID(2) + "," + t0 + ",\"" + strings.Repeat("x", 70<<10) + "\"\n" + rows(3, 2), Limits{}, 4, "runs past 65536 bytes"},
		{"configured bounds", head + testkit.V4GUID(2) + "," + t0 + ",\"a\nb\nc\nd\"\n" + rows(3, 2), Limits{MaxFieldLines: 3}, 4, "3 lines"},
		{"in a CRLF file", strings.ReplaceAll(head+testkit.V4GUID(2)+","+t0+",\"true\n"+rows(3, 5), "\n", "\r\n"), Limits{}, 4, "end of the file"},
		{"a row without an end", head + strings.Repeat("x", 2<<20), Limits{}, 4, "runs past 1048576 bytes"},
		{"in the header", "contactid,\"modifiedon,donotemail\n" + rows(1, 3), Limits{}, 1, "runs to the end"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			{
				r := readContacts(context.Background(), tt.in, Layout{Fields: []string{"donotemail"}, Limits: tt.lim})
				var b *BrokenFileError
				if !errors.As(r.err, &b) || b.Line != tt.line || !strings.Contains(b.Error(), tt.why) || !strings.Contains(b.Error(), "line "+fmt.Sprint(tt.line)) {
					t.Fatalf("err %v, want a broken file at line %d saying %q", r.err, tt.line, tt.why)
				}
				if b.Source != "d365.csv" {
					t.Errorf("source %q", b.Source)
				}
				for _, c := range r.contacts {
					if c.Line > int32(tt.line) {
						t.Errorf("a row after the stray quote was read: %+v", c)
					}
				}
			}
		})
	}
}

// A quoted field within the bounds is data: commas, quotes and line breaks
// inside it, at the bounds exactly, in LF and CRLF files.
func TestQuotedFieldsWithinBounds(t *testing.T) {
	multi := "\"" + strings.Repeat("line\n", 99) + "end\""
	in := "PKey,externalId,lastModified,blackListEmail,note\n" +
		"@p1," + testkit.V4GUID(1) + "," + t0 + ",true,\"a, \"\"quoted\"\" note\"\n" +
		"@p2," + testkit.V4GUID(2) + "," + t0 + ",false," + multi + "\n" +
		"@p3," + testkit.V4GUID(3) + "," + t0 + ",true,\"" + strings.Repeat("y", 64<<10-2) + "\"\n"
	for _, data := range []string{in, strings.ReplaceAll(in, "\n", "\r\n")} {
		r := readProfiles(context.Background(), data, Layout{Fields: []string{"blackListEmail"}})
		if r.err != nil || len(r.profiles) != 3 || len(r.rejects) != 0 || r.profiles[2].Line != 103 {
			t.Fatalf("err %v, profiles %+v, rejects %+v", r.err, r.profiles, r.rejects)
		}
	}
}

// The guard reads quoting exactly as encoding/csv does: on any input within
// the bounds, records and errors through it are those of encoding/csv on
// its own. Inputs are random mixes of the characters that matter.
func TestQuoteGuardAgreesWithEncodingCSV(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 4))
	alphabet := []string{"\"", "\"", ",", "\n", "\r\n", "\r", "a", "b", " ", "\"\"", "x,y", "\ufeff"}
	for n := range 20000 {
		var b strings.Builder
		for range rng.IntN(60) {
			b.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		in := b.String()
		plain := csvRecords(strings.NewReader(in))
		g := newQuoteGuard(strings.NewReader(in), "f", Limits{})
		guarded := csvRecords(g)
		var broken *BrokenFileError
		if strings.HasSuffix(guarded, "ERR *extract.BrokenFileError") {
			// Only a field open at the end of the file: encoding/csv then
			// ends on its "extraneous or missing \"" error, spanning lines.
			if !strings.Contains(plain, "extraneous or missing \" in quoted-field") {
				t.Fatalf("input %d %q: the guard broke the file, encoding/csv did not:\nplain   %s\nguarded %s", n, in, plain, guarded)
			}
			_ = broken
			continue
		}
		if plain != guarded {
			t.Fatalf("input %d %q:\nplain   %s\nguarded %s", n, in, plain, guarded)
		}
	}
}

func csvRecords(r io.Reader) string {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	var out []string
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		var pe *csv.ParseError
		switch {
		case errors.As(err, &pe):
			out = append(out, fmt.Sprintf("ERR %d-%d %v", pe.StartLine, pe.Line, pe.Err))
			continue
		case err != nil:
			out = append(out, fmt.Sprintf("ERR %T", err))
			return strings.Join(out, " | ")
		}
		out = append(out, fmt.Sprintf("%q", rec))
	}
	return strings.Join(out, " | ")
}

// endless is a file of n bytes: a header, one row, then a quote that never
// closes, made on the fly so that the test holds none of it.
type endless struct{ left int }

func (e *endless) Read(p []byte) (int, error) {
	if e.left <= 0 {
		return 0, io.EOF
	}
	n := min(len(p), e.left)
	for i := range p[:n] {
		p[i] = "abc,def\n"[i%8]
	}
	e.left -= n
	return n, nil
}

// Memory stays bounded: a quote that opens on line 3 of a 200 MB file is
// found after 100 lines, having held a few megabytes at most.
func TestStrayQuoteMemoryIsBounded(t *testing.T) {
	in := io.MultiReader(strings.NewReader("PKey,externalId,lastModified,blackListEmail\n@p1,"+testkit.V4GUID(1)+","+t0+",true\n@p2,"+testkit.V4GUID(2)+","+t0+",\""), &endless{left: 200 << 20})
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := ReadProfiles(context.Background(), in, "big.csv", Layout{Fields: []string{"blackListEmail"}}, NewKeys().Writer(), func(*Profile) {}, func(Reject) {})
	runtime.ReadMemStats(&after)
	var b *BrokenFileError
	if !errors.As(err, &b) || b.Line != 3 {
		t.Fatalf("err %v", err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8<<20 {
		t.Fatalf("reading up to the stray quote allocated %d MB", alloc>>20)
	}
}

// Rows with a bad value past max_reject_share: the file is not an export.
func TestRejectShare(t *testing.T) {
	file := func(good, bad int) string {
		var b bytes.Buffer
		b.WriteString("contactid,modifiedon,donotemail\n")
		for i := range good {
			fmt.Fprintf(&b, "%s,%s,true\n", testkit.V4GUID(i), t0)
		}
		for range bad {
			b.WriteString("junk\n")
		}
		return b.String()
	}
	tests := []struct {
		good, bad int
		share     float64
		broken    bool
	}{
		{good: 100, bad: 100, broken: false}, // 50 %: not past it
		{good: 99, bad: 101, broken: true},
		{good: 0, bad: 10, broken: false}, // too few rows to say
		{good: 0, bad: 11, broken: true},
		{good: 80, bad: 20, share: 0.1, broken: true},
		{good: 80, bad: 20, share: 0.2, broken: false},
	}
	for _, tt := range tests {
		r := readContacts(context.Background(), file(tt.good, tt.bad), Layout{Fields: []string{"donotemail"}, Limits: Limits{MaxRejectShare: tt.share}})
		var b *BrokenFileError
		if got := errors.As(r.err, &b); got != tt.broken {
			t.Errorf("%d good, %d bad, share %v: err %v", tt.good, tt.bad, tt.share, r.err)
		} else if got && !strings.Contains(b.Error(), fmt.Sprintf("%d of its %d rows were rejected", tt.bad, tt.good+tt.bad)) {
			t.Errorf("message %q", b.Error())
		}
		if len(r.rejects) != tt.bad {
			t.Errorf("%d rejects reported, want every one of %d", len(r.rejects), tt.bad)
		}
	}
}

// A header that does not parse is a broken file (exit 2), not a run failure.
func TestHeaderDoesNotParse(t *testing.T) {
	r := readContacts(context.Background(), "contactid,modi\"fiedon,donotemail\n"+testkit.V4GUID(1)+","+t0+",true\n", Layout{Fields: []string{"donotemail"}})
	var b *BrokenFileError
	if !errors.As(r.err, &b) || b.Line != 1 || !strings.Contains(b.Error(), "header row does not parse") {
		t.Fatalf("err %v", r.err)
	}
}
