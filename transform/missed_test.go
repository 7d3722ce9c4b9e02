package transform

import (
	"testing"

	"optsync/extract/spill"
)

// countingStream counts the calls to Next of the stream it wraps.
type countingStream struct {
	spill.Stream[PKeyEntry]
	nexts int
}

func (c *countingStream) Next() *PKeyEntry {
	c.nexts++
	return c.Stream.Next()
}

// The records of state whose PKey the input lacks are passed as the
// entries come (present when their contact has a profile in the input,
// missing otherwise); once they end the stream is not asked again for
// each entry after.
func TestMissedUntilStopsAtTheEnd(t *testing.T) {
	for _, tc := range []struct {
		name           string
		missed         []PKeyEntry
		present, first int
	}{
		{"none", nil, 0, 0},
		{"one present, one missing", []PKeyEntry{{PKey: "@a", ID: id(2)}, {PKey: "@b", ID: id(3)}}, 1, 1},
	} {
		s := &countingStream{Stream: spill.Held(tc.missed)}
		d := &Decider{missed: s}
		for k := range 200 {
			e := id(byte(k + 1))
			d.missedUntil(&e, k+1 == 2) // contact 2 has a profile in the input
		}
		d.missedUntil(nil, false)
		if d.presentC != tc.present || len(d.missedC) != tc.first {
			t.Errorf("%s: %d present, %d missing, want %d, %d", tc.name, d.presentC, len(d.missedC), tc.present, tc.first)
		}
		if s.nexts != len(tc.missed)+1 {
			t.Errorf("%s: Next called %d times for %d records", tc.name, s.nexts, len(tc.missed))
		}
	}
}
