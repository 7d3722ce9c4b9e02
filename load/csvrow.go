package load

import (
	"time"
	"unicode"
	"unicode/utf8"

	"optsync/extract"
)

// A run writes an audit row per decision and an update row per contact
// changed, by the hundred thousand: they are appended to a reused buffer,
// cell by cell, with the bytes encoding/csv's Writer (',' and "\n") writes
// for them, and the buffer goes to the file's buffered writer whole.

// appendCell appends field as one CSV cell, as encoding/csv writes it:
// as it is, or quoted with its quotes doubled when it needs quotes.
func appendCell(dst []byte, field string) []byte {
	if !cellNeedsQuotes(field) {
		return append(dst, field...)
	}
	dst = append(dst, '"')
	for i := 0; i < len(field); i++ {
		if field[i] == '"' {
			dst = append(dst, '"')
		}
		dst = append(dst, field[i])
	}
	return append(dst, '"')
}

// cellNeedsQuotes is encoding/csv's rule for a cell, with ',' between
// cells: one holding a comma, a quote or a line break, one starting with
// a space, and `\.` (which would end a PostgreSQL COPY).
func cellNeedsQuotes(field string) bool {
	if field == "" {
		return false
	}
	if field == `\.` {
		return true
	}
	for i := 0; i < len(field); i++ {
		switch field[i] {
		case ',', '"', '\r', '\n':
			return true
		}
	}
	r, _ := utf8.DecodeRuneInString(field)
	return unicode.IsSpace(r)
}

// appendRow appends cells as one CSV row, with its line end.
func appendRow(dst []byte, cells ...string) []byte {
	return append(appendCells(dst, cells...), '\n')
}

// appendCells appends cells with commas between them.
func appendCells(dst []byte, cells ...string) []byte {
	for i, c := range cells {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendCell(dst, c)
	}
	return dst
}

// appendTime appends a change time as extract.FormatTime writes it
// (RFC 3339 in UTC, milliseconds without their trailing zeros, nothing for
// NoTime), without making a string of it; a cell that never needs quotes.
func appendTime(dst []byte, ms int64) []byte {
	if ms == extract.NoTime {
		return dst
	}
	t := time.UnixMilli(ms).UTC()
	year, month, day := t.Date()
	if year < 0 || year > 9999 {
		return append(dst, extract.FormatTime(ms)...)
	}
	hour, minute, sec := t.Clock()
	dst = append4(dst, year)
	dst = append(dst, '-')
	dst = append2(dst, int(month))
	dst = append(dst, '-')
	dst = append2(dst, day)
	dst = append(dst, 'T')
	dst = append2(dst, hour)
	dst = append(dst, ':')
	dst = append2(dst, minute)
	dst = append(dst, ':')
	dst = append2(dst, sec)
	if milli := t.Nanosecond() / 1e6; milli != 0 {
		digits := [3]byte{byte('0' + milli/100), byte('0' + milli/10%10), byte('0' + milli%10)}
		n := 3
		for digits[n-1] == '0' {
			n--
		}
		dst = append(dst, '.')
		dst = append(dst, digits[:n]...)
	}
	return append(dst, 'Z')
}

func append2(dst []byte, n int) []byte { return append(dst, byte('0'+n/10), byte('0'+n%10)) }

func append4(dst []byte, n int) []byte {
	return append(dst, byte('0'+n/1000), byte('0'+n/100%10), byte('0'+n/10%10), byte('0'+n%10))
}
