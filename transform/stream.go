package transform

import (
	"cmp"
	"strings"

	"optsync/extract"
)

// The identity rules read the rows of a run in a sorted order, one group
// of rows at a time, so that the rows need not all be in memory: sorted by
// the caller (in memory, or in runs on disk when they do not fit), handed
// over by a next function that returns nil at the end.

// ContactOrder is the order DedupStream reads contacts in: by id, then as
// the rows of one contact are placed (a row whose time cannot be read may be
// the newest, so it sorts last), then file and line.
func ContactOrder(a, b *extract.Contact) int {
	if c := a.ID.Compare(b.ID); c != 0 {
		return c
	}
	return rowPlace(a.Modified, b.Modified, a.File, b.File, a.Line, b.Line)
}

// ProfilePKeyOrder is the order PKeyStream reads profile rows in: by PKey
// (rows without one first), then as the rows of one profile are placed,
// then file and line.
func ProfilePKeyOrder(ks *extract.Keys, a, b *extract.Profile) int {
	if c := comparePKeys(ks, a.PKey, b.PKey); c != 0 {
		return c
	}
	return rowPlace(a.Modified, b.Modified, a.File, b.File, a.Line, b.Line)
}

// comparePKeys orders the PKeys a and b name in ks.
func comparePKeys(ks *extract.Keys, a, b extract.Key) int {
	if a == b {
		return 0
	}
	return strings.Compare(ks.Get(a), ks.Get(b))
}

// rowPlace orders the rows of one record, the same on both sides: by
// change time, a row whose time cannot be read last (it may be the
// newest), then by file and line.
func rowPlace(aMod, bMod int64, aFile, bFile uint16, aLine, bLine int32) int {
	if c := cmp.Compare(order(aMod), order(bMod)); c != 0 {
		return c
	}
	if c := cmp.Compare(aFile, bFile); c != 0 {
		return c
	}
	return cmp.Compare(aLine, bLine)
}

// ProfileContactOrder is the order ContactProfiles reads the profiles
// PKeyStream kept in: by contact, PKey, file and line.
func ProfileContactOrder(ks *extract.Keys, a, b *extract.Profile) int {
	if c := a.ID.Compare(b.ID); c != 0 {
		return c
	}
	if c := comparePKeys(ks, a.PKey, b.PKey); c != 0 {
		return c
	}
	if c := cmp.Compare(a.File, b.File); c != 0 {
		return c
	}
	return cmp.Compare(a.Line, b.Line)
}

// DedupStream keeps, per contact, the row with the latest modifiedon (equal:
// the later row) of contacts read in ContactOrder; the others go to
// superseded. A winning row that is bad keeps the contact out of the run:
// an older good row is not a safe stand-in for a newer unreadable one.
type DedupStream struct {
	next       func() *extract.Contact
	superseded func(Superseded)
	ahead      *extract.Contact
	cur        extract.Contact
	group      []Superseded
	read       int
	// Index is the place, among the rows read, of the row Next returned.
	Index int
}

// NewDedupStream reads contacts from next.
func NewDedupStream(next func() *extract.Contact, superseded func(Superseded)) *DedupStream {
	return &DedupStream{next: next, superseded: superseded}
}

// Next returns the next contact kept (valid until the following call), nil
// at the end.
func (d *DedupStream) Next() *extract.Contact {
	if d.ahead == nil {
		if d.ahead = d.next(); d.ahead == nil {
			return nil
		}
		d.read++
	}
	d.cur = *d.ahead
	d.Index = d.read - 1
	d.group = d.group[:0]
	for {
		d.ahead = d.next()
		if d.ahead == nil {
			break
		}
		d.read++
		if d.ahead.ID != d.cur.ID {
			break
		}
		d.Index = d.read - 1
		d.group = append(d.group, Superseded{ID: d.cur.ID, File: d.cur.File, Line: d.cur.Line, Bad: d.cur.Bad})
		d.cur = *d.ahead
	}
	for _, s := range d.group {
		s.By, s.ByFile = d.cur.Line, d.cur.File
		s.ByUnknownTime = d.cur.Modified == extract.NoTime
		d.superseded(s)
	}
	return &d.cur
}

// PKeyStream applies the first identity rule to profile rows read in
// ProfilePKeyOrder: a profile is its PKey, and rows of one PKey are one
// record whatever externalId they carry. The latest row wins (equal times:
// the later file, then line) and links the profile to its contact, or to
// none; the others are superseded. A winning row that is bad, or whose time
// cannot be read (it may be the newest), keeps the profile out: every
// contact any of its rows names is kept out with it, by a Bad row without
// a PKey for each (not a profile of its own, so not a duplicate either).
// Rows without a PKey go through as they are.
//
// Next returns, row by row, what goes on to the per-contact rules, and
// counts and reports the rest.
type PKeyStream struct {
	next       func() *extract.Profile
	keys       rowKeys
	superseded func(Superseded)
	// owner, when set, hears what the input links each PKey to, in PKey
	// order.
	owner func(pkey string, kind OwnerKind, id extract.ID)
	// Unlinked counts the profiles whose latest row links no contact.
	Unlinked int

	ahead *extract.Profile
	group []extract.Profile
	out   []extract.Profile // what the group passes on, in order
	i     int
}

// NewPKeyStream reads profile rows from next, whose PKeys are in ks; owner
// may be nil. own is nil when the rows next returns stay where they are
// (held in memory); else what they name is valid until the following call
// only (read back from disk), and the stream copies what it keeps into
// own: what Next returns names own's blocks then, until the call after.
func NewPKeyStream(next func() *extract.Profile, ks *extract.Keys, own *extract.KeyWriter, superseded func(Superseded), owner func(string, OwnerKind, extract.ID)) *PKeyStream {
	return &PKeyStream{next: next, keys: rowKeys{ks: ks, own: own}, superseded: superseded, owner: owner}
}

// rowKeys is where rows' PKeys are (ks), and, for rows valid only until
// the next is read, where a stream copies those it keeps longer (own).
type rowKeys struct {
	ks   *extract.Keys
	own  *extract.KeyWriter
	prev extract.Mark
}

// hold makes p, a copy of a row just read, name what it names in own.
func (r *rowKeys) hold(p *extract.Profile) {
	if r.own != nil {
		p.PKey, p.FieldModified = r.own.Copy(r.ks, p.PKey), r.own.CopyTimes(r.ks, p.FieldModified)
	}
}

// turn starts a group: what the group before last held is let go of (the
// last one's rows are still the caller's until its following call).
func (r *rowKeys) turn() {
	if r.own != nil {
		m := r.own.Mark()
		r.own.ReleaseBefore(r.prev)
		r.prev = m
	}
}

// same says a and b name the same PKey.
func (r *rowKeys) same(a, b extract.Key) bool {
	return a == b || r.ks.Get(a) == r.ks.Get(b)
}

// Next returns the next profile row kept (valid until the following call),
// nil at the end.
func (s *PKeyStream) Next() *extract.Profile {
	for s.i >= len(s.out) {
		if !s.fill() {
			return nil
		}
	}
	s.i++
	return &s.out[s.i-1]
}

// fill reads the next PKey's rows and works out what they pass on.
func (s *PKeyStream) fill() bool {
	s.out, s.i = s.out[:0], 0
	if s.ahead == nil {
		if s.ahead = s.next(); s.ahead == nil {
			return false
		}
	}
	s.keys.turn()
	s.group = append(s.group[:0], *s.ahead)
	s.keys.hold(&s.group[0])
	for {
		s.ahead = s.next()
		if s.ahead == nil || s.group[0].PKey.Empty() || !s.keys.same(s.ahead.PKey, s.group[0].PKey) {
			break
		}
		s.group = append(s.group, *s.ahead)
		s.keys.hold(&s.group[len(s.group)-1])
	}
	win := &s.group[len(s.group)-1]
	keptOut := win.Bad || win.Modified == extract.NoTime
	if win.PKey.Empty() {
		// a row whose PKey could not be read: it only keeps its contact out
		s.out = append(s.out, *win)
		return true
	}
	var named []extract.ID // contacts kept out with the profile (a handful)
	if keptOut && !win.Unlinked {
		named = append(named, win.ID)
	}
	for k := range s.group[:len(s.group)-1] {
		r := s.group[k]
		sup := Superseded{PKey: s.keys.ks.Get(r.PKey), File: r.File, Line: r.Line, ByFile: win.File, By: win.Line,
			Bad: r.Bad, ByUnknownTime: win.Modified == extract.NoTime}
		if !r.Unlinked {
			sup.ID = r.ID
		}
		s.superseded(sup)
		if keptOut && !r.Unlinked && !containsID(named, r.ID) {
			// The profile may still be this contact's: the contact stays
			// out with it.
			named = append(named, r.ID)
			r.Bad, r.PKey = true, 0
			s.out = append(s.out, r)
		}
	}
	if keptOut && !win.Unlinked {
		win.Bad = true
	}
	if s.owner != nil {
		kind := OwnerContact
		switch {
		case keptOut:
			kind = OwnerKeptOut
		case win.Unlinked:
			kind = OwnerNoContact
		}
		s.owner(s.keys.ks.Get(win.PKey), kind, win.ID)
	}
	if win.Unlinked {
		if !keptOut {
			s.Unlinked++
		}
	} else {
		s.out = append(s.out, *win)
	}
	return true
}

func containsID(ids []extract.ID, id extract.ID) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// ContactProfiles applies the per-contact identity rule to the profiles
// PKeyStream kept, read in ProfileContactOrder: one profile is the
// contact's; two or more profiles with one externalId go to dups (none is
// touched) and the contact keeps a single Bad entry, so that it is not
// touched; so does a contact named by a profile that is kept out, or by a
// row whose PKey cannot be read.
type ContactProfiles struct {
	next  func() *extract.Profile
	keys  rowKeys
	dups  func(*extract.Profile)
	ahead *extract.Profile
	group []extract.Profile
	cur   extract.Profile
	read  int
	// Index is the place, among the profiles read, of the one Next
	// returned (or, for a Bad entry, of the first of its contact).
	Index int
}

// NewContactProfiles reads kept profiles from next, whose PKeys are in ks;
// own as for NewPKeyStream.
func NewContactProfiles(next func() *extract.Profile, ks *extract.Keys, own *extract.KeyWriter, dups func(*extract.Profile)) *ContactProfiles {
	return &ContactProfiles{next: next, keys: rowKeys{ks: ks, own: own}, dups: dups}
}

// Next returns the next contact's entry (valid until the following call):
// its one profile, or a Bad entry; nil at the end.
func (c *ContactProfiles) Next() *extract.Profile {
	if c.ahead == nil {
		if c.ahead = c.next(); c.ahead == nil {
			return nil
		}
		c.read++
	}
	c.Index = c.read - 1
	c.keys.turn()
	c.group = append(c.group[:0], *c.ahead)
	c.keys.hold(&c.group[0])
	for {
		c.ahead = c.next()
		if c.ahead == nil {
			break
		}
		c.read++
		if c.ahead.ID != c.group[0].ID {
			break
		}
		c.group = append(c.group, *c.ahead)
		c.keys.hold(&c.group[len(c.group)-1])
	}
	if len(c.group) == 1 && !c.group[0].Bad {
		c.cur = c.group[0]
		return &c.cur
	}
	// Entries with a PKey are profiles (bad or good); entries without are
	// rows that may be one: they keep the contact out, but are not counted
	// as duplicates.
	profiles := 0
	for k := range c.group {
		if !c.group[k].PKey.Empty() {
			profiles++
		}
	}
	if profiles > 1 {
		for k := range c.group {
			if !c.group[k].PKey.Empty() {
				c.dups(&c.group[k])
			}
		}
	}
	c.cur = c.group[0]
	c.cur.Bad = true
	return &c.cur
}
