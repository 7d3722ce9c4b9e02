package transform

import (
	"cmp"
	"math"
	"slices"

	"optsync/extract"
)

// Superseded is a row replaced by a newer row for the same record.
type Superseded struct {
	ID           extract.ID
	PKey         string // for profiles
	File, ByFile uint16
	Line, By     int32
	Bad          bool // the row was rejected already for its own fault
}

// DedupContacts sorts contacts by id and keeps, per id, the row with the
// latest modifiedon (equal: the later row). A winning row that is bad keeps
// the contact out of the run: an older good row is not a safe stand-in for a
// newer unreadable one.
func DedupContacts(cs []extract.Contact) (kept []extract.Contact, superseded []Superseded) {
	order := func(c *extract.Contact) int64 {
		if c.Bad && c.Modified == 0 {
			return math.MaxInt64 // unreadable time: it may be the newest
		}
		return c.Modified
	}
	slices.SortFunc(cs, func(a, b extract.Contact) int {
		if c := a.ID.Compare(b.ID); c != 0 {
			return c
		}
		if c := cmp.Compare(order(&a), order(&b)); c != 0 {
			return c
		}
		if c := cmp.Compare(a.File, b.File); c != 0 {
			return c
		}
		return cmp.Compare(a.Line, b.Line)
	})
	kept = cs[:0]
	for i := range cs {
		if i+1 < len(cs) && cs[i+1].ID == cs[i].ID {
			superseded = append(superseded, Superseded{ID: cs[i].ID, File: cs[i].File, Line: cs[i].Line, Bad: cs[i].Bad})
			continue
		}
		for j := len(superseded) - 1; j >= 0 && superseded[j].ID == cs[i].ID; j-- {
			superseded[j].By, superseded[j].ByFile = cs[i].Line, cs[i].File
		}
		kept = append(kept, cs[i])
	}
	return kept, superseded
}

// GroupProfiles sorts profiles by externalId. Rows of one PKey (the same
// profile exported twice, or in two files of a drop) keep the one with the
// latest lastModified (equal: the later row); the others are superseded.
// Distinct profiles sharing one externalId are all returned in dups, and
// their contact keeps a single Bad entry in kept so that it is not touched.
func GroupProfiles(ps []extract.Profile) (kept, dups []extract.Profile, superseded []Superseded) {
	slices.SortFunc(ps, func(a, b extract.Profile) int {
		if c := a.ID.Compare(b.ID); c != 0 {
			return c
		}
		if c := cmp.Compare(a.PKey, b.PKey); c != 0 {
			return c
		}
		if c := cmp.Compare(a.Modified, b.Modified); c != 0 {
			return c
		}
		if c := cmp.Compare(a.File, b.File); c != 0 {
			return c
		}
		return cmp.Compare(a.Line, b.Line)
	})
	// Collapse rows of one PKey in place. A bad row that lost its PKey
	// (PKey "") stays a row of its own.
	w := 0
	for i := range ps {
		if i+1 < len(ps) && ps[i+1].ID == ps[i].ID && ps[i+1].PKey == ps[i].PKey && ps[i].PKey != "" {
			superseded = append(superseded, Superseded{ID: ps[i].ID, PKey: ps[i].PKey, File: ps[i].File, Line: ps[i].Line, Bad: ps[i].Bad})
			continue
		}
		for k := len(superseded) - 1; k >= 0 && superseded[k].ID == ps[i].ID && superseded[k].PKey == ps[i].PKey; k-- {
			superseded[k].By, superseded[k].ByFile = ps[i].Line, ps[i].File
		}
		ps[w] = ps[i]
		w++
	}
	ps = ps[:w]
	// kept reuses ps: it only ever writes at or behind i, after the group at
	// i has been copied into dups.
	kept = ps[:0]
	for i := 0; i < len(ps); {
		j := i + 1
		for j < len(ps) && ps[j].ID == ps[i].ID {
			j++
		}
		if j-i > 1 {
			dups = append(dups, ps[i:j]...)
			first := ps[i]
			first.Bad = true
			kept = append(kept, first)
		} else {
			kept = append(kept, ps[i])
		}
		i = j
	}
	return kept, dups, superseded
}

// JoinStats counts the identity outcomes of a join.
type JoinStats struct {
	Matched         int // contact and profile both usable
	Blocked         int // a bad row or duplicate on either side
	ContactsNoMatch int // contact without profile
	ProfilesNoMatch int // profile without contact
}

// Join walks two id-sorted sides and calls fn with the indexes of every
// contact that has exactly one usable profile, and of every usable record
// whose counterpart is missing from its input (the other index is -1).
// Records blocked by a bad row or a duplicate on either side are left out.
func Join(cs []extract.Contact, ps []extract.Profile, fn func(ci, pi int)) JoinStats {
	var st JoinStats
	i, j := 0, 0
	for i < len(cs) || j < len(ps) {
		var k int
		switch {
		case i == len(cs):
			k = 1
		case j == len(ps):
			k = -1
		default:
			k = cs[i].ID.Compare(ps[j].ID)
		}
		switch {
		case k < 0:
			if !cs[i].Bad {
				st.ContactsNoMatch++
				fn(i, -1)
			}
			i++
		case k > 0:
			if !ps[j].Bad {
				st.ProfilesNoMatch++
				fn(-1, j)
			}
			j++
		default:
			if cs[i].Bad || ps[j].Bad {
				st.Blocked++
			} else {
				st.Matched++
				fn(i, j)
			}
			i++
			j++
		}
	}
	return st
}
