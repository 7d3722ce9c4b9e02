package transform

import (
	"cmp"
	"math"
	"slices"
	"time"

	"optsync/extract"
)

// PendingGroup is the writes not seen yet of one run.
type PendingGroup struct {
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
func (d *Decider) eachPending(s *Snapshot, fn func(at int64)) {
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
func (d *Decider) countPending(id extract.ID, s *Snapshot) {
	d.eachPending(s, func(at int64) {
		when := at
		if when == 0 {
			when = s.Decided * 1000
		}
		g := d.pending[at]
		if g == nil {
			if d.pending == nil {
				d.pending = map[int64]*PendingGroup{}
			}
			g = &PendingGroup{oldest: when}
			d.pending[at] = g
		}
		g.writes++
		g.oldest = min(g.oldest, when)
		if len(g.contacts) < 5 && !slices.Contains(g.contacts, id) {
			g.contacts = append(g.contacts, id)
		}
	})
}
func hasPending(d *Decider, s *Snapshot, at int64) bool {
	found := false
	d.eachPending(s, func(a int64) { found = found || a == at })
	return found
}

// PendingGroups are the writes to update files that no export has shown
// yet, left by earlier runs, per run that wrote them, as state stands after
// this run. In a walk the decider counted them over every record; without
// one, they are the kept totals (kept: state.Totals.Pending, per start and
// pair, to Dynamics and to Campaign), less what the contacts the run
// visited held before it, plus what they hold now; the contacts a warning
// names (those of groups written more than alertAfter before the run
// started) come from the
// index of pending writes (without those whose write this run saw).
// prior nil: there is no state.
func (d *Decider) PendingGroups(idx Prior, kept map[int64][][2]int, started time.Time, alertAfter time.Duration) (map[int64]*PendingGroup, error) {
	if d.walk || idx == nil {
		return d.pending, nil
	}
	groups := d.pendingTotals(kept)
	var snap Snapshot
	for at, g := range groups {
		if g.writes <= 0 {
			delete(groups, at)
			continue
		}
		if at != 0 && started.Sub(time.UnixMilli(at)) <= alertAfter {
			continue // no warning: no contacts to name
		}
		var ferr error
		err := idx.PendingContacts(at, func(id extract.ID) bool {
			if d.pendGone[at][id] {
				return true
			}
			if !slices.Contains(g.contacts, id) {
				g.contacts = append(g.contacts, id)
			}
			if at != 0 {
				return len(g.contacts) < 10
			}
			// written at a time not recorded: when at the latest is when
			// its record last changed
			found, err := idx.Get(id, &snap)
			if err != nil {
				ferr = err
				return false
			}
			if found {
				g.oldest = min(g.oldest, snap.Decided*1000)
			}
			return true
		})
		if err = cmp.Or(err, ferr); err != nil {
			return nil, err
		}
		slices.SortFunc(g.contacts, extract.ID.Compare)
		g.contacts = g.contacts[:min(len(g.contacts), 5)]
	}
	return groups, nil
}

// pendingTotals are the kept totals of writes not seen yet, less what the
// contacts visited held before the run, plus what they hold now.
func (d *Decider) pendingTotals(kept map[int64][][2]int) map[int64]*PendingGroup {
	groups := map[int64]*PendingGroup{}
	group := func(at int64) *PendingGroup {
		g := groups[at]
		if g == nil {
			g = &PendingGroup{oldest: at}
			if at == 0 {
				g.oldest = math.MaxInt64
			}
			groups[at] = g
		}
		return g
	}
	for at, g := range kept {
		if at == d.rules.Started {
			continue
		}
		for i := range g {
			if d.rules.ImportD365 {
				group(at).writes += g[i][0]
			}
			if d.rules.ImportCampaign {
				group(at).writes += g[i][1]
			}
		}
	}
	for at, n := range d.pendPrev {
		group(at).writes -= n
	}
	for at, v := range d.pending {
		g := group(at)
		g.writes += v.writes
		g.oldest = min(g.oldest, v.oldest)
		g.contacts = append(g.contacts, v.contacts...)
	}
	return groups
}

// Writes is how many writes of the group no export has shown yet.
func (g *PendingGroup) Writes() int { return g.writes }

// Oldest is when the oldest of them was written (Unix ms).
func (g *PendingGroup) Oldest() int64 { return g.oldest }

// Contacts are the first few contacts they go to, in id order.
func (g *PendingGroup) Contacts() []extract.ID { return g.contacts }
