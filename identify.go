package main

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"optsync/extract"
	"optsync/extract/spill"
	"optsync/state"
	"optsync/transform"
)

// A run's rows go through the identity rules as sorted streams, never all
// at once unless they fit: each system's rows are sorted (in memory within
// the run's memory budget, else in runs on disk, merged), the rules read
// them a record at a time (transform/stream.go), and the two sides are
// joined as a merge by contact id into the entries the decider visits.
//
//	contacts  sorted by id              → DedupStream ──────────────┐
//	profiles  sorted by PKey → PKeyStream → sorted by contact        ├→ join → entries
//	                                      → ContactProfiles ─────────┘
//
// Everything a rule sets aside (a superseded row, a duplicate profile) goes
// to the run's rejects as it is found.

// entry is one contact the decider visits: its rows in the input (a
// contact, a profile, both), or, found in state, one that lost a side or
// whose profiles are in conflict.
type entry struct {
	kind       uint8
	id         extract.ID
	hasC, hasP bool
	c          extract.Contact
	p          extract.Profile
	// ci and pi place c and p in the rows held in memory, when they are
	// (identity.cItems, pItems): the commit finds them there again.
	ci, pi int32
}

const (
	entryPair     = iota // decided
	entryBlocked         // in the input, kept out: a bad row, two profiles
	entryLost            // in state only: it lost a side
	entryConflict        // two or more profiles in the input name it
)

func (e *entry) contact() *extract.Contact {
	if e.hasC {
		return &e.c
	}
	return nil
}

func (e *entry) profile() *extract.Profile {
	if e.hasP {
		return &e.p
	}
	return nil
}

// Sizes of the records as held in memory (the struct; a profile's PKey
// comes on top: extract.ProfileSize).
const (
	contactSize = 48
	profileSize = 64
)

// idKey is a sort key of records ordered by contact id first.
func idKey(id *extract.ID) uint64 { return binary.BigEndian.Uint64(id[:8]) }

func newContactSorter(budget int64, dir string) *spill.Sorter[extract.Contact] {
	return spill.NewSorter(spill.Codec[extract.Contact]{
		Compare: transform.ContactOrder, Append: extract.AppendContact, Decode: extract.DecodeContact,
		Key: func(c *extract.Contact) uint64 { return idKey(&c.ID) },
	}, budget, dir, contactSize)
}

// profileCodec orders profiles by PKey (transform.ProfilePKeyOrder) or
// byContact (transform.ProfileContactOrder).
func profileCodec(byContact bool) spill.Codec[extract.Profile] {
	c := spill.Codec[extract.Profile]{
		Compare: transform.ProfilePKeyOrder, Append: extract.AppendProfile, Decode: extract.DecodeProfile, Size: extract.ProfileSize,
		Key: func(p *extract.Profile) uint64 { return spill.PrefixKey(p.PKey) },
	}
	if byContact {
		c.Compare, c.Key = transform.ProfileContactOrder, func(p *extract.Profile) uint64 { return idKey(&p.ID) }
	}
	return c
}

func newProfileSorter(byContact bool, budget int64, dir string) *spill.Sorter[extract.Profile] {
	return spill.NewSorter(profileCodec(byContact), budget, dir, profileSize)
}

// rejectSorter orders the rejects found after reading (superseded rows,
// duplicates, entries kept out) by source and line, for the merge with the
// spool of those found while reading.
func newRejectSorter(budget int64, dir string) *spill.Sorter[extract.Reject] {
	return spill.NewSorter(spill.Codec[extract.Reject]{
		Compare: func(a, b *extract.Reject) int {
			return cmp.Or(a.Source.Compare(b.Source), cmp.Compare(a.Line, b.Line))
		},
		Append: func(dst []byte, r *extract.Reject) []byte {
			dst = binary.AppendUvarint(dst, uint64(r.Line))
			f := byte(r.Source.Kind) << 1 // a source's kind and its name
			if r.IDChecked {
				f |= 1
			}
			dst = append(dst, f)
			for _, s := range []string{r.Source.Name, r.ID, r.Reason} {
				dst = binary.AppendUvarint(dst, uint64(len(s)))
				dst = append(dst, s...)
			}
			return dst
		},
		Decode: func(b []byte, r *extract.Reject) error {
			line, n := binary.Uvarint(b)
			if n <= 0 || len(b) < n+1 {
				return errors.New("spilled reject malformed")
			}
			r.Line, r.IDChecked, r.Source.Kind = int(line), b[n]&1 == 1, extract.SourceKind(b[n]>>1)
			b = b[n+1:]
			for _, dst := range []*string{&r.Source.Name, &r.ID, &r.Reason} {
				l, n := binary.Uvarint(b)
				if n <= 0 || uint64(len(b)-n) < l {
					return errors.New("spilled reject malformed")
				}
				*dst, b = string(b[n:n+int(l)]), b[n+int(l):]
			}
			return nil
		},
		Size:   func(r *extract.Reject) int { return len(r.Source.Name) + len(r.ID) + len(r.Reason) },
		Stable: true, // a reject found earlier stays first on its line
	}, budget, dir, 64)
}

// newPKeySorter orders records' (PKey, contact): by PKey (for the PKey
// index written whole), or byID.
func newPKeySorter(budget int64, dir string, byID bool) *spill.Sorter[state.PKeyEntry] {
	order := func(a, b *state.PKeyEntry) int { return cmp.Or(strings.Compare(a.PKey, b.PKey), a.ID.Compare(b.ID)) }
	key := func(e *state.PKeyEntry) uint64 { return spill.PrefixKey(e.PKey) }
	if byID {
		order = func(a, b *state.PKeyEntry) int { return cmp.Or(a.ID.Compare(b.ID), strings.Compare(a.PKey, b.PKey)) }
		key = func(e *state.PKeyEntry) uint64 { return idKey(&e.ID) }
	}
	return spill.NewSorter(spill.Codec[state.PKeyEntry]{
		Compare: order, Key: key,
		Append: func(dst []byte, e *state.PKeyEntry) []byte { return append(append(dst, e.ID[:]...), e.PKey...) },
		Decode: func(b []byte, e *state.PKeyEntry) error {
			if len(b) < 16 {
				return errors.New("spilled PKey entry malformed")
			}
			copy(e.ID[:], b)
			e.PKey = string(b[16:])
			return nil
		},
		Size: func(e *state.PKeyEntry) int { return len(e.PKey) },
	}, budget, dir, 32)
}

// identity is what the identity rules make of a run's inputs, read as the
// decider asks for entries.
type identity struct {
	contacts *transform.DedupStream
	profiles *transform.ContactProfiles
	cstream  spill.Stream[extract.Contact]
	pstream  spill.Stream[extract.Profile]
	// owners says what the input links each PKey to (a run: a profile
	// state links to one contact may be another's now).
	owners *transform.Owners
	// presentC counts the records of the PKey index whose PKey the input
	// holds (pkeyCounted: the index was there to count with); missed
	// hands, in contact order, those whose PKey it lacks.
	presentC    int
	pkeyCounted bool
	missed      spill.Stream[state.PKeyEntry]
	// later takes the rejects found after reading.
	later                            *spill.Sorter[extract.Reject]
	superseded, duplicates, unlinked int
	// conflicts are the contacts two or more profiles of the input name,
	// in id order (the join keeps them out).
	conflicts []extract.ID
	err       error
	// cItems and pItems are the sorted rows the streams read, when they
	// are all in memory (nil when spilled): entries are placed in them.
	cItems []extract.Contact
	pItems []extract.Profile

	// the join's lookahead and counts
	c      *extract.Contact
	p      *extract.Profile
	pulled bool
	stats  transform.JoinStats
	e      entry
}

// identifyOptions are what identify needs besides the inputs.
type identifyOptions struct {
	d365Files, campFiles []extract.InputFile
	withOwners           bool
	// pkeys, when set (the PKey index is built), counts the input's PKeys
	// in it (the shrink guard's Campaign side).
	pkeys *state.Reader
	// budget and dir are the memory and the folder of the sort by contact.
	budget int64
	dir    string
	later  *spill.Sorter[extract.Reject]
}

// identify starts the identity rules over what was read: it runs the
// profiles through PKeyStream into their sort by contact (the rule by PKey
// needs every row of a PKey, in any file); the rest happens as the decider
// reads entries.
func identify(in *extract.Records, o identifyOptions) (*identity, error) {
	id := &identity{later: o.later}
	var owners []transform.OwnerEntry
	reject := func(r extract.Reject) {
		if err := id.later.Add(&r); err != nil && id.err == nil {
			id.err = err
		}
	}
	var owner func(string, transform.OwnerKind, extract.ID)
	var pc *state.PKeyCount
	var missed *spill.Sorter[state.PKeyEntry]
	if o.pkeys != nil {
		id.pkeyCounted = true
		missed = newPKeySorter(o.budget/8, o.dir, true)
		defer missed.Close()
		pc = o.pkeys.PKeyCounter(func(e state.PKeyEntry) error { return missed.Add(&e) })
	}
	if o.withOwners || pc != nil {
		owner = func(pkey string, kind transform.OwnerKind, cid extract.ID) {
			if o.withOwners {
				owners = append(owners, transform.OwnerEntry{PKey: pkey, ID: cid, Kind: kind})
			}
			if pc != nil {
				n, err := pc.Count(pkey)
				if err != nil && id.err == nil {
					id.err = err
				}
				id.presentC += n
			}
		}
	}
	superseded := func(s transform.Superseded) {
		id.superseded++
		if !s.Bad {
			reject(extract.Reject{Source: o.campFiles[s.File].Source(), Line: int(s.Line), ID: s.PKey, IDChecked: true,
				Reason: supersededBy(o.campFiles, &s, "profile")})
		}
	}
	var byContact *spill.Sorter[extract.Profile]
	var ks *transform.PKeyStream
	if items, ok := in.Profiles.InMemory(); ok {
		// In memory: the rule by PKey writes what it keeps over the rows
		// it has read (a group is copied before any of it is written), as
		// the sort by contact then works on them in place.
		i := 0
		ks = transform.NewPKeyStream(func() *extract.Profile {
			if i == len(items) {
				return nil
			}
			i++
			return &items[i-1]
		}, superseded, owner)
		w := 0
		for p := ks.Next(); p != nil; p = ks.Next() {
			items[w] = *p
			w++
		}
		clear(items[w:])
		byContact = spill.FromSlice(profileCodec(true), o.budget, o.dir, profileSize, items[:w])
	} else {
		pstream, err := in.Profiles.Sorted()
		if err != nil {
			return nil, err
		}
		ks = transform.NewPKeyStream(pstream.Next, superseded, owner)
		byContact = newProfileSorter(true, o.budget, o.dir)
		for p := ks.Next(); p != nil; p = ks.Next() {
			if err := byContact.Add(p); err != nil {
				pstream.Close()
				byContact.Close()
				return nil, err
			}
		}
		pstream.Close()
		if err := pstream.Err(); err != nil {
			byContact.Close()
			return nil, err
		}
	}
	if pc != nil {
		err := pc.Finish()
		if err == nil {
			id.missed, err = missed.Sorted()
		}
		if err != nil {
			byContact.Close()
			return nil, err
		}
	}
	if id.err != nil {
		byContact.Close()
		return nil, id.err
	}
	id.unlinked = ks.Unlinked
	if o.withOwners {
		id.owners = transform.OwnersOf(owners)
	}
	var err error
	if items, ok := byContact.InMemory(); ok {
		id.pItems = items
	}
	if id.pstream, err = byContact.Sorted(); err != nil {
		return nil, err
	}
	id.profiles = transform.NewContactProfiles(id.pstream.Next, func(p *extract.Profile) {
		if n := len(id.conflicts); n == 0 || id.conflicts[n-1] != p.ID {
			id.conflicts = append(id.conflicts, p.ID) // dups come grouped by contact, in order
		}
		id.duplicates++
		if !p.Bad { // a bad row has its own reject row already
			reject(extract.Reject{Source: o.campFiles[p.File].Source(), Line: int(p.Line), ID: p.PKey, IDChecked: true, Reason: "duplicate-externalId"})
		}
	})
	if items, ok := in.Contacts.InMemory(); ok {
		id.cItems = items
	}
	if id.cstream, err = in.Contacts.Sorted(); err != nil {
		return nil, err
	}
	id.contacts = transform.NewDedupStream(id.cstream.Next, func(s transform.Superseded) {
		id.superseded++
		if !s.Bad {
			reject(extract.Reject{Source: o.d365Files[s.File].Source(), Line: int(s.Line), ID: s.ID.String(), IDChecked: true,
				Reason: supersededBy(o.d365Files, &s, "contact")})
		}
	})
	return id, nil
}

// next joins the two sides by contact id: the next entry, nil at the end
// (or on an error: Err says).
func (id *identity) next() *entry {
	if !id.pulled {
		id.c, id.p, id.pulled = id.contacts.Next(), id.profiles.Next(), true
	}
	if id.err != nil || id.c == nil && id.p == nil {
		return nil
	}
	k := 0
	switch {
	case id.c == nil:
		k = 1
	case id.p == nil:
		k = -1
	default:
		k = id.c.ID.Compare(id.p.ID)
	}
	e := &id.e
	*e = entry{kind: entryPair, ci: -1, pi: -1}
	if k <= 0 {
		e.id, e.hasC, e.c = id.c.ID, true, *id.c
		if id.cItems != nil {
			e.ci = int32(id.contacts.Index)
		}
		id.c = id.contacts.Next()
	}
	if k >= 0 {
		e.id, e.hasP, e.p = id.p.ID, true, *id.p
		if id.pItems != nil {
			e.pi = int32(id.profiles.Index)
		}
		id.p = id.profiles.Next()
	}
	switch {
	case e.hasC && e.hasP && (e.c.Bad || e.p.Bad):
		e.kind = entryBlocked
		id.stats.Blocked++
	case e.hasC && e.hasP:
		id.stats.Matched++
	case e.hasC && e.c.Bad, e.hasP && e.p.Bad:
		e.kind = entryBlocked
	case e.hasC:
		id.stats.ContactsNoMatch++
	default:
		id.stats.ProfilesNoMatch++
	}
	return e
}

// Err is the first error reading the sorted rows back met.
func (id *identity) Err() error {
	for _, err := range []error{id.err, streamErr(id.cstream), streamErr(id.pstream)} {
		if err != nil {
			return err
		}
	}
	return nil
}

func streamErr[T any](s spill.Stream[T]) error {
	if s == nil {
		return nil
	}
	return s.Err()
}

// drain reads every entry without deciding (a disabled run, validate): the
// rules still find every reject.
func (id *identity) drain() error {
	for e := id.next(); e != nil; e = id.next() {
	}
	return id.Err()
}

// releaseRows lets go of the sorted rows once every entry is decided (what
// the identity rules counted stays).
func (id *identity) releaseRows() {
	if id.cstream != nil {
		id.cstream.Close()
	}
	if id.pstream != nil {
		id.pstream.Close()
	}
	id.contacts, id.profiles, id.cItems, id.pItems = nil, nil, nil, nil
	id.c, id.p, id.e = nil, nil, entry{}
}

// Close lets go of the sorted rows.
func (id *identity) Close() {
	if id.cstream != nil {
		id.cstream.Close()
	}
	if id.pstream != nil {
		id.pstream.Close()
	}
	if id.missed != nil {
		id.missed.Close()
	}
}

// supersededBy is the reject reason of a row replaced by a later row of its
// record (a contact or a profile).
func supersededBy(files []extract.InputFile, s *transform.Superseded, record string) string {
	if s.ByUnknownTime {
		return fmt.Sprintf("superseded: %s, whose time cannot be read, may be a later row for this %s", extract.Where(files, s.File, s.ByFile, s.By), record)
	}
	return fmt.Sprintf("superseded: %s is a later row for this %s", extract.Where(files, s.File, s.ByFile, s.By), record)
}
