package extract

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"strings"
	"time"
	"unsafe"
)

// MaxFields bounds the mapped pairs: Campaign offers eight opt-out fields and
// no two Dynamics fields may feed one of them.
const MaxFields = 8

// Contact is one Dynamics contact row. Values are raw, in the order of the
// mapped fields and in each field's own polarity.
type Contact struct {
	ID       ID
	Modified int64 // Unix ms; NoTime when unreadable (then Bad)
	// ETag refers to the ETag the API sent with this row, kept as read
	// (Dataverse.ETag gives it back), for a write that must not overwrite a
	// later edit; 0 when there is none (CSV). An index, not the string: a
	// million CSV contacts are held at once and need none.
	ETag   uint32
	Values [MaxFields]Tri
	Line   int32
	File   uint16 // which of a run's input files, in processing order
	// Bad rows keep their place so that a duplicate of them, or their
	// profile, is not acted on as if the contact were fine.
	Bad bool
	// (Field order keeps the struct at 48 bytes, without pointers: a million
	// are held at once.)
}

// Profile is one Campaign profile row. A profile is its PKey: rows of one
// PKey are one record whatever externalId they carry, so a row linked to no
// contact is kept too (Unlinked), for it may be the latest row of a PKey
// that another row links to a contact.
type Profile struct {
	ID ID // the contact the row links to (zero when Unlinked)
	// PKey names the row's PKey in the Keys of whoever holds the row (zero:
	// none could be read); FieldModified names its per-field change times
	// there (NoTime = unknown; zero when no mapping names a change-time
	// column). Names, not a string and a pointer: a million profiles are
	// held at once, and an array without pointers is not scanned by the
	// collector, nor its copies write-barriered (Keys).
	PKey          Key
	FieldModified Key
	Modified      int64 // Unix ms; NoTime when unreadable (then Bad)
	Values        [MaxFields]Tri
	Line          int32
	File          uint16 // which of a run's input files, in processing order
	Bad           bool
	// Unlinked: the row's externalId is empty or not a GUID. Only its PKey
	// and time are read; it is not a bad row.
	Unlinked bool
}

// Reject is an input row that was not processed, and why.
type Reject struct {
	Source Source
	Line   int
	ID     string
	Reason string
	// IDChecked says ID is a canonical GUID or a PKey of the checked shape,
	// not raw text from a bad cell.
	IDChecked bool
}

// Layout says which columns of an export to read.
type Layout struct {
	Fields []string // mapped fields, in pair order
	// FieldTimes, for Campaign only, names per mapped field a column holding
	// that field's change time ("" = none).
	FieldTimes []string
	// Columns maps a column's logical name to the header it has in the file.
	Columns    map[string]string
	TimeLayout string
	// NotAfter is the latest change time believed (the run's start plus
	// max_clock_skew): a later one makes the row bad (Future). Zero: no
	// bound.
	NotAfter time.Time
	// ColumnsKey names the config entry Columns comes from (d365.columns),
	// for the hint a missing column gets.
	ColumnsKey string
	// Limits tell a broken file from an export.
	Limits Limits
}

// MissingColumnError stops a run: without its columns no row can be read.
// It names every missing column at once, in the order a header would
// have them, and what the file's header has instead. Empty says the file
// has no header row at all (0 bytes, a BOM alone, blank lines alone);
// Columns then lists every column it must have.
type MissingColumnError struct {
	Source     string
	Columns    []string
	Header     []string
	ColumnsKey string
	Empty      bool
}

func (e *MissingColumnError) Error() string {
	var b strings.Builder
	cols := strings.Join(e.Columns, ", ")
	if e.Empty {
		return fmt.Sprintf("%s: the file is empty: no header row; required columns: %s", e.Source, cols)
	}
	if len(e.Columns) == 1 {
		fmt.Fprintf(&b, "%s: the required column %s is missing from the header", e.Source, cols)
	} else {
		fmt.Fprintf(&b, "%s: %d required columns are missing from the header: %s", e.Source, len(e.Columns), cols)
	}
	header := e.Header
	if len(header) > 30 {
		header = append(header[:30:30], "…")
	}
	fmt.Fprintf(&b, " (the header has: %s)", strings.Join(header, ", "))
	switch {
	case e.ColumnsKey == "d365.columns":
		b.WriteString(`. A Dynamics "Export to Excel" file names columns by their display labels: map each logical name to its label under d365.columns, e.g. d365.columns: {donotemail: "Do not allow Emails"}`)
	case e.ColumnsKey != "":
		fmt.Fprintf(&b, ". If the file names these columns otherwise, map each to its header under %s", e.ColumnsKey)
	}
	return b.String()
}

// errNoHeader is what openTable says of a file without a header row; the
// readers turn it into a MissingColumnError listing what they need.
var errNoHeader = errors.New("no header row")

// emptyFile names every column a reader needs, for a file without any.
func emptyFile(source string, configured map[string]string, names ...string) error {
	cols := make([]string, len(names))
	for i, n := range names {
		cols[i] = n
		if alias := configured[n]; alias != "" {
			cols[i] = alias
		}
	}
	return &MissingColumnError{Source: source, Columns: cols, Empty: true}
}

// Stats counts what a reader saw.
type Stats struct {
	Rows     int // data rows, good or bad
	Rejected int
	Unlinked int // profiles with an empty or non-GUID externalId
}

// IsPKey reports whether s has the shape of a Campaign primary key: @ then
// letters, digits, _ or -. Keys of that shape are safe to write unescaped
// into a spreadsheet. (A loop: a regexp here was a tenth of a backfill.)
func IsPKey(s string) bool {
	if len(s) < 2 || s[0] != '@' {
		return false
	}
	bad := uint64(0)
	for i := 1; i < len(s); i++ {
		c := s[i]
		set := uint64(pkeyBelow64)
		if c >= 64 {
			set = pkeyAbove64
		}
		bad |= (set>>(c&63))&1 ^ 1 | uint64(c>>7)
	}
	return bad == 0
}

// The bytes a PKey has after its @, as bit sets of the bytes below 64 (-
// and the digits) and of those from 64 to 127 (the letters and _): a test
// without branches, for the key's letters are random.
const (
	pkeyBelow64 = 0x03ff200000000000
	pkeyAbove64 = 0x07fffffe87fffffe
)

// hidden columns of a Dynamics "Export to Excel"
var d365Aliases = map[string][]string{
	"contactid":  {"(Do Not Modify) Contact"},
	"modifiedon": {"(Do Not Modify) Modified On"},
}

// ReadContacts streams a Dynamics contacts export. Good rows go to emit, bad
// ones to reject (and, when their id is a GUID, to emit marked Bad).
func ReadContacts(ctx context.Context, r io.Reader, source string, l Layout, emit func(*Contact), reject func(Reject)) (Stats, error) {
	return readContactRows(ctx, r, source, l, defaultChunking(), emit, reject)
}

func readContactRows(ctx context.Context, r io.Reader, source string, l Layout, c chunking, emit func(*Contact), reject func(Reject)) (Stats, error) {
	var st Stats
	t, err := openTable(r, source, l.Limits)
	if errors.Is(err, errNoHeader) {
		return st, emptyFile(source, l.Columns, append([]string{"contactid", "modifiedon"}, l.Fields...)...)
	}
	if err != nil {
		return st, err
	}
	cols, err := t.columns(append([]string{"contactid", "modifiedon"}, l.Fields...), l, d365Aliases)
	if err != nil {
		return st, err
	}
	cr := &contactReader{source: source, l: &l, idCol: cols[0], modCol: cols[1], fieldCols: cols[2:], labels: make([]Labels, len(l.Fields))}
	for i, f := range l.Fields {
		cr.labels[i] = LabelsFor(f)
	}
	if err := readRows(ctx, t, c, cr.rows, emit, reject, &st); err != nil {
		return st, err
	}
	return st, l.Limits.checkShare(source, st)
}

// contactReader holds what ReadContacts learns from the header.
type contactReader struct {
	source        string
	l             *Layout
	idCol, modCol int
	fieldCols     []int
	labels        []Labels
}

// rows makes the functions that read a contacts export's rows.
func (cr *contactReader) rows(emit func(*Contact), reject func(Reject), st *Stats) (row func(line int, rec []string), bad func(line int, rec []string, reason string), part func() func()) {
	source, l, idCol, modCol, fieldCols, labels := cr.source, cr.l, cr.idCol, cr.modCol, cr.fieldCols, cr.labels
	var c Contact
	row = func(line int, rec []string) {
		st.Rows++
		c = Contact{Line: int32(line)}
		raw := rec[idCol]
		id, ok := ParseID(raw)
		if !ok {
			st.Rejected++
			reject(Reject{Source: File(source), Line: line, ID: strings.Clone(raw), Reason: fmt.Sprintf("contactid %q is not a GUID", clip(raw))})
			return
		}
		c.ID = id
		var problems []string
		if c.Modified, ok = ParseTime(rec[modCol], l.TimeLayout); !ok {
			problems = append(problems, fmt.Sprintf("modifiedon %q is not a timestamp", clip(rec[modCol])))
		} else if why := Future("modifiedon", c.Modified, l.NotAfter); why != "" {
			problems = append(problems, why)
		}
		for i, col := range fieldCols {
			if c.Values[i], ok = ParseBool(rec[col], labels[i]); !ok {
				problems = append(problems, BadBool(l.Fields[i], rec[col], labels[i]))
			}
		}
		if problems != nil {
			st.Rejected++
			c.Bad = true
			reject(Reject{Source: File(source), Line: line, ID: id.String(), Reason: strings.Join(problems, "; "), IDChecked: true})
		}
		emit(&c)
	}
	bad = func(line int, rec []string, reason string) {
		st.Rows++
		st.Rejected++
		id, ok := ID{}, false
		if idCol < len(rec) {
			id, ok = ParseID(rec[idCol])
		}
		if !ok {
			reject(Reject{Source: File(source), Line: line, ID: "", Reason: reason})
			return
		}
		// A malformed row may be the newest for its contact: keep the
		// contact out of the run rather than trust an older row. Its
		// cells may be shifted, so its time is not read.
		reject(Reject{Source: File(source), Line: line, ID: id.String(), Reason: reason, IDChecked: true})
		emit(&Contact{ID: id, Modified: NoTime, Line: int32(line), Bad: true})
	}
	return row, bad, nil
}

// readRows reads t's rows with the functions rows makes: in parts, on
// c.workers goroutines at once, or on this one alone.
func readRows[T any](ctx context.Context, t *table, c chunking, rows rowFuncs[T], emit func(*T), reject func(Reject), st *Stats) error {
	if c.workers <= 0 {
		row, bad, _ := rows(emit, reject, st)
		return t.rows(ctx, row, bad)
	}
	return readParts(ctx, t, c, rows, emit, reject, st)
}

// ReadProfiles streams a Campaign profiles export. Rows whose externalId is
// empty or not a GUID are linked to no contact: counted, emitted Unlinked
// with their PKey and time only.
// The rows' PKeys and field times go to keys (Profile.PKey names them
// there).
func ReadProfiles(ctx context.Context, r io.Reader, source string, l Layout, keys *KeyWriter, emit func(*Profile), reject func(Reject)) (Stats, error) {
	return readProfileRows(ctx, r, source, l, keys, defaultChunking(), emit, reject)
}

func readProfileRows(ctx context.Context, r io.Reader, source string, l Layout, keys *KeyWriter, c chunking, emit func(*Profile), reject func(Reject)) (Stats, error) {
	t, err := openTable(r, source, l.Limits)
	if errors.Is(err, errNoHeader) {
		return Stats{}, emptyFile(source, l.Columns, profileColumnNames(l)...)
	}
	if err != nil {
		return Stats{}, err
	}
	var st Stats
	pr := &profileReader{source: source, l: &l, st: &st, keys: keys}
	if err := pr.findColumns(t); err != nil {
		return st, err
	}
	rows := pr.rows
	if c.workers > 0 {
		// Parts put their rows' PKeys and field times into writers of
		// their own, one a part; handed on, a row takes its bytes into
		// keys, in the file's order as one reader would put them, and the
		// part's blocks are let go of.
		parts := NewKeys()
		rows = pr.partRows(parts)
		handOn := emit
		emit = func(p *Profile) {
			p.PKey = keys.Copy(parts, p.PKey)
			p.FieldModified = keys.CopyTimes(parts, p.FieldModified)
			handOn(p)
		}
	}
	if err := readRows(ctx, t, c, rows, emit, reject, &st); err != nil {
		return st, err
	}
	return st, l.Limits.checkShare(source, st)
}

// rows makes the functions that read a profiles export's rows: the
// methods of a profileReader of their own, which hand what they make to
// emit and reject and count into st, their PKeys and field times to
// pr.keys. The methods are handed over once: a row costs a direct call,
// no allocation.
func (pr *profileReader) rows(emit func(*Profile), reject func(Reject), st *Stats) (row func(line int, rec []string), bad func(line int, rec []string, reason string), part func() func()) {
	r := pr.with(emit, reject, st)
	return r.row, r.badRow, nil
}

// partRows is rows for parts: each part's PKeys and field times go to a
// writer of its own in keys, let go of once the part is handed on.
func (pr *profileReader) partRows(keys *Keys) rowFuncs[Profile] {
	return func(emit func(*Profile), reject func(Reject), st *Stats) (func(int, []string), func(int, []string, string), func() func()) {
		r := pr.with(emit, reject, st)
		return r.row, r.badRow, func() func() {
			w := keys.Writer()
			r.keys = w
			return w.Reset
		}
	}
}

// with is a reader of the columns pr found, handing on to emit and reject.
func (pr *profileReader) with(emit func(*Profile), reject func(Reject), st *Stats) *profileReader {
	return &profileReader{source: pr.source, l: pr.l, emit: emit, reject: reject, st: st, keys: pr.keys,
		pkCol: pr.pkCol, extCol: pr.extCol, modCol: pr.modCol, fieldCols: pr.fieldCols, timeCols: pr.timeCols, anyTimes: pr.anyTimes}
}

// profileColumnNames are the columns a profiles export is read by, in the
// order profileReader.findColumns takes their positions.
func profileColumnNames(l Layout) []string {
	names := append([]string{"PKey", "externalId", "lastModified"}, l.Fields...)
	for _, name := range l.FieldTimes {
		if name != "" {
			names = append(names, name)
		}
	}
	return names
}

// profileReader holds what ReadProfiles learns from the header and what it
// counts, so that each row is read by a plain method call with the column
// positions at hand.
type profileReader struct {
	source string
	l      *Layout
	emit   func(*Profile)
	reject func(Reject)
	st     *Stats

	pkCol, extCol, modCol int
	fieldCols             []int
	timeCols              []int // -1 where a field's time is not configured
	anyTimes              bool
	p                     Profile    // reused: emit takes what it keeps
	keys                  *KeyWriter // where the rows' PKeys go
}

func (pr *profileReader) findColumns(t *table) error {
	l := pr.l
	cols, err := t.columns(profileColumnNames(*l), *l, nil)
	if err != nil {
		return err
	}
	pr.pkCol, pr.extCol, pr.modCol, pr.fieldCols = cols[0], cols[1], cols[2], cols[3:3+len(l.Fields)]
	pr.timeCols = make([]int, len(l.FieldTimes))
	next := 3 + len(l.Fields)
	for i, name := range l.FieldTimes {
		pr.timeCols[i] = -1
		if name == "" {
			continue
		}
		pr.anyTimes = true
		pr.timeCols[i] = cols[next]
		next++
	}
	return nil
}

// row reads one well-formed row: a profile, an unlinked one (its time
// only), or a reject that keeps its contact out.
func (pr *profileReader) row(line int, rec []string) {
	pr.st.Rows++
	ext := rec[pr.extCol]
	id, linked := ParseID(ext)
	pkey := strings.TrimSpace(rec[pr.pkCol])
	if !IsPKey(pkey) {
		pr.st.Rejected++
		pr.reject(Reject{Source: File(pr.source), Line: line, ID: strings.Clone(pkey), Reason: fmt.Sprintf("PKey %q is not of the form @ followed by letters, digits, _ or -", clip(pkey))})
		if linked {
			// A profile of that contact that cannot be told apart
			// from its others: the contact stays out of the run.
			pr.emit(&Profile{ID: id, Modified: NoTime, Line: int32(line), Bad: true})
		}
		return
	}
	l, p := pr.l, &pr.p
	if !linked {
		// Linked to no contact, but perhaps the latest row of a
		// PKey another row links to one: only its time is read.
		pr.st.Unlinked++
		*p = Profile{PKey: pr.keys.Put(pkey), Line: int32(line), Unlinked: true}
		p.Modified = unlinkedTime(rec[pr.modCol], l.TimeLayout, l.NotAfter)
		pr.emit(p)
		return
	}
	*p = Profile{ID: id, PKey: pr.keys.Put(pkey), Line: int32(line)}
	var ok bool
	var problems []string
	if p.Modified, ok = ParseTime(rec[pr.modCol], l.TimeLayout); !ok {
		problems = append(problems, fmt.Sprintf("lastModified %q is not a timestamp", clip(rec[pr.modCol])))
	} else if why := Future("lastModified", p.Modified, l.NotAfter); why != "" {
		problems = append(problems, why)
	}
	for i, col := range pr.fieldCols {
		if p.Values[i], ok = ParseBool(rec[col], NoLabels); !ok {
			problems = append(problems, fmt.Sprintf("%s %q is not a boolean", l.Fields[i], clip(rec[col])))
		}
	}
	if pr.anyTimes {
		problems = pr.fieldTimes(rec, problems)
	}
	if problems != nil {
		pr.st.Rejected++
		p.Bad = true
		pr.reject(Reject{Source: File(pr.source), Line: line, ID: strings.Clone(pkey), Reason: strings.Join(problems, "; "), IDChecked: true})
	}
	pr.emit(p)
}

// fieldTimes reads the per-field change times into pr.p, adding what is
// wrong with them to problems.
func (pr *profileReader) fieldTimes(rec []string, problems []string) []string {
	l, p := pr.l, &pr.p
	times := NoFieldTimes()
	defer func() { p.FieldModified = pr.keys.PutTimes(&times) }()
	for i, col := range pr.timeCols {
		if col < 0 || strings.TrimSpace(rec[col]) == "" {
			continue
		}
		var ok bool
		if times[i], ok = ParseTime(rec[col], l.TimeLayout); !ok {
			problems = append(problems, fmt.Sprintf("%s %q is not a timestamp", l.FieldTimes[i], clip(rec[col])))
		} else if why := Future(l.FieldTimes[i], times[i], l.NotAfter); why != "" {
			problems = append(problems, why)
		}
	}
	return problems
}

// badRow reads a row the table could not split into the header's cells.
func (pr *profileReader) badRow(line int, rec []string, reason string) {
	pr.st.Rows++
	pr.st.Rejected++
	// Name the row by its PKey when that still reads as one, as
	// every other profile reject does.
	name := ""
	if pr.pkCol < len(rec) && IsPKey(strings.TrimSpace(rec[pr.pkCol])) {
		name = strings.TrimSpace(rec[pr.pkCol])
	}
	id, linked := ID{}, false
	if pr.extCol < len(rec) {
		id, linked = ParseID(rec[pr.extCol])
	}
	switch {
	case name != "":
		// A bad row of that profile, not a second profile: it may be
		// the profile's newest row (its cells may be shifted, so its
		// time is not read), which keeps the profile out.
		pr.reject(Reject{Source: File(pr.source), Line: line, ID: strings.Clone(name), Reason: reason, IDChecked: true})
		pr.emit(&Profile{ID: id, PKey: pr.keys.Put(name), Modified: NoTime, Line: int32(line), Bad: true, Unlinked: !linked})
	case linked:
		pr.reject(Reject{Source: File(pr.source), Line: line, ID: id.String(), Reason: reason, IDChecked: true})
		pr.emit(&Profile{ID: id, Modified: NoTime, Line: int32(line), Bad: true})
	default:
		pr.reject(Reject{Source: File(pr.source), Line: line, Reason: reason})
	}
}

// unlinkedTime reads the time of a row linked to no contact. It is not a
// bad row, but a time that cannot be read, or one in the future, is not
// believed either: NoTime (the row may be its profile's newest).
func unlinkedTime(cell, layout string, notAfter time.Time) int64 {
	t, ok := ParseTime(cell, layout)
	if !ok || Future("lastModified", t, notAfter) != "" {
		return NoTime
	}
	return t
}

// clip keeps a bad cell short enough to quote in a reason.
func clip(s string) string {
	if len(s) > 60 {
		return s[:60] + "…"
	}
	return s
}

type table struct {
	source string
	// br is the buffer both the fast path (rows without a quote) and r
	// (encoding/csv, for the rest) read from, one record at a time.
	br     *bufio.Reader
	r      *csv.Reader
	header []string
	// csvEnd is the last line r has read, in r's numbering; off is the
	// lines the fast path read, which r does not count: r's line n is the
	// file's line n+off.
	csvEnd, off int
	fields      []string
	// mem, when inPlace, is what is left of a part of the file held in
	// memory (parseParts), its lines split where they lie: through br,
	// every part was copied once more, and every row cost a Peek and a
	// Discard. The first line the fast path leaves to encoding/csv (a
	// quote; the part's end) hands the rest to src, read through br by
	// a reader r made then, whose line 1 is the line after those read.
	mem     []byte
	inPlace bool
	src     *partReader
}

// tableBuffer is the read buffer's size. encoding/csv reads straight from
// a *bufio.Reader of 4096 bytes or more (it wraps a smaller one in a
// buffer of its own, which would read ahead of the fast path).
const tableBuffer = 1 << 20

func openTable(r io.Reader, source string, lim Limits) (*table, error) {
	return openTableSize(r, source, lim, tableBuffer)
}

func openTableSize(r io.Reader, source string, lim Limits, size int) (*table, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	// The BOM must go before the CSV parser (and the quote guard) sees it,
	// or a quoted first header reads as a bare quote.
	if b, err := br.Peek(3); err == nil && string(b) == "\uFEFF" {
		_, _ = br.Discard(3)
	}
	rb := bufio.NewReaderSize(newQuoteGuard(br, source, lim), max(size, 4096))
	cr := csv.NewReader(rb)
	cr.ReuseRecord = true
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, errNoHeader
	}
	var broken *BrokenFileError
	if errors.As(err, &broken) {
		return nil, broken
	}
	if err != nil {
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			return nil, &BrokenFileError{Source: source, Line: pe.Line, Reason: fmt.Sprintf("the header row does not parse: %v", pe.Err)}
		}
		return nil, fmt.Errorf("%s: reading the header: %w", source, err)
	}
	h := make([]string, len(header))
	for i, name := range header {
		h[i] = strings.TrimSpace(name)
	}
	t := &table{source: source, br: rb, r: cr, header: h}
	t.csvEnd = t.lastLine(header)
	return t, nil
}

// lastLine is the line (r's numbering) where the record r read last ends:
// a quoted field keeps each line break it spans as a \n.
func (t *table) lastLine(rec []string) int {
	line, _ := t.r.FieldPos(len(rec) - 1)
	return line + strings.Count(rec[len(rec)-1], "\n")
}

// fast reads the next line itself when the buffer holds it whole and it
// has no quote: it then splits at commas into what encoding/csv would
// make of it (a blank line is skipped: rec nil). ok false leaves the line
// to encoding/csv: a quote, a line longer than the buffer, the end of the
// file, a read error. encoding/csv built a [][]string and copied every
// byte of every row on its way; most rows have no quote.
func (t *table) fast() (line int, rec []string, ok bool) {
	if t.inPlace {
		return t.fastInPlace()
	}
	b, _ := t.br.Peek(t.br.Buffered())
	rec, i, quoted := splitLine(b, t.fields[:0])
	if i < 0 && !quoted {
		// Errors are left for encoding/csv to meet: the reader below
		// returns them again.
		b, _ = t.br.Peek(t.br.Size())
		rec, i, quoted = splitLine(b, rec[:0])
	}
	t.fields = rec
	if i < 0 || quoted {
		return 0, nil, false
	}
	t.off++
	line = t.csvEnd + t.off
	// The fields point into the read buffer (no copy of the row): they
	// hold until the next read, and a caller keeps a copy of what it keeps.
	_, _ = t.br.Discard(i + 1)
	if i == 0 || i == 1 && b[0] == '\r' {
		return line, nil, true // a blank line
	}
	return line, rec, true
}

// fastInPlace is fast for a part held in memory (mem).
func (t *table) fastInPlace() (line int, rec []string, ok bool) {
	b := t.mem
	rec, i, quoted := splitLine(b, t.fields[:0])
	t.fields = rec
	if i < 0 || quoted {
		t.leavePlace()
		return 0, nil, false
	}
	t.mem = b[i+1:]
	t.off++
	line = t.csvEnd + t.off
	if i == 0 || i == 1 && b[0] == '\r' {
		return line, nil, true // a blank line
	}
	return line, rec, true
}

// leavePlace hands what is left of mem to encoding/csv (and to fast
// through br after it): a reader of its own, which numbers its lines from
// the first of those left (off counts those before).
func (t *table) leavePlace() {
	t.inPlace = false
	t.src.b = t.mem
	t.mem = nil
	t.br.Reset(t.src)
	cr := csv.NewReader(t.br)
	cr.ReuseRecord = true
	cr.FieldsPerRecord = len(t.header) // as the header set it
	t.r, t.csvEnd = cr, 0
}

// splitLine splits the first line of b at its commas: end is where its
// \n is (-1: none in b), quoted that a quote comes before it (then rec is
// not the line's). A \r before the \n is not part of the last field: \r\n
// ends a line as \n does. The line's end and a quote in it are looked for
// with the library's vector search, the commas eight bytes at a time: a
// call of strings.IndexByte per field, for cells of a few bytes, cost more
// than the reading, and testing every eight bytes for all three bytes took
// a tenth of the instructions more than this.
func splitLine(b []byte, rec []string) (_ []string, end int, quoted bool) {
	nl := bytes.IndexByte(b, '\n')
	line := b
	if nl >= 0 {
		line = b[:nl]
	}
	if bytes.IndexByte(line, '"') >= 0 {
		return rec, -1, true
	}
	if nl < 0 {
		return rec, -1, false
	}
	str := unsafe.String(unsafe.SliceData(b), len(b))
	start, i := 0, 0
	for ; i+8 <= nl; i += 8 {
		commas := bytesEqual(binary.LittleEndian.Uint64(b[i:]), ',')
		for ; commas != 0; commas &= commas - 1 {
			c := i + bits.TrailingZeros64(commas)/8
			rec = append(rec, str[start:c])
			start = c + 1
		}
	}
	if i+8 <= len(b) {
		// the line's last bytes, read with those after its end: the
		// commas past it are masked off
		commas := bytesEqual(binary.LittleEndian.Uint64(b[i:]), ',') & (1<<(8*(nl-i)) - 1)
		for ; commas != 0; commas &= commas - 1 {
			c := i + bits.TrailingZeros64(commas)/8
			rec = append(rec, str[start:c])
			start = c + 1
		}
	} else {
		for ; i < nl; i++ {
			if b[i] == ',' {
				rec = append(rec, str[start:i])
				start = i + 1
			}
		}
	}
	return lastField(rec, str[start:nl]), nl, false
}

func lastField(rec []string, f string) []string {
	if len(f) > 0 && f[len(f)-1] == '\r' {
		f = f[:len(f)-1]
	}
	return append(rec, f)
}

// bytesEqual has the high bit set of each byte of x that is c, and no
// other bit (no carry from one byte to the next: exact, not a hint).
func bytesEqual(x uint64, c byte) uint64 {
	const low7 = 0x7f7f7f7f7f7f7f7f
	t := x ^ (0x0101010101010101 * uint64(c))
	return ^((t&low7 + low7) | t | low7)
}

// column finds a logical column: its configured header, else its own name,
// else a built-in alias. Names compare case-insensitively. When it is
// missing, missing says how to name it.
func (t *table) column(name string, configured map[string]string, aliases map[string][]string) (col int, missing string) {
	candidates := []string{name}
	if alias, ok := configured[name]; ok && alias != "" {
		candidates = []string{alias, name}
	}
	candidates = append(candidates, aliases[name]...)
	for _, want := range candidates {
		for i, h := range t.header {
			if strings.EqualFold(h, want) {
				return i, ""
			}
		}
	}
	if candidates[0] != name {
		return -1, fmt.Sprintf("%s (configured as %q)", name, candidates[0])
	}
	return -1, name
}

// columns finds every named column, or reports all the missing ones at
// once: fixing them one run at a time is no way to set up a config.
func (t *table) columns(names []string, l Layout, aliases map[string][]string) ([]int, error) {
	cols := make([]int, len(names))
	var missing []string
	for i, name := range names {
		c, m := t.column(name, l.Columns, aliases)
		if m != "" {
			missing = append(missing, m)
		}
		cols[i] = c
	}
	if missing != nil {
		return nil, &MissingColumnError{Source: t.source, Columns: missing, Header: t.header, ColumnsKey: l.ColumnsKey}
	}
	return cols, nil
}

// rows calls row for each well-formed data row and bad for each row the CSV
// layer could not split into the header's columns. The strings of rec may
// point into the read buffer: they hold until row or bad returns, and
// whatever outlives the call is copied (strings.Clone).
func (t *table) rows(ctx context.Context, row func(line int, rec []string), bad func(line int, rec []string, reason string)) error {
	fieldCount := func(line int, rec []string) {
		bad(line, rec, fmt.Sprintf("row has %d field%s, the header has %d", len(rec), map[bool]string{true: "", false: "s"}[len(rec) == 1], len(t.header)))
	}
	for n := 0; ; n++ {
		if n&0xfff == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if line, rec, ok := t.fast(); ok {
			switch {
			case rec == nil: // a blank line
			case len(rec) != len(t.header):
				fieldCount(line, rec)
			default:
				row(line, rec)
			}
			continue
		}
		rec, err := t.r.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		var pe *csv.ParseError
		switch {
		case errors.Is(err, csv.ErrFieldCount):
			t.csvEnd = t.lastLine(rec)
			line, _ := t.r.FieldPos(0)
			fieldCount(line+t.off, rec)
			continue
		case errors.As(err, &pe):
			t.csvEnd = pe.Line // the rest of that line is dropped
			start, end := pe.StartLine+t.off, pe.Line+t.off
			reason := fmt.Sprintf("malformed CSV: %v", pe.Err)
			if start != end {
				reason = fmt.Sprintf("malformed CSV in the record spanning lines %d-%d: %v", start, end, pe.Err)
			}
			bad(start, nil, reason)
			continue
		case err != nil:
			var broken *BrokenFileError
			if errors.As(err, &broken) {
				return broken
			}
			return fmt.Errorf("%s: %w", t.source, err)
		}
		t.csvEnd = t.lastLine(rec)
		line, _ := t.r.FieldPos(0)
		row(line+t.off, rec)
	}
}
