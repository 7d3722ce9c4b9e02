package transform

import (
	"context"
	"slices"

	"optsync/extract"
)

// Prior is what the decider reads of state: the records as they were when
// the run began (state.Reader). Get looks one up; Until walks them in id
// order up to id (nil: to the end), handing those it passes to absent;
// PKeyContacts are the contacts state links to a PKey; PendingContacts
// those with a write not seen yet made by the run that started at at
// (Unix ms; 0: not recorded), until fn says stop.
type Prior interface {
	Get(id extract.ID, into *Snapshot) (bool, error)
	Until(id *extract.ID, into *Snapshot, absent func(extract.ID, *Snapshot) error) (bool, error)
	PKeyContacts(pkey string) ([]extract.ID, error)
	PendingContacts(at int64, fn func(id extract.ID) bool) error
}

// Progress hears of each entry decided.
type Progress interface{ Add(n int64) }

// Sink takes a contact with something to write (ch), or a blocked entry
// with its reason, for the rejects file (blocked). Both are the
// decider's, valid until Sink returns.
type Sink func(ch *Change, blocked *extract.Reject) error

// All makes every decision of the run against the state as it was when
// the run began (prior; nil: no state), reading the entries of the
// identity rules in id order; it hands each contact with something to
// write or report to sink, and keeps the entries whose state changes or
// that have decisions to log for the commit (Dirty). Nothing per decision
// is held in memory.
//
// With Walk, state is read whole, in step with the entries: a contact of
// state that is not in this run's input is seen too — what a backfill, or a
// run that read a side in full, must see (every record missing from a full
// read has lost that side). Without, a night touches what it reads: the
// contacts that may have lost their profile are found through the PKey
// index (those whose PKey this run's input links to another contact, or to
// none) and the contacts the read reported deleted are looked up; pending
// writes are counted from the kept totals.
func (d *Decider) All(ctx context.Context, prior Prior, bar Progress, sink Sink) error {
	if !d.walk && prior != nil {
		if err := d.findCandidates(prior); err != nil {
			return err
		}
	}
	p := pass{decisions: make([]Decision, 0, extract.MaxFields), prior: prior, sink: sink, absent: d.absent}
	feed := newEntryFeed(d.src)
	defer feed.close()
	n := 0
	for {
		e, err := feed.next()
		if err != nil {
			return err
		}
		if e == nil {
			break
		}
		if n++; n&0xfff == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		bar.Add(1)
		if err := d.entry(e, &p); err != nil {
			return err
		}
	}
	if err := d.src.Err(); err != nil {
		return err
	}
	d.missedUntil(nil, false)
	if err := streamErr(d.missed); err != nil {
		return err
	}
	if prior != nil && d.walk {
		if _, err := prior.Until(nil, &p.prev, p.absent); err != nil {
			return err
		}
	}
	if !d.walk && prior != nil {
		if err := d.lostCandidates(prior); err != nil {
			return err
		}
	}
	if d.collected != nil {
		return d.collected()
	}
	return nil
}

// pass is what All keeps from one entry to the next.
type pass struct {
	decisions []Decision
	v         Verdict // the entry's, reused (a kilobyte)
	prev      Snapshot
	ch        Change
	prior     Prior
	sink      Sink
	absent    func(extract.ID, *Snapshot) error // d.absent, made once
}

// absent decides a contact of state that is not in the input, as the walk
// passes it.
func (d *Decider) absent(id extract.ID, snap *Snapshot) error {
	d.missingExample(id, snap, false, false)
	after := snap
	if d.losesSide(id, snap) {
		lost := d.gone(id, snap)
		if err := d.addLost(id); err != nil {
			return err
		}
		// what it knew of the side lost no longer counts among the
		// opt-outs state knows (no input row: nothing is present)
		d.optOutDelta += knownOptOutCount(len(d.rules.Pairs), snap, &lost) - knownOptOutCount(len(d.rules.Pairs), snap, snap)
		after = &lost
	}
	return d.visit(id, snap, after)
}

// addLost keeps a contact that lost a side for the commit.
func (d *Decider) addLost(id extract.ID) error {
	d.lost = Entry{Kind: EntryLost, ID: id}
	return d.dirty.Add(&d.lost)
}

// entry decides one entry of the input.
func (d *Decider) entry(e *Entry, p *pass) error {
	d.seen(e.ID)
	d.missedUntil(&e.ID, e.HasP)
	prevPtr, err := d.prior(e, p)
	if err != nil {
		return err
	}
	forgot := d.forgetFuture(prevPtr)
	if forgot {
		d.tally.FutureN++
		if len(d.tally.Future) < 10 {
			d.tally.Future = append(d.tally.Future, e.ID.String())
		}
	}
	switch e.Kind {
	case EntryBlocked:
		// a bad row, or a contact whose profiles are in conflict with
		// nothing to record: in the input, not decided
		d.present(e, prevPtr)
		d.keepQueued(e.ID)
		return d.visit(e.ID, prevPtr, prevPtr)
	case EntryConflict:
		d.present(e, prevPtr)
		next := d.inConflict(e, prevPtr)
		if prevPtr == nil || next != p.prev || forgot {
			if err := d.dirty.Add(e); err != nil {
				return err
			}
			d.optOutDelta += knownOptOutCount(len(d.rules.Pairs), prevPtr, &next) - knownOptOutCount(len(d.rules.Pairs), prevPtr, prevPtr)
		}
		return d.visit(e.ID, prevPtr, &next)
	}
	v := &p.v
	d.one(e, prevPtr, p.decisions[:0], v)
	p.decisions = v.decisions
	d.count(e, prevPtr, &v.res.Next)
	if v.blocked != "" {
		return d.blocked(e, v, prevPtr, forgot, p)
	}
	if err := d.visit(e.ID, prevPtr, &v.res.Next); err != nil {
		return err
	}
	d.countVerdict(e, v)
	if len(v.decisions) > 0 {
		if err := d.hand(v, p); err != nil {
			return err
		}
	}
	if prevPtr == nil || v.res.Next != p.prev || len(v.decisions) > 0 || forgot {
		return d.dirty.Add(e)
	}
	return nil
}

// prior looks an entry's record up in state (nil: none), in the walk
// passing the records before it.
func (d *Decider) prior(e *Entry, p *pass) (*Snapshot, error) {
	if p.prior == nil || !d.walk && e.Kind == EntryBlocked {
		return nil, nil
	}
	var found bool
	var err error
	if d.walk {
		found, err = p.prior.Until(&e.ID, &p.prev, p.absent)
	} else {
		found, err = p.prior.Get(e.ID, &p.prev)
	}
	if err != nil || !found {
		return nil, err
	}
	return &p.prev, nil
}

// blocked accounts for an entry the decider kept out, and hands its reason
// to the sink.
func (d *Decider) blocked(e *Entry, v *Verdict, prevPtr *Snapshot, forgot bool, p *pass) error {
	d.keepQueued(e.ID)
	after := prevPtr
	if v.record {
		after = &v.res.Next
		if prevPtr == nil || v.res.Next != p.prev || forgot {
			if err := d.dirty.Add(e); err != nil {
				return err
			}
		}
	}
	if err := d.visit(e.ID, prevPtr, after); err != nil {
		return err
	}
	// Join counted a one-sided entry as without counterpart; it is
	// counted as blocked instead.
	switch {
	case !e.HasP:
		d.tally.BlockedNoProfile++
	case !e.HasC:
		d.tally.BlockedNoContact++
	}
	// A copy: handing sink a pointer into v would put every Verdict (a
	// kilobyte) on the heap.
	blocked := v.blockedAt
	return p.sink(nil, &blocked)
}

// countVerdict counts a decided entry by what became of it.
func (d *Decider) countVerdict(e *Entry, v *Verdict) {
	c, p := e.HasC, e.HasP
	switch {
	case v.unchanged:
		switch {
		case c && p:
			d.tally.UnchangedBoth++
		case c:
			d.tally.UnchangedContacts++
		default:
			d.tally.UnchangedProfiles++
		}
	case v.decided && !p:
		d.tally.ViaState++
		d.tally.ViaStateContacts++
	case v.decided && !c:
		d.tally.ViaState++
	case !v.decided && d.incremental && (c && !d.campaignComplete || p && !d.d365Complete):
		d.tally.Waiting++
	}
	if v.res.StaleD || v.res.StaleC {
		d.tally.Stale++
	}
}

// hand gives the sink an entry's decisions, with what a write of them
// goes with, and keeps the first opt-out clearings for the safety stop's
// message.
func (d *Decider) hand(v *Verdict, p *pass) error {
	p.ch = Change{
		ID: v.id, PKey: v.pkey, Decisions: v.decisions,
		D365After: v.res.D365After, CampaignAfter: v.res.CampaignAfter,
		D365Changed: v.res.D365Changed, CampaignChanged: v.res.CampaignChanged,
		ETag: v.etag, ContactModified: v.contact.Modified, D365Read: v.contact.Values,
		ProfileModified: v.profile.Modified, CampaignRead: v.profile.Values,
	}
	d.addExamples(&p.ch)
	return p.sink(&p.ch, nil)
}

// visit accounts for one contact of state (or of the input) as it stands
// before this run (prev; nil: new) and after it (next): its pending writes,
// and, when the PKey index is rewritten whole, its entry.
func (d *Decider) visit(id extract.ID, prev, next *Snapshot) error {
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

// seen marks the candidates (contacts that may have lost their profile,
// found through the PKey index) that the input holds: those are decided
// as entries. Entries come in id order, as do the candidates.
func (d *Decider) seen(id extract.ID) {
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
func (d *Decider) findCandidates(r Prior) error {
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
			if o.Kind != OwnerContact || id != o.ID {
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
func (d *Decider) lostCandidates(r Prior) error {
	var snap Snapshot
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
		if err := d.addLost(id); err != nil {
			return err
		}
		d.optOutDelta += knownOptOutCount(len(d.rules.Pairs), &snap, &lost) - knownOptOutCount(len(d.rules.Pairs), &snap, &snap)
		if err := d.visit(id, &snap, &lost); err != nil {
			return err
		}
	}
	return nil
}
