package extract

import (
	"bytes"
	"fmt"
	"io"
)

// Limits bound what one input file may hold before it is taken for a
// broken file rather than an export. Zero values take the defaults.
type Limits struct {
	// MaxFieldBytes and MaxFieldLines bound a quoted field: one that runs
	// past either (or to the end of the file) is a stray quote that would
	// swallow every row after it. Default 64 KiB and 100 lines. A record
	// (a line, or the lines of a quoted field) may hold 16 times
	// MaxFieldBytes.
	MaxFieldBytes, MaxFieldLines int
	// MaxRejectShare is the share of a file's rows (0..1) that may be
	// rejected; above it the file is not an export. Default 0.5. A file
	// with at most MinRejects rejected rows is not held to it.
	MaxRejectShare float64
}

// MinRejects is how many rejected rows a file may always have: the reject
// share says nothing about a drop of three rows.
const MinRejects = 10

func (l Limits) withDefaults() Limits {
	if l.MaxFieldBytes <= 0 {
		l.MaxFieldBytes = 64 << 10
	}
	if l.MaxFieldLines <= 0 {
		l.MaxFieldLines = 100
	}
	if l.MaxRejectShare <= 0 {
		l.MaxRejectShare = 0.5
	}
	return l
}

// BrokenFileError stops a run: the file is not an export (a stray quote, a
// header that does not parse, too many bad rows), and reading on would
// make a few of its rows look like all of them. Nothing of the run is
// written; the file is not marked processed.
type BrokenFileError struct {
	Source string
	Line   int // 0: the file as a whole
	Reason string
}

func (e *BrokenFileError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s: line %d: %s; the file is broken: nothing was processed", e.Source, e.Line, e.Reason)
	}
	return fmt.Sprintf("%s: %s; the file is broken: nothing was processed", e.Source, e.Reason)
}

// checkShare is the reject-share bound at the end of a file.
func (l Limits) checkShare(source string, st Stats) error {
	l = l.withDefaults()
	if st.Rejected <= MinRejects || float64(st.Rejected) <= l.MaxRejectShare*float64(st.Rows) {
		return nil
	}
	return &BrokenFileError{Source: source, Reason: fmt.Sprintf("%d of its %d rows were rejected (%.1f %%), more than max_reject_share %g %%: this is not an export",
		st.Rejected, st.Rows, 100*float64(st.Rejected)/float64(st.Rows), 100*l.MaxRejectShare)}
}

// quoteGuard sits between a file and encoding/csv and follows the same
// quoting rules (RFC 4180 as encoding/csv reads it without LazyQuotes), so
// that it knows when a quoted field is open. encoding/csv would read a
// field with no closing quote to the end of the file into memory and make
// one bad row of every row after it; the guard stops the file instead, as
// soon as such a field passes the limits or the file ends inside it,
// naming the line where the quote opened. It also bounds a record with no
// end of line. Memory stays bounded whatever the input.
type quoteGuard struct {
	r          io.Reader
	source     string
	maxField   int
	maxLines   int
	maxRecord  int
	state      guardState
	line       int // line of the next byte, from 1 (the header)
	open       int // line where the open quoted field began
	fieldBytes int
	fieldLines int
	recBytes   int // bytes of the current record so far
	// end is where, in the bytes scan last read, the last record it saw
	// end ends (just after its \n; -1: none ended there): where a file can
	// be cut so that each part holds whole records.
	end int
	err error
}

type guardState uint8

const (
	fieldStart guardState = iota // at the start of a field: a quote opens a quoted field
	unquoted                     // inside an unquoted field
	quoted                       // inside a quoted field
	quoteSeen                    // a quote inside a quoted field: closes it, or escapes a quote
	skipLine                     // after a malformed field encoding/csv drops the rest of the line
)

func newQuoteGuard(r io.Reader, source string, l Limits) *quoteGuard {
	l = l.withDefaults()
	return &quoteGuard{r: r, source: source, maxField: l.MaxFieldBytes, maxLines: l.MaxFieldLines, maxRecord: 16 * l.MaxFieldBytes, line: 1}
}

func (g *quoteGuard) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	n, err := g.r.Read(p)
	if k, broken := g.scan(p[:n]); broken != nil {
		g.err = broken
		return k, nil // the bytes before the fault; the fault on the next read
	}
	if err == io.EOF && g.state == quoted {
		g.err = &BrokenFileError{Source: g.source, Line: g.open,
			Reason: "a quoted field opened here runs to the end of the file (a stray \" swallows every row after it)"}
		return n, nil
	}
	return n, err
}

// scan follows the quoting state over b. It returns how many bytes are
// good and the fault, if b passes a limit.
func (g *quoteGuard) scan(b []byte) (int, error) {
	i := 0
	g.end = -1
	for i < len(b) {
		switch g.state {
		case fieldStart, unquoted:
			rest := b[i:]
			q := bytes.IndexByte(rest, '"')
			seg := rest
			if q >= 0 {
				seg = rest[:q]
			}
			if nl := bytes.Count(seg, []byte{'\n'}); nl > 0 {
				g.line += nl
				last := bytes.LastIndexByte(seg, '\n')
				g.recBytes = len(seg) - last - 1
				g.end = i + last + 1
			} else {
				g.recBytes += len(seg)
			}
			if g.recBytes > g.maxRecord {
				return i, g.longRecord()
			}
			if q < 0 {
				if last := seg[len(seg)-1]; last == ',' || last == '\n' {
					g.state = fieldStart
				} else {
					g.state = unquoted
				}
				return len(b), nil
			}
			atStart := g.state == fieldStart
			if q > 0 {
				atStart = rest[q-1] == ',' || rest[q-1] == '\n'
			}
			i += q + 1
			g.recBytes++
			if atStart {
				g.state, g.open, g.fieldBytes, g.fieldLines = quoted, g.line, 0, 0
			} else {
				g.state = skipLine // a bare quote: encoding/csv rejects the row
			}
		case skipLine:
			nl := bytes.IndexByte(b[i:], '\n')
			if nl < 0 {
				g.recBytes += len(b) - i
				if g.recBytes > g.maxRecord {
					return i, g.longRecord()
				}
				return len(b), nil
			}
			i += nl + 1
			g.line++
			g.recBytes = 0
			g.end = i
			g.state = fieldStart
		case quoted:
			rest := b[i:]
			q := bytes.IndexByte(rest, '"')
			seg := rest
			if q >= 0 {
				seg = rest[:q]
			}
			nl := bytes.Count(seg, []byte{'\n'})
			g.line += nl
			g.fieldLines += nl
			g.fieldBytes += len(seg)
			g.recBytes += len(seg)
			if g.fieldBytes > g.maxField || g.fieldLines >= g.maxLines {
				return i, &BrokenFileError{Source: g.source, Line: g.open, Reason: fmt.Sprintf(
					"a quoted field opened here runs past %d bytes or %d lines (a stray \" would swallow every row after it)", g.maxField, g.maxLines)}
			}
			if q < 0 {
				return len(b), nil
			}
			i += q + 1
			g.fieldBytes++
			g.recBytes++
			g.state = quoteSeen
		case quoteSeen:
			c := b[i]
			i++
			g.recBytes++
			switch c {
			case '"':
				g.fieldBytes++
				g.state = quoted
			case ',':
				g.state = fieldStart
			case '\n':
				g.line++
				g.recBytes = 0
				g.end = i
				g.state = fieldStart
			default:
				// `"x`: encoding/csv rejects the row and drops the rest of
				// its line; `"\r\n` ends the field, and the line, alike.
				g.state = skipLine
			}
		}
	}
	return len(b), nil
}

func (g *quoteGuard) longRecord() error {
	return &BrokenFileError{Source: g.source, Line: g.line, Reason: fmt.Sprintf("a row runs past %d bytes without ending", g.maxRecord)}
}
