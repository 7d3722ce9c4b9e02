package transform

import (
	"encoding/binary"
	"math/rand/v2"
	"slices"
	"testing"
	"unsafe"

	"optsync/extract"
	"optsync/extract/spill"
)

// heldSorts sorts profiles held in memory as the run's sorts do
// (transform/sorts.Identity).
type heldSorts struct{ Sorts }

func (heldSorts) HeldByContact(ks *extract.Keys, held []extract.Profile) *spill.Sorter[extract.Profile] {
	return spill.FromSlice(ProfileCodec(ks, true), 0, "", ProfileSize, held)
}

// sortHeld, which sorts two parts at once, leaves the rows in the order one
// sort by contact does, whatever the ids: random, ascending (one part
// would hold them all without the sampled pivot), a few ids many times,
// one id for all.
func TestSortHeldAsOneSort(t *testing.T) {
	tk := newTestKeys()
	rnd := rand.New(rand.NewPCG(5, 6))
	id := func(hi, lo uint64) extract.ID {
		var x extract.ID
		binary.BigEndian.PutUint64(x[:], hi)
		binary.BigEndian.PutUint64(x[8:], lo)
		return x
	}
	shapes := map[string]func(i int) extract.ID{
		"random":    func(int) extract.ID { return id(rnd.Uint64(), rnd.Uint64()) },
		"ascending": func(i int) extract.ID { return id(uint64(i), 0) },
		"low bytes": func(i int) extract.ID { return id(0, uint64(i)) }, // one key for all: the sort's compare decides
		"few":       func(int) extract.ID { return id(uint64(rnd.IntN(5)), uint64(rnd.IntN(3))) },
		"one":       func(int) extract.ID { return id(7, 7) },
	}
	for name, shape := range shapes {
		for _, n := range []int{0, 1, 100, 1<<12 - 1, 1 << 12, 20000} {
			rows := make([]extract.Profile, n)
			for i := range rows {
				rows[i] = extract.Profile{ID: shape(i), PKey: tk.pk(string(rune('a' + rnd.IntN(26)))), File: uint16(rnd.IntN(2)), Line: int32(i)}
			}
			rnd.Shuffle(n, func(i, j int) { rows[i], rows[j] = rows[j], rows[i] })
			want := slices.Clone(rows)
			slices.SortStableFunc(want, func(a, b extract.Profile) int { return ProfileContactOrder(tk.ks, &a, &b) })
			sortHeld(rows, heldSorts{}, tk.ks)
			same := func(a, b extract.Profile) bool {
				pa, pb := tk.pkOf(a.PKey), tk.pkOf(b.PKey)
				a.PKey, b.PKey = 0, 0
				return a == b && pa == pb
			}
			if !slices.EqualFunc(rows, want, same) {
				t.Errorf("%s, %d rows: not in the order of one sort by contact", name, n)
			}
			// The PKeys' bytes follow one another in the rows' order, in
			// a few blocks per part sorted (a dozen at most here: they
			// grow from 256 bytes), not one place a row.
			breaks := 0
			for i := 1; i < n; i++ {
				at, prev := tk.pkOf(rows[i].PKey), tk.pkOf(rows[i-1].PKey)
				if uintptr(unsafe.Pointer(unsafe.StringData(at))) != uintptr(unsafe.Pointer(unsafe.StringData(prev)))+uintptr(len(prev)) {
					breaks++
				}
			}
			if breaks > 24 {
				t.Errorf("%s, %d rows: the PKeys' bytes are in %d places, not in the rows' order", name, n, breaks+1)
			}
		}
	}
}

// The split puts every row below the pivot ahead of the rest, and halves
// ids spread evenly.
func TestSplitByContact(t *testing.T) {
	rnd := rand.New(rand.NewPCG(8, 9))
	rows := make([]extract.Profile, 50000)
	for i := range rows {
		binary.BigEndian.PutUint64(rows[i].ID[:], rnd.Uint64())
	}
	m := splitByContact(rows)
	if m < len(rows)/4 || m > len(rows)*3/4 {
		t.Fatalf("split at %d of %d", m, len(rows))
	}
	maxLeft := slices.MaxFunc(rows[:m], func(a, b extract.Profile) int { return a.ID.Compare(b.ID) })
	minRight := slices.MinFunc(rows[m:], func(a, b extract.Profile) int { return a.ID.Compare(b.ID) })
	if idKey(&maxLeft.ID) >= idKey(&minRight.ID) {
		t.Errorf("a row of the first part (%v) does not sort before the second's (%v)", maxLeft.ID, minRight.ID)
	}
}
