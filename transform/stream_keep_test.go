package transform

import (
	"fmt"
	"testing"

	"optsync/extract"
)

// TestPKeyStreamKeepInMark: with KeepIn, what a returned row names stays
// valid when the caller lets go of everything before Mark as soon as it
// has the row; a PKey whose rows go on in many rows (a profile kept out,
// every contact it named kept out with it) fills several blocks as its
// group is copied, before its first row is returned.
func TestPKeyStreamKeepInMark(t *testing.T) {
	ks := extract.NewKeys()
	src := ks.Writer()
	var rows []extract.Profile
	times := func(i int) *[extract.MaxFields]int64 {
		var x [extract.MaxFields]int64
		for f := range x {
			x[f] = int64(i*100 + f)
		}
		return &x
	}
	add := func(pkey string, contact, modified int, bad bool) {
		i := len(rows)
		id := extract.ID{0: byte(contact >> 8), 1: byte(contact), 15: 1}
		rows = append(rows, extract.Profile{ID: id, PKey: src.Put(pkey), FieldModified: src.PutTimes(times(i)),
			Modified: int64(modified), Line: int32(i + 2), Bad: bad})
	}
	for g := range 40 {
		pkey := fmt.Sprintf("@%03d", g)
		if g%7 == 3 {
			// 1500 rows of one PKey, each naming another contact, the
			// latest bad: 1500 rows go on, about 100 KB of field times
			for k := range 1500 {
				add(pkey, 1000*g+k, k, k == 1499)
			}
			continue
		}
		add(pkey, 1000*g, 1, false)
	}
	i := 0
	s := NewPKeyStream(func() *extract.Profile {
		if i == len(rows) {
			return nil
		}
		i++
		return &rows[i-1]
	}, ks, nil, func(Superseded) {}, nil)
	w := ks.Writer()
	s.KeepIn(w)
	n := 0
	for p := s.Next(); p != nil; p = s.Next() {
		w.ReleaseBefore(s.Mark())
		want := rows[p.Line-2]
		var got [extract.MaxFields]int64
		if !ks.Times(p.FieldModified, &got) || got != *times(int(p.Line - 2)) {
			t.Fatalf("line %d: field times %v", p.Line, got)
		}
		if !p.PKey.Empty() && ks.Get(p.PKey) != ks.Get(want.PKey) {
			t.Fatalf("line %d: PKey %q", p.Line, ks.Get(p.PKey))
		}
		n++
	}
	if n < 6*1500 {
		t.Fatalf("%d rows went on", n)
	}
}
