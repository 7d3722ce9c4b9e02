package spill

import (
	"slices"
	"testing"
)

// Records spilled by sorters of their own, each run written when Fits says
// the next record would have made Add spill, and adopted in the order
// written, come back from the sorter that adopted them as one sorter would
// hand them: in order, equal keys in the order added.
func TestAdoptedRunsMergeInOrder(t *testing.T) {
	in, want := randomRecs(3, 4, 3000, 200)
	dir := t.TempDir()
	into := NewSorter(recCodec, 8*64, dir, 8)
	halves := [2]*Sorter[rec]{NewSorter(recCodec, 8*32, dir, 8), NewSorter(recCodec, 8*32, dir, 8)}
	cur := 0
	for i := range in {
		s := halves[cur]
		if !s.Fits(&in[i]) {
			spilled := s.Spilled
			if err := s.SpillHeld(); err != nil {
				t.Fatal(err)
			}
			into.Adopt(s)
			if s.Len() != 0 || s.Spilled != 0 || into.Spilled == spilled {
				t.Fatalf("record %d: after SpillHeld and Adopt the half holds %d records, %d runs", i, s.Len(), s.Spilled)
			}
			cur = 1 - cur
			s = halves[cur]
		}
		spilled := s.Spilled
		if err := s.Add(&in[i]); err != nil {
			t.Fatal(err)
		}
		if s.Spilled != spilled {
			t.Fatalf("record %d: Add spilled where Fits said it would not", i)
		}
	}
	for _, s := range halves {
		if err := s.SpillHeld(); err != nil {
			t.Fatal(err)
		}
		into.Adopt(s)
	}
	if into.Spilled < 3000/32 || into.Added != len(in) {
		t.Fatalf("%d runs of %d records adopted, want %d records in runs of 32 at most", into.Spilled, into.Added, len(in))
	}
	st, err := into.Sorted()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var got []rec
	for r := st.Next(); r != nil; r = st.Next() {
		got = append(got, *r)
	}
	if err := st.Err(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("%d records back, not in the order one sorter gives", len(got))
	}
}
