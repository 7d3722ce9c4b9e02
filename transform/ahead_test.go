package transform

import (
	"errors"
	"testing"

	"optsync/extract/spill"
)

// failingStream hands n records, then ends on err; closed counts Close.
type failingStream struct {
	n, at  int
	err    error
	rec    int
	closed int
}

func (s *failingStream) Next() *int {
	if s.at == s.n {
		return nil
	}
	s.rec = s.at
	s.at++
	return &s.rec
}
func (s *failingStream) Err() error {
	if s.at == s.n {
		return s.err
	}
	return nil
}
func (s *failingStream) Close() { s.closed++ }

// A stream read ahead hands every record of its source, in order, across
// batches; then nil for good, and the source's error, if it ended on one;
// closing it closes its source once, read or not.
func TestReadAheadHandsEveryRecord(t *testing.T) {
	boom := errors.New("a run could not be read")
	for _, tc := range []struct {
		name string
		n    int
		err  error
	}{
		{"empty", 0, nil},
		{"one batch", aheadLen, nil},
		{"several batches and a part", 3*aheadLen + 5, nil},
		{"more than the batches in flight", (aheadBatches+3)*aheadLen + 1, nil},
		{"ended on an error", 2*aheadLen + 7, boom},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := &failingStream{n: tc.n, err: tc.err}
			a := readAhead[int](src)
			for i := range tc.n {
				r := a.Next()
				if r == nil || *r != i {
					t.Fatalf("record %d: %v", i, r)
				}
			}
			for range 2 {
				if r := a.Next(); r != nil {
					t.Fatalf("past the end: %d", *r)
				}
			}
			if err := a.Err(); err != tc.err {
				t.Fatalf("Err %v, want %v", err, tc.err)
			}
			a.Close()
			a.Close()
			if src.closed != 1 {
				t.Fatalf("source closed %d times", src.closed)
			}
		})
	}
}

// Closed before its end, or before it was read at all, it stops reading
// and closes its source.
func TestReadAheadClosedEarly(t *testing.T) {
	for _, read := range []int{0, 1, aheadLen + 3} {
		src := &failingStream{n: 100 * aheadLen}
		a := readAhead[int](src)
		for range read {
			a.Next()
		}
		a.Close()
		if src.closed != 1 || a.Next() != nil {
			t.Fatalf("read %d then closed: source closed %d times", read, src.closed)
		}
	}
	var _ spill.Stream[int] = readAhead[int](&failingStream{})
}
