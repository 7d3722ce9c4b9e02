package state

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"optsync/extract"
	"optsync/extract/spill"
	"optsync/transform"
	"optsync/transform/sorts"
)

// The PKey entries handed to the sort's goroutine all reach the sort, in
// order, past several batches and spilled runs: spilled as the sorter's
// budget fills, or, when the entries will not fit (rows of them), by the
// twin sorters on a goroutine of their own.
func TestPKeyCollectHandsEveryEntry(t *testing.T) {
	const n = 3*collectBatch + 17
	for _, tc := range []struct {
		name string
		rows int
		twin bool
	}{
		{"entries not announced", 0, false},
		{"more entries than the budget holds", n, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			pkeys := sorts.PKeys(4<<10, dir, false)
			defer pkeys.Close()
			halves := 0
			half := func() *spill.Sorter[PKeyEntry] { halves++; return sorts.PKeys(2<<10, dir, false) }
			c := newPKeyCollect(pkeys, half, 4<<10, tc.rows)
			for i := range n {
				if err := c.add(id(i).String()[:12], id(i)); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.finish(); err != nil {
				t.Fatal(err)
			}
			if pkeys.Spilled == 0 {
				t.Fatal("the sort never spilled: the test does not cover spilled runs")
			}
			if twin := halves > 0; twin != tc.twin {
				t.Fatalf("twin sorters made: %v, want %v", twin, tc.twin)
			}
			if tc.twin && pkeys.Len() != 0 {
				t.Fatalf("the twins' last records were left in memory (%d), not in a run", pkeys.Len())
			}
			s, err := pkeys.Sorted()
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			got, last := 0, ""
			for e := s.Next(); e != nil; e = s.Next() {
				if e.PKey < last || e.ID.String()[:12] != e.PKey {
					t.Fatalf("entry %d: %+v after %q", got, *e, last)
				}
				last = e.PKey
				got++
			}
			if got != n {
				t.Fatalf("%d entries sorted, want %d", got, n)
			}
		})
	}
}

// The twin sorters are for entries that will not fit: those that do stay
// in the one sorter, in memory, as before.
func TestPKeyCollectOutgrows(t *testing.T) {
	batch := []PKeyEntry{{PKey: "@0123456789", ID: id(1)}, {PKey: "@0123456789abcdef", ID: id(2)}} // 14 bytes of PKey on average
	half := func() *spill.Sorter[PKeyEntry] { return nil }
	for _, tc := range []struct {
		name   string
		half   func() *spill.Sorter[PKeyEntry]
		budget int64
		rows   int
		want   bool
	}{
		{"fits", half, 1000 * (transform.PKeySize + 14), 1000, false},
		{"one more than fits", half, 1000 * (transform.PKeySize + 14), 1001, true},
		{"no budget", half, 0, 1 << 20, false},
		{"no twin", nil, 1000, 1 << 20, false},
		{"rows not announced", half, 1000, 0, false},
	} {
		c := &pkeyCollect{twin: tc.half, budget: tc.budget, rows: tc.rows}
		if got := c.outgrows(batch); got != tc.want {
			t.Errorf("%s: outgrows %v, want %v", tc.name, got, tc.want)
		}
	}
}

// A sort that fails on its goroutine fails the decisions: the error comes
// back from a later add or from finish, never dropped; so does a run the
// twin sorters could not write.
func TestPKeyCollectReturnsTheSortsError(t *testing.T) {
	for _, rows := range []int{0, 1 << 20} {
		gone := filepath.Join(t.TempDir(), "gone")
		pkeys := sorts.PKeys(1, gone, false) // every add spills, to a folder that is not there
		defer pkeys.Close()
		twins := 0
		half := func() *spill.Sorter[PKeyEntry] { twins++; return sorts.PKeys(64, gone, false) }
		c := newPKeyCollect(pkeys, half, 1, rows)
		var addErr error
		for i := 0; i < 4*collectBatch && addErr == nil; i++ {
			addErr = c.add("@p", id(i))
		}
		err := c.finish()
		if err == nil {
			t.Fatalf("rows %d: finish: no error from a sort that could not spill", rows)
		}
		if addErr != nil && addErr != err {
			t.Fatalf("rows %d: add returned %v, finish %v", rows, addErr, err)
		}
		if again := c.add("@q", id(1)); again != err {
			t.Fatalf("rows %d: an add after finish returned %v, want %v", rows, again, err)
		}
		if (twins > 0) != (rows > 0) {
			t.Fatalf("rows %d: %d twin sorters made", rows, twins)
		}
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

// A write of the entries' file that fails on its goroutine fails the run:
// the error comes back from a later Add (the one that hands the next
// buffer, or the next batch to encode) or from reading the entries back.
func TestDirtyWriteErrorIsReturned(t *testing.T) {
	d := NewDirty(64, t.TempDir(), nil, nil, nil, 100)
	defer d.Close()
	f, err := os.CreateTemp(t.TempDir(), "dirty")
	if err != nil {
		t.Fatal(err)
	}
	d.f, d.w = f, bufio.NewWriterSize(failingWriter{}, 16)
	var addErr error
	for i := 0; i < 10*dirtyEncodeBatch && addErr == nil; i++ {
		e := transform.Entry{Kind: transform.EntryPair, ID: id(i), HasC: true, C: extract.Contact{ID: id(i), Modified: int64(i)}, CI: -1, PI: -1}
		addErr = d.Add(&e)
	}
	if addErr == nil {
		_, addErr = d.reader()
	}
	// the buffer handed off first failed while the next one filled
	if addErr == nil || !strings.Contains(addErr.Error(), "disk full") {
		t.Fatalf("writes that all failed: Add and reader returned %v, want the write's error", addErr)
	}
}
