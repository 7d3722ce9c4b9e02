package load

import (
	"bytes"
	"testing"

	"optsync/extract"
)

// Rejects group by the shape of their reason, most first (ties in the
// order first met), each with its first three rows by file and line.
func TestTally(t *testing.T) {
	var empty Tally
	var out bytes.Buffer
	empty.Write(&out)
	if out.String() != "would be rejected: none\n" {
		t.Fatalf("none: %q", out.String())
	}
	var tl Tally
	f := extract.File("/in/d.csv")
	for _, line := range []int{9, 4, 7, 2} {
		tl.Add(extract.Reject{Source: f, Line: line, Reason: `donotemail "x` + string(rune('0'+line)) + `" is not a boolean`})
	}
	tl.Add(extract.Reject{Source: f, Line: 5, Reason: "superseded: line 12 is a later row for this contact", ID: "abc", IDChecked: true})
	out.Reset()
	tl.Write(&out)
	want := `would be rejected: 5 rows, by reason (a run over these files lists the same rows in its rejects file):
  4 × donotemail "…" is not a boolean
      d.csv line 2: donotemail "x2" is not a boolean
      d.csv line 4: donotemail "x4" is not a boolean
      d.csv line 7: donotemail "x7" is not a boolean
  1 × superseded: line N is a later row for this contact
      d.csv line 5 (abc): superseded: line 12 is a later row for this contact
`
	if out.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", out.String(), want)
	}
}
