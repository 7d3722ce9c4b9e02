package main

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"golang.org/x/sync/errgroup"

	"optsync/extract"
	"optsync/load"
	"optsync/load/progress"
	"optsync/state"
	"optsync/transform"
)

// joined lists the join's entries as indexes into the two sorted sides, -1
// for a side missing from the inputs: pointer-free, so a million of them
// are 8 MB that the garbage collector need not scan.
type joined struct {
	contacts []extract.Contact
	profiles []extract.Profile
	pairs    [][2]int32
	// lost lists contacts of state, not in this run's input, that lost a
	// side (see gone): their entries are {lostEntry, index into lost}.
	lost []extract.ID
	// conflicts lists contacts whose two or more profiles this run's input
	// holds (the join leaves them out), sorted: their entries are
	// {conflictEntry, index into conflicts}, when state must learn of it.
	conflicts []extract.ID
}

const (
	lostEntry     = -2
	conflictEntry = -3
)

func (j *joined) at(k int32) (*extract.Contact, *extract.Profile) {
	m := j.pairs[k]
	var c *extract.Contact
	var p *extract.Profile
	if m[0] == lostEntry || m[0] == conflictEntry {
		return nil, nil
	}
	if m[0] >= 0 {
		c = &j.contacts[m[0]]
	}
	if m[1] >= 0 {
		p = &j.profiles[m[1]]
	}
	return c, p
}

// decider makes a run's decisions. It is called twice over the same
// entries — once to write the files, once, chunk by chunk, to commit state
// after the files are safe — and decides the same way both times: every
// input is the same and Decide is pure.
type decider struct {
	rules       *transform.Rules
	incremental bool
	matched     *joined
	d365Files   []inputFile
	campFiles   []inputFile
	// owners says, in a run, what this run's input links each of its PKeys
	// to: a profile state links to one contact may belong to another now.
	owners *transform.Owners
	// runName names a run by its start (Unix ms), for pending writes.
	runName func(int64) string
	// failed holds contacts whose writes an API refused: their state
	// records what was read but not those writes (and they go to the retry
	// queue).
	failed map[extract.ID]load.Refused
	// d365Complete and campaignComplete say this run read every record of
	// that side (a full API read): a record missing from it has no
	// counterpart there, it is not waiting for one.
	d365Complete, campaignComplete bool
	// etag gives the ETag the API read a contact with ("" for none); nil
	// when Dynamics is not read through the API.
	etag func(*extract.Contact) string
	// queued are the contacts of the retry queue: read again to be decided
	// again, so never taken as unchanged. deleted are the contacts this
	// run's read reported deleted in Dynamics: gone, as from a full read.
	queued, deleted map[extract.ID]bool
	// unchanged counts the entries whose rows told nothing new (see
	// transform.ContactKnown), by what the join counted them as: both
	// sides, a contact alone, a profile alone.
	unchangedBoth, unchangedContacts, unchangedProfiles int
	// counted in the first pass; viaStateContacts are the entries of
	// viaState that came from the Dynamics side
	viaState, viaStateContacts, waiting, stale int
	// one-sided entries blocked (by a profile that state links them to)
	blockedNoProfile, blockedNoContact int
	// notAfter is the latest change time believed (Unix ms); future lists
	// the contacts whose state held a later one (first pass).
	notAfter int64
	future   []string
	// pending groups the writes to update files that state holds, not yet
	// seen in an export, left by earlier runs, by the run that wrote them.
	pending map[int64]*pendingGroup
	// For the safety limits, also from the first pass: optOutDelta is what
	// this run's reads change in the opt-outs state knows (a pair never
	// agreed counts as now read); presentD and presentC count the input's
	// records that state already knew on that side.
	optOutDelta, presentD, presentC int
	// chunk is the contacts per state transaction (commitChunk unless a
	// test says); afterChunk, when set, hears of each one committed.
	chunk      int
	afterChunk func(n int)
}

// pendingGroup is the writes not seen yet of one run.
type pendingGroup struct {
	writes int
	// oldest is when the oldest was written (Unix ms): the run's
	// start, or for writes whose run was not recorded, at the latest when
	// their record last changed.
	oldest   int64
	contacts []extract.ID // the first few
}

// countPending counts the writes not seen yet in a contact's snapshot as
// it stands after this run, leaving out this run's own.
func (d *decider) countPending(id extract.ID, s *transform.Snapshot) {
	add := func(at int64) {
		if at == d.rules.Started {
			return
		}
		when := at
		if when == 0 {
			when = s.Decided * 1000
		}
		g := d.pending[at]
		if g == nil {
			if d.pending == nil {
				d.pending = map[int64]*pendingGroup{}
			}
			g = &pendingGroup{oldest: when}
			d.pending[at] = g
		}
		g.writes++
		g.oldest = min(g.oldest, when)
		if len(g.contacts) < 5 && !slices.Contains(g.contacts, id) {
			g.contacts = append(g.contacts, id)
		}
	}
	for i := range d.rules.Pairs {
		ps := &s.Pairs[i]
		if d.rules.ImportD365 && ps.DWritten.Known() {
			add(ps.DWrittenAt)
		}
		if d.rules.ImportCampaign && ps.CWritten.Known() {
			add(ps.CWrittenAt)
		}
	}
}

// verdict is what the decider made of one entry.
type verdict struct {
	next      transform.Snapshot
	res       transform.Result
	decisions []transform.Decision
	id        extract.ID
	pkey      string
	etag      string           // the Dynamics ETag a write goes with ("": none known)
	contact   extract.Contact  // the Dynamics side as decided (a write's basis)
	profile   *extract.Profile // the Campaign side as decided
	decided   bool             // a contact with both sides known was decided
	unchanged bool             // its rows told nothing new: not decided
	blocked   string           // why the entry was not touched, for the rejects file
	// record: next is stored although the entry is blocked (what was read
	// of its contact, that Campaign shows it two or more profiles)
	record    bool
	blockedAt extract.Reject
}

func (d *decider) one(k int32, prev *transform.Snapshot, buf []transform.Decision) verdict {
	c, p := d.matched.at(k)
	useState := prev != nil && !d.rules.Replay
	var v verdict
	switch {
	case c != nil:
		v.id = c.ID
	case p != nil:
		v.id = p.ID
	case d.matched.pairs[k][0] == conflictEntry:
		v.id = d.matched.conflicts[d.matched.pairs[k][1]]
		v.next = d.inConflict(v.id, prev)
		return v
	default: // it lost a side: see gone
		v.id = d.matched.lost[d.matched.pairs[k][1]]
		if prev == nil { // only found in state, so not possible
			v.blocked = "gone from state"
			return v
		}
		v.next = d.gone(v.id, prev)
		return v
	}
	// In a run, the profile state links to this contact may have left it:
	// this run's input links that PKey to another contact, or to none.
	left, keptOut := false, false
	if d.incremental && useState && prev.CSeen && prev.PKey != "" && (p == nil || p.PKey != prev.PKey) {
		switch kind, owner := d.owners.Lookup(prev.PKey); {
		case kind == transform.OwnerContact && owner != v.id, kind == transform.OwnerNoContact:
			left = true
		case kind == transform.OwnerKeptOut:
			keptOut = true
		}
	}
	if keptOut {
		v.blocked = fmt.Sprintf("kept out: profile %s, which state links to contact %s, has a row in this run that is bad or whose time cannot be read", prev.PKey, v.id)
		d.blockAt(&v, c, p)
		v.next = *prev
		return v
	}
	// A side read in full this run holds every record it has: one missing
	// from it has no counterpart there (it is gone, or never was); so has a
	// contact the read reported deleted.
	campaignAll := !d.incremental || d.campaignComplete
	d365All := !d.incremental || d.d365Complete || d.deleted[v.id]
	// A contact Campaign has shown two or more profiles for (in any read)
	// is decided again only once a read of every profile finds exactly one
	// (or none): until then a run that sees one of them, or only the
	// contact, records what it read of the contact and touches nothing.
	if prev != nil && prev.CConflict {
		if !campaignAll {
			v.blocked = fmt.Sprintf("duplicate-externalId: Campaign has shown two or more profiles for contact %s; it is not touched until a backfill (or a read of every profile) finds exactly one", v.id)
			d.blockAt(&v, c, p)
			v.next, v.record = d.seeBlocked(c, prev), true
			return v
		}
		settled := *prev
		settled.CConflict = false
		prev = &settled
	}
	// In a run, a profile other than the one state links to this contact is
	// a second profile for one contact: none is touched, unless this run
	// shows the first one has left the contact. A backfill, or a run that
	// read Campaign in full, reads every profile, so the one it finds is
	// the only one (the other is gone, or was relinked: left).
	if p != nil && !campaignAll && useState && prev.CSeen && prev.PKey != "" && prev.PKey != p.PKey && !left {
		v.blocked = fmt.Sprintf("duplicate-externalId: contact %s is linked to profile %s in state; a second profile for one contact is not touched until a backfill settles it", p.ID, prev.PKey)
		v.blockedAt = extract.Reject{Source: d.campFiles[p.File].source(), Line: int(p.Line), ID: p.PKey, IDChecked: true, Reason: v.blocked}
		// Two profiles for one contact: state remembers it, so that a
		// later run that sees only one of them does not decide either.
		v.next, v.record = d.seeBlocked(c, prev), true
		v.next.CConflict = true
		return v
	}
	if left {
		lost := transform.LoseProfile(*prev)
		prev = &lost
	}
	// In a run, rows that tell nothing state does not know are not changes:
	// a contact whose every row read is one (and whose side missing from
	// the input was not read in full) is not decided, exactly as by a run
	// that read only the changes and did not see it.
	if d.incremental && useState && !left && !d.queued[v.id] &&
		(c == nil && !(d365All && prev.DSeen) || c != nil && transform.ContactKnown(d.rules, c, prev)) &&
		(p == nil && !(campaignAll && prev.CSeen) || p != nil && transform.ProfileKnown(d.rules, p, prev)) {
		v.next, v.unchanged = *prev, true
		if c != nil && c.Modified == prev.DModified && d.etag != nil {
			if tag := d.etag(c); tag != "" {
				v.next.DETag = tag // the same version, as the API tags it now
			}
		}
		return v
	}
	switch {
	case c != nil && p == nil && !campaignAll && useState && prev.CSeen:
		known := transform.ProfileFromState(d.rules, c.ID, prev)
		p = &known
	case p != nil && c == nil && !d365All && useState && prev.DSeen:
		known := transform.ContactFromState(d.rules, p.ID, prev)
		c = &known
	case c != nil && p == nil:
		v.next = transform.SeeContact(d.rules, c, prev)
		d.keepETag(&v.next, c, prev, prev != nil && prev.DSeen && c.Modified < prev.DModified)
		if campaignAll {
			v.next.CSeen = false // a full read without the profile: it is gone
		}
		return v
	case p != nil && c == nil:
		v.next = transform.SeeProfile(d.rules, p, prev)
		if d365All {
			v.next.DSeen = false
		}
		return v
	}
	v.res, v.decisions = transform.Decide(d.rules, c, p, prev, buf)
	v.next, v.pkey, v.profile, v.decided = v.res.Next, p.PKey, p, true
	v.contact = *c
	if v.res.StaleD {
		v.contact = transform.ContactFromState(d.rules, c.ID, prev)
	}
	v.etag = d.keepETag(&v.next, c, prev, v.res.StaleD)
	return v
}

// keepETag sets the ETag next keeps, and returns the one a write to the
// contact goes with: the one read with this row; else the stored one, while
// the row is the version state knew; else none (the write reads the
// contact first).
func (d *decider) keepETag(next *transform.Snapshot, c *extract.Contact, prev *transform.Snapshot, stale bool) string {
	if d.etag != nil && !stale {
		if tag := d.etag(c); tag != "" {
			next.DETag = tag
			return tag
		}
	}
	if prev != nil && prev.DSeen && prev.DETag != "" && next.DModified == prev.DModified {
		next.DETag = prev.DETag
		return prev.DETag
	}
	next.DETag = ""
	return ""
}

// blockAt names the row of a blocked entry for the rejects file: its
// profile's when it has one, else its contact's.
func (d *decider) blockAt(v *verdict, c *extract.Contact, p *extract.Profile) {
	if c != nil {
		v.blockedAt = extract.Reject{Source: d.d365Files[c.File].source(), Line: int(c.Line), ID: v.id.String(), IDChecked: true, Reason: v.blocked}
	}
	if p != nil {
		v.blockedAt = extract.Reject{Source: d.campFiles[p.File].source(), Line: int(p.Line), ID: p.PKey, IDChecked: true, Reason: v.blocked}
	}
}

// seeBlocked is what state keeps of a contact that is not decided because
// its profiles are in conflict: what was read of the contact itself (so
// that it is decided against its present once the conflict is settled),
// nothing of the profiles.
func (d *decider) seeBlocked(c *extract.Contact, prev *transform.Snapshot) transform.Snapshot {
	if c == nil || c.Bad {
		return *prev
	}
	next := transform.SeeContact(d.rules, c, prev)
	d.keepETag(&next, c, prev, prev != nil && prev.DSeen && c.Modified < prev.DModified)
	return next
}

// inConflict is what state keeps of a contact whose two or more profiles
// this run's input holds.
func (d *decider) inConflict(id extract.ID, prev *transform.Snapshot) transform.Snapshot {
	next := transform.Snapshot{Known: true}
	if prev != nil {
		next = *prev
	}
	cs := d.matched.contacts
	if i, ok := slices.BinarySearchFunc(cs, id, func(c extract.Contact, id extract.ID) int { return c.ID.Compare(id) }); ok {
		next = d.seeBlocked(&cs[i], &next)
	}
	next.CConflict = true
	return next
}

func lookup(r *state.Reader, id extract.ID, into *transform.Snapshot) (*transform.Snapshot, error) {
	if r == nil {
		return nil, nil
	}
	found, err := r.Get(id, into)
	if err != nil || !found {
		return nil, err
	}
	return into, nil
}

// forgetFuture makes the change times of a snapshot read from state that
// lie beyond what the run believes unknown (transform.ForgetFutureTimes),
// in both passes alike; true when it changed one.
func (d *decider) forgetFuture(prev *transform.Snapshot) bool {
	if prev == nil {
		return false
	}
	fd, fc := transform.ForgetFutureTimes(prev, d.notAfter)
	return fd || fc
}

func entryID(m *joined, k int32) extract.ID {
	c, p := m.at(k)
	switch {
	case c != nil:
		return c.ID
	case p != nil:
		return p.ID
	case m.pairs[k][0] == conflictEntry:
		return m.conflicts[m.pairs[k][1]]
	}
	return m.lost[m.pairs[k][1]]
}

// all makes every decision of the run against the state as it was when
// the run began, hands each contact with something to write or report to
// sink (blocked entries with their reason), and lists the entries whose
// state changes or that have decisions to log. Nothing per decision is held
// in memory.
func (d *decider) all(ctx context.Context, st *state.Store, prog *progress.Progress, sink func(ch *load.Change, blocked *extract.Reject) error) (dirty []int32, err error) {
	var reader *state.Reader
	if st != nil {
		if reader, err = st.Reader(); err != nil {
			return nil, err
		}
		defer reader.Close()
	}
	bar := prog.Stage("deciding", int64(len(d.matched.pairs)), "contacts")
	defer bar.Done()
	decisions := make([]transform.Decision, 0, extract.MaxFields)
	var prev transform.Snapshot
	var ch load.Change
	// State is walked whole, in step with the entries: a contact of state
	// that is not in this run's input is seen too (absent).
	input := inInput{m: d.matched}
	absent := func(id extract.ID, snap *transform.Snapshot) error {
		// (a cheap test first: the walk meets every record of the file)
		if !input.has(id) && d.losesSide(id, snap) {
			lost := d.gone(id, snap)
			d.matched.pairs = append(d.matched.pairs, [2]int32{lostEntry, int32(len(d.matched.lost))})
			d.matched.lost = append(d.matched.lost, id)
			dirty = append(dirty, int32(len(d.matched.pairs)-1))
			// what it knew of the side lost no longer counts among the
			// opt-outs state knows (no input row: nothing is present)
			d.optOutDelta += knownOptOuts(len(d.rules.Pairs), snap, &lost) - knownOptOuts(len(d.rules.Pairs), snap, snap)
			snap = &lost
		}
		d.countPending(id, snap)
		return nil
	}
	entries := len(d.matched.pairs)
	for k := range entries {
		if k&0xfff == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		bar.Add(1)
		id := entryID(d.matched, int32(k))
		var prevPtr *transform.Snapshot
		if reader != nil {
			found, err := reader.Until(&id, &prev, absent)
			if err != nil {
				return nil, err
			}
			if found {
				prevPtr = &prev
			}
		}
		forgot := d.forgetFuture(prevPtr)
		if forgot {
			d.future = append(d.future, id.String())
		}
		v := d.one(int32(k), prevPtr, decisions[:0])
		decisions = v.decisions
		d.count(int32(k), prevPtr, &v.next)
		if v.blocked != "" {
			switch {
			case v.record:
				d.countPending(v.id, &v.next)
				if prevPtr == nil || v.next != prev || forgot {
					dirty = append(dirty, int32(k))
				}
			case prevPtr != nil:
				d.countPending(v.id, prevPtr)
			}
			// Join counted a one-sided entry as without counterpart; it
			// is counted as blocked instead.
			switch c, p := d.matched.at(int32(k)); {
			case p == nil:
				d.blockedNoProfile++
			case c == nil:
				d.blockedNoContact++
			}
			// A copy: handing sink a pointer into v would put every
			// verdict (a kilobyte) on the heap.
			blocked := v.blockedAt
			if err := sink(nil, &blocked); err != nil {
				return nil, err
			}
			continue
		}
		d.countPending(v.id, &v.next)
		c, p := d.matched.at(int32(k))
		switch {
		case v.unchanged:
			switch {
			case c != nil && p != nil:
				d.unchangedBoth++
			case c != nil:
				d.unchangedContacts++
			default:
				d.unchangedProfiles++
			}
		case v.decided && p == nil:
			d.viaState++
			d.viaStateContacts++
		case v.decided && c == nil:
			d.viaState++
		case !v.decided && d.incremental && (c != nil && !d.campaignComplete || p != nil && !d.d365Complete):
			d.waiting++
		}
		if v.res.StaleD || v.res.StaleC {
			d.stale++
		}
		if len(v.decisions) > 0 {
			ch = load.Change{
				ID: v.id, PKey: v.pkey, Decisions: v.decisions,
				D365After: v.res.D365After, CampaignAfter: v.res.CampaignAfter,
				D365Changed: v.res.D365Changed, CampaignChanged: v.res.CampaignChanged,
				ETag: v.etag, ContactModified: v.contact.Modified, D365Read: v.contact.Values,
				ProfileModified: v.profile.Modified, CampaignRead: v.profile.Values,
			}
			if err := sink(&ch, nil); err != nil {
				return nil, err
			}
		}
		if prevPtr == nil || v.next != prev || len(v.decisions) > 0 || forgot {
			dirty = append(dirty, int32(k))
		}
	}
	if reader != nil {
		if _, err := reader.Until(nil, &prev, absent); err != nil {
			return nil, err
		}
	}
	// Contacts whose two or more profiles this run's input holds are left
	// out by the join; state learns that Campaign shows them more than one.
	if len(d.matched.conflicts) > 0 {
		var r *state.Reader
		if st != nil {
			if r, err = st.Reader(); err != nil {
				return nil, err
			}
			defer r.Close()
		}
		for i, id := range d.matched.conflicts {
			prevPtr, err := lookup(r, id, &prev)
			if err != nil {
				return nil, err
			}
			d.forgetFuture(prevPtr)
			next := d.inConflict(id, prevPtr)
			if prevPtr != nil && next == prev {
				continue
			}
			d.matched.pairs = append(d.matched.pairs, [2]int32{conflictEntry, int32(i)})
			dirty = append(dirty, int32(len(d.matched.pairs)-1))
			d.optOutDelta += knownOptOuts(len(d.rules.Pairs), prevPtr, &next) - knownOptOuts(len(d.rules.Pairs), prevPtr, prevPtr)
		}
	}
	return dirty, nil
}

// gone is what a contact of state that has no row in this run's input
// becomes: a side read in full without it no longer has it (the Dynamics
// contact is gone, exactly as when a delta read reports it deleted), and
// its profile may have left it (lostProfile).
func (d *decider) gone(id extract.ID, snap *transform.Snapshot) transform.Snapshot {
	if !d.losesSide(id, snap) {
		return *snap
	}
	next := *snap
	if d.lostProfile(id, snap) {
		next = transform.LoseProfile(next)
	}
	if !d.incremental || d.campaignComplete {
		next.CConflict = false // a read of every profile found none for it
	}
	if next.DSeen && (!d.incremental || d.d365Complete || d.deleted[id]) {
		next.DSeen, next.DETag = false, ""
	}
	return next
}

// losesSide says whether gone changes the contact.
func (d *decider) losesSide(id extract.ID, snap *transform.Snapshot) bool {
	campaignAll, d365All := !d.incremental || d.campaignComplete, !d.incremental || d.d365Complete || d.deleted[id]
	return d.lostProfile(id, snap) || snap.CConflict && campaignAll || snap.DSeen && d365All
}

// lostProfile says whether a contact of state that is not in this run's
// input has lost its profile. In a run, when this run's input links the
// PKey state knows for it to another contact, or to none. In a backfill,
// or a run that read Campaign in full, which read every profile: whenever
// state links it to one, for had Campaign still linked that profile to it,
// the contact would be in the input.
func (d *decider) lostProfile(id extract.ID, snap *transform.Snapshot) bool {
	if !snap.CSeen || snap.PKey == "" {
		return false
	}
	if !d.incremental || d.campaignComplete {
		return true
	}
	kind, owner := d.owners.Lookup(snap.PKey)
	return kind == transform.OwnerNoContact || kind == transform.OwnerContact && owner != id
}

// inInput says whether a contact has a row in this run's input on either
// side, usable or not (a contact kept out by a bad row or a duplicate is
// left as state has it). ids come in increasing order.
type inInput struct {
	m      *joined
	ci, pi int
}

func (in *inInput) has(id extract.ID) bool {
	cs, ps := in.m.contacts, in.m.profiles
	for in.ci < len(cs) && cs[in.ci].ID.Compare(id) < 0 {
		in.ci++
	}
	for in.pi < len(ps) && ps[in.pi].ID.Compare(id) < 0 {
		in.pi++
	}
	return in.ci < len(cs) && cs[in.ci].ID == id || in.pi < len(ps) && ps[in.pi].ID == id
}

// count adds one entry to the safety limits' figures.
func (d *decider) count(k int32, prev, next *transform.Snapshot) {
	c, p := d.matched.at(k)
	if prev != nil {
		d.presentD += b2i(c != nil && prev.DSeen)
		d.presentC += b2i(p != nil && prev.CSeen)
	}
	d.optOutDelta += knownOptOuts(len(d.rules.Pairs), prev, next) - knownOptOuts(len(d.rules.Pairs), prev, prev)
}

// knownOptOuts counts a contact's known opt-outs: agreements as in agreed
// (the record before the run; nil: none), values as last read in read.
func knownOptOuts(pairs int, agreed, read *transform.Snapshot) int {
	if read == nil {
		return 0
	}
	n := 0
	for i := range pairs {
		ps := read.Pairs[i]
		ps.S = extract.Unknown
		if agreed != nil {
			ps.S = agreed.Pairs[i].S
		}
		n += b2i(ps.KnownOptOut(read.DSeen, read.CSeen))
	}
	return n
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// commitChunk is how many contacts one state transaction takes. bbolt splits
// nodes only when a transaction commits, so a million puts in one
// transaction pile into one in-memory node; 32K keep each commit small
// while fsyncs stay few.
const commitChunk = 1 << 15

// commit records the dirty entries' snapshots and decisions in id order, a
// chunk per transaction, fin with the last. Each chunk is decided again
// from state as it stands, which for these contacts is still the state the
// first pass read. Each contact's record is written whole: a run killed here
// leaves every contact either as it was (the next run decides it again, the
// same way) or as decided, and the files its decisions went to were
// complete before the first chunk.
//
// While bbolt writes one chunk, the next is decided and encoded: chunks hold
// disjoint contacts, so reading the next one beside the write is safe.
func (d *decider) commit(ctx context.Context, st *state.Store, prog *progress.Progress, started time.Time, dirty []int32, fin *state.Final) error {
	bar := prog.Stage("committing state", int64(len(dirty)), "contacts")
	defer bar.Done()
	chunkSize := cmp.Or(d.chunk, commitChunk)
	free := make(chan *state.Batch, 2)
	for range 2 {
		free <- st.NewBatch(min(len(dirty), chunkSize))
	}
	type chunk struct {
		batch *state.Batch
		n     int  // dirty entries it covers
		last  bool // fin goes with it
	}
	ready := make(chan chunk, 1)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(ready)
		decisions := make([]transform.Decision, 0, extract.MaxFields)
		var prev transform.Snapshot
		var seq uint32
		for lo := 0; lo == 0 || lo < len(dirty); lo += chunkSize {
			hi := min(lo+chunkSize, len(dirty))
			var batch *state.Batch
			select {
			case batch = <-free:
			case <-gctx.Done():
				return gctx.Err()
			}
			batch.Reset()
			reader, err := st.Reader()
			if err != nil {
				return err
			}
			for _, k := range dirty[lo:hi] {
				prevPtr, err := lookup(reader, entryID(d.matched, k), &prev)
				if err != nil {
					reader.Close()
					return err
				}
				forgot := d.forgetFuture(prevPtr)
				v := d.one(k, prevPtr, decisions[:0])
				decisions = v.decisions
				if v.blocked != "" && !v.record {
					continue
				}
				refused := d.failed[v.id]
				// What was read is kept; refused writes are not: their pairs
				// keep the old agreement and no write is pending, so the
				// next run decides them again.
				for _, dec := range v.decisions {
					if dec.Skip == "" && dec.Target == transform.ToD365 && refused.D365 == "" {
						// the write moves the record: the ETag read before it is stale
						v.next.DETag = ""
					}
					if dec.Skip != "" || refused.Of(dec.Target) == "" {
						continue
					}
					ps := &v.next.Pairs[dec.Pair]
					if dec.Target == transform.ToD365 {
						ps.DWritten, ps.DWrittenAt = extract.Unknown, 0
					} else {
						ps.CWritten, ps.CWrittenAt = extract.Unknown, 0
					}
					ps.S = extract.Unknown
					if prevPtr != nil {
						ps.S = prevPtr.Pairs[dec.Pair].S
					}
				}
				if prevPtr == nil || v.next != prev || forgot {
					v.next.Decided = started.Unix()
					// An agreement that changes dates from this run (Decided);
					// PutRead keeps the date of one that does not.
					batch.PutRead(reader, v.id, &v.next)
				}
				for i := range v.decisions {
					seq++
					batch.AddLog(d.logEntry(fin.Run, seq, &v, &v.decisions[i], refused), fin.Run.ID, d.rules.Pairs)
				}
			}
			reader.Close()
			select {
			case ready <- chunk{batch, hi - lo, hi == len(dirty)}:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	g.Go(func() error {
		n := 0
		for c := range ready {
			var f *state.Final
			if c.last {
				f = fin
				fin.Run.Ended = time.Now().UTC() // the run's end includes its commit
			}
			if err := st.Commit(ctx, c.batch, f); err != nil {
				return err
			}
			if n++; d.afterChunk != nil {
				d.afterChunk(n)
			}
			bar.Add(int64(c.n))
			free <- c.batch
		}
		return nil
	})
	return g.Wait()
}

func (d *decider) logEntry(run *state.Run, seq uint32, v *verdict, dec *transform.Decision, refused load.Refused) state.LogEntry {
	p := d.rules.Pairs[dec.Pair]
	e := state.LogEntry{
		RunStarted: run.Started, Seq: seq, RunID: run.ID, Contact: v.id, PKey: v.pkey, Pair: dec.Pair,
		D365Field: p.D365, CampaignField: p.Campaign, Direction: dec.Target.String(), Rule: dec.Rule,
		D365Modified: dec.DModified, CampaignModified: dec.CModified, Outcome: load.Applied,
	}
	if dec.Skip != "" {
		e.Outcome, e.Error = load.Skipped, dec.Skip
		return e
	}
	e.Old, e.New = dec.Old.String(), dec.New.String()
	if dec.Pending {
		e.Outcome, e.Error = transform.OutcomePendingNotSeen, load.PendingReason(dec.Since, d.runName)
		return e
	}
	if why := refused.Of(dec.Target); why != "" {
		e.Outcome, e.Error = refused.Outcome(dec.Target), why
	}
	return e
}
