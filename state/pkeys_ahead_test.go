package state

import (
	"errors"
	"fmt"
	"testing"

	"optsync/extract/spill"
	"optsync/transform"
)

// The PKey index's entries read ahead are the sorted stream's, in its
// order, over many batches, sorted in memory and merged from runs on disk.
func TestPKeysAheadGivesTheSortedEntries(t *testing.T) {
	const n = 3*pkeysAheadLen + 9
	for _, budget := range []int64{0, 8 << 10} {
		fill := func() *spill.Sorter[PKeyEntry] {
			s := spill.NewSorter(transform.PKeyCodec(false), budget, t.TempDir(), transform.PKeySize)
			for i := range n {
				e := PKeyEntry{PKey: fmt.Sprintf("@p%07d", (i*7919)%n), ID: id(i)}
				if err := s.Add(&e); err != nil {
					t.Fatal(err)
				}
			}
			return s
		}
		stream, err := fill().Sorted()
		if err != nil {
			t.Fatal(err)
		}
		var want []PKeyEntry
		for e := stream.Next(); e != nil; e = stream.Next() {
			want = append(want, *e)
		}
		stream.Close()
		a := startPKeysAhead(fill().Sorted)
		for i := 0; ; i++ {
			pkey, got, ok, err := a.next()
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				if i != len(want) || len(want) != n {
					t.Fatalf("budget %d: %d entries read ahead, %d sorted, want %d", budget, i, len(want), n)
				}
				break
			}
			if i >= len(want) || pkey != want[i].PKey || got != want[i].ID {
				t.Fatalf("budget %d: entry %d is (%s, %s)", budget, i, pkey, got)
			}
		}
		if !a.ready() {
			t.Fatalf("budget %d: every entry read, but not ready", budget)
		}
		a.stop()
	}
}

// A sort that fails is the first entry's error; a commit that ends early
// stops the reading ahead, which closes its stream.
func TestPKeysAheadErrorsAndStops(t *testing.T) {
	failed := errors.New("sorting failed")
	a := startPKeysAhead(func() (spill.Stream[PKeyEntry], error) { return nil, failed })
	if _, _, ok, err := a.next(); ok || !errors.Is(err, failed) {
		t.Fatalf("a failed sort: ok %v, err %v", ok, err)
	}
	a.stop()

	s := spill.NewSorter(transform.PKeyCodec(false), 0, t.TempDir(), transform.PKeySize)
	for i := range 10 * pkeysAheadLen {
		e := PKeyEntry{PKey: fmt.Sprintf("@p%07d", i), ID: id(i)}
		if err := s.Add(&e); err != nil {
			t.Fatal(err)
		}
	}
	closed := make(chan struct{})
	a = startPKeysAhead(func() (spill.Stream[PKeyEntry], error) {
		st, err := s.Sorted()
		return closeNotes{st, closed}, err
	})
	if _, _, ok, err := a.next(); !ok || err != nil {
		t.Fatalf("first entry: ok %v, err %v", ok, err)
	}
	a.stop()
	a.stop()
	select {
	case <-closed:
	default:
		t.Fatal("stopped, but the stream was not closed")
	}
}

type closeNotes struct {
	spill.Stream[PKeyEntry]
	closed chan struct{}
}

func (c closeNotes) Close() {
	c.Stream.Close()
	close(c.closed)
}
