package transform

import (
	"errors"
	"fmt"
	"testing"

	"optsync/extract"
)

// fakeProfiles streams n profiles whose PKeys a writer of ks holds until
// the next is read (as a run's reader does), then fails with err.
type fakeProfiles struct {
	ks   *extract.Keys
	w    *extract.KeyWriter
	n, i int
	err  error
	cur  extract.Profile
}

func (f *fakeProfiles) Next() *extract.Profile {
	if f.i == f.n {
		return nil
	}
	f.w.Reset() // what the row before named is gone
	f.cur = extract.Profile{ID: extract.ID{0: byte(f.i)}, PKey: f.w.Put(fmt.Sprintf("@p%07d", f.i)), Line: int32(f.i)}
	f.i++
	return &f.cur
}

func (f *fakeProfiles) Err() error { return f.err }
func (f *fakeProfiles) Close()     {}

// TestPKeyRowsHandsTheStream: the rows read on the other goroutine come in
// the stream's order, each naming its own PKey while the row after it is
// read (the stream's writer has let go of it by then), whatever the count
// (none, less than a batch, whole batches, more); the stream's error comes
// from Err once the rows end.
func TestPKeyRowsHandsTheStream(t *testing.T) {
	for _, n := range []int{0, 1, rowBatchRows - 1, rowBatchRows, rowBatchRows*rowBatches*3 + 7} {
		for _, want := range []error{nil, errors.New("a run cannot be read")} {
			ks := extract.NewKeys()
			f := &fakeProfiles{ks: ks, w: ks.Writer(), n: n, err: want}
			r := readPKeyRows(f, ks)
			var prev *extract.Profile
			got := 0
			for p := r.Next(); p != nil; p = r.Next() {
				if prev != nil && ks.Get(prev.PKey) != fmt.Sprintf("@p%07d", got-1) {
					t.Fatalf("%d rows: row %d names %q once the next is read", n, got-1, ks.Get(prev.PKey))
				}
				if p.Line != int32(got) || ks.Get(p.PKey) != fmt.Sprintf("@p%07d", got) {
					t.Fatalf("%d rows: row %d is line %d, PKey %q", n, got, p.Line, ks.Get(p.PKey))
				}
				prev = p
				got++
			}
			if got != n {
				t.Fatalf("%d rows: %d handed", n, got)
			}
			if r.Next() != nil {
				t.Fatalf("%d rows: a row after the end", n)
			}
			if err := r.Err(); !errors.Is(err, want) {
				t.Fatalf("%d rows: error %v, want %v", n, err, want)
			}
			r.Close()
		}
	}
}

// TestPKeyRowsStopsWhenClosed: a reader closed before the rows end (the
// rule met an error) stops the goroutine reading, which then reads no
// more of the stream (it may be closed after).
func TestPKeyRowsStopsWhenClosed(t *testing.T) {
	ks := extract.NewKeys()
	f := &fakeProfiles{ks: ks, w: ks.Writer(), n: 1 << 20}
	r := readPKeyRows(f, ks)
	if r.Next() == nil {
		t.Fatal("no row")
	}
	r.Close()
	read := f.i
	if read >= f.n {
		t.Fatalf("the whole stream was read (%d rows)", read)
	}
	select {
	case <-r.done:
	default:
		t.Fatal("the goroutine reading is still running")
	}
	if f.i != read {
		t.Fatal("rows read after Close")
	}
}
