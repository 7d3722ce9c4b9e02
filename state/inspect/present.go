package inspect

import (
	"fmt"
	"time"

	"optsync/extract"
	"optsync/load/show"
	"optsync/state"
	"optsync/transform"
)

// Present reads what state holds for the contact now (field, when set,
// keeps only that mapping's pair); pairs are the config's mappings. A nil
// st is no state yet.
func Present(st *state.Store, pairs []transform.Pair, id extract.ID, field string) (*show.Contact, error) {
	p := &show.Contact{Contact: id.String(), AsOf: "the last commit", Pairs: []show.Pair{}}
	if st == nil {
		return p, nil
	}
	if st.Holder != nil {
		p.AsOf = fmt.Sprintf("the last commit; a run (pid %d on %s) has held the state since %s",
			st.Holder.PID, st.Holder.Host, st.Holder.Started.UTC().Format(time.RFC3339))
	}
	r, err := st.Reader()
	if err != nil {
		return nil, err
	}
	var snap transform.Snapshot
	found, err := r.Get(id, &snap)
	agreed := r.Agreed()
	r.Close()
	if err != nil {
		return nil, err
	}
	if it, queued, err := st.Queued(id); err != nil {
		return nil, err
	} else if queued {
		p.Retry = &show.Retry{System: it.System, Reason: it.Reason, RunID: it.RunID, Since: it.Since.UTC().Format(time.RFC3339)}
	}
	if !found {
		return p, nil
	}
	runs, err := st.Runs()
	if err != nil {
		return nil, err
	}
	h := history(runs)
	p.Known, p.Changed, p.ProfilesInConflict = true, h.ref(snap.Decided, true), snap.CConflict
	if snap.CSeen {
		p.ProfilePKey = snap.PKey
	}
	p.D365 = show.Side{Read: snap.DSeen}
	if snap.DSeen {
		p.D365.Modified = extract.FormatTime(snap.DModified)
	}
	p.Campaign = show.Side{Read: snap.CSeen}
	if snap.CSeen {
		p.Campaign.Modified = extract.FormatTime(snap.CModified)
	}
	for i, pair := range pairs {
		if field == "" || pair.D365 == field || pair.Campaign == field {
			p.Pairs = append(p.Pairs, h.pair(pair, &snap.Pairs[i], agreed[i], snap.DSeen, snap.CSeen))
		}
	}
	return p, nil
}

// history is the run history (newest first), to name the runs that
// state's records date from.
type history []state.Run

// ref names the run that started in second sec. A run's records carry its
// start second. Two runs started in one second (never two nights) cannot
// be told apart by it: an agreement is taken to date from the first of
// them, a last change (last) from the last.
func (runs history) ref(sec int64, last bool) *show.RunRef {
	if sec == 0 {
		return nil
	}
	r := &show.RunRef{At: time.Unix(sec, 0).UTC().Format(time.RFC3339)}
	for n := range runs {
		i := n // runs are newest first
		if !last {
			i = len(runs) - 1 - n
		}
		if runs[i].Started.Unix() == sec && runs[i].Command != "state reset" {
			r.RunID = runs[i].ID
			break
		}
	}
	return r
}

// writtenBy names the run that made a pending write, which keeps the
// start (Unix ms) of the run that wrote it.
func (runs history) writtenBy(ms int64) *show.RunRef {
	if ms == 0 {
		return &show.RunRef{At: "not recorded (written before this optsync kept the run of a write)"}
	}
	r := &show.RunRef{At: time.UnixMilli(ms).UTC().Format(time.RFC3339)}
	for _, run := range runs {
		if run.Started.UnixMilli() == ms {
			r.RunID = run.ID
			break
		}
	}
	return r
}

// pair is one mapped pair of the contact: values in each field's own
// polarity, what was read only of a side read (dSeen, cSeen), agreedAt
// the second the agreement dates from.
func (runs history) pair(pair transform.Pair, ps *transform.PairState, agreedAt int64, dSeen, cSeen bool) show.Pair {
	dRaw, dPending := ps.DRaw, ps.DWritten
	if pair.Invert { // the Dynamics field in its own polarity
		dRaw, dPending = dRaw.Not(), dPending.Not()
	}
	pn := show.Pair{D365Field: pair.D365, CampaignField: pair.Campaign, Invert: pair.Invert,
		AgreedOptedOut: ps.S.String(), D365Value: dRaw.String(), CampaignValue: ps.CRaw.String(),
		D365Pending: dPending.String(), CampaignPending: ps.CWritten.String()}
	if ps.DWritten.Known() {
		pn.D365WrittenBy = runs.writtenBy(ps.DWrittenAt)
	}
	if ps.CWritten.Known() {
		pn.CampaignWrittenBy = runs.writtenBy(ps.CWrittenAt)
	}
	if !dSeen {
		pn.D365Value = ""
	}
	if !cSeen {
		pn.CampaignValue = ""
	}
	if ps.S.Known() {
		pn.AgreedSince = runs.ref(agreedAt, false)
		if pn.AgreedSince == nil {
			pn.AgreedSince = &show.RunRef{At: "not recorded (agreed before this optsync kept agreement times)"}
		}
	}
	return pn
}
