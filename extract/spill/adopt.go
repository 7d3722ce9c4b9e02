package spill

// A caller that fills one sorter while another spills (its runs then
// adopted by the sorter read back) decides itself when a run is written:
// Add would write it where the budget fills, and wait for it.

// Fits says whether t can be added without Add spilling the records held.
func (s *Sorter[T]) Fits(t *T) bool {
	if s.budget <= 0 {
		return true
	}
	held := s.held + s.elem
	if s.codec.Size != nil {
		held += int64(s.codec.Size(t))
	}
	return held < s.budget && len(s.items)+1 < maxRun
}

// SpillHeld writes the records held as a run now (none held: nothing).
func (s *Sorter[T]) SpillHeld() error {
	if len(s.items) == 0 {
		return nil
	}
	return s.spill()
}

// Adopt moves o's runs to s, after those s has (Sorted merges them with
// them, ties in that order); what o holds in memory stays o's.
func (s *Sorter[T]) Adopt(o *Sorter[T]) {
	s.runs = append(s.runs, o.runs...)
	s.Spilled += o.Spilled
	s.Bytes += o.Bytes
	s.Added += o.Added - len(o.items)
	o.runs, o.Spilled, o.Bytes, o.Added = nil, 0, 0, len(o.items)
}
