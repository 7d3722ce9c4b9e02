package transform

import (
	"cmp"
	"fmt"
	"slices"

	"optsync/extract"
	"optsync/extract/spill"
)

// A run's rows go through the identity rules as sorted streams, never all
// at once unless they fit: each system's rows are sorted (in memory within
// the run's memory budget, else in runs on disk, merged), the rules read
// them a record at a time (stream.go), and the two sides are joined as a
// merge by contact id into the entries the decider visits.
//
//	contacts  sorted by id              → DedupStream ──────────────┐
//	profiles  sorted by PKey → PKeyStream → sorted by contact        ├→ join → entries
//	                                      → ContactProfiles ─────────┘
//
// Everything a rule sets aside (a superseded row, a duplicate profile) goes
// to the run's rejects as it is found.

// Entry is one contact the decider visits: its rows in the input (a
// contact, a profile, both), or, found in state, one that lost a side or
// whose profiles are in conflict.
type Entry struct {
	Kind       uint8
	ID         extract.ID
	HasC, HasP bool
	C          extract.Contact
	P          ProfileSide
	// CI and PI place C and P in the rows held in memory, when they are
	// (Identity.Held): the commit finds them there again; -1 when not.
	CI, PI int32
}

// The kinds of entry.
const (
	EntryPair     = iota // decided
	EntryBlocked         // in the input, kept out: a bad row, two profiles
	EntryLost            // in state only: it lost a side
	EntryConflict        // two or more profiles in the input name it
)

func (e *Entry) contact() *extract.Contact {
	if e.HasC {
		return &e.C
	}
	return nil
}

func (e *Entry) profile() *ProfileSide {
	if e.HasP {
		return &e.P
	}
	return nil
}

// ProfileSide is a profile row as the rules decide it, its PKey and field times
// at hand: a row (extract.Profile) only names them, in the Keys of whoever
// holds the rows, and an entry is decided, kept for the commit, or read
// back from disk on its own. Its row's own names are zero (they would
// name blocks the entry does not hold).
type ProfileSide struct {
	extract.Profile
	PKey string
	// FieldModified holds per-field change times (NoTime = unknown); nil
	// when no mapping names a change-time column.
	FieldModified *[extract.MaxFields]int64
}

// ProfileSideOf is row p as the rules decide it; what p names is in ks. The PKey
// is not copied: it stays valid however the row's holder lets go of it.
func ProfileSideOf(ks *extract.Keys, p *extract.Profile) ProfileSide {
	s := ProfileSide{Profile: *p, PKey: ks.Get(p.PKey)}
	if !p.FieldModified.Empty() {
		s.FieldModified = new([extract.MaxFields]int64)
		ks.Times(p.FieldModified, s.FieldModified)
	}
	s.Profile.PKey, s.Profile.FieldModified = 0, 0
	return s
}

// Identity is what the identity rules make of a run's inputs, read as the
// decider asks for entries.
type Identity struct {
	contacts *DedupStream
	profiles *ContactProfiles
	cstream  spill.Stream[extract.Contact]
	pstream  spill.Stream[extract.Profile]
	// owners says what the input links each PKey to (a run: a profile
	// state links to one contact may be another's now).
	owners    *Owners
	ownerList []OwnerEntry // as the rule by PKey finds them, in PKey order
	// presentC counts the records of the PKey index whose PKey the input
	// holds (pkeyCounted: the index was there to count with); missed
	// hands, in contact order, those whose PKey it lacks.
	presentC    int
	pkeyCounted bool
	missed      spill.Stream[PKeyEntry]
	later       *spill.Sorter[extract.Reject]
	// holdRejects: the rejects found go to heldRejects, for the entry
	// feed to add in order (feed.go).
	holdRejects bool
	heldRejects []extract.Reject
	// Superseded, Duplicates and Unlinked count the rows the rules set
	// aside: a later row of the record replaced it, a second profile
	// for one contact, a profile without contact.
	Superseded, Duplicates, Unlinked int
	// conflicts are the contacts two or more profiles of the input name,
	// in id order (the join keeps them out).
	conflicts []extract.ID
	err       error
	// cItems and pItems are the sorted rows the streams read, when they
	// are all in memory (nil when spilled): entries are placed in them.
	cItems []extract.Contact
	pItems []extract.Profile
	// keys holds what the profile rows name; byContactKeys is the writer
	// of those the sort by contact holds in memory (nil when the rows are
	// held as read).
	keys          *extract.Keys
	byContactKeys *extract.KeyWriter

	// the join's lookahead and counts
	c      *extract.Contact
	p      *extract.Profile
	pulled bool
	// Stats are the join's counts, once every entry is read.
	Stats JoinStats
	e     Entry
}

// PKeyCounter counts, for PKeys asked for in increasing order, the records
// of state linking their contact to each (state.PKeyCount).
type PKeyCounter interface {
	Count(pkey string) (int, error)
	Finish() error
}

// IdentifyOptions are what Identify needs besides the rows.
type IdentifyOptions struct {
	// D365Files and CampaignFiles are each side's inputs, by the rows'
	// File, for the reject rows.
	D365Files, CampaignFiles []extract.InputFile
	// WithOwners keeps what the input links each PKey to (a run).
	WithOwners bool
	// CountPKeys, when set (state's PKey index is built), starts the count
	// of the input's PKeys in it (the shrink guard's Campaign side); missed
	// hears of the index's entries whose PKey the input lacks.
	CountPKeys func(missed func(PKeyEntry) error) PKeyCounter
	// Later takes the rejects the rules find.
	Later *spill.Sorter[extract.Reject]
	// Sorts makes the sorts the rules need.
	Sorts Sorts
	// Keys holds what the profile rows name (the reading's Keys), and
	// ReadKeys is the reading's writer, whose blocks are let go of once
	// the rows it filled are on disk or laid out again.
	Keys     *extract.Keys
	ReadKeys *extract.KeyWriter
	// ProfilesByContact says the read sorted the profiles by contact
	// (ProfileCodec(ks, true)), not by PKey: a read whose rule by PKey
	// nobody hears the PKeys of in order (no owners kept, no PKey index to
	// count in), and which, when its sort spilled, counted every row's
	// PKey in Shared (extract.Records.Tally). The rule then settles
	// apart the rows whose PKey another may share (apart.go).
	ProfilesByContact bool
	Shared            *SharedPKeys
}

// Sorts makes the sorts the identity rules need (with ProfileCodec and
// PKeyCodec): the caller chooses how much memory they hold and where they
// spill, so that transform itself opens no file.
type Sorts interface {
	// ProfilesByContact sorts profiles by contact; what they name is in
	// ks.
	ProfilesByContact(ks *extract.Keys) *spill.Sorter[extract.Profile]
	// HeldByContact sorts by contact, in place, profiles all held in
	// memory (all of them, or one of the parts sortHeld splits them
	// into).
	HeldByContact(ks *extract.Keys, held []extract.Profile) *spill.Sorter[extract.Profile]
	// PKeysByID sorts PKey entries by contact.
	PKeysByID() *spill.Sorter[PKeyEntry]
	// ProfilesByPKey sorts by PKey the profiles a read sorted by contact
	// whose PKey another may share (IdentifyOptions.ProfilesByContact),
	// and the rows of such a read again when the rule must read them all
	// by PKey; what they name is in ks.
	ProfilesByPKey(ks *extract.Keys) *spill.Sorter[extract.Profile]
}

// Identify starts the identity rules over the rows read: it runs the
// profiles through PKeyStream into their sort by contact (the rule by PKey
// needs every row of a PKey, in any file); the rest happens as the decider
// reads entries.
//
// The contacts are sorted meanwhile, on another core: nothing the profiles'
// rules do touches them.
func Identify(contacts *spill.Sorter[extract.Contact], profiles *spill.Sorter[extract.Profile], o IdentifyOptions) (*Identity, error) {
	id := &Identity{later: o.Later, keys: o.Keys}
	cs := make(chan sortedContacts, 1)
	go func() { cs <- sortContacts(contacts) }()
	owner, count := id.counting(o)
	if count != nil {
		defer count.missed.Close()
	}
	byContact, held, merged, err := id.byPKey(profiles, o, owner)
	if count != nil {
		n, cerr := count.wait()
		id.presentC += n
		if cerr != nil && id.err == nil {
			id.err = cerr
		}
	}
	if err == nil && count != nil {
		if err = count.pc.Finish(); err == nil {
			id.missed, err = count.missed.Sorted()
		}
	}
	c := <-cs
	if err = cmp.Or(err, id.err, c.err); err != nil {
		if byContact != nil {
			byContact.Close()
		}
		if merged != nil {
			merged.Close()
		}
		if c.stream != nil {
			c.stream.Close()
		}
		return nil, err
	}
	if err := id.joinByContact(c, byContact, held, merged, o); err != nil {
		id.Close()
		return nil, err
	}
	return id, nil
}

// sortedContacts are the contacts in ContactOrder: the stream the dedup
// reads, and the rows themselves when all are in memory.
type sortedContacts struct {
	items  []extract.Contact
	stream spill.Stream[extract.Contact]
	err    error
}

func sortContacts(contacts *spill.Sorter[extract.Contact]) sortedContacts {
	var c sortedContacts
	if items, ok := contacts.InMemory(); ok {
		c.items = items
	}
	c.stream, c.err = contacts.Sorted()
	if c.items == nil && c.err == nil {
		c.stream = readAhead(c.stream) // merged from runs: ahead.go
	}
	return c
}

// pkeyCount is the count of the input's PKeys in state's PKey index. It
// runs on a goroutine of its own, handed the PKeys in batches as the rule
// by PKey keeps them: reading the index beside the rule (a million entries
// in a repeat backfill) cost the rule's goroutine a fifth of a second.
type pkeyCount struct {
	pc     PKeyCounter
	missed *spill.Sorter[PKeyEntry]
	batch  []string
	work   chan []string // batches to count (closed by wait)
	spare  chan []string // batches counted, to fill again
	done   chan struct{}
	// pkeyBatches batches exist, each in one place at a time (batch,
	// work, the count, spare): neither side waits on the other for ever.
	// n and err are the count's, read once done is closed.
	n   int
	err error
	// empty: the index holds nothing (emptyCounter), so no PKey is handed
	// to the count (every one counts 0).
	empty bool
}

// emptyCounter is a PKeyCounter that can tell its index holds no entry.
type emptyCounter interface{ Empty() bool }

// pkeyBatch is how many PKeys a batch hands the count (strings: they stay
// as the rows hold them).
const (
	pkeyBatch   = 1024
	pkeyBatches = 4
)

func newPKeyCount(pc PKeyCounter, missed *spill.Sorter[PKeyEntry]) *pkeyCount {
	c := &pkeyCount{pc: pc, missed: missed, work: make(chan []string, pkeyBatches), spare: make(chan []string, pkeyBatches),
		done: make(chan struct{})}
	if e, ok := pc.(emptyCounter); ok && e.Empty() {
		c.empty = true
		close(c.work)
		close(c.done)
		return c
	}
	c.batch = make([]string, 0, pkeyBatch)
	for range pkeyBatches - 1 {
		c.spare <- make([]string, 0, pkeyBatch)
	}
	go c.run()
	return c
}

// run counts the batches in the order handed, each PKey as the rule kept
// it (the count moves forward through the index); the first error is the
// count's.
func (c *pkeyCount) run() {
	defer close(c.done)
	for b := range c.work {
		for _, pkey := range b {
			n, err := c.pc.Count(pkey)
			c.n += n
			if err != nil && c.err == nil {
				c.err = err
			}
		}
		c.spare <- b[:0]
	}
}

// add hands the count a PKey kept.
func (c *pkeyCount) add(pkey string) {
	c.batch = append(c.batch, pkey)
	if len(c.batch) == cap(c.batch) {
		c.work <- c.batch
		c.batch = <-c.spare
	}
}

// wait hands the last batch and waits for the count: the records of the
// index the PKeys named, and the first error.
func (c *pkeyCount) wait() (int, error) {
	if c.empty {
		return 0, nil
	}
	if len(c.batch) > 0 {
		c.work <- c.batch
		c.batch = nil
	}
	close(c.work)
	<-c.done
	return c.n, c.err
}

// counting makes what the rule by PKey tells of each PKey it keeps: its
// owner (for a run), its count in state's PKey index (for the shrink
// guard).
func (id *Identity) counting(o IdentifyOptions) (func(string, OwnerKind, extract.ID), *pkeyCount) {
	var count *pkeyCount
	if o.CountPKeys != nil {
		id.pkeyCounted = true
		missed := o.Sorts.PKeysByID()
		count = newPKeyCount(o.CountPKeys(func(e PKeyEntry) error { return missed.Add(&e) }), missed)
	}
	if !o.WithOwners && (count == nil || count.empty) {
		return nil, count
	}
	owner := func(pkey string, kind OwnerKind, cid extract.ID) {
		if o.WithOwners {
			id.ownerList = append(id.ownerList, OwnerEntry{PKey: pkey, ID: cid, Kind: kind})
		}
		if count != nil && !count.empty {
			count.add(pkey)
		}
	}
	return owner, count
}

// byPKey runs the rule by PKey over the profiles, into their sort by
// contact: the rows it keeps, sorted, when all are held in memory (held),
// else a sorter.
func (id *Identity) byPKey(profiles *spill.Sorter[extract.Profile], o IdentifyOptions, owner func(string, OwnerKind, extract.ID)) (_ *spill.Sorter[extract.Profile], held []extract.Profile, merged spill.Stream[extract.Profile], _ error) {
	superseded := func(s Superseded) {
		id.Superseded++
		if !s.Bad {
			id.reject(extract.Reject{Source: o.CampaignFiles[s.File].Source(), Line: int(s.Line), ID: s.PKey, IDChecked: true,
				Reason: supersededBy(o.CampaignFiles, &s, "profile")})
		}
	}
	var ks *PKeyStream
	defer func() {
		if ks != nil {
			id.Unlinked = ks.Unlinked
		}
	}()
	if owner == nil {
		if items, ok := profiles.Unsorted(); ok {
			// In memory, and nobody hears of the PKeys in order: the rule
			// works out what it keeps in place (heldByPKey), unsorted.
			w, unlinked := heldByPKey(items, o.Keys, superseded, maphashPKey())
			id.Unlinked = unlinked
			sortHeld(items[:w], o.Sorts, o.Keys)
			o.ReadKeys.Reset() // every row held names the blocks laid out
			return nil, items[:w], nil, nil
		}
	}
	if o.ProfilesByContact {
		if owner == nil && o.Shared != nil {
			// spilled (the rows in memory went above)
			stream, err := id.apart(profiles, o, o.Shared)
			return nil, nil, stream, err
		}
		// Not to be: the read sorted by contact for a rule that hears of
		// no PKey. The rule reads every row by PKey all the same.
		var err error
		if profiles, o.ReadKeys, err = resortByPKey(profiles, o); err != nil {
			return nil, nil, nil, err
		}
	}
	if items, ok := profiles.InMemory(); ok {
		// In memory: the rule by PKey writes what it keeps over the rows
		// it has read (a group is copied before any of it is written), as
		// the sort by contact then works on them in place.
		i := 0
		ks = NewPKeyStream(func() *extract.Profile {
			if i == len(items) {
				return nil
			}
			i++
			return &items[i-1]
		}, o.Keys, nil, superseded, owner)
		w := 0
		for p := ks.Next(); p != nil; p = ks.Next() {
			items[w] = *p
			w++
		}
		clear(items[w:])
		sortHeld(items[:w], o.Sorts, o.Keys)
		o.ReadKeys.Reset() // every row held names the blocks laid out
		return nil, items[:w], nil, nil
	}
	pstream, err := profiles.Sorted()
	if err != nil {
		return nil, nil, nil, err
	}
	defer pstream.Close()
	o.ReadKeys.Reset() // every row is on disk
	// the merge on another core, the rule on this one
	rows := readPKeyRows(pstream, o.Keys)
	defer rows.Close() // before pstream's
	// own holds the rows of a PKey the rule reads together: each row it
	// keeps is encoded into the sort by contact before the next is read
	own := o.Keys.Writer()
	defer own.Reset()
	ks = NewPKeyStream(rows.Next, o.Keys, own, superseded, owner)
	// The sort by contact writes its runs on another core while the rule
	// goes on, and holds the rows encoded (spill.Packed).
	byContact := spill.PackedOf(o.Sorts.ProfilesByContact(o.Keys), profileContactTie)
	for p := ks.Next(); p != nil; p = ks.Next() {
		if err := byContact.Add(p); err != nil {
			byContact.Close()
			return nil, nil, nil, err
		}
	}
	if err := rows.Err(); err != nil {
		byContact.Close()
		return nil, nil, nil, err
	}
	// what the sort holds in memory when it wrote no run is decoded into
	// rows whose PKeys bw holds
	bw := o.Keys.Writer()
	id.byContactKeys = bw
	sorted, err := byContact.Finish(func(b []byte, p *extract.Profile) error { return extract.DecodeProfile(b, bw, p) })
	if err != nil {
		return nil, nil, nil, err
	}
	return sorted, nil, nil, nil
}

// profileContactTie orders two encoded profiles (extract.AppendProfile)
// in ProfileContactOrder, for the sort by contact (spill.Packed) when their
// keys are equal: rare (two profiles of one contact, ids alike in their
// first 8 bytes), so each is decoded.
func profileContactTie() func(a, b []byte) int {
	ks := extract.NewKeys()
	w := ks.Writer()
	var pa, pb extract.Profile
	return func(a, b []byte) int {
		w.Reset()
		if extract.DecodeProfile(a, w, &pa) != nil || extract.DecodeProfile(b, w, &pb) != nil {
			return 0 // not to be: the sort encoded them itself
		}
		return ProfileContactOrder(ks, &pa, &pb)
	}
}

// sortHeld sorts profiles held in memory by contact, in place, in two
// parts at once: split at a contact id near the middle, so that every row
// of the first part sorts before every row of the second, each part is
// sorted on a core of its own. Their PKeys are then laid out again in that
// order (layPKeys).
func sortHeld(held []extract.Profile, s Sorts, ks *extract.Keys) {
	m := splitByContact(held)
	if m == 0 || m == len(held) {
		s.HeldByContact(ks, held).InMemory()
		layPKeys(ks, held)
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.HeldByContact(ks, held[m:]).InMemory()
		layPKeys(ks, held[m:])
	}()
	s.HeldByContact(ks, held[:m]).InMemory()
	layPKeys(ks, held[:m])
	<-done
}

// layPKeys copies what profiles name into blocks of their own, in the
// profiles' order, and names it there. A PKey's bytes lie where the read
// put them, in the order of the file: read in contact order (the decisions
// compare each with state's, the commit writes each into its record)
// every one was a cache miss, waited for alone, a third of a second in a
// million. Copied in one pass, the misses are independent and overlap;
// the blocks they came from are let go (IdentifyOptions.ReadKeys).
func layPKeys(ks *extract.Keys, held []extract.Profile) {
	w := ks.Writer()
	for i := range held {
		p := &held[i]
		p.PKey, p.FieldModified = w.Copy(ks, p.PKey), w.CopyTimes(ks, p.FieldModified)
	}
}

// splitByContact moves the rows whose contact id's first 8 bytes are below
// a pivot (the median of a sample) ahead of the others, and returns how
// many those are; 0 when the rows are too few to be worth two sorts.
func splitByContact(held []extract.Profile) int {
	const parallelAbove, samples = 1 << 12, 63
	if len(held) < parallelAbove {
		return 0
	}
	var keys [samples]uint64
	for k := range keys {
		keys[k] = idKey(&held[k*(len(held)-1)/(samples-1)].ID)
	}
	slices.Sort(keys[:])
	pivot := keys[samples/2]
	i, j := 0, len(held)-1
	for {
		for i <= j && idKey(&held[i].ID) < pivot {
			i++
		}
		for i <= j && idKey(&held[j].ID) >= pivot {
			j--
		}
		if i >= j {
			return i
		}
		held[i], held[j] = held[j], held[i]
	}
}

func (id *Identity) reject(r extract.Reject) {
	if id.holdRejects {
		id.heldRejects = append(id.heldRejects, r)
		return
	}
	if err := id.later.Add(&r); err != nil && id.err == nil {
		id.err = err
	}
}

// joinByContact starts the rules by contact on both sides (the dedup of
// contacts, the duplicates of profiles) that the join reads.
func (id *Identity) joinByContact(contacts sortedContacts, byContact *spill.Sorter[extract.Profile], held []extract.Profile, merged spill.Stream[extract.Profile], o IdentifyOptions) error {
	if o.WithOwners {
		id.owners, id.ownerList = OwnersOf(id.ownerList), nil
	}
	id.cItems, id.cstream = contacts.items, contacts.stream
	var own *extract.KeyWriter // nil: the rows stay where they are
	switch {
	case merged != nil:
		// rows read back from disk, and the rule's, valid until the next
		id.pstream, own = merged, o.Keys.Writer()
	case byContact == nil:
		id.pItems, id.pstream = held, spill.Held(held)
	default:
		var err error
		if items, ok := byContact.InMemory(); ok {
			id.pItems = items
		} else {
			own = o.Keys.Writer()
		}
		if id.pstream, err = byContact.Sorted(); err != nil {
			return err
		}
		if own != nil {
			// every row is on disk now: what the blocks of the rows
			// held held is read back from there
			id.byContactKeys.Reset()
		}
	}
	id.profiles = NewContactProfiles(id.pstream.Next, o.Keys, own, func(p *extract.Profile) {
		if n := len(id.conflicts); n == 0 || id.conflicts[n-1] != p.ID {
			id.conflicts = append(id.conflicts, p.ID) // dups come grouped by contact, in order
		}
		id.Duplicates++
		if !p.Bad { // a bad row has its own reject row already
			id.reject(extract.Reject{Source: o.CampaignFiles[p.File].Source(), Line: int(p.Line), ID: o.Keys.Get(p.PKey), IDChecked: true, Reason: "duplicate-externalId"})
		}
	})
	id.contacts = NewDedupStream(id.cstream.Next, func(s Superseded) {
		id.Superseded++
		if !s.Bad {
			id.reject(extract.Reject{Source: o.D365Files[s.File].Source(), Line: int(s.Line), ID: s.ID.String(), IDChecked: true,
				Reason: supersededBy(o.D365Files, &s, "contact")})
		}
	})
	return nil
}

// Next joins the two sides by contact id: the next entry, nil at the end
// (or on an error: Err says).
func (id *Identity) Next() *Entry {
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
	*e = Entry{Kind: EntryPair, CI: -1, PI: -1}
	if k <= 0 {
		e.ID, e.HasC, e.C = id.c.ID, true, *id.c
		if id.cItems != nil {
			e.CI = int32(id.contacts.Index)
		}
		id.c = id.contacts.Next()
	}
	if k >= 0 {
		e.ID, e.HasP, e.P = id.p.ID, true, ProfileSideOf(id.keys, id.p)
		if id.pItems != nil {
			e.PI = int32(id.profiles.Index)
		}
		id.p = id.profiles.Next()
	}
	switch {
	case e.HasC && e.HasP && (e.C.Bad || e.P.Bad):
		e.Kind = EntryBlocked
		id.Stats.Blocked++
	case e.HasC && e.HasP:
		id.Stats.Matched++
	case e.HasC && e.C.Bad, e.HasP && e.P.Bad:
		e.Kind = EntryBlocked
	case e.HasC:
		id.Stats.ContactsNoMatch++
	default:
		id.Stats.ProfilesNoMatch++
	}
	return e
}

// Err is the first error reading the sorted rows back met.
func (id *Identity) Err() error {
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

// Drain reads every entry without deciding (a disabled run, validate): the
// rules still find every reject.
func (id *Identity) Drain() error {
	for e := id.Next(); e != nil; e = id.Next() {
	}
	return id.Err()
}

// IdentityRejects runs the identity rules over the rows read, deciding
// nothing (validate), and hands add the rejects they find (superseded
// rows, duplicates) in the order a run's rejects file lists them; o.Later
// holds them meanwhile.
func IdentityRejects(contacts *spill.Sorter[extract.Contact], profiles *spill.Sorter[extract.Profile], o IdentifyOptions, add func(extract.Reject)) error {
	id, err := Identify(contacts, profiles, o)
	if err != nil {
		return err
	}
	defer id.Close()
	if err := id.Drain(); err != nil {
		return err
	}
	rs, err := o.Later.Sorted()
	if err != nil {
		return err
	}
	defer rs.Close()
	for r := rs.Next(); r != nil; r = rs.Next() {
		add(*r)
	}
	return rs.Err()
}

// Held are the sorted rows the entries are placed in (Entry.CI, PI), when
// they are all in memory (nil when spilled); what the profiles name is in
// Keys.
func (id *Identity) Held() ([]extract.Contact, []extract.Profile) { return id.cItems, id.pItems }

// Keys holds what the profile rows name.
func (id *Identity) Keys() *extract.Keys { return id.keys }

// Owners says what the input links each PKey to (nil without WithOwners).
func (id *Identity) Owners() *Owners { return id.owners }

// PKeyCounted says whether the input's PKeys were counted in state's PKey
// index (IdentifyOptions.CountPKeys).
func (id *Identity) PKeyCounted() bool { return id.pkeyCounted }

// ReleaseRows lets go of the sorted rows once every entry is decided (what
// the identity rules counted stays).
func (id *Identity) ReleaseRows() {
	if id.cstream != nil {
		id.cstream.Close()
	}
	if id.pstream != nil {
		id.pstream.Close()
	}
	id.contacts, id.profiles, id.cItems, id.pItems = nil, nil, nil, nil
	id.c, id.p, id.e = nil, nil, Entry{}
}

// Close lets go of the sorted rows.
func (id *Identity) Close() {
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
func supersededBy(files []extract.InputFile, s *Superseded, record string) string {
	if s.ByUnknownTime {
		return fmt.Sprintf("superseded: %s, whose time cannot be read, may be a later row for this %s", extract.Where(files, s.File, s.ByFile, s.By), record)
	}
	return fmt.Sprintf("superseded: %s is a later row for this %s", extract.Where(files, s.File, s.ByFile, s.By), record)
}
