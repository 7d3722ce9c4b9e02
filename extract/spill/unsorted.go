package spill

// Unsorted returns the records held, in the order added, when none was
// spilled: a caller that needs them in no order of the sorter's (or in one
// it works out for itself, as the rule by PKey of rows held in memory does)
// works on them in place, where InMemory sorts them first. The sorter
// then holds them as the caller leaves them.
func (s *Sorter[T]) Unsorted() ([]T, bool) {
	if len(s.runs) > 0 {
		return nil, false
	}
	s.sorted = false // the caller may move them
	return s.items, true
}
