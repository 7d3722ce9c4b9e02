package state

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"optsync/extract"
	"optsync/transform"
	"optsync/transform/sorts"
)

// The PKey entries handed to the sort's goroutine all reach the sort, in
// order, past several batches and spilled runs.
func TestPKeyCollectHandsEveryEntry(t *testing.T) {
	pkeys := sorts.PKeys(4<<10, t.TempDir(), false)
	defer pkeys.Close()
	c := newPKeyCollect(pkeys)
	const n = 3*collectBatch + 17
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
}

// A sort that fails on its goroutine fails the decisions: the error comes
// back from a later add or from finish, never dropped.
func TestPKeyCollectReturnsTheSortsError(t *testing.T) {
	pkeys := sorts.PKeys(1, filepath.Join(t.TempDir(), "gone"), false) // every add spills, to a folder that is not there
	defer pkeys.Close()
	c := newPKeyCollect(pkeys)
	var addErr error
	for i := 0; i < 4*collectBatch && addErr == nil; i++ {
		addErr = c.add("@p", id(i))
	}
	err := c.finish()
	if err == nil {
		t.Fatal("finish: no error from a sort that could not spill")
	}
	if addErr != nil && addErr != err {
		t.Fatalf("add returned %v, finish %v", addErr, err)
	}
	if again := c.add("@q", id(1)); again != err {
		t.Fatalf("an add after finish returned %v, want %v", again, err)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

// A write of the entries' file that fails on its goroutine fails the run:
// the error comes back from the Add that hands the next buffer.
func TestDirtyWriteErrorIsReturned(t *testing.T) {
	d := NewDirty(64, t.TempDir(), nil, nil, nil, 100)
	defer d.Close()
	f, err := os.CreateTemp(t.TempDir(), "dirty")
	if err != nil {
		t.Fatal(err)
	}
	d.f, d.w = f, bufio.NewWriterSize(failingWriter{}, 16)
	var addErr error
	for i := 0; i < 100 && addErr == nil; i++ {
		e := transform.Entry{Kind: transform.EntryPair, ID: id(i), HasC: true, C: extract.Contact{ID: id(i), Modified: int64(i)}, CI: -1, PI: -1}
		addErr = d.Add(&e)
	}
	// the buffer handed off first failed while the next one filled
	if addErr == nil || !strings.Contains(addErr.Error(), "disk full") {
		t.Fatalf("writes that all failed: Add returned %v, want the write's error", addErr)
	}
}
