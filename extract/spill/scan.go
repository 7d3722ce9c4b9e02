package spill

import (
	"io"
	"math"
)

// Scan hands fn every record added so far, held in memory or in a run on
// disk, in no order to rely on, and leaves the sorter as it was: adding
// may go on, and Sorted merges every run after. A run is read with pread,
// its file's offset untouched and nothing of it given back. fn's record
// is valid until fn returns; its first error ends the scan.
func (s *Sorter[T]) Scan(fn func(*T) error) error {
	for i := range s.items {
		if err := fn(&s.items[i]); err != nil {
			return err
		}
	}
	if len(s.runs) == 0 {
		return nil
	}
	r := &runReader[T]{codec: s.codec, buf: make([]byte, runBufferOf(s.budget, 1))}
	for _, f := range s.runs {
		r.f, r.src = f, io.NewSectionReader(f, 0, math.MaxInt64)
		r.pos, r.end, r.eof, r.err = 0, 0, false, nil
		for r.advance() {
			if err := fn(&r.cur); err != nil {
				return err
			}
		}
		if r.err != nil {
			return r.err
		}
	}
	return nil
}
