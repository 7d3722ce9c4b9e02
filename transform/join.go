package transform

import (
	"cmp"
	"hash/maphash"
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
// latest modifiedon (equal: the later row). A winning row that is bad keeps
// the contact out of the run: an older good row is not a safe stand-in for a
// newer unreadable one.
func DedupContacts(cs []extract.Contact) (kept []extract.Contact, superseded []Superseded) {
	slices.SortFunc(cs, func(a, b extract.Contact) int {
		if c := a.ID.Compare(b.ID); c != 0 {
			return c
		}
		if c := cmp.Compare(order(a.Modified), order(b.Modified)); c != 0 {
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
			superseded[j].ByUnknownTime = cs[i].Modified == extract.NoTime
		}
		kept = append(kept, cs[i])
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

type owner struct {
	pkey string
	id   extract.ID
	kind OwnerKind
}

// Lookup tells what the run's input makes of pkey, and the contact its
// latest row links it to (for OwnerContact). A nil Owners knows nothing.
func (o *Owners) Lookup(pkey string) (OwnerKind, extract.ID) {
	if o == nil || pkey == "" {
		return OwnerNone, extract.ID{}
	}
	i, ok := slices.BinarySearchFunc(o.list, pkey, func(e owner, k string) int { return strings.Compare(e.pkey, k) })
	if !ok {
		return OwnerNone, extract.ID{}
	}
	return o.list[i].kind, o.list[i].id
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

// GroupProfiles applies the identity rules to a run's profile rows.
//
// A profile is its PKey: rows of one PKey are one record whatever externalId
// they carry (the same profile exported twice, in two files of a drop, or
// relinked in between). The latest row wins (equal times: the later file,
// then line) and links the profile to its contact, or to none; the others
// are superseded, and a contact only they named has no profile in this
// run. A winning row that is bad, or whose time cannot be read (it may be
// the newest), keeps the profile out: every contact any of its rows names
// is kept out with it.
//
// Then per contact: one profile is the contact's; two or more profiles with
// one externalId are all returned in Dups and the contact keeps a single
// Bad entry in Kept, so that it is not touched; so does a contact named by
// a profile that is kept out, or by a row whose PKey cannot be read.
// withOwners also returns, for each PKey, what the input links it to.
func GroupProfiles(ps []extract.Profile, withOwners bool) Grouped {
	var g Grouped
	drop := samePKey(ps, &g.Superseded)
	var owners []owner
	w := 0
	for i := range ps {
		if drop[i/64]&(1<<(i%64)) != 0 {
			continue
		}
		p := ps[i]
		keptOut := p.Bad || p.Modified == extract.NoTime
		if withOwners && p.PKey != "" {
			o := owner{pkey: p.PKey, id: p.ID, kind: OwnerContact}
			switch {
			case keptOut:
				o.kind = OwnerKeptOut
			case p.Unlinked:
				o.kind = OwnerNoContact
			}
			owners = append(owners, o)
		}
		if p.Unlinked {
			if !keptOut {
				g.Unlinked++
			}
			continue
		}
		ps[w] = p
		w++
	}
	if withOwners {
		slices.SortFunc(owners, func(a, b owner) int { return strings.Compare(a.pkey, b.pkey) })
		g.Owners = &Owners{list: owners}
	}
	ps = ps[:w]
	slices.SortFunc(ps, func(a, b extract.Profile) int {
		if c := a.ID.Compare(b.ID); c != 0 {
			return c
		}
		if c := cmp.Compare(a.PKey, b.PKey); c != 0 {
			return c
		}
		if c := cmp.Compare(a.File, b.File); c != 0 {
			return c
		}
		return cmp.Compare(a.Line, b.Line)
	})
	// Kept reuses ps: it only ever writes at or behind i, after the group at
	// i has been copied into Dups.
	kept := ps[:0]
	for i := 0; i < len(ps); {
		j := i + 1
		for j < len(ps) && ps[j].ID == ps[i].ID {
			j++
		}
		if j-i == 1 && !ps[i].Bad {
			kept = append(kept, ps[i])
			i = j
			continue
		}
		// Entries with a PKey are profiles (bad or good); entries without
		// are rows that may be one: they keep the contact out, but are not
		// counted as duplicates.
		profiles := 0
		for k := i; k < j; k++ {
			if ps[k].PKey != "" {
				profiles++
			}
		}
		if profiles > 1 {
			for k := i; k < j; k++ {
				if ps[k].PKey != "" {
					g.Dups = append(g.Dups, ps[k])
				}
			}
		}
		first := ps[i]
		first.Bad = true
		kept = append(kept, first)
		i = j
	}
	g.Kept = kept
	return g
}

// samePKey finds the rows that share a PKey, keeps the latest of each and
// marks the others in the returned bit set. Distinct PKeys are the rule, so
// rows are first sifted through a hash bitmap: only rows whose hash was seen
// before are compared as strings (a sort of a million strings would be a
// visible share of a backfill).
func samePKey(ps []extract.Profile, superseded *[]Superseded) []uint64 {
	drop := make([]uint64, (len(ps)+63)/64)
	if len(ps) < 2 {
		return drop
	}
	// 16 bits a row: about one row in 16 is compared for nothing; capped
	// at 16 MB a bitmap (at 15 million rows, one in five).
	bits := uint64(1024)
	for bits < uint64(len(ps))*16 && bits < 1<<27 {
		bits <<= 1
	}
	seen, twice := make([]uint64, bits/64), make([]uint64, bits/64)
	seed := maphash.MakeSeed()
	for i := range ps {
		if ps[i].PKey == "" {
			continue
		}
		h := maphash.String(seed, ps[i].PKey) & (bits - 1)
		if seen[h/64]&(1<<(h%64)) != 0 {
			twice[h/64] |= 1 << (h % 64)
		}
		seen[h/64] |= 1 << (h % 64)
	}
	var cand []int32
	for i := range ps {
		if ps[i].PKey == "" {
			continue
		}
		h := maphash.String(seed, ps[i].PKey) & (bits - 1)
		if twice[h/64]&(1<<(h%64)) != 0 {
			cand = append(cand, int32(i))
		}
	}
	slices.SortFunc(cand, func(x, y int32) int {
		a, b := &ps[x], &ps[y]
		if c := strings.Compare(a.PKey, b.PKey); c != 0 {
			return c
		}
		if c := cmp.Compare(order(a.Modified), order(b.Modified)); c != 0 {
			return c
		}
		if c := cmp.Compare(a.File, b.File); c != 0 {
			return c
		}
		return cmp.Compare(a.Line, b.Line)
	})
	for i := 0; i < len(cand); {
		j := i + 1
		for j < len(cand) && ps[cand[j]].PKey == ps[cand[i]].PKey {
			j++
		}
		win := &ps[cand[j-1]]
		keptOut := win.Bad || win.Modified == extract.NoTime
		named := map[extract.ID]bool{}
		if !win.Unlinked {
			named[win.ID] = true
		}
		for _, k := range cand[i : j-1] {
			r := &ps[k]
			s := Superseded{PKey: r.PKey, File: r.File, Line: r.Line, ByFile: win.File, By: win.Line,
				Bad: r.Bad, ByUnknownTime: win.Modified == extract.NoTime}
			if !r.Unlinked {
				s.ID = r.ID
			}
			*superseded = append(*superseded, s)
			if keptOut && !r.Unlinked && !named[r.ID] {
				// The profile may still be this contact's: the contact
				// stays out with it. Not a profile of its own (no PKey),
				// so not a duplicate either.
				named[r.ID] = true
				r.Bad, r.PKey = true, ""
				continue
			}
			drop[k/64] |= 1 << (k % 64)
		}
		if keptOut && !win.Unlinked {
			win.Bad = true
		}
		i = j
	}
	return drop
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
