package extract

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	"optsync/extract/spill"
	"optsync/fixtures/testkit"
)

// pkeysHeard is a PKeyTally that keeps what it hears.
type pkeysHeard struct{ got []string }

func (h *pkeysHeard) Add(pkey string) { h.got = append(h.got, pkey) }

// The tally hears nothing of a read its Profiles sorter holds whole, and
// every row's PKey once of one that spills: the rows held when it first
// spills, and each after.
func TestTallyHearsEveryPKeyOnceTheSortSpills(t *testing.T) {
	var rows []string
	var want []string
	for i := range 500 {
		pkey := fmt.Sprintf("@p%d", i%420) // some PKeys twice
		rows = append(rows, pkey+","+testkit.GUID(i+1)+",2026-11-20 09:00:00.000Z,false")
		want = append(want, pkey)
	}
	content := testkit.Profiles(rows...)
	path := filepath.Join(t.TempDir(), "c.csv")
	testkit.WriteFile(t, path, content)
	for _, budget := range []int64{0, 4 << 10} {
		r := testReading(t, &rejects{})
		r.Profiles = spill.NewSorter(benchProfileCodec(r.Keys.Keys()), budget, t.TempDir(), 56)
		heard := &pkeysHeard{}
		r.Tally = heard
		recs, _, err := r.Read(context.Background(), nil, []InputFile{{Path: path, Size: int64(len(content))}})
		if err != nil {
			t.Fatal(err)
		}
		spilled := recs.Profiles.Spilled > 0
		if spilled != (budget > 0) {
			t.Fatalf("budget %d: %d runs", budget, recs.Profiles.Spilled)
		}
		if !spilled {
			if len(heard.got) > 0 || recs.Tally != nil {
				t.Errorf("held whole: the tally heard %d PKeys", len(heard.got))
			}
		} else {
			slices.Sort(heard.got)
			if !slices.Equal(heard.got, slices.Sorted(slices.Values(want))) || recs.Tally != heard {
				t.Errorf("spilled: the tally heard %d PKeys of %d", len(heard.got), len(want))
			}
		}
		recs.Close()
	}
}
