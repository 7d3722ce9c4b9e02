package transform

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"optsync/extract"
	"optsync/extract/spill"
)

// A PKey sort's run is written in PKey order from entries whose PKeys lie
// anywhere: the codec must tell the sort what to read ahead (Touch), and
// a sort spilled with it must still hand every entry back in order.
func TestPKeyCodecTouchesThePKey(t *testing.T) {
	for _, byID := range []bool{false, true} {
		c := PKeyCodec(byID)
		if c.Touch == nil {
			t.Fatalf("byID %v: no Touch: a run's writer waits for each PKey in turn", byID)
		}
		for _, tc := range []struct {
			pkey string
			want uint64
		}{{"", 0}, {"@", 2 * '@'}, {"@ab", '@' + 'b'}} {
			e := PKeyEntry{PKey: tc.pkey}
			if got := c.Touch(&e); got != tc.want {
				t.Errorf("byID %v: Touch(%q) = %d, want %d", byID, tc.pkey, got, tc.want)
			}
		}
		s := spill.NewSorter(c, 4<<10, t.TempDir(), PKeySize)
		var want []PKeyEntry
		for i := range 2000 {
			var id extract.ID
			id[0], id[1] = byte(i*7919>>8), byte(i*7919)
			e := PKeyEntry{PKey: fmt.Sprintf("@%05d", (i*104729)%3001), ID: id}
			want = append(want, e)
			if err := s.Add(&e); err != nil {
				t.Fatal(err)
			}
		}
		if s.Spilled == 0 {
			t.Fatalf("byID %v: the sort did not spill: the test does not write runs", byID)
		}
		slices.SortStableFunc(want, func(a, b PKeyEntry) int { return c.Compare(&a, &b) })
		st, err := s.Sorted()
		if err != nil {
			t.Fatal(err)
		}
		var got []PKeyEntry
		for e := st.Next(); e != nil; e = st.Next() {
			got = append(got, PKeyEntry{PKey: strings.Clone(e.PKey), ID: e.ID})
		}
		if err := st.Err(); err != nil {
			t.Fatal(err)
		}
		st.Close()
		s.Close()
		if !slices.Equal(got, want) {
			t.Errorf("byID %v: %d entries back, not the %d added in order", byID, len(got), len(want))
		}
	}
}

// BenchmarkPKeySortSpill sorts a million PKey entries by PKey past a
// budget, their PKeys lying in the order the entries come (as a
// backfill's decisions hand them: contact order), so that a run is
// written reading them from anywhere.
func BenchmarkPKeySortSpill(b *testing.B) {
	const n = 1 << 20
	arena := make([]byte, 0, n*21)
	entries := make([]PKeyEntry, n)
	for i := range entries {
		at := len(arena)
		arena = fmt.Appendf(arena, "@%020d", uint64(i)*0x9E3779B97F4A7C15%1e19)
		entries[i].ID[0], entries[i].ID[15] = byte(i), byte(i>>8)
		entries[i].PKey = string(arena[at:])
	}
	dir := b.TempDir()
	b.ResetTimer()
	for range b.N {
		s := spill.NewSorter(PKeyCodec(false), 16<<20, dir, PKeySize)
		for i := range entries {
			if err := s.Add(&entries[i]); err != nil {
				b.Fatal(err)
			}
		}
		s.Close()
	}
}
