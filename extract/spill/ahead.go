package spill

import "os"

// Ahead sorts as a Sorter does, but writes its runs on a goroutine of
// their own while the records after them are added: its budget is held in
// two halves, one filling while the other is sorted and written. A Sorter
// stops adding while it writes a run, and the caller (the merge by PKey
// and its rule, feeding the sort by contact) waited on it with the second
// core idle: the runs' sorting and writing were half of a spilling
// backfill's identify phase. The records in memory are as many as the
// Sorter's budget held; the runs are twice as many, each half as long.
type Ahead[T any] struct {
	halves [2]*Sorter[T]
	cur    int // the half being filled
	// runs are the runs written, in the order written: earlier runs hold
	// earlier additions, as a Sorter's.
	runs []*os.File
	// writing, when set, is the other half's write: its first error.
	writing chan error
	// Handed counts the halves handed to be written, Written those whose
	// runs are on disk (a caller lets go of what they pointed to).
	Handed, Written int
}

// AheadOf makes an Ahead of s, an empty sorter: its codec, folder and
// budget, halved.
func AheadOf[T any](s *Sorter[T]) *Ahead[T] {
	half := s.budget / 2
	if s.budget > 0 {
		half = max(half, 1)
	}
	a := &Ahead[T]{}
	for i := range a.halves {
		a.halves[i] = NewSorter(s.codec, half, s.dir, int(s.elem))
		a.halves[i].want = s.want
	}
	return a
}

// Reserve announces n records to come (Sorter.Reserve): each half makes
// room for as many as it holds.
func (a *Ahead[T]) Reserve(n int) {
	for _, h := range a.halves {
		h.Reserve(n)
	}
}

// Add keeps a copy of t. When t does not fit beside the records the
// filling half holds, that half is handed to be written (once the other
// half's write is done) and t starts the other.
func (a *Ahead[T]) Add(t *T) error {
	s := a.halves[a.cur]
	if s.budget > 0 && len(s.items) > 0 {
		size := s.elem
		if s.codec.Size != nil {
			size += int64(s.codec.Size(t))
		}
		if s.held+size >= s.budget {
			if err := a.hand(); err != nil {
				return err
			}
			s = a.halves[a.cur]
		}
	}
	// spills itself only when one record is past the half
	return s.Add(t)
}

// hand starts the write of the filling half, once the other's is done,
// and turns to the other.
func (a *Ahead[T]) hand() error {
	if err := a.wait(); err != nil {
		return err
	}
	full := a.halves[a.cur]
	done := make(chan error, 1)
	go func() { done <- full.spill() }()
	a.writing = done
	a.cur ^= 1
	a.Handed++
	return nil
}

// wait waits for the write of the half handed last, if any, and takes its
// runs.
func (a *Ahead[T]) wait() error {
	if a.writing == nil {
		return nil
	}
	err := <-a.writing
	a.writing = nil
	h := a.halves[a.cur^1]
	a.runs = append(a.runs, h.runs...)
	h.runs = nil
	a.Written++
	return err
}

// Finish ends adding: once the write under way is done, a Sorter holds
// every run written and the records of the filling half (in memory when
// no run was written, as a Sorter within the budget would be).
func (a *Ahead[T]) Finish() (*Sorter[T], error) {
	if err := a.wait(); err != nil {
		a.Close()
		return nil, err
	}
	s := a.halves[a.cur]
	other := a.halves[a.cur^1]
	s.runs = append(append(a.runs, other.runs...), s.runs...)
	s.Spilled += other.Spilled
	s.Bytes += other.Bytes
	s.Added += other.Added
	a.runs, other.runs, a.halves = nil, nil, [2]*Sorter[T]{}
	return s, nil
}

// Close lets go of whatever the halves and the runs hold, waiting for a
// write under way.
func (a *Ahead[T]) Close() {
	if a.writing != nil {
		<-a.writing
		a.writing = nil
		a.runs = append(a.runs, a.halves[a.cur^1].runs...)
		a.halves[a.cur^1].runs = nil
	}
	for _, f := range a.runs {
		f.Close()
	}
	for _, h := range a.halves {
		h.Close()
	}
	a.runs = nil
}
