package spill

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestAheadSortsAsASorter: records added to an Ahead come back as a
// Sorter's would (in order, equal ones in the order added), whatever the
// budget: all in memory, halves written while the next fills, a record
// alone past a half; and its runs leave no file in the folder.
func TestAheadSortsAsASorter(t *testing.T) {
	in, want := randomRecs(5, 6, 3000, 200)
	keyed := recCodec
	keyed.Key = func(r *rec) uint64 { return uint64(r.key) >> 3 }
	for _, tc := range []struct {
		name          string
		budget        int64
		handed        bool // halves were written while adding
		inMemory      bool
		minRunsOnDisk int
	}{
		{"no budget", 0, false, true, 0},
		{"within the budget", 1 << 20, false, true, 0},
		{"past half the budget once", 8 * 2000, true, false, 2},
		{"many halves", 8 * 64, true, false, 90},
		{"a record past a half", 8, false, false, 3000},
	} {
		for _, codec := range []Codec[rec]{recCodec, keyed} {
			t.Run(tc.name, func(t *testing.T) {
				dir := t.TempDir()
				a := AheadOf(NewSorter(codec, tc.budget, dir, 8))
				a.Reserve(len(in))
				for i := range in {
					if err := a.Add(&in[i]); err != nil {
						t.Fatal(err)
					}
				}
				s, err := a.Finish()
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				if (a.Handed > 0) != tc.handed || a.Written != a.Handed {
					t.Fatalf("%d halves handed, %d written", a.Handed, a.Written)
				}
				if left, _ := os.ReadDir(dir); len(left) > 0 {
					t.Fatalf("named files in the folder: %v", left)
				}
				if _, ok := s.InMemory(); ok != tc.inMemory {
					t.Fatalf("in memory: %v", ok)
				}
				if len(s.runs) < tc.minRunsOnDisk || s.Added != len(in) {
					t.Fatalf("%d runs, %d added", len(s.runs), s.Added)
				}
				got := sortedAll(t, s)
				if !slices.Equal(got, want) {
					t.Fatalf("out of order (%d records, %d runs)", len(got), s.Spilled)
				}
			})
		}
	}
}

// TestAheadClosedWhileWriting: an Ahead closed with a half still being
// written waits for it and lets go of every run.
func TestAheadClosedWhileWriting(t *testing.T) {
	a := AheadOf(NewSorter(recCodec, 8*64, t.TempDir(), 8))
	for i := range 1000 {
		r := rec{key: uint32(i * 7 % 13), seq: uint32(i)}
		if err := a.Add(&r); err != nil {
			t.Fatal(err)
		}
	}
	if a.Handed == 0 {
		t.Fatal("no half handed")
	}
	a.Close()
	if a.writing != nil || len(a.runs) != 0 {
		t.Fatal("a write or runs left")
	}
	for _, h := range a.halves {
		if len(h.runs) != 0 || h.items != nil {
			t.Fatal("a half still holds runs or records")
		}
	}
}

// TestAheadTellsAFailedWrite: a half that cannot be written (its folder
// gone) is an error from the Add that hands the next half, or from
// Finish, never a run silently missing.
func TestAheadTellsAFailedWrite(t *testing.T) {
	for _, n := range []int{100, 1000} { // one half handed, or several
		dir := filepath.Join(t.TempDir(), "gone")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		a := AheadOf(NewSorter(recCodec, 8*128, dir, 8))
		if err := os.Remove(dir); err != nil {
			t.Fatal(err)
		}
		var err error
		for i := 0; i < n && err == nil; i++ {
			r := rec{key: uint32(i % 17), seq: uint32(i)}
			err = a.Add(&r)
		}
		if err == nil {
			var s *Sorter[rec]
			if s, err = a.Finish(); err == nil {
				s.Close()
			}
		}
		if err == nil {
			t.Fatalf("%d records: no error", n)
		}
		a.Close()
	}
}
