package spill

import (
	"errors"
	"slices"
	"testing"
)

// Scan hands over every record added, held or spilled, twice over, and
// leaves the sorter to merge them all in order after; an error from fn
// ends it with that error.
func TestScanSeesEveryRecordAndLeavesTheSort(t *testing.T) {
	in, want := randomRecs(3, 4, 3000, 200)
	for _, budget := range []int64{0, 8 * 64, 8 * 1000} {
		s := NewSorter(recCodec, budget, t.TempDir(), 8)
		for i := range in {
			if err := s.Add(&in[i]); err != nil {
				t.Fatal(err)
			}
		}
		byOrder := func(a, b rec) int { return int(a.seq) - int(b.seq) }
		for pass := range 2 {
			var seen []rec
			if err := s.Scan(func(r *rec) error { seen = append(seen, *r); return nil }); err != nil {
				t.Fatal(err)
			}
			slices.SortFunc(seen, byOrder)
			all := slices.SortedFunc(slices.Values(in), byOrder)
			if !slices.Equal(seen, all) {
				t.Fatalf("budget %d, scan %d: %d records seen of %d added (%d runs)", budget, pass, len(seen), len(in), s.Spilled)
			}
		}
		stop := errors.New("stop")
		n := 0
		if err := s.Scan(func(*rec) error { n++; return stop }); err != stop || n != 1 {
			t.Fatalf("budget %d: scan ended with %v after %d records", budget, err, n)
		}
		if budget == 8*64 && s.Spilled == 0 {
			t.Fatal("nothing spilled")
		}
		if got := sortedAll(t, s); !slices.Equal(got, want) {
			t.Fatalf("budget %d: out of order after the scans (%d records)", budget, len(got))
		}
		s.Close()
	}
}
