package transform

import (
	"math"
	"slices"
	"strings"

	"optsync/extract"
)

// Superseded is a row replaced by a newer row for the same record.
type Superseded struct {
	ID           extract.ID
	PKey         string // for profiles
	File, ByFile uint16
	Line, By     int32
	Bad          bool // the row was rejected already for its own fault
	// ByUnknownTime: the row that replaced it has a time that cannot be
	// read; it may be the later one, and its record is kept out.
	ByUnknownTime bool
}

// order places a row among the rows of its record: a row whose time cannot
// be read may be the newest, so it sorts last.
func order(t int64) int64 {
	if t == extract.NoTime {
		return math.MaxInt64
	}
	return t
}

// DedupContacts sorts contacts by id and keeps, per id, the row with the
// latest modifiedon (equal: the later row): DedupStream over a slice.
func DedupContacts(cs []extract.Contact) (kept []extract.Contact, superseded []Superseded) {
	slices.SortFunc(cs, func(a, b extract.Contact) int { return ContactOrder(&a, &b) })
	i := 0
	d := NewDedupStream(func() *extract.Contact {
		if i == len(cs) {
			return nil
		}
		i++
		return &cs[i-1]
	}, func(s Superseded) { superseded = append(superseded, s) })
	kept = cs[:0] // written at or behind what was read
	for c := d.Next(); c != nil; c = d.Next() {
		kept = append(kept, *c)
	}
	return kept, superseded
}

// OwnerKind says what a run's input makes of a PKey.
type OwnerKind uint8

const (
	OwnerNone      OwnerKind = iota // the PKey is not in this run's input
	OwnerContact                    // its latest row links it to a contact
	OwnerNoContact                  // its latest row links it to none (empty or non-GUID externalId)
	OwnerKeptOut                    // its latest row is bad, or may be: whose it is cannot be said
)

// Owners answers, for a PKey, what this run's input links it to: how a run
// knows that a profile state links to one contact now belongs to another,
// or to none.
type Owners struct {
	list []owner // sorted by PKey
}

type owner = OwnerEntry

// Lookup tells what the run's input makes of pkey, and the contact its
// latest row links it to (for OwnerContact). A nil Owners knows nothing.
func (o *Owners) Lookup(pkey string) (OwnerKind, extract.ID) {
	if o == nil || pkey == "" {
		return OwnerNone, extract.ID{}
	}
	i, ok := slices.BinarySearchFunc(o.list, pkey, func(e owner, k string) int { return strings.Compare(e.PKey, k) })
	if !ok {
		return OwnerNone, extract.ID{}
	}
	return o.list[i].Kind, o.list[i].ID
}

// Grouped is what the identity rules make of a run's profile rows.
type Grouped struct {
	// Kept is sorted by contact: one entry per contact named by a profile;
	// a Bad entry keeps its contact out of the run.
	Kept []extract.Profile
	// Dups are the profiles of contacts with two or more (none is touched).
	Dups       []extract.Profile
	Superseded []Superseded
	Unlinked   int     // profiles whose latest row links no contact
	Owners     *Owners // when asked for
}

// GroupProfiles applies the identity rules to a run's profile rows held in
// memory, whose PKeys are in ks: PKeyStream, then ContactProfiles (see
// them).
// withOwners also returns, for each PKey, what the input links it to.
func GroupProfiles(ks *extract.Keys, ps []extract.Profile, withOwners bool) Grouped {
	var g Grouped
	slices.SortFunc(ps, func(a, b extract.Profile) int { return ProfilePKeyOrder(ks, &a, &b) })
	var owners []owner
	var addOwner func(string, OwnerKind, extract.ID)
	if withOwners {
		addOwner = func(pkey string, kind OwnerKind, id extract.ID) {
			owners = append(owners, owner{PKey: pkey, Kind: kind, ID: id})
		}
	}
	i := 0
	pks := NewPKeyStream(func() *extract.Profile {
		if i == len(ps) {
			return nil
		}
		i++
		return &ps[i-1]
	}, ks, nil, func(s Superseded) { g.Superseded = append(g.Superseded, s) }, addOwner)
	kept := ps[:0] // written at or behind what was read: a group is read whole first
	for p := pks.Next(); p != nil; p = pks.Next() {
		kept = append(kept, *p)
	}
	g.Unlinked = pks.Unlinked
	if withOwners {
		g.Owners = &Owners{list: owners}
	}
	slices.SortFunc(kept, func(a, b extract.Profile) int { return ProfileContactOrder(ks, &a, &b) })
	j := 0
	cp := NewContactProfiles(func() *extract.Profile {
		if j == len(kept) {
			return nil
		}
		j++
		return &kept[j-1]
	}, ks, nil, func(p *extract.Profile) { g.Dups = append(g.Dups, *p) })
	out := kept[:0]
	for p := cp.Next(); p != nil; p = cp.Next() {
		out = append(out, *p)
	}
	g.Kept = out
	return g
}

// OwnersOf makes an Owners from what PKeyStream reported, in PKey order.
func OwnersOf(list []OwnerEntry) *Owners { return &Owners{list: list} }

// OwnerEntry is what PKeyStream reports of one PKey.
type OwnerEntry struct {
	PKey string
	ID   extract.ID
	Kind OwnerKind
}

// Len is the number of PKeys the input holds.
func (o *Owners) Len() int {
	if o == nil {
		return 0
	}
	return len(o.list)
}

// At is the i-th PKey, in PKey order.
func (o *Owners) At(i int) OwnerEntry { return o.list[i] }

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
