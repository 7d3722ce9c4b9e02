package transform

import (
	"cmp"
	"math"
	"slices"

	"optsync/extract"
)

// Superseded is a contact row replaced by a newer row for the same contact.
type Superseded struct {
	ID   extract.ID
	Line int32
	By   int32
	Bad  bool // the row was rejected already for its own fault
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
		return cmp.Compare(a.Line, b.Line)
	})
	kept = cs[:0]
	for i := range cs {
		if i+1 < len(cs) && cs[i+1].ID == cs[i].ID {
			superseded = append(superseded, Superseded{ID: cs[i].ID, Line: cs[i].Line, Bad: cs[i].Bad})
			continue
		}
		for j := len(superseded) - 1; j >= 0 && superseded[j].ID == cs[i].ID; j-- {
			superseded[j].By = cs[i].Line
		}
		kept = append(kept, cs[i])
	}
	return kept, superseded
}

// GroupProfiles sorts profiles by externalId. Profiles sharing one
// externalId are all returned in dups, and their contact keeps a single Bad
// entry in kept so that it is not touched.
func GroupProfiles(ps []extract.Profile) (kept, dups []extract.Profile) {
	slices.SortFunc(ps, func(a, b extract.Profile) int {
		if c := a.ID.Compare(b.ID); c != 0 {
			return c
		}
		return cmp.Compare(a.Line, b.Line)
	})
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
	return kept, dups
}

// JoinStats counts the identity outcomes of a join.
type JoinStats struct {
	Matched         int // contact and profile both usable
	Blocked         int // a bad row or duplicate on either side
	ContactsNoMatch int // contact without profile
	ProfilesNoMatch int // profile without contact
}

// Join walks two id-sorted sides and calls fn with the indexes of every
// contact that has exactly one usable profile.
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
			}
			i++
		case k > 0:
			if !ps[j].Bad {
				st.ProfilesNoMatch++
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
