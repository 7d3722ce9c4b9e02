package inspect

import (
	"strconv"
	"time"

	"optsync/extract"
	"optsync/load/show"
	"optsync/state"
	"optsync/transform"
)

// Snapshots hands emit every snapshot, a row per contact and pair (only's,
// when set), as state export writes them; pairs are the config's
// mappings. absent says the state file holds no record of only (st nil
// is no state file yet, which has nothing to say of anyone).
func Snapshots(st *state.Store, pairs []transform.Pair, only *extract.ID, emit func(*show.Snapshot) error) (absent bool, err error) {
	rows := func(id extract.ID, s *transform.Snapshot, agreed *state.Agreed) error {
		for i, p := range pairs {
			if err := emit(snapshotRow(id, s, p, &s.Pairs[i], agreed[i])); err != nil {
				return err
			}
		}
		return nil
	}
	switch {
	case st == nil:
		return false, nil
	case only != nil:
		r, err := st.Reader()
		if err != nil {
			return false, err
		}
		var s transform.Snapshot
		found, err := r.Get(*only, &s)
		agreed := r.Agreed()
		r.Close()
		if err != nil || !found {
			return err == nil, err
		}
		return false, rows(*only, &s, &agreed)
	}
	return false, st.EachAgreed(rows)
}

// snapshotRow is one pair of one contact: the Dynamics columns in the
// field's own polarity, times as the exports write them.
func snapshotRow(id extract.ID, s *transform.Snapshot, p transform.Pair, ps *transform.PairState, agreedAt int64) *show.Snapshot {
	dRaw, dPending := ps.DRaw, ps.DWritten
	if p.Invert {
		dRaw, dPending = dRaw.Not(), dPending.Not()
	}
	r := &show.Snapshot{ContactID: id.String(), ProfilePKey: s.PKey, D365Field: p.D365, CampaignField: p.Campaign,
		AgreedOptedOut: ps.S.String(), D365Value: dRaw.String(), CampaignVal: ps.CRaw.String(),
		D365Pending: dPending.String(), CampaignPending: ps.CWritten.String(),
		D365Modified: seen(s.DSeen, s.DModified), CampaignModified: seen(s.CSeen, s.CModified),
		// the field's own change time, when the export gives one
		CampaignFieldModified: seen(s.CSeen && ps.CTimeKnown, ps.CTime),
		CampaignConflict:      strconv.FormatBool(s.CConflict)}
	if !s.CSeen {
		r.ProfilePKey = ""
	}
	if s.Decided != 0 {
		r.LastDecided = time.Unix(s.Decided, 0).UTC().Format(time.RFC3339)
	}
	if ps.S.Known() && agreedAt != 0 {
		r.AgreedSince = time.Unix(agreedAt, 0).UTC().Format(time.RFC3339)
	}
	return r
}

func seen(ok bool, ms int64) string {
	if !ok {
		return ""
	}
	return extract.FormatTime(ms)
}
