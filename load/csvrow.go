package load

import (
	"unicode"
	"unicode/utf8"
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
