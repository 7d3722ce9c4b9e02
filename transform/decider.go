package transform

import (
	"fmt"

	"optsync/extract"
	"optsync/extract/spill"
)

// Decider makes a run's decisions. It is called twice over the same
// entries — once (All) to write the files, once, chunk by chunk (Again), to
// commit state after the files are safe — and decides the same way both
// times: every input is the same and Decide is pure.
type Decider struct {
	rules                          *Rules
	incremental                    bool
	d365Files, campFiles           []extract.InputFile
	walk                           bool
	owners                         *Owners
	d365Complete, campaignComplete bool
	etag                           func(*extract.Contact) string
	queued, deleted                map[extract.ID]bool
	stillQueued                    map[extract.ID]bool // queued, kept out by this run (keepQueued)
	dirty                          Dirty
	collect                        func(pkey string, id extract.ID) error
	collected                      func() error
	notAfter                       int64
	pendAlertBefore                int64
	src                            *Identity
	// candidates (without a walk) are the contacts that may lose a side
	// although the input has no row of theirs, in id order; those the input
	// holds are zeroed as the entries pass (candNext).
	candidates          []extract.ID
	candNext, candInput int
	// lost is the entry kept for a contact that lost a side.
	lost  Entry
	tally Tally
	// pending groups the writes to update files that state holds, not yet
	// seen in an export, left by earlier runs, by the run that wrote them,
	// as the contacts visited stand after this run; pendPrev counts those
	// of the contacts visited as they stood before it (without a walk, the
	// others are the kept totals); pendGone lists, for groups old enough
	// to warn of (written before pendAlertBefore, or at a time not
	// recorded), the contacts visited whose write in it was seen.
	pending  map[int64]*PendingGroup
	pendPrev map[int64]int
	pendGone map[int64]map[extract.ID]bool
	// For the safety limits, also from the first pass: optOutDelta is what
	// this run's reads change in the opt-outs state knows (a pair never
	// agreed counts as now read); presentD and presentC count the input's
	// records that state already knew on that side (presentC by contact,
	// when pkeyCounted is false: Identify counts them by PKey); missingD
	// and missingC are the first records state knows that the input
	// lacks; examples are the first opt-out clearings.
	optOutDelta, presentD, presentC int
	pkeyCounted                     bool
	missingD, missingC              []string
	examples                        []string
	// missed (with pkeyCounted) hands, in contact order, the records of
	// state whose PKey the input lacks: present after all when their
	// contact has a profile in the input (Campaign replaced it); missedC
	// keeps the first of the others.
	missed      spill.Stream[PKeyEntry]
	missedHead  *PKeyEntry
	missedC     []PKeyEntry
	missedEnded bool // missed handed its last record
}

// DecideOptions is what a run tells the decider besides its entries.
type DecideOptions struct {
	Rules *Rules
	// Incremental: the inputs hold changes (run), not full exports
	// (backfill).
	Incremental bool
	// D365Files and CampaignFiles are each side's inputs, by the rows'
	// File, for the rejects file.
	D365Files, CampaignFiles []extract.InputFile
	// Walk: state is read whole beside the entries (see All).
	Walk bool
	// D365Complete and CampaignComplete say this run read every record of
	// that side (a full API read): a record missing from it has no
	// counterpart there, it is not waiting for one.
	D365Complete, CampaignComplete bool
	// ETag gives the ETag the API read a contact with ("" for none); nil
	// when Dynamics is not read through the API.
	ETag func(*extract.Contact) string
	// Queued are the contacts of the retry queue: read again to be decided
	// again, so never taken as unchanged. Deleted are the contacts this
	// run's read reported deleted in Dynamics: gone, as from a full read.
	Queued, Deleted []extract.ID
	// Dirty keeps the entries the commit decides again.
	Dirty Dirty
	// Collect, when set, takes every record's (PKey, contact) after the
	// run: the PKey index written whole. Collected, when set, is called
	// once All has handed Collect the last of them (Collect may pass them
	// to another goroutine): its error is All's.
	Collect   func(pkey string, id extract.ID) error
	Collected func() error
	// NotAfter is the latest change time believed (Unix ms): the run's
	// start plus max_clock_skew.
	NotAfter int64
	// PendAlertBefore (without a walk): writes not seen yet that were
	// made before it (Unix ms) are warned of, naming their contacts.
	PendAlertBefore int64
}

// Dirty keeps the entries whose state changes or that have decisions to
// log, in the order they come, for the commit to decide again.
type Dirty interface {
	Add(e *Entry) error
}

// Tally is what the decider counted of a run, for its summary.
type Tally struct {
	// Unchanged* count the entries whose rows told nothing new (see
	// ContactKnown), by what the join counted them as: both sides, a
	// contact alone, a profile alone.
	UnchangedBoth, UnchangedContacts, UnchangedProfiles int
	// ViaState are the one-sided entries decided against what state knows
	// of the other side; ViaStateContacts those of them from Dynamics.
	ViaState, ViaStateContacts int
	// Waiting are the one-sided entries left for their counterpart, Stale
	// the entries with a side older than state knows.
	Waiting, Stale int
	// one-sided entries blocked (by a profile that state links them to)
	BlockedNoProfile, BlockedNoContact int
	// FutureN counts the contacts whose state held a change time later
	// than NotAfter; Future names the first ten.
	FutureN int
	Future  []string
}

// NewDecider makes the decider of the entries src hands.
func NewDecider(o DecideOptions, src *Identity) *Decider {
	d := &Decider{rules: o.Rules, incremental: o.Incremental, d365Files: o.D365Files, campFiles: o.CampaignFiles,
		walk: o.Walk, owners: src.owners, d365Complete: o.D365Complete, campaignComplete: o.CampaignComplete,
		etag: o.ETag, dirty: o.Dirty, collect: o.Collect, collected: o.Collected, notAfter: o.NotAfter, pendAlertBefore: o.PendAlertBefore,
		src: src, pkeyCounted: src.pkeyCounted, missed: src.missed,
		pendPrev: map[int64]int{}, pendGone: map[int64]map[extract.ID]bool{}}
	d.queued, d.deleted = idSet(o.Queued), idSet(o.Deleted)
	return d
}

// idSet is a set of ids (nil when empty).
func idSet(ids []extract.ID) map[extract.ID]bool {
	if len(ids) == 0 {
		return nil
	}
	m := make(map[extract.ID]bool, len(ids))
	for _, id := range ids {
		m[id] = true
	}
	return m
}

// Tally is what the decider counted, once All is done.
func (d *Decider) Tally() Tally { return d.tally }

// Rules are the rules it decides by.
func (d *Decider) Rules() *Rules { return d.rules }

// Walk says whether state is read whole beside the entries.
func (d *Decider) Walk() bool { return d.walk }

// Verdict is what the decider made of one entry.
type Verdict struct {
	// res.Next is the record after the run, decided or not.
	res       Result
	decisions []Decision
	id        extract.ID
	pkey      string
	etag      string          // the Dynamics ETag a write goes with ("": none known)
	contact   extract.Contact // the Dynamics side as decided (a write's basis)
	profile   *ProfileSide    // the Campaign side as decided
	decided   bool            // a contact with both sides known was decided
	unchanged bool            // its rows told nothing new: not decided
	blocked   string          // why the entry was not touched, for the rejects file
	// record: next is stored although the entry is blocked (what was read
	// of its contact, that Campaign shows it two or more profiles)
	record    bool
	blockedAt extract.Reject
}

// one decides one entry against its record in state (prev; nil: none),
// into v (the caller's: a verdict is a kilobyte, not copied on return).
func (d *Decider) one(e *Entry, prev *Snapshot, buf []Decision, v *Verdict) {
	*v = Verdict{id: e.ID}
	switch e.Kind {
	case EntryConflict:
		v.res.Next = d.inConflict(e, prev)
		return
	case EntryLost: // it lost a side: see gone
		if prev == nil { // only found in state, so not possible
			v.blocked = "gone from state"
			return
		}
		v.res.Next = d.gone(v.id, prev)
		return
	}
	c, p := e.contact(), e.profile()
	useState := prev != nil && !d.rules.Replay
	// A side read in full this run holds every record it has: one missing
	// from it has no counterpart there (it is gone, or never was); so has a
	// contact the read reported deleted.
	campaignAll := !d.incremental || d.campaignComplete
	d365All := !d.incremental || d.d365Complete || d.deleted[v.id]
	prev, left, stop := d.keptBack(v, c, p, prev, useState, campaignAll)
	if stop {
		return
	}
	if left {
		lost := LoseProfile(*prev)
		prev = &lost
	}
	// In a run, rows that tell nothing state does not know are not changes:
	// a contact whose every row read is one (and whose side missing from
	// the input was not read in full) is not decided, exactly as by a run
	// that read only the changes and did not see it.
	if d.incremental && useState && !left && !d.queued[v.id] &&
		(c == nil && !(d365All && prev.DSeen) || c != nil && ContactKnown(d.rules, c, prev)) &&
		(p == nil && !(campaignAll && prev.CSeen) || p != nil && ProfileKnown(d.rules, p, prev)) {
		v.res.Next, v.unchanged = *prev, true
		if c != nil && c.Modified == prev.DModified && d.etag != nil {
			if tag := d.etag(c); tag != "" {
				v.res.Next.DETag = tag // the same version, as the API tags it now
			}
		}
		return
	}
	d.decide(v, c, p, prev, buf, useState && !campaignAll, useState && !d365All, campaignAll, d365All)
}

// keptBack handles what state knows of an entry's profiles before it is
// decided: a profile that left the contact (left), a contact kept out or
// blocked by two profiles (stop: v says why and what is recorded). prev
// comes back as it is to be decided against.
func (d *Decider) keptBack(v *Verdict, c *extract.Contact, p *ProfileSide, prev *Snapshot, useState, campaignAll bool) (_ *Snapshot, left, stop bool) {
	// In a run, the profile state links to this contact may have left it:
	// this run's input links that PKey to another contact, or to none.
	keptOut := false
	if d.incremental && useState && prev.CSeen && prev.PKey != "" && (p == nil || p.PKey != prev.PKey) {
		switch kind, owner := d.owners.Lookup(prev.PKey); {
		case kind == OwnerContact && owner != v.id, kind == OwnerNoContact:
			left = true
		case kind == OwnerKeptOut:
			keptOut = true
		}
	}
	if keptOut {
		v.blocked = fmt.Sprintf("kept out: profile %s, which state links to contact %s, has a row in this run that is bad or whose time cannot be read", prev.PKey, v.id)
		d.blockAt(v, c, p)
		v.res.Next = *prev
		return prev, left, true
	}
	// A contact Campaign has shown two or more profiles for (in any read)
	// is decided again only once a read of every profile finds exactly one
	// (or none): until then a run that sees one of them, or only the
	// contact, records what it read of the contact and touches nothing.
	if prev != nil && prev.CConflict {
		if !campaignAll {
			v.blocked = fmt.Sprintf("duplicate-externalId: Campaign has shown two or more profiles for contact %s; it is not touched until a backfill (or a read of every profile) finds exactly one", v.id)
			d.blockAt(v, c, p)
			v.res.Next, v.record = d.seeBlocked(c, prev), true
			return prev, left, true
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
		v.blockedAt = extract.Reject{Source: d.campFiles[p.File].Source(), Line: int(p.Line), ID: p.PKey, IDChecked: true, Reason: v.blocked}
		// Two profiles for one contact: state remembers it, so that a
		// later run that sees only one of them does not decide either.
		v.res.Next, v.record = d.seeBlocked(c, prev), true
		v.res.Next.CConflict = true
		return prev, left, true
	}
	return prev, left, false
}

// decide decides an entry with changes: both sides, one of them against
// what state knows of the other (profileKnown, contactKnown), or one side
// alone, seen.
func (d *Decider) decide(v *Verdict, c *extract.Contact, p *ProfileSide, prev *Snapshot, buf []Decision, profileKnown, contactKnown, campaignAll, d365All bool) {
	switch {
	case c != nil && p == nil && profileKnown && prev.CSeen:
		known := ProfileFromState(d.rules, c.ID, prev)
		p = &known
	case p != nil && c == nil && contactKnown && prev.DSeen:
		known := ContactFromState(d.rules, p.ID, prev)
		c = &known
	case c != nil && p == nil:
		v.res.Next = SeeContact(d.rules, c, prev)
		d.keepETag(&v.res.Next, c, prev, prev != nil && prev.DSeen && c.Modified < prev.DModified)
		if campaignAll {
			v.res.Next.CSeen = false // a full read without the profile: it is gone
		}
		return
	case p != nil && c == nil:
		v.res.Next = SeeProfile(d.rules, p, prev)
		if d365All {
			v.res.Next.DSeen = false
		}
		return
	}
	v.decisions = decideInto(&v.res, d.rules, c, p, prev, buf)
	v.pkey, v.profile, v.decided = p.PKey, p, true
	v.contact = *c
	if v.res.StaleD {
		v.contact = ContactFromState(d.rules, c.ID, prev)
	}
	v.etag = d.keepETag(&v.res.Next, c, prev, v.res.StaleD)
}

// keepETag sets the ETag next keeps, and returns the one a write to the
// contact goes with: the one read with this row; else the stored one, while
// the row is the version state knew; else none (the write reads the
// contact first).
func (d *Decider) keepETag(next *Snapshot, c *extract.Contact, prev *Snapshot, stale bool) string {
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
func (d *Decider) blockAt(v *Verdict, c *extract.Contact, p *ProfileSide) {
	if c != nil {
		v.blockedAt = extract.Reject{Source: d.d365Files[c.File].Source(), Line: int(c.Line), ID: v.id.String(), IDChecked: true, Reason: v.blocked}
	}
	if p != nil {
		v.blockedAt = extract.Reject{Source: d.campFiles[p.File].Source(), Line: int(p.Line), ID: p.PKey, IDChecked: true, Reason: v.blocked}
	}
}

// seeBlocked is what state keeps of a contact that is not decided because
// its profiles are in conflict: what was read of the contact itself (so
// that it is decided against its present once the conflict is settled),
// nothing of the profiles.
func (d *Decider) seeBlocked(c *extract.Contact, prev *Snapshot) Snapshot {
	if c == nil || c.Bad {
		return *prev
	}
	next := SeeContact(d.rules, c, prev)
	d.keepETag(&next, c, prev, prev != nil && prev.DSeen && c.Modified < prev.DModified)
	return next
}

// inConflict is what state keeps of a contact whose two or more profiles
// this run's input holds.
func (d *Decider) inConflict(e *Entry, prev *Snapshot) Snapshot {
	next := Snapshot{Known: true}
	if prev != nil {
		next = *prev
	}
	if c := e.contact(); c != nil {
		next = d.seeBlocked(c, &next)
	}
	next.CConflict = true
	return next
}

// forgetFuture makes the change times of a snapshot read from state that
// lie beyond what the run believes unknown (ForgetFutureTimes),
// in both passes alike; true when it changed one.
func (d *Decider) forgetFuture(prev *Snapshot) bool {
	if prev == nil {
		return false
	}
	fd, fc := ForgetFutureTimes(prev, d.notAfter)
	return fd || fc
}

// gone is what a contact of state that has no row in this run's input
// becomes: a side read in full without it no longer has it (the Dynamics
// contact is gone, exactly as when a delta read reports it deleted), and
// its profile may have left it (lostProfile).
func (d *Decider) gone(id extract.ID, snap *Snapshot) Snapshot {
	if !d.losesSide(id, snap) {
		return *snap
	}
	next := *snap
	if d.lostProfile(id, snap) {
		next = LoseProfile(next)
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
func (d *Decider) losesSide(id extract.ID, snap *Snapshot) bool {
	campaignAll, d365All := !d.incremental || d.campaignComplete, !d.incremental || d.d365Complete || d.deleted[id]
	return d.lostProfile(id, snap) || snap.CConflict && campaignAll || snap.DSeen && d365All
}

// lostProfile says whether a contact of state that is not in this run's
// input has lost its profile. In a run, when this run's input links the
// PKey state knows for it to another contact, or to none. In a backfill,
// or a run that read Campaign in full, which read every profile: whenever
// state links it to one, for had Campaign still linked that profile to it,
// the contact would be in the input.
func (d *Decider) lostProfile(id extract.ID, snap *Snapshot) bool {
	if !snap.CSeen || snap.PKey == "" {
		return false
	}
	if !d.incremental || d.campaignComplete {
		return true
	}
	kind, owner := d.owners.Lookup(snap.PKey)
	return kind == OwnerNoContact || kind == OwnerContact && owner != id
}

// Again decides an entry again, for the commit, into v, against its
// record as state holds it now (prev; nil: none), which for the entries
// the first pass kept is the record it read: forgot says a change time of
// prev beyond NotAfter was made unknown, in place, as All did. (v is the
// caller's: a verdict is a kilobyte, not copied.)
func (d *Decider) Again(e *Entry, prev *Snapshot, buf []Decision, v *Verdict) (forgot bool) {
	forgot = d.forgetFuture(prev)
	d.one(e, prev, buf, v)
	return forgot
}

// Recorded says whether the commit records v: a blocked entry only when
// what was read of it is kept.
func (v *Verdict) Recorded() bool { return v.blocked == "" || v.record }

// ID is the entry's contact.
func (v *Verdict) ID() extract.ID { return v.id }

// PKey is the profile a decided entry was decided with.
func (v *Verdict) PKey() string { return v.pkey }

// Next is the record the entry has after the run.
func (v *Verdict) Next() *Snapshot { return &v.res.Next }

// Decisions are the entry's decisions (the buffer handed to Again).
func (v *Verdict) Decisions() []Decision { return v.decisions }
