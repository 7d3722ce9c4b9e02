package state

import (
	"optsync/extract"
	"optsync/transform"
)

// ReadPositions are where this run's reads through the APIs start: the
// Dynamics delta link (tracking) or watermark, and the Campaign watermark
// when a changed-since filter is configured (filtered; without one every
// read is a full scan). "" for none: the read reads every record.
func (s *Store) ReadPositions(tracking, filtered bool) (d365, campaign string, err error) {
	key := KeyD365Watermark
	if tracking {
		key = KeyD365Delta
	}
	if d365, err = s.Meta(key); err != nil || !filtered {
		return d365, "", err
	}
	campaign, err = s.Meta(KeyCampaignWatermark)
	return d365, campaign, err
}

// NextPositions are the read positions the run's last transaction keeps
// (Final.Meta): each API read's next cursor (nil: none found, the stored
// one stays).
func NextPositions(tracking bool, d365, campaign *string) map[string]string {
	meta := map[string]string{}
	if d365 != nil {
		key := KeyD365Watermark
		if tracking {
			key = KeyD365Delta
		}
		meta[key] = *d365
	}
	if campaign != nil {
		meta[KeyCampaignWatermark] = *campaign
	}
	return meta
}

// Queued is the retry queue as the reads take it: the records to read
// again.
func Queued(items []RetryItem) []extract.Queued {
	q := make([]extract.Queued, len(items))
	for i, it := range items {
		q[i] = extract.Queued{Contact: it.Contact, PKey: it.PKey, Campaign: it.System != "d365"}
	}
	return q
}

// QueuedContacts are the retry queue's contacts as state last knew their
// Dynamics side (those it has seen there), for a run that does not reach
// Dynamics through its API: each with Line its place in the queue, and
// change times later than notAfter (Unix ms) taken as unknown.
func (s *Store) QueuedContacts(rules *transform.Rules, items []RetryItem, notAfter int64) ([]extract.Contact, error) {
	if len(items) == 0 {
		return nil, nil
	}
	r, err := s.Reader()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var known []extract.Contact
	var snap transform.Snapshot
	for i, it := range items {
		found, err := r.Get(it.Contact, &snap)
		if err != nil {
			return nil, err
		}
		if found && snap.DSeen {
			transform.ForgetFutureTimes(&snap, notAfter)
			c := transform.ContactFromState(rules, it.Contact, &snap)
			c.Line = int32(i + 1)
			known = append(known, c)
		}
	}
	return known, nil
}
