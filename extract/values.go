// Package extract owns a run's inputs and reads them into plain records.
// Listing lists what a run reads of each system (InputFile): its API, the
// one export a backfill names, or a drop folder's files, oldest first and
// hashed, less those already processed (a predicate the run hands in).
// Reading.Read reads both systems at once, CSV exports or the APIs
// (DataverseContacts, CampaignProfiles, each from a Cursor the run hands
// in as a value), into the sorted contact and profile streams (Records),
// then the retry queue again; the next cursors, the contacts found deleted
// and whether a side was read in full come back in the Records, with the
// inputs they came from. Options.ListAndRead is a run's whole read: the
// listing, tmp_dir and the memory limit readied (WithinBudget), the read.
// It never reads state and imports no other stage. Source names where records came
// from (a file, an API, the retry queue) for rejects and messages. It knows
// spellings, layouts, columns and the APIs' shapes; it makes no decisions.
// The HTTP client both APIs are read and written with is in
// extract/apiclient; sorting past the memory budget, and the budget's
// shares, in extract/spill. Options is the reads' part of the config (the
// inputs, the API connections, max_clock_skew, input:, memory_budget),
// with the checks that name its keys. Credentials live here: the client
// secret is read where the config says (Credentials.Secret), and Private
// keeps the config's free-text values out of the run history.
package extract

import (
	"cmp"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"strings"
	"time"
)

// Tri is a consent flag as read: unknown is a value of its own and is never
// folded into false.
type Tri uint8

const (
	Unknown Tri = iota
	False
	True
)

// Known reports whether t carries a value.
func (t Tri) Known() bool { return t != Unknown }

// Not flips a known value; unknown stays unknown.
func (t Tri) Not() Tri {
	switch t {
	case True:
		return False
	case False:
		return True
	}
	return Unknown
}

// String gives the spelling used in every output file: "true", "false" or "".
func (t Tri) String() string {
	switch t {
	case True:
		return "true"
	case False:
		return "false"
	}
	return ""
}

// Of converts a Go bool.
func Of(b bool) Tri {
	if b {
		return True
	}
	return False
}

// ID is a contact GUID in its canonical byte order, so that sorting IDs as
// bytes sorts them as their canonical text.
type ID [16]byte

// Compare orders IDs as their canonical text orders.
func (id ID) Compare(o ID) int {
	if c := cmp.Compare(binary.BigEndian.Uint64(id[:8]), binary.BigEndian.Uint64(o[:8])); c != 0 {
		return c
	}
	return cmp.Compare(binary.BigEndian.Uint64(id[8:]), binary.BigEndian.Uint64(o[8:]))
}

// String is the canonical form: lower-case, hyphenated, no braces.
func (id ID) String() string {
	var b [36]byte
	hex.Encode(b[0:8], id[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], id[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], id[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], id[8:10])
	b[23] = '-'
	hex.Encode(b[24:36], id[10:16])
	return string(b[:])
}

// ParseID accepts a GUID in any case, with or without braces.
func ParseID(s string) (ID, bool) {
	var id ID
	s = strings.TrimSpace(s)
	if len(s) == 38 && s[0] == '{' && s[37] == '}' {
		s = s[1:37]
	}
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return id, false
	}
	// The 32 digits as four words of eight, each read and checked eight
	// at a time (a loop over the digits, with a check per digit, was a
	// tenth of reading a file, in both files).
	a, okA := hex8(le32(s[0:]) | le32(s[4:])<<32)
	b, okB := hex8(le32(s[9:]) | le32(s[14:])<<32)
	c, okC := hex8(le32(s[19:]) | le32(s[24:])<<32)
	d, okD := hex8(le32(s[28:]) | le32(s[32:])<<32)
	if !(okA && okB && okC && okD) {
		return ID{}, false
	}
	binary.LittleEndian.PutUint32(id[0:], a)
	binary.LittleEndian.PutUint32(id[4:], b)
	binary.LittleEndian.PutUint32(id[8:], c)
	binary.LittleEndian.PutUint32(id[12:], d)
	return id, true
}

// le32 is the first four bytes of s, the first the lowest.
func le32(s string) uint64 {
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24
}

// hex8 reads eight hex digits, the first in x's lowest byte, as the four
// bytes they spell (the first in the result's lowest byte), and says
// whether all eight are hex digits. Every byte is tested at once: a byte
// below 0x80 plus a constant below 0x81 carries into no other, so its
// high bit says whether it reached the constant's threshold; a byte of
// 0x80 or more fails on its own high bit, whatever its carry does.
func hex8(x uint64) (uint32, bool) {
	const ones, high = 0x0101010101010101, 0x8080808080808080
	digit := (x + ones*(0x80-'0')) &^ (x + ones*(0x7f-'9'))
	lower := x | ones*0x20 // A-F as a-f
	letter := (lower + ones*(0x80-'a')) &^ (lower + ones*(0x7f-'f'))
	ok := (digit|letter)&^x&high == high
	v := x&(ones*0x0f) + (x>>6&ones)*9 // each digit's value, in its byte
	v = (v<<4 | v>>8) & 0x00ff00ff00ff00ff
	v = (v | v>>8) & 0x0000ffff0000ffff
	return uint32(v | v>>16), ok
}

// Labels names the two-option labels a Dynamics field's cells may hold
// instead of booleans, as "Export to Excel" writes them.
type Labels uint8

const (
	// NoLabels: booleans only. Campaign fields, and Dynamics fields whose
	// labels are not known: a custom opt-in field may well label true
	// "Allow", the opposite of what "Allow" means on donotemail.
	NoLabels Labels = iota
	// AllowLabels: Do Not Allow = true, Allow = false (donotemail,
	// donotbulkemail, donotphone, donotfax, donotpostalmail, …).
	AllowLabels
	// SendLabels: Do Not Send = true, Send = false (donotsendmm).
	SendLabels
)

// LabelsFor gives a Dynamics field's labels by its logical name, whatever
// header the export gives its column.
func LabelsFor(field string) Labels {
	f := strings.ToLower(field)
	switch {
	case f == "donotsendmm":
		return SendLabels
	case strings.HasPrefix(f, "donot"):
		return AllowLabels
	}
	return NoLabels
}

// ParseBool reads a flag cell. Blank and null are unknown; ok is false for a
// spelling that is neither, which makes the row bad. A two-option label is
// read only where it is the field's own.
func ParseBool(s string, labels Labels) (t Tri, ok bool) {
	switch s { // what nearly every cell holds, before the general spellings
	case "false":
		return False, true
	case "true":
		return True, true
	}
	s = strings.TrimSpace(s)
	if len(s) > 16 {
		return Unknown, false
	}
	switch strings.ToLower(s) {
	case "", "null":
		return Unknown, true
	case "true", "1", "yes", "y":
		return True, true
	case "false", "0", "no", "n":
		return False, true
	case "do not allow":
		return label(True, labels == AllowLabels)
	case "allow":
		return label(False, labels == AllowLabels)
	case "do not send":
		return label(True, labels == SendLabels)
	case "send":
		return label(False, labels == SendLabels)
	}
	return Unknown, false
}

func label(t Tri, own bool) (Tri, bool) {
	if !own {
		return Unknown, false
	}
	return t, true
}

// BadBool is the reason a cell of field did not read as a flag; a label of
// another field says whose labels the field has.
func BadBool(field, cell string, labels Labels) string {
	reason := fmt.Sprintf("%s %q is not a boolean", field, clip(cell))
	switch strings.ToLower(strings.TrimSpace(cell)) {
	case "do not allow", "allow", "do not send", "send":
		switch labels {
		case AllowLabels:
			reason += " (its labels are Allow and Do Not Allow)"
		case SendLabels:
			reason += " (its labels are Send and Do Not Send)"
		default:
			reason += " (labels are read only for the donot* fields)"
		}
	}
	return reason
}

// Layouts tried, in order, after a configured one.
var defaultLayouts = [...]string{
	time.RFC3339Nano,
	"2006-01-02 15:04:05.000Z",
	"2006-01-02 15:04:05Z",
	"2006-01-02 15:04:05.999999999",
	"2006-01-02 15:04:05",
}

// NoTime is a time that is not known (a blank or unreadable cell). Zero is
// a time like any other: the epoch.
const NoTime int64 = math.MinInt64

// NewFieldTimes gives per-field change times, all unknown.
func NewFieldTimes() *[MaxFields]int64 {
	t := NoFieldTimes()
	return &t
}

// NoFieldTimes is field times none of which is known.
func NoFieldTimes() [MaxFields]int64 {
	var t [MaxFields]int64
	for i := range t {
		t[i] = NoTime
	}
	return t
}

// ParseTime reads a timestamp as Unix milliseconds (NoTime when it does not
// read). A configured layout is tried first, so that it decides what an
// ambiguous cell means (2026-04-03 under a day/month layout is 4 March);
// the built-in shapes only when it does not parse. Layouts without a zone
// are taken as UTC.
func ParseTime(s, layout string) (int64, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return NoTime, false
	}
	if layout != "" {
		if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			return t.UnixMilli(), true
		}
	}
	if ms, ok := parseFast(s); ok {
		return ms, true
	}
	for _, l := range defaultLayouts {
		if t, err := time.ParseInLocation(l, s, time.UTC); err == nil {
			return t.UnixMilli(), true
		}
	}
	return NoTime, false
}

// parseFast handles the two shapes nearly every row has,
// "2006-01-02T15:04:05Z" and "2006-01-02 15:04:05.000Z", without time.Parse
// or time.Date: at millions of rows either is a visible share of a
// backfill. A date that does not exist (31 February) does not read.
// The cell's shape (its digits and separators) is checked eight bytes at
// a time: a check and a branch per byte were two fifths of its cost.
func parseFast(s string) (int64, bool) {
	n := len(s)
	if n != 20 && n != 24 {
		return 0, false
	}
	// "YYYY-MM-", "DDTHH:MM" and what follows: ":SS.mmmZ", or ":SSZ".
	w0, w1 := le64(s[0:8]), le64(s[8:16])
	var w2, digits2, seps2, want2 uint64
	if n == 24 {
		w2 = le64(s[16:24])
		digits2, seps2, want2 = 0x00ffffff00ffff00, 0xff000000ff0000ff, 'Z'<<56|'.'<<24|':'
	} else {
		w2 = le32(s[16:20])
		digits2, seps2, want2 = 0x0000000000ffff00, 0x00000000ff0000ff, 'Z'<<24|':'
	}
	const digits0, seps0, want0 = 0x00ffff00ffffffff, 0xff0000ff00000000, '-'<<56 | '-'<<32
	const digits1, seps1, want1 = 0xffff00ffff00ffff, 0x0000ff0000000000, ':' << 40
	if t := byte(w1 >> 16); (w0^want0)&seps0 != 0 || (w1^want1)&seps1 != 0 || (w2^want2)&seps2 != 0 || t != 'T' && t != ' ' {
		return 0, false
	}
	if !allDigits(w0, digits0) || !allDigits(w1, digits1) || !allDigits(w2, digits2) {
		return 0, false
	}
	_ = s[19] // (no bounds check for each digit below)
	digit := func(i int) int { return int(s[i] - '0') }
	y := digit(0)*1000 + digit(1)*100 + digit(2)*10 + digit(3)
	mo, d := digit(5)*10+digit(6), digit(8)*10+digit(9)
	h, mi, se := digit(11)*10+digit(12), digit(14)*10+digit(15), digit(17)*10+digit(18)
	ms := 0
	if n == 24 {
		ms = digit(20)*100 + digit(21)*10 + digit(22)
	}
	if mo < 1 || mo > 12 || d < 1 || d > daysIn(y, mo) || h > 23 || mi > 59 || se > 59 {
		return 0, false
	}
	return ((civilDays(y, mo, d)*24+int64(h))*60+int64(mi))*60*1000 + int64(se)*1000 + int64(ms), true
}

// le64 is the first eight bytes of s, the first the lowest.
func le64(s string) uint64 {
	return le32(s) | le32(s[4:])<<32
}

// allDigits says the bytes of x that mask selects (0xff each) are all
// '0' to '9' (as hex8 tells digits: a byte below 0x80 plus a constant
// carries into no other; one of 0x80 or more fails on its own high bit).
func allDigits(x, mask uint64) bool {
	const ones, high = 0x0101010101010101, 0x8080808080808080
	digit := (x + ones*(0x80-'0')) &^ (x + ones*(0x7f-'9')) &^ x
	return digit&mask&high == mask&high
}

func daysIn(y, mo int) int {
	if mo == 2 {
		if y%4 == 0 && (y%100 != 0 || y%400 == 0) {
			return 29
		}
		return 28
	}
	return 30 + (mo+mo/8)%2 // 31 in January, March, …, July, August, October, …
}

// civilDays counts the days from 1970-01-01 to a date of the proleptic
// Gregorian calendar, as time.Date does (years from March, so that the
// leap day comes last; eras of 400 years).
func civilDays(y, mo, d int) int64 {
	if mo <= 2 {
		y--
	}
	era := y / 400
	if y < 0 {
		era = (y - 399) / 400
	}
	yoe := y - era*400
	mp := (mo + 9) % 12 // March is 0
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return int64(era)*146097 + int64(doe) - 719468
}

// FormatTime writes Unix milliseconds as RFC 3339 UTC, with milliseconds only
// when there are some; NoTime is blank.
func FormatTime(ms int64) string {
	var b [24]byte
	return string(AppendTime(b[:0], ms))
}

// AppendTime appends FormatTime(ms) to dst without making a string of it:
// every audit row writes two times, and time.Format was a visible share of
// writing them, so years 0000-9999 are written here.
func AppendTime(dst []byte, ms int64) []byte {
	if ms == NoTime {
		return dst
	}
	const msPerDay = 86400000
	days, rem := ms/msPerDay, ms%msPerDay
	if rem < 0 {
		days, rem = days-1, rem+msPerDay
	}
	y, mo, d := civilDate(days)
	if y < 0 || y > 9999 {
		return time.UnixMilli(ms).UTC().AppendFormat(dst, "2006-01-02T15:04:05.999Z07:00")
	}
	var b [24]byte
	put := func(at, v, width int) {
		for i := at + width - 1; i >= at; i-- {
			b[i] = byte('0' + v%10)
			v /= 10
		}
	}
	put(0, y, 4)
	b[4] = '-'
	put(5, mo, 2)
	b[7] = '-'
	put(8, d, 2)
	b[10] = 'T'
	r := int(rem)
	put(11, r/3600000, 2)
	b[13] = ':'
	put(14, r/60000%60, 2)
	b[16] = ':'
	put(17, r/1000%60, 2)
	n := 19
	if milli := r % 1000; milli != 0 {
		b[19] = '.'
		put(20, milli, 3)
		n = 23
		for b[n-1] == '0' { // .999: no trailing zeros
			n--
		}
	}
	b[n] = 'Z'
	return append(dst, b[:n+1]...)
}

// civilDate is the date of the proleptic Gregorian calendar days after
// 1970-01-01 (civilDays the other way).
func civilDate(days int64) (y, mo, d int) {
	z := days + 719468
	era := z / 146097
	if z < 0 {
		era = (z - 146096) / 146097
	}
	doe := int(z - era*146097)
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365
	doy := doe - (365*yoe + yoe/4 - yoe/100)
	mp := (5*doy + 2) / 153
	d = doy - (153*mp+2)/5 + 1
	mo = mp + 3
	if mo > 12 {
		mo -= 12
	}
	y = yoe + int(era)*400
	if mo <= 2 {
		y++
	}
	return y, mo, d
}
