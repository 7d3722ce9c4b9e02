package transform

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"optsync/extract"
)

// heldByPKey keeps, marks, drops and supersedes what PKeyStream does over
// the same rows sorted by PKey (the rows it keeps compared once both are
// sorted by contact, the superseded rows in the order reported), whatever
// the hash: a good one, one that sends every PKey to one value (every row
// goes through PKeyStream), one with few values (rows of different PKeys
// mistaken for shared), and over rows of every kind: shared PKeys, bad
// rows, unreadable times, rows linked to no contact, rows without a PKey.
func TestHeldByPKeyAsPKeyStream(t *testing.T) {
	tk := newTestKeys()
	hashes := map[string]func(string) uint64{
		"maphash": maphashPKey(),
		"one":     func(string) uint64 { return 0 },
		"few": func(s string) uint64 {
			var h uint64
			for _, c := range []byte(s) {
				h += uint64(c)
			}
			return h % 3 << 60
		},
	}
	rnd := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{0, 1, 2, 50, 3000} {
		for _, pkeys := range []int{1, 7, n/2 + 1, 10 * n} {
			rows := make([]extract.Profile, n)
			for i := range rows {
				p := extract.Profile{ID: id(byte(1 + rnd.IntN(40))), Modified: t09 + int64(rnd.IntN(4))*1000,
					File: uint16(rnd.IntN(2)), Line: int32(i + 2)}
				p.PKey = tk.pk(fmt.Sprintf("@h%d", rnd.IntN(pkeys+1)))
				switch rnd.IntN(12) {
				case 0:
					p.PKey = 0
					p.Bad = true
				case 1:
					p.Bad = true
				case 2:
					p.Modified, p.Bad = extract.NoTime, true
				case 3:
					p.Modified = extract.NoTime // an unlinked row's time is not a bad row's
					p.ID, p.Unlinked = extract.ID{}, true
				case 4, 5:
					p.ID, p.Unlinked = extract.ID{}, true
				case 6:
					p.Modified = extract.NoTime // not marked bad by the read: the rule marks it
				}
				rows[i] = p
			}
			// what PKeyStream makes of them
			want := slices.Clone(rows)
			slices.SortStableFunc(want, func(a, b extract.Profile) int { return ProfilePKeyOrder(tk.ks, &a, &b) })
			var wantSup []Superseded
			i := 0
			s := NewPKeyStream(func() *extract.Profile {
				if i == len(want) {
					return nil
				}
				i++
				return &want[i-1]
			}, tk.ks, nil, func(s Superseded) { wantSup = append(wantSup, s) }, nil)
			kept := want[:0]
			for p := s.Next(); p != nil; p = s.Next() {
				kept = append(kept, *p)
			}
			slices.SortFunc(kept, func(a, b extract.Profile) int { return ProfileContactOrder(tk.ks, &a, &b) })
			for name, hash := range hashes {
				got := slices.Clone(rows)
				rnd.Shuffle(len(got), func(i, j int) { got[i], got[j] = got[j], got[i] })
				var sup []Superseded
				w, unlinked := heldByPKey(got, tk.ks, func(s Superseded) { sup = append(sup, s) }, hash)
				if slices.ContainsFunc(got[w:], func(p extract.Profile) bool { return p != extract.Profile{} }) {
					t.Errorf("%s, %d rows, %d PKeys: rows past the kept ones not cleared", name, n, pkeys)
				}
				got = got[:w]
				slices.SortFunc(got, func(a, b extract.Profile) int { return ProfileContactOrder(tk.ks, &a, &b) })
				if !slices.Equal(got, kept) {
					t.Errorf("%s, %d rows, %d PKeys: kept\n%v\nwant\n%v", name, n, pkeys, keys(got), keys(kept))
				}
				if !slices.Equal(sup, wantSup) {
					t.Errorf("%s, %d rows, %d PKeys: superseded\n%+v\nwant\n%+v", name, n, pkeys, sup, wantSup)
				}
				if unlinked != s.Unlinked {
					t.Errorf("%s, %d rows, %d PKeys: %d unlinked, want %d", name, n, pkeys, unlinked, s.Unlinked)
				}
			}
		}
	}
}

// sharedPKeys finds every row whose PKey another row has, each once, and
// no row whose PKey is its own when the hash tells them apart.
func TestSharedPKeys(t *testing.T) {
	tk := newTestKeys()
	rows := []extract.Profile{{PKey: tk.pk("@a")}, {PKey: tk.pk("@b")}, {}, {PKey: tk.pk("@a")}, {PKey: tk.pk("@c")},
		{PKey: tk.pk("@b")}, {PKey: tk.pk("@a")}, {}}
	if got := sharedPKeys(rows, tk.ks, maphashPKey()); !slices.Equal(got, []int{0, 1, 3, 5, 6}) {
		t.Errorf("shared %v, want [0 1 3 5 6]", got)
	}
	if got := sharedPKeys(rows, tk.ks, func(string) uint64 { return 1 << 63 }); !slices.Equal(got, []int{0, 1, 3, 4, 5, 6}) {
		t.Errorf("one hash: shared %v, want every row with a PKey", got)
	}
	if got := sharedPKeys(nil, tk.ks, maphashPKey()); len(got) != 0 {
		t.Errorf("no rows: shared %v", got)
	}
}
