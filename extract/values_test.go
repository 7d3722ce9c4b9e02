package extract

import (
	"bytes"
	"fmt"
	"math"
	"math/rand"
	"strings"
	"testing"
	"time"
)

func TestParseBool(t *testing.T) {
	cases := []struct {
		in      string
		labels  Labels // a two-option label: accepted only for the fields it belongs to
		want    Tri
		wantBad bool
	}{
		{in: "true", want: True}, {in: "false", want: False},
		{in: "1", want: True}, {in: "0", want: False},
		{in: "yes", want: True}, {in: "no", want: False},
		{in: "y", want: True}, {in: "n", want: False},
		{in: "TrUe", want: True}, {in: "FALSE", want: False}, {in: "Yes", want: True}, {in: "N", want: False},
		{in: "", want: Unknown}, {in: "null", want: Unknown}, {in: "NULL", want: Unknown},
		{in: " \t ", want: Unknown},
		{in: "Do Not Allow", labels: AllowLabels, want: True}, {in: "Allow", labels: AllowLabels, want: False},
		{in: "do not allow", labels: AllowLabels, want: True}, {in: "ALLOW", labels: AllowLabels, want: False},
		{in: "Do Not Send", labels: SendLabels, want: True}, {in: "Send", labels: SendLabels, want: False},
		{in: "2", wantBad: true}, {in: "-1", wantBad: true}, {in: "1.0", wantBad: true},
		{in: "t", wantBad: true}, {in: "f", wantBad: true}, {in: "on", wantBad: true}, {in: "off", wantBad: true},
		{in: "truee", wantBad: true}, {in: "yes please", wantBad: true}, {in: "nil", wantBad: true},
		{in: "none", wantBad: true}, {in: "allowed", wantBad: true}, {in: "do not", wantBad: true},
		{in: "donotallow", wantBad: true}, {in: "do not allow emails", wantBad: true}, {in: "sent", wantBad: true},
		{in: "\"true\"", wantBad: true}, {in: "tr ue", wantBad: true}, {in: strings.Repeat("y", 40), wantBad: true},
	}
	for _, c := range cases {
		for _, in := range []string{c.in, strings.ToUpper(c.in), strings.ToLower(c.in), " \t" + c.in + "  ", c.in + "\r\n"} {
			for _, labels := range []Labels{NoLabels, AllowLabels, SendLabels} {
				got, ok := ParseBool(in, labels)
				wantOK := !c.wantBad && (c.labels == NoLabels || labels == c.labels)
				want := c.want
				if !wantOK {
					want = Unknown
				}
				if got != want || ok != wantOK { // Unknown coming back as False fails here too
					t.Errorf("ParseBool(%q, labels=%v) = %d, %v; want %d, %v", in, labels, got, ok, want, wantOK)
				}
			}
		}
	}
}

// A two-option label belongs to its field: donotsendmm's are Send / Do Not
// Send, the other donot* fields' Allow / Do Not Allow, and a custom field
// has none (its labels are not known: an opt-in field may call true "Allow").
func TestLabelsFor(t *testing.T) {
	for field, want := range map[string]Labels{
		"donotemail": AllowLabels, "donotbulkemail": AllowLabels, "donotphone": AllowLabels, "donotfax": AllowLabels,
		"donotpostalmail": AllowLabels, "donotbulkpostalmail": AllowLabels, "DoNotEMail": AllowLabels,
		"donotsendmm": SendLabels, "DONOTSENDMM": SendLabels,
		"xx_smsconsent": NoLabels, "new_donotemail": NoLabels, "followemail": NoLabels, "": NoLabels,
	} {
		if got := LabelsFor(field); got != want {
			t.Errorf("LabelsFor(%q) = %d, want %d", field, got, want)
		}
	}
	for _, c := range []struct{ field, cell, want string }{
		{"donotemail", "Send", `donotemail "Send" is not a boolean (its labels are Allow and Do Not Allow)`},
		{"donotsendmm", " allow ", `donotsendmm " allow " is not a boolean (its labels are Send and Do Not Send)`},
		{"xx_optin", "Do Not Allow", `xx_optin "Do Not Allow" is not a boolean (labels are read only for the donot* fields)`},
		{"donotemail", "maybe", `donotemail "maybe" is not a boolean`},
	} {
		if got := BadBool(c.field, c.cell, LabelsFor(c.field)); got != c.want {
			t.Errorf("BadBool(%q, %q) = %q, want %q", c.field, c.cell, got, c.want)
		}
	}
}

func TestTri(t *testing.T) {
	if Unknown == False || Unknown.Known() || !True.Known() || !False.Known() || Of(true) != True || Of(false) != False ||
		Unknown.Not() != Unknown || True.Not() != False || False.Not() != True ||
		Unknown.String() != "" || True.String() != "true" || False.String() != "false" {
		t.Error("Tri: Known/Not/String/Of disagree with true, false, unknown")
	}
}

func TestParseID(t *testing.T) {
	const canon = "6f9619ff-8b86-d011-b42d-00c04fc964ff"
	want := ID{0x6f, 0x96, 0x19, 0xff, 0x8b, 0x86, 0xd0, 0x11, 0xb4, 0x2d, 0x00, 0xc0, 0x4f, 0xc9, 0x64, 0xff}
	good := []string{
		canon,
		strings.ToUpper(canon),
		"6F9619ff-8B86-d011-B42d-00C04fc964FF",
		"{" + canon + "}",
		"{" + strings.ToUpper(canon) + "}",
		"  " + canon + "\t",
		" {" + canon + "} ",
	}
	for _, in := range good {
		id, ok := ParseID(in)
		if !ok || id != want {
			t.Errorf("ParseID(%q) = %x, %v; want %x, true", in, id, ok, want)
			continue
		}
		if s := id.String(); s != canon {
			t.Errorf("ParseID(%q).String() = %q, want %q", in, s, canon)
		}
	}
	bad := []string{
		"", "{}", canon[:35], canon + "0", strings.ReplaceAll(canon, "-", ""), // length, no hyphens
		"6f9619ff8-b86-d011-b42d-00c04fc964ff", "6f9619ff-8b86-d011-b42d00c04fc964ff-", // hyphens moved
		"6f9619ff_8b86_d011_b42d_00c04fc964ff", "6f9619fg-8b86-d011-b42d-00c04fc964ff", // separator, non-hex
		"6f9619ff-8b86-d011-b42d-00c04fc964f ", "6f9619ff-+b86-d011-b42d-00c04fc964ff", // inner space, sign
		"6f9619ff-8b86-d011-b42d-00c04fc964fé", "0x6f9619ff-8b86-d011-b42d-00c04fc964ff", // non-ASCII, prefix
		"{" + canon, canon + "}", "(" + canon + ")", "{{" + canon + "}}", "[" + canon + "}", // braces
		"urn:uuid:" + canon, canon + "-00",
	}
	for _, in := range bad {
		if id, ok := ParseID(in); ok {
			t.Errorf("ParseID(%q) = %s, true; want not ok", in, id)
		}
	}
	// every byte in every digit's place: only 0-9, a-f and A-F are digits
	for c := 0; c < 256; c++ {
		hex := c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
		for at := range len(canon) {
			if canon[at] == '-' {
				continue
			}
			in := []byte(canon)
			in[at] = byte(c)
			id, ok := ParseID(string(in))
			if ok != hex {
				t.Errorf("ParseID with byte %#x at %d: ok %v", c, at, ok)
			}
			if ok && id.String() != strings.ToLower(string(in)) {
				t.Errorf("ParseID with byte %#x at %d reads %s", c, at, id)
			}
		}
	}
}

// ParseID reads back what String writes, in either case, for ids with
// every digit value in every place; and a bad byte beside good ones (one
// whose carry might reach its neighbours) is never read as a digit.
func TestParseIDRoundTrips(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	for i := range 20000 {
		var id ID
		rng.Read(id[:])
		s := id.String()
		if i%2 == 1 {
			s = strings.ToUpper(s)
		}
		if got, ok := ParseID(s); !ok || got != id {
			t.Fatalf("ParseID(%q) = %s, %v; want %s", s, got, ok, id)
		}
		b := []byte(s)
		at := rng.Intn(len(b))
		if b[at] == '-' {
			continue
		}
		b[at] = []byte{0x80, 0xff, 0xb0, 0xcf, 0x2f, 0x3a, 0x40, 0x47, 0x60, 0x67, 0x00, 0x7f}[rng.Intn(12)]
		if got, ok := ParseID(string(b)); ok {
			t.Fatalf("ParseID(%q) = %s, true; want not ok", b, got)
		}
	}
}

func TestIDOrderMatchesCanonicalText(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	ids := []ID{{}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
	// Neighbours that differ in one nibble of each group, digits vs letters.
	for i := 0; i < 16; i++ {
		for _, b := range []byte{0x09, 0x0a, 0x90, 0xa0, 0x9f, 0xa0} {
			var id ID
			id[i] = b
			ids = append(ids, id)
		}
	}
	for i := 0; i < 200; i++ {
		var id ID
		rng.Read(id[:])
		ids = append(ids, id)
	}
	for _, a := range ids {
		s := a.String()
		if len(s) != 36 || s != strings.ToLower(s) || strings.ContainsAny(s, "{}") {
			t.Fatalf("String() = %q, want 36-char lower-case without braces", s)
		}
		if back, ok := ParseID(strings.ToUpper("{" + s + "}")); !ok || back != a {
			t.Fatalf("round trip of %q gave %x, %v", s, back, ok)
		}
		for _, b := range ids {
			if got, want := bytes.Compare(a[:], b[:]), strings.Compare(s, b.String()); got != want {
				t.Fatalf("order of %s vs %s: bytes %d, text %d", s, b, got, want)
			}
		}
	}
}

func ms(y int, mo time.Month, d, h, mi, s, milli int) int64 {
	return time.Date(y, mo, d, h, mi, s, milli*int(time.Millisecond), time.UTC).UnixMilli()
}

func TestParseTime(t *testing.T) {
	base := ms(2026, time.November, 29, 2, 0, 0, 0)
	cases := []struct {
		in, layout string
		want       int64
		ok         bool
	}{
		{"2026-11-29T02:00:00Z", "", base, true},
		{"  2026-11-29T02:00:00Z\t", "", base, true},
		{"2026-11-29T02:00:00.123Z", "", base + 123, true},
		{"2026-11-29T02:00:00.5Z", "", base + 500, true},
		{"2026-11-29T02:00:00.123456789Z", "", base + 123, true}, // truncated to ms
		{"2026-11-29T04:00:00+02:00", "", base, true},
		{"2026-11-29T04:30:00.250+02:30", "", base + 250, true},
		{"2026-11-28T21:00:00-05:00", "", base, true},
		{"2026-11-29T02:00:00+00:00", "", base, true},
		{"2026-11-29 02:00:00.000Z", "", base, true},
		{"2026-11-29 02:00:00.042Z", "", base + 42, true},
		{"2026-11-29 02:00:00Z", "", base, true},
		{"2026-11-29 02:00:00", "", base, true}, // no zone: UTC
		{"2026-11-29 02:00:00", "02.01.2006 15:04", base, true},
		{"29.11.2026 02:00", "02.01.2006 15:04", base, true},
		{"11/29/2026 2:00 AM", "1/2/2006 3:04 PM", base, true},
		{"2024-02-29T00:00:00Z", "", ms(2024, time.February, 29, 0, 0, 0, 0), true},
		{"1969-12-31T23:59:59.999Z", "", -1, true},
		{"yesterday", "2006-01-02", NoTime, false},
		// A configured layout comes first, even where a built-in shape
		// would read the cell another way: day and month swapped.
		{"2026-04-03T10:00:00Z", "2006-02-01T15:04:05Z", ms(2026, time.March, 4, 10, 0, 0, 0), true},
		{"2026-04-03 10:00:00.250Z", "2006-02-01 15:04:05.000Z", ms(2026, time.March, 4, 10, 0, 0, 250), true},
		{"2026-04-03 10:00:00", "2006-02-01 15:04:05", ms(2026, time.March, 4, 10, 0, 0, 0), true},
		// … and the built-in shapes still read what it does not.
		{"2026-04-03T10:00:00Z", "02.01.2006", ms(2026, time.April, 3, 10, 0, 0, 0), true},
		{"1970-01-01T00:00:00Z", "", 0, true}, // the epoch is a time, not "unknown"
	}
	// Invalid dates (31 Feb, 29 Feb 2026, month 13, hour 24, …), other shapes, garbage.
	for _, in := range []string{
		"29.11.2026 02:00", "2026-02-29T00:00:00Z", "2026-02-31T00:00:00Z", "2026-02-31 00:00:00.000Z",
		"2026-02-31 00:00:00", "2026-04-31T00:00:00+02:00", "2026-13-01T00:00:00Z", "2026-13-01 00:00:00.000Z",
		"2026-00-10 00:00:00", "2026-11-00T00:00:00Z", "2026-11-29T24:00:00Z", "2026-11-29T23:60:00Z",
		"2026-11-29T23:59:60Z", "2026-11-29 02:00:00;000Z", "2026-11-29X02:00:00.000Z", "2026-1a-29T02:00:00Z",
		"2026-11-29", "2026-11-29T02:00:00", "", "   ", "garbage", "1764381600000",
	} {
		if got, ok := ParseTime(in, ""); ok || got != NoTime {
			t.Errorf("ParseTime(%q) = %d (%s), true; want not ok", in, got, FormatTime(got))
		}
	}
	for _, c := range cases {
		got, ok := ParseTime(c.in, c.layout)
		if ok != c.ok || (ok && got != c.want) {
			t.Errorf("ParseTime(%q, %q) = %d (%s), %v; want %d (%s), %v",
				c.in, c.layout, got, FormatTime(got), ok, c.want, FormatTime(c.want), c.ok)
		}
	}
}

func TestFormatTime(t *testing.T) {
	cases := []struct {
		ms   int64
		want string
	}{
		{NoTime, ""},
		{0, "1970-01-01T00:00:00Z"},
		{ms(2026, time.November, 29, 2, 0, 0, 0), "2026-11-29T02:00:00Z"},
		{ms(2026, time.November, 29, 2, 0, 0, 500), "2026-11-29T02:00:00.5Z"},
		{ms(2026, time.November, 29, 2, 0, 0, 7), "2026-11-29T02:00:00.007Z"},
		{ms(1999, time.December, 31, 23, 59, 59, 999), "1999-12-31T23:59:59.999Z"},
		{-1, "1969-12-31T23:59:59.999Z"},
	}
	for _, c := range cases {
		got := FormatTime(c.ms)
		if got != c.want {
			t.Errorf("FormatTime(%d) = %q, want %q", c.ms, got, c.want)
		}
		if c.ms == NoTime {
			continue
		}
		if back, ok := ParseTime(got, ""); !ok || back != c.ms {
			t.Errorf("ParseTime(FormatTime(%d)) = %d, %v", c.ms, back, ok)
		}
	}
	rng := rand.New(rand.NewSource(2))
	for i := 0; i < 500; i++ {
		v := rng.Int63n(4102444800000) + 1 // 1970 … 2100
		if back, ok := ParseTime(FormatTime(v), ""); !ok || back != v {
			t.Fatalf("round trip of %d via %q gave %d, %v", v, FormatTime(v), back, ok)
		}
	}
}

// TestIsPKeyEveryByte: after the @, letters, digits, _ and - only, in any
// place of the key.
func TestIsPKeyEveryByte(t *testing.T) {
	for _, s := range []string{"", "@", "p1", "a@p1", "@p 1", " @p1"} {
		if IsPKey(s) {
			t.Errorf("IsPKey(%q) = true", s)
		}
	}
	for c := 0; c < 256; c++ {
		want := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
		for _, at := range []int{1, 2, 4} {
			in := []byte("@abcd")
			in[at] = byte(c)
			if got := IsPKey(string(in)); got != want {
				t.Errorf("IsPKey(%q) = %v, want %v", in, got, want)
			}
		}
	}
}

// TestParseFastAgreesWithTime: the two common shapes read as time.Date
// reads them, over every year from 0000 to 9999 now and then, every month
// and every day number a cell may hold (invalid dates, 00 and 32 included).
func TestParseFastAgreesWithTime(t *testing.T) {
	rng := rand.New(rand.NewSource(17))
	check := func(y, mo, d, h, mi, se, milli int, withMs bool) {
		in := fmt.Sprintf("%04d-%02d-%02dT%02d:%02d:%02dZ", y, mo, d, h, mi, se)
		if withMs {
			in = fmt.Sprintf("%04d-%02d-%02d %02d:%02d:%02d.%03dZ", y, mo, d, h, mi, se, milli)
		}
		tm := time.Date(y, time.Month(mo), d, h, mi, se, milli*int(time.Millisecond), time.UTC)
		valid := mo >= 1 && mo <= 12 && tm.Day() == d && h < 24 && mi < 60 && se < 60
		if !withMs {
			tm = tm.Truncate(time.Second)
		}
		got, ok := parseFast(in)
		if ok != valid || ok && got != tm.UnixMilli() {
			t.Fatalf("parseFast(%q) = %d, %v; time.Date says %d, %v", in, got, ok, tm.UnixMilli(), valid)
		}
	}
	for y := 0; y <= 9999; y++ {
		if y%97 != 0 && !(y >= 1890 && y <= 2110) && y > 4 {
			continue
		}
		for mo := 0; mo <= 13; mo++ {
			for d := 0; d <= 32; d++ {
				check(y, mo, d, rng.Intn(25), rng.Intn(61), rng.Intn(61), rng.Intn(1000), rng.Intn(2) == 0)
			}
		}
	}
	for range 100000 {
		check(rng.Intn(10000), 1+rng.Intn(12), 1+rng.Intn(31), rng.Intn(24), rng.Intn(60), rng.Intn(60), rng.Intn(1000), rng.Intn(2) == 0)
	}
}

// TestFormatTimeAgreesWithTime: times are written as time.Format writes
// them (milliseconds only when there are some, without trailing zeros),
// from before year 0 to past 9999.
func TestFormatTimeAgreesWithTime(t *testing.T) {
	rng := rand.New(rand.NewSource(23))
	const day = 86400000
	check := func(ms int64) {
		want := time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.999Z07:00")
		if got := FormatTime(ms); got != want {
			t.Fatalf("FormatTime(%d) = %q, want %q", ms, got, want)
		}
		// appended after a row's earlier cells, which it keeps
		if got := string(AppendTime([]byte("x,"), ms)); got != "x,"+want {
			t.Fatalf("AppendTime(x,, %d) = %q, want %q", ms, got, "x,"+want)
		}
	}
	if got := string(AppendTime([]byte("x,"), NoTime)); FormatTime(NoTime) != "" || got != "x," {
		t.Fatalf("NoTime: FormatTime %q, AppendTime %q; want nothing written", FormatTime(NoTime), got)
	}
	for _, ms := range []int64{math.MaxInt64, math.MinInt64 + 1, time.Date(-1, 1, 1, 0, 0, 0, 5e6, time.UTC).UnixMilli()} {
		check(ms)
	}
	y0 := time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	y10k := time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	for _, ms := range []int64{0, -1, 1, 10, 100, 120, 999, day - 1, day, -day, -day - 1, y0, y0 - 1, y10k, y10k - 1, y10k + 1,
		time.Date(2024, 2, 29, 23, 59, 59, 990e6, time.UTC).UnixMilli(), time.Date(2100, 3, 1, 0, 0, 0, 0, time.UTC).UnixMilli()} {
		check(ms)
	}
	for range 300000 {
		ms := y0 - 1000*day + rng.Int63n(y10k-y0+2000*day)
		if rng.Intn(3) == 0 {
			ms -= ms % 1000 // whole seconds
		}
		check(ms)
	}
	for d := int64(-800000); d < 3000000; d += 1 + rng.Int63n(40) {
		check(d * day)
	}
}

// BenchmarkParseID reads contact ids as the readers do, one a row of both
// files.
func BenchmarkParseID(b *testing.B) {
	rng := rand.New(rand.NewSource(3))
	ids := make([]string, 1024)
	for i := range ids {
		var id ID
		rng.Read(id[:])
		ids[i] = id.String()
	}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if _, ok := ParseID(ids[n&1023]); !ok {
			b.Fatal(ids[n&1023])
		}
		n++
	}
}

// TestParseFastEveryByte: the shape check that reads eight bytes at a
// time accepts and rejects what a check of one byte at a time does, with
// every byte value at every place of both shapes (a digit's place, a
// separator's, the T or space between date and time).
func TestParseFastEveryByte(t *testing.T) {
	for _, good := range []string{"2024-07-27 02:50:55.724Z", "2025-05-27T06:36:29Z", "2024-02-29T23:59:59Z", "0000-01-01 00:00:00.000Z"} {
		for i := range len(good) {
			for c := range 256 {
				b := []byte(good)
				b[i] = byte(c)
				in := string(b)
				got, ok := parseFast(in)
				want, wantOK := parseFastBytes(in)
				if ok != wantOK || got != want {
					t.Fatalf("parseFast(%q) = %d, %v; byte at a time: %d, %v", in, got, ok, want, wantOK)
				}
			}
		}
	}
}

// parseFastBytes is parseFast checking one byte at a time.
func parseFastBytes(s string) (int64, bool) {
	n := len(s)
	if (n != 20 && n != 24) || s[n-1] != 'Z' || s[4] != '-' || s[7] != '-' ||
		(s[10] != 'T' && s[10] != ' ') || s[13] != ':' || s[16] != ':' || n == 24 && s[19] != '.' {
		return 0, false
	}
	digit := func(i int) int { return int(s[i] - '0') }
	for _, i := range [...]int{0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18} {
		if digit(i) > 9 {
			return 0, false
		}
	}
	ms := 0
	if n == 24 {
		if digit(20) > 9 || digit(21) > 9 || digit(22) > 9 {
			return 0, false
		}
		ms = digit(20)*100 + digit(21)*10 + digit(22)
	}
	y := digit(0)*1000 + digit(1)*100 + digit(2)*10 + digit(3)
	mo, d := digit(5)*10+digit(6), digit(8)*10+digit(9)
	h, mi, se := digit(11)*10+digit(12), digit(14)*10+digit(15), digit(17)*10+digit(18)
	if mo < 1 || mo > 12 || d < 1 || d > daysIn(y, mo) || h > 23 || mi > 59 || se > 59 {
		return 0, false
	}
	return ((civilDays(y, mo, d)*24+int64(h))*60+int64(mi))*60*1000 + int64(se)*1000 + int64(ms), true
}
