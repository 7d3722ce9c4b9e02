package transform

import (
	"cmp"
	"errors"
	"slices"

	"optsync/extract"
	"optsync/extract/spill"
)

// apart is the rule by PKey over profiles a read spilled in contact order
// (IdentifyOptions.ProfilesByContact), every row's PKey counted in shared:
// a scan of the sort takes out the rows whose PKey another may share, the
// rule settles those by PKey as it settles any rows (byPKey: held, or
// sorted by PKey on disk and sorted again by contact), and every other row
// is passed on as the rule passes a row alone, in the sort's own order,
// merged with what the rule kept of the shared ones. The rows come out in
// ProfileContactOrder, which tells every two rows apart and which the rule
// leaves each row's place in, so in the order the whole sort by PKey and
// the sort again by contact gave.
func (id *Identity) apart(profiles *spill.Sorter[extract.Profile], o IdentifyOptions, shared *SharedPKeys) (spill.Stream[extract.Profile], error) {
	shared.Settle()
	side := o.Sorts.ProfilesByPKey(o.Keys)
	sideKeys := o.Keys.Writer()
	var taken []takenRow
	err := profiles.Scan(func(p *extract.Profile) error {
		if !shared.Shared(o.Keys.Get(p.PKey)) {
			return nil
		}
		taken = append(taken, takenRow{p.ID, p.File, p.Line})
		return addOwn(side, sideKeys, o.Keys, p) // the scan's rows are valid until the next
	})
	if err != nil {
		side.Close()
		sideKeys.Reset()
		return nil, err
	}
	main, err := profiles.Sorted()
	if err != nil {
		side.Close()
		sideKeys.Reset()
		return nil, err
	}
	o.ReadKeys.Reset() // every row of the read is on disk, the shared ones copied
	so := o
	so.ReadKeys, so.ProfilesByContact, so.Shared = sideKeys, false, nil
	byContact, held, _, err := id.byPKey(side, so, nil)
	if err != nil {
		main.Close()
		return nil, err
	}
	var kept spill.Stream[extract.Profile]
	if byContact == nil {
		kept = spill.Held(held) // laid out in blocks of their own (sortHeld)
	} else {
		_, inMemory := byContact.InMemory()
		if kept, err = byContact.Sorted(); err != nil {
			byContact.Close()
			main.Close()
			return nil, err
		}
		if !inMemory {
			id.byContactKeys.Reset() // read back from disk
			id.byContactKeys = nil
		}
	}
	// by contact, as main's rows come: each is checked against the few
	// taken of its contact, in one pass
	slices.SortFunc(taken, func(a, b takenRow) int {
		return cmp.Or(a.id.Compare(b.id), cmp.Compare(a.file, b.file), cmp.Compare(a.line, b.line))
	})
	return &apartStream{main: main, kept: kept, taken: taken, ks: o.Keys, id: id}, nil
}

// takenRow is a row of main the rule settles with others of its PKey.
type takenRow struct {
	id   extract.ID
	file uint16
	line int32
}

// resortByPKey is what a read sorted by contact sorted again by PKey, for
// a rule that must read every row in PKey order: the rows in memory in
// place, the order added (ProfilePKeyOrder tells every two rows apart, so
// the order they come in does not show), the rows of a spilled sort
// through a sort by PKey of their own. keys is the writer of what the
// rows it holds name (o.ReadKeys, or one of its own), to let go of once
// they are laid out again or on disk.
func resortByPKey(profiles *spill.Sorter[extract.Profile], o IdentifyOptions) (_ *spill.Sorter[extract.Profile], keys *extract.KeyWriter, _ error) {
	if items, ok := profiles.Unsorted(); ok {
		return spill.FromSlice(ProfileCodec(o.Keys, false), 0, "", ProfileSize, items), o.ReadKeys, nil
	}
	again := o.Sorts.ProfilesByPKey(o.Keys)
	rows, err := profiles.Sorted()
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	o.ReadKeys.Reset() // every row read is on disk
	w := o.Keys.Writer()
	for p := rows.Next(); p != nil; p = rows.Next() {
		if err := addOwn(again, w, o.Keys, p); err != nil {
			again.Close()
			return nil, nil, err
		}
	}
	if err := rows.Err(); err != nil {
		again.Close()
		return nil, nil, err
	}
	return again, w, nil
}

// addOwn adds to s a copy of p whose PKey and field times are copied into
// w (what p names, in ks, may go once it is added), and lets go of what w
// holds once s spills: nothing names it then, the rows on disk.
func addOwn(s *spill.Sorter[extract.Profile], w *extract.KeyWriter, ks *extract.Keys, p *extract.Profile) error {
	q := *p
	q.PKey, q.FieldModified = w.Copy(ks, p.PKey), w.CopyTimes(ks, p.FieldModified)
	n := s.Spilled
	if err := s.Add(&q); err != nil {
		return err
	}
	if s.Spilled != n {
		w.Recycle()
	}
	return nil
}

// apartStream merges the read's rows the rule passes alone (main, less the
// shared ones) with those it kept of the shared ones (kept).
type apartStream struct {
	main, kept spill.Stream[extract.Profile]
	taken      []takenRow // the rows of main the rule settles with others, by contact
	ti         int        // taken[:ti] are of contacts before main's
	ks         *extract.Keys
	id         *Identity // counts the rows alone without a contact (Unlinked)
	// m and k are each side's next row (nil: it ended); fromMain says
	// which one Next returned last.
	m, k     *extract.Profile
	started  bool
	fromMain bool
	row      extract.Profile // main's row alone, as the rule passes it
}

// alone is the next row of main the rule passes on alone (passAlone), a
// copy in row; nil at the end.
func (a *apartStream) alone() *extract.Profile {
	for p := a.main.Next(); p != nil; p = a.main.Next() {
		if a.isTaken(p) {
			continue // settled with the others of its PKey
		}
		a.row = *p
		pass, noContact := passAlone(&a.row)
		if noContact {
			a.id.Unlinked++
		}
		if pass {
			return &a.row
		}
	}
	return nil
}

// isTaken says p, main's next row, is taken: main's rows come by contact.
func (a *apartStream) isTaken(p *extract.Profile) bool {
	for a.ti < len(a.taken) && a.taken[a.ti].id.Compare(p.ID) < 0 {
		a.ti++
	}
	for _, t := range a.taken[a.ti:] {
		if t.id != p.ID {
			return false
		}
		if t.file == p.File && t.line == p.Line {
			return true
		}
	}
	return false
}

func (a *apartStream) Next() *extract.Profile {
	// the side the last row came from is read on now: that row was valid
	// until this call
	switch {
	case !a.started:
		a.m, a.k, a.started = a.alone(), a.kept.Next(), true
	case a.fromMain:
		a.m = a.alone()
	default:
		a.k = a.kept.Next()
	}
	switch {
	case a.m == nil && a.k == nil:
		a.fromMain = false
		return nil
	case a.k == nil || a.m != nil && ProfileContactOrder(a.ks, a.m, a.k) < 0:
		a.fromMain = true
		return a.m
	default:
		a.fromMain = false
		return a.k
	}
}

func (a *apartStream) Err() error { return errors.Join(a.main.Err(), a.kept.Err()) }

func (a *apartStream) Close() {
	a.main.Close()
	a.kept.Close()
}
