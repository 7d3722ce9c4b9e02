package spill

// restParts is how many records the last run must hold before Sorted
// sorts and writes it as two, one on each core.
const restParts = 1 << 14

// spillRest writes what memory holds when adding ends, the last of a
// spilling sort's runs, as two runs sorted and written at once (the first
// half of the records added, then the second: the merge takes equal
// records from the earlier run first, so the order is a single run's). It
// is done before anything is read back, and nothing else ran beside it
// (the sort by contact's last run: the rule by PKey is done): a core sat
// idle while the other sorted and wrote up to a whole budget's worth.
func (s *Sorter[T]) spillRest() error {
	n := len(s.items)
	if n < restParts {
		return s.spill()
	}
	parts := [2]*Sorter[T]{
		{codec: s.codec, budget: s.budget, dir: s.dir, elem: s.elem, items: s.items[: n/2 : n/2]},
		{codec: s.codec, budget: s.budget, dir: s.dir, elem: s.elem, items: s.items[n/2:]},
	}
	var errs [2]error
	inParallel(2, func(w int) { errs[w] = parts[w].spill() })
	for i, p := range parts {
		if errs[i] == nil {
			s.runs = append(s.runs, p.runs...)
			s.Spilled += p.Spilled
			s.Bytes += p.Bytes
		} else {
			p.Close()
		}
	}
	clear(s.items)
	s.items = s.items[:0]
	s.sorted, s.held = false, 0
	if errs[0] != nil {
		return errs[0]
	}
	return errs[1]
}
