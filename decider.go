package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"golang.org/x/sync/errgroup"

	"optsync/extract"
	"optsync/extract/spill"
	"optsync/load"
	"optsync/load/progress"
	"optsync/state"
	"optsync/transform"
)

// decider makes a run's decisions. It is called twice over the same
// entries — once to write the files, once, chunk by chunk, to commit state
// after the files are safe — and decides the same way both times: every
// input is the same and Decide is pure.
type decider struct {
	rules       *transform.Rules
	incremental bool
	d365Files   []extract.InputFile
	campFiles   []extract.InputFile
	// walk: state is read whole beside the entries (see all).
	walk bool
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
	// dirty keeps the entries the commit decides again.
	dirty *dirtyStore
	// candidates (without a walk) are the contacts that may lose a side
	// although the input has no row of theirs, in id order; those the input
	// holds are zeroed as the entries pass (candNext).
	candidates          []extract.ID
	candNext, candInput int
	// collect, when set, takes every record's (PKey, contact) after the
	// run: the PKey index written whole.
	collect func(pkey string, id extract.ID) error
	// release, when set, lets go of the rows read, once the commit no
	// longer needs them.
	release func()
	// unchanged counts the entries whose rows told nothing new (see
	// transform.ContactKnown), by what the join counted them as: both
	// sides, a contact alone, a profile alone.
	unchangedBoth, unchangedContacts, unchangedProfiles int
	// counted in the first pass; viaStateContacts are the entries of
	// viaState that came from the Dynamics side
	viaState, viaStateContacts, waiting, stale int
	// one-sided entries blocked (by a profile that state links them to)
	blockedNoProfile, blockedNoContact int
	// notAfter is the latest change time believed (Unix ms); futureN counts
	// the contacts whose state held a later one (first pass), future names
	// the first ten.
	notAfter int64
	futureN  int
	future   []string
	// pending groups the writes to update files that state holds, not yet
	// seen in an export, left by earlier runs, by the run that wrote them,
	// as the contacts visited stand after this run; pendPrev counts those
	// of the contacts visited as they stood before it (without a walk, the
	// others are the kept totals); pendGone lists, for groups old enough
	// to warn of (written before pendAlertBefore, or at a time not
	// recorded), the contacts visited whose write in it was seen.
	pending         map[int64]*pendingGroup
	pendPrev        map[int64]int
	pendGone        map[int64]map[extract.ID]bool
	pendAlertBefore int64
	// For the safety limits, also from the first pass: optOutDelta is what
	// this run's reads change in the opt-outs state knows (a pair never
	// agreed counts as now read); presentD and presentC count the input's
	// records that state already knew on that side (presentC by contact,
	// when pkeyCounted is false: identify counts them by PKey); missingD
	// and missingC are the first records state knows that the input
	// lacks.
	optOutDelta, presentD, presentC int
	pkeyCounted                     bool
	missingD, missingC              []string
	// missed (with pkeyCounted) hands, in contact order, the records of
	// state whose PKey the input lacks: present after all when their
	// contact has a profile in the input (Campaign replaced it); missedC
	// keeps the first of the others.
	missed     spill.Stream[state.PKeyEntry]
	missedHead *state.PKeyEntry
	missedC    []state.PKeyEntry
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

// eachPending calls fn with when each write not seen yet in a snapshot was
// made, for the configured pairs and the sides written to update files,
// leaving out this run's own.
func (d *decider) eachPending(s *transform.Snapshot, fn func(at int64)) {
	for i := range d.rules.Pairs {
		ps := &s.Pairs[i]
		if d.rules.ImportD365 && ps.DWritten.Known() && ps.DWrittenAt != d.rules.Started {
			fn(max(ps.DWrittenAt, 0))
		}
		if d.rules.ImportCampaign && ps.CWritten.Known() && ps.CWrittenAt != d.rules.Started {
			fn(max(ps.CWrittenAt, 0))
		}
	}
}

// countPending counts the writes not seen yet in a contact's snapshot as
// it stands after this run, leaving out this run's own.
func (d *decider) countPending(id extract.ID, s *transform.Snapshot) {
	d.eachPending(s, func(at int64) {
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
	})
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

func (d *decider) one(e *entry, prev *transform.Snapshot, buf []transform.Decision) verdict {
	c, p := e.contact(), e.profile()
	useState := prev != nil && !d.rules.Replay
	var v verdict
	v.id = e.id
	switch e.kind {
	case entryConflict:
		v.next = d.inConflict(e, prev)
		return v
	case entryLost: // it lost a side: see gone
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
		v.blockedAt = extract.Reject{Source: d.campFiles[p.File].Source(), Line: int(p.Line), ID: p.PKey, IDChecked: true, Reason: v.blocked}
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
func (d *decider) inConflict(e *entry, prev *transform.Snapshot) transform.Snapshot {
	next := transform.Snapshot{Known: true}
	if prev != nil {
		next = *prev
	}
	if c := e.contact(); c != nil {
		next = d.seeBlocked(c, &next)
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

// all makes every decision of the run against the state as it was when
// the run began, reading the entries of src in id order; it hands each
// contact with something to write or report to sink (blocked entries with
// their reason), and keeps the entries whose state changes or that have
// decisions to log for the commit (d.dirty). Nothing per decision is held
// in memory.
//
// With walk, state is read whole, in step with the entries: a contact of
// state that is not in this run's input is seen too — what a backfill, or a
// run that read a side in full, must see (every record missing from a full
// read has lost that side). Without, a night touches what it reads: the
// contacts that may have lost their profile are found through the PKey
// index (those whose PKey this run's input links to another contact, or to
// none) and the contacts the read reported deleted are looked up; pending
// writes are counted from the kept totals.
func (d *decider) all(ctx context.Context, st *state.Store, src *identity, prog *progress.Progress, total int64, sink func(ch *load.Change, blocked *extract.Reject) error) (err error) {
	var reader *state.Reader
	if st != nil {
		if reader, err = st.Reader(); err != nil {
			return err
		}
		defer reader.Close()
	}
	bar := prog.Stage("deciding", total, "contacts")
	defer bar.Done()
	decisions := make([]transform.Decision, 0, extract.MaxFields)
	var prev transform.Snapshot
	var ch load.Change
	absent := func(id extract.ID, snap *transform.Snapshot) error {
		d.missingExample(id, snap, false, false)
		after := snap
		if d.losesSide(id, snap) {
			lost := d.gone(id, snap)
			if err := d.dirty.add(&entry{kind: entryLost, id: id}); err != nil {
				return err
			}
			// what it knew of the side lost no longer counts among the
			// opt-outs state knows (no input row: nothing is present)
			d.optOutDelta += knownOptOuts(len(d.rules.Pairs), snap, &lost) - knownOptOuts(len(d.rules.Pairs), snap, snap)
			after = &lost
		}
		return d.visit(id, snap, after)
	}
	if !d.walk {
		if err := d.findCandidates(reader); err != nil {
			return err
		}
	}
	n := 0
	for e := src.next(); e != nil; e = src.next() {
		if n++; n&0xfff == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		bar.Add(1)
		if k := len(src.conflicts); k > 0 && src.conflicts[k-1] == e.id && e.kind == entryBlocked {
			e.kind = entryConflict
		}
		d.seen(e.id)
		d.missedUntil(&e.id, e.hasP)
		var prevPtr *transform.Snapshot
		if reader != nil && (d.walk || e.kind != entryBlocked) {
			var found bool
			if d.walk {
				found, err = reader.Until(&e.id, &prev, absent)
			} else {
				found, err = reader.Get(e.id, &prev)
			}
			if err != nil {
				return err
			}
			if found {
				prevPtr = &prev
			}
		}
		forgot := d.forgetFuture(prevPtr)
		if forgot {
			d.futureN++
			if len(d.future) < 10 {
				d.future = append(d.future, e.id.String())
			}
		}
		switch e.kind {
		case entryBlocked:
			// a bad row, or a contact whose profiles are in conflict with
			// nothing to record: in the input, not decided
			d.present(e, prevPtr)
			if err := d.visit(e.id, prevPtr, prevPtr); err != nil {
				return err
			}
			continue
		case entryConflict:
			d.present(e, prevPtr)
			next := d.inConflict(e, prevPtr)
			if prevPtr == nil || next != prev || forgot {
				if err := d.dirty.add(e); err != nil {
					return err
				}
				d.optOutDelta += knownOptOuts(len(d.rules.Pairs), prevPtr, &next) - knownOptOuts(len(d.rules.Pairs), prevPtr, prevPtr)
			}
			if err := d.visit(e.id, prevPtr, &next); err != nil {
				return err
			}
			continue
		}
		v := d.one(e, prevPtr, decisions[:0])
		decisions = v.decisions
		d.count(e, prevPtr, &v.next)
		c, p := e.contact(), e.profile()
		if v.blocked != "" {
			after := prevPtr
			if v.record {
				after = &v.next
				if prevPtr == nil || v.next != prev || forgot {
					if err := d.dirty.add(e); err != nil {
						return err
					}
				}
			}
			if err := d.visit(e.id, prevPtr, after); err != nil {
				return err
			}
			// Join counted a one-sided entry as without counterpart; it
			// is counted as blocked instead.
			switch {
			case p == nil:
				d.blockedNoProfile++
			case c == nil:
				d.blockedNoContact++
			}
			// A copy: handing sink a pointer into v would put every
			// verdict (a kilobyte) on the heap.
			blocked := v.blockedAt
			if err := sink(nil, &blocked); err != nil {
				return err
			}
			continue
		}
		if err := d.visit(e.id, prevPtr, &v.next); err != nil {
			return err
		}
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
				return err
			}
		}
		if prevPtr == nil || v.next != prev || len(v.decisions) > 0 || forgot {
			if err := d.dirty.add(e); err != nil {
				return err
			}
		}
	}
	if err := src.Err(); err != nil {
		return err
	}
	d.missedUntil(nil, false)
	if err := streamErr(d.missed); err != nil {
		return err
	}
	if reader != nil && d.walk {
		if _, err := reader.Until(nil, &prev, absent); err != nil {
			return err
		}
	}
	if !d.walk && reader != nil {
		return d.lostCandidates(reader)
	}
	return nil
}

// visit accounts for one contact of state (or of the input) as it stands
// before this run (prev; nil: new) and after it (next): its pending writes,
// and, when the PKey index is rewritten whole, its entry.
func (d *decider) visit(id extract.ID, prev, next *transform.Snapshot) error {
	if prev != nil {
		d.eachPending(prev, func(at int64) { d.pendPrev[at]++ })
	}
	if next == nil {
		return nil
	}
	d.countPending(id, next)
	if prev != nil && d.pendAlertBefore != 0 {
		// a write of a group that warns, seen this run: the index still
		// names the contact for it
		d.eachPending(prev, func(at int64) {
			if at >= d.pendAlertBefore && at != 0 || hasPending(d, next, at) {
				return
			}
			if d.pendGone[at] == nil {
				d.pendGone[at] = map[extract.ID]bool{}
			}
			d.pendGone[at][id] = true
		})
	}
	if d.collect != nil && next.CSeen && next.PKey != "" && !d.deleted[id] {
		return d.collect(next.PKey, id)
	}
	return nil
}

func hasPending(d *decider, s *transform.Snapshot, at int64) bool {
	found := false
	d.eachPending(s, func(a int64) { found = found || a == at })
	return found
}

// seen marks the candidates (contacts that may have lost their profile,
// found through the PKey index) that the input holds: those are decided
// as entries. Entries come in id order, as do the candidates.
func (d *decider) seen(id extract.ID) {
	for d.candNext < len(d.candidates) && d.candidates[d.candNext].Compare(id) < 0 {
		d.candNext++
	}
	if d.candNext < len(d.candidates) && d.candidates[d.candNext] == id {
		d.candidates[d.candNext] = extract.ID{} // in the input
		d.candInput++
		d.candNext++
	}
}

// findCandidates lists, before a night's entries are read, the contacts
// that may lose a side although the input has no row of theirs: the
// contacts state links to a PKey this run's input links to another contact
// or to none (through the PKey index), and those the read reported
// deleted.
func (d *decider) findCandidates(r *state.Reader) error {
	if r == nil {
		return nil
	}
	for i := range d.owners.Len() {
		o := d.owners.At(i)
		ids, err := r.PKeyContacts(o.PKey)
		if err != nil {
			return err
		}
		for _, id := range ids {
			if o.Kind != transform.OwnerContact || id != o.ID {
				d.candidates = append(d.candidates, id)
			}
		}
	}
	for id := range d.deleted {
		d.candidates = append(d.candidates, id)
	}
	slices.SortFunc(d.candidates, extract.ID.Compare)
	d.candidates = slices.Compact(d.candidates)
	if len(d.candidates) > 0 && d.candidates[0] == (extract.ID{}) {
		d.candidates = d.candidates[1:] // the zero id is no contact
	}
	return nil
}

// lostCandidates decides the candidates the input did not hold, as the
// walk decides a contact of state that is not in the input.
func (d *decider) lostCandidates(r *state.Reader) error {
	var snap transform.Snapshot
	for _, id := range d.candidates {
		if id == (extract.ID{}) {
			continue
		}
		found, err := r.Get(id, &snap)
		if err != nil {
			return err
		}
		if !found {
			continue // the index names it, state has no record: never both
		}
		d.forgetFuture(&snap)
		if !d.losesSide(id, &snap) {
			continue
		}
		lost := d.gone(id, &snap)
		if err := d.dirty.add(&entry{kind: entryLost, id: id}); err != nil {
			return err
		}
		d.optOutDelta += knownOptOuts(len(d.rules.Pairs), &snap, &lost) - knownOptOuts(len(d.rules.Pairs), &snap, &snap)
		if err := d.visit(id, &snap, &lost); err != nil {
			return err
		}
	}
	return nil
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

// count adds one entry to the safety limits' figures.
func (d *decider) count(e *entry, prev, next *transform.Snapshot) {
	d.present(e, prev)
	d.optOutDelta += knownOptOuts(len(d.rules.Pairs), prev, next) - knownOptOuts(len(d.rules.Pairs), prev, prev)
}

// missedUntil passes the records of state whose PKey the input lacks up to
// contact id (nil: all): one whose contact has a profile in the input
// (hasP, for id) is present; the others are missing.
func (d *decider) missedUntil(id *extract.ID, hasP bool) {
	if d.missed == nil {
		return
	}
	if d.missedHead == nil {
		d.missedHead = d.missed.Next()
	}
	for d.missedHead != nil && (id == nil || d.missedHead.ID.Compare(*id) <= 0) {
		switch {
		case id != nil && d.missedHead.ID == *id && hasP:
			d.presentC++
		case len(d.missedC) < 10:
			d.missedC = append(d.missedC, *d.missedHead)
		}
		d.missedHead = d.missed.Next()
	}
}

// present counts an entry of the input among the records state knows on
// each side (the shrink guard), and keeps the first records state knows
// that the input lacks, for its message. Campaign's records are counted by
// PKey through the PKey index when it is there (identify); without it
// (a reader of a file from before it), by contact.
func (d *decider) present(e *entry, prev *transform.Snapshot) {
	if prev == nil {
		return
	}
	if e.hasC && prev.DSeen {
		d.presentD++
	}
	if !d.pkeyCounted && e.hasP && prev.CSeen {
		d.presentC++
	}
	d.missingExample(e.id, prev, e.hasC, e.hasP)
}

// missingExample keeps a record of state the input lacks on a side (the
// first ten of each), for a shrink guard's message.
func (d *decider) missingExample(id extract.ID, s *transform.Snapshot, hasC, hasP bool) {
	if s.DSeen && !hasC && len(d.missingD) < 10 {
		d.missingD = append(d.missingD, fmt.Sprintf("contact %s (Dynamics record last read with modifiedon %s)", id, extract.FormatTime(s.DModified)))
	}
	if !d.pkeyCounted && s.CSeen && !hasP && len(d.missingC) < 10 {
		d.missingC = append(d.missingC, fmt.Sprintf("contact %s profile %s (last read with lastModified %s)", id, s.PKey, extract.FormatTime(s.CModified)))
	}
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

// scatteredChunk is the chunk of a run that looks records up rather than
// walking them: its contacts lie apart in the file, each dirtying pages
// of its own (its record's, its PKey's, its pending writes'), which bbolt
// holds in memory, materialised, until the transaction commits.
const scatteredChunk = 1 << 10

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
//
// pkeys, when set, is every record's (PKey, contact) after the run, in
// PKey order: the PKey index is then written whole after the records
// (dropped before the first chunk, marked built by the last transaction),
// which is how a backfill that changes most records keeps it (see
// state/index.go).
func (d *decider) commit(ctx context.Context, st *state.Store, prog *progress.Progress, started time.Time, fin *state.Final, pkeys func() (string, extract.ID, bool, error)) error {
	bar := prog.Stage("committing state", int64(d.dirty.Len()), "contacts")
	defer bar.Done()
	if pkeys != nil {
		if err := st.DropPKeyIndex(); err != nil {
			return err
		}
	}
	chunkSize := commitChunk
	if !d.walk {
		chunkSize = scatteredChunk
	}
	chunkSize = cmp.Or(d.chunk, chunkSize)
	free := make(chan *state.Batch, 2)
	for range 2 {
		free <- st.NewBatch(min(d.dirty.Len(), chunkSize))
	}
	type chunk struct {
		batch *state.Batch
		n     int  // dirty entries it covers
		last  bool // fin goes with it
	}
	next, err := d.dirty.reader()
	if err != nil {
		return err
	}
	ready := make(chan chunk, 1)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(ready)
		decisions := make([]transform.Decision, 0, extract.MaxFields)
		var prev transform.Snapshot
		var seq uint32
		var e entry
		more, err := next(&e)
		for first := true; first || more; first = false {
			if err != nil {
				return err
			}
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
			n := 0
			for ; more && n < chunkSize; n++ {
				prevPtr, err := lookup(reader, e.id, &prev)
				if err != nil {
					reader.Close()
					return err
				}
				forgot := d.forgetFuture(prevPtr)
				v := d.one(&e, prevPtr, decisions[:0])
				decisions = v.decisions
				if v.blocked == "" || v.record {
					d.record(batch, reader, fin, &v, prevPtr, &prev, forgot, started, &seq)
				}
				if more, err = next(&e); err != nil {
					reader.Close()
					return err
				}
			}
			reader.Close()
			select {
			case ready <- chunk{batch, n, !more && pkeys == nil}:
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
	if err := g.Wait(); err != nil {
		return err
	}
	if pkeys == nil {
		return nil
	}
	// The records are in; the PKey index is written whole, and the run's
	// last transaction marks it built. The rows read are not needed any
	// more: let them go, or the collector marks them again and again while
	// the index is written.
	d.dirty.Close()
	if d.release != nil {
		d.release()
	}
	if err := st.WritePKeyIndex(ctx, pkeys); err != nil {
		return err
	}
	fin.Run.Ended = time.Now().UTC()
	return st.Commit(ctx, st.NewBatch(0), fin)
}

// record puts one decided entry into the batch: its new snapshot when it
// changed, and its decisions for the log. What was read is kept; writes an
// API refused are not: their pairs keep the old agreement and no write is
// pending, so the next run decides them again.
func (d *decider) record(batch *state.Batch, reader *state.Reader, fin *state.Final, v *verdict, prevPtr, prev *transform.Snapshot, forgot bool, started time.Time, seq *uint32) {
	refused := d.failed[v.id]
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
	if prevPtr == nil || v.next != *prev || forgot {
		v.next.Decided = started.Unix()
		// An agreement that changes dates from this run (Decided);
		// PutRead keeps the date of one that does not.
		batch.PutRead(reader, v.id, &v.next)
	}
	for i := range v.decisions {
		*seq++
		batch.AddLog(d.logEntry(fin.Run, *seq, v, &v.decisions[i], refused), fin.Run.ID, d.rules.Pairs)
	}
}

// dirtyStore keeps the entries the commit decides again, in the order the
// first pass found them: in memory up to a budget, beyond it in a file
// without a name (extract/spill), read back once.
type dirtyStore struct {
	budget int64
	dir    string
	// cItems and pItems, when set, hold every row in memory: an entry is
	// kept as its place in them (identity.cItems, pItems).
	cItems []extract.Contact
	pItems []extract.Profile
	buf    []byte
	f      *os.File
	w      *bufio.Writer
	n      int
	spilt  int64
	// rows is how many entries may come (the larger side's rows): the
	// buffer is made for them once, within the budget, where one doubling
	// as it grew copied itself over and over (a backfill keeps an entry of
	// every contact).
	rows int
}

// dirtyRefSize is what an entry placed in the rows held takes: length,
// kind, id, flags, two places.
const dirtyRefSize = 2 + 1 + 16 + 1 + 4 + 4

func (s *dirtyStore) Len() int { return s.n }

func (s *dirtyStore) add(e *entry) error {
	if s.buf == nil && s.rows > 0 && s.cItems != nil && s.pItems != nil {
		n := int64(s.rows) * dirtyRefSize
		if s.budget > 0 {
			n = min(n, s.budget+dirtyRefSize)
		}
		s.buf = make([]byte, 0, n)
	}
	start := len(s.buf)
	s.buf = append(s.buf, 0, 0, e.kind) // length, filled in below
	s.buf = append(s.buf, e.id[:]...)
	var f byte
	if e.hasC {
		f |= 1
	}
	if e.hasP {
		f |= 2
	}
	refs := s.cItems != nil && s.pItems != nil && (!e.hasC || e.ci >= 0) && (!e.hasP || e.pi >= 0)
	if refs {
		f |= 4
	}
	s.buf = append(s.buf, f)
	switch {
	case refs:
		s.buf = binary.LittleEndian.AppendUint32(s.buf, uint32(e.ci))
		s.buf = binary.LittleEndian.AppendUint32(s.buf, uint32(e.pi))
	default:
		if e.hasC {
			s.buf = extract.AppendContact(s.buf, &e.c)
		}
		if e.hasP {
			s.buf = extract.AppendProfile(s.buf, &e.p)
		}
	}
	l := len(s.buf) - start - 2
	if l > 0xffff {
		return fmt.Errorf("an entry of %d bytes is too long to keep for the commit", l)
	}
	binary.LittleEndian.PutUint16(s.buf[start:], uint16(l))
	s.n++
	if s.budget > 0 && int64(len(s.buf)) >= s.budget {
		return s.spill()
	}
	return nil
}

func (s *dirtyStore) spill() error {
	if s.f == nil {
		f, err := spill.TempFile(s.dir)
		if err != nil {
			return err
		}
		s.f, s.w = f, bufio.NewWriterSize(f, 1<<20)
	}
	if _, err := s.w.Write(s.buf); err != nil {
		return fmt.Errorf("keeping the run's entries for its commit in %s: %w", s.dir, err)
	}
	s.spilt += int64(len(s.buf))
	s.buf = s.buf[:0]
	return nil
}

// reader hands the entries back in order, once.
func (s *dirtyStore) reader() (func(*entry) (bool, error), error) {
	var r *bufio.Reader
	if s.f != nil {
		if err := s.spill(); err != nil {
			return nil, err
		}
		if err := s.w.Flush(); err != nil {
			return nil, fmt.Errorf("keeping the run's entries for its commit in %s: %w", s.dir, err)
		}
		if _, err := s.f.Seek(0, io.SeekStart); err != nil {
			return nil, err
		}
		r = bufio.NewReaderSize(s.f, 1<<20)
	} else {
		r = bufio.NewReader(bytes.NewReader(s.buf))
	}
	var rec []byte
	return func(e *entry) (bool, error) {
		var hdr [2]byte
		if _, err := io.ReadFull(r, hdr[:]); err == io.EOF {
			return false, nil
		} else if err != nil {
			return false, fmt.Errorf("reading the run's entries back: %w", err)
		}
		rec = slices.Grow(rec[:0], int(binary.LittleEndian.Uint16(hdr[:])))[:binary.LittleEndian.Uint16(hdr[:])]
		if _, err := io.ReadFull(r, rec); err != nil || len(rec) < 18 {
			return false, fmt.Errorf("reading the run's entries back: %v", err)
		}
		*e = entry{kind: rec[0]}
		copy(e.id[:], rec[1:17])
		f := rec[17]
		b := rec[18:]
		e.hasC, e.hasP = f&1 != 0, f&2 != 0
		if f&4 != 0 {
			if len(b) != 8 {
				return false, fmt.Errorf("reading the run's entries back: an entry malformed")
			}
			e.ci, e.pi = int32(binary.LittleEndian.Uint32(b)), int32(binary.LittleEndian.Uint32(b[4:]))
			if e.hasC {
				e.c = s.cItems[e.ci]
			}
			if e.hasP {
				e.p = s.pItems[e.pi]
			}
			return true, nil
		}
		if e.hasC {
			const cl = 37
			if len(b) < cl || extract.DecodeContact(b[:cl], &e.c) != nil {
				return false, fmt.Errorf("reading the run's entries back: a contact malformed")
			}
			b = b[cl:]
		}
		if e.hasP && extract.DecodeProfile(b, &e.p) != nil {
			return false, fmt.Errorf("reading the run's entries back: a profile malformed")
		}
		return true, nil
	}, nil
}

// Close lets go of the file.
func (s *dirtyStore) Close() {
	if s.f != nil {
		s.f.Close()
		s.f = nil
	}
	s.buf, s.cItems, s.pItems = nil, nil, nil
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
