package extract

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
)

// Cursor is where a read through an API starts: what the last run's read
// ended with and the records waiting to be read again. The run hands it in
// as a value (a connector does not read state) and keeps the Next of the
// Read with its last transaction.
type Cursor struct {
	// Position is the stored delta link or watermark; "" reads every record.
	Position string
	// Queue is the retry queue: records whose writes were refused, read
	// again (each with its current ETag) unless the read met them anyway.
	Queue []Queued
}

// Queued is one record of the retry queue.
type Queued struct {
	Contact ID
	// PKey is its profile ("" when none was known); Campaign says the
	// profile's write was refused too, so its profile is read again.
	PKey     string
	Campaign bool
}

// Read is what a read through an API found, besides its records.
type Read struct {
	// Next is the cursor the next run starts from; nil when this read
	// found none (the stored one stays).
	Next *string
	// Complete says every record was read (no cursor, or a refused one):
	// a record missing from the read does not exist.
	Complete bool
	// Deleted are the contacts change tracking or the queue's read found
	// deleted.
	Deleted []ID
	Stats   Stats
}

// DataverseContacts reads a run's contacts through the Dataverse Web API:
// with change tracking, what changed since the delta link (everything
// without one); without, what was modified since the watermark less the
// overlap. Contacts of the retry queue are read again, in bulk, with their
// current ETags.
type DataverseContacts struct {
	API *Dataverse
	// Tracking: the cursor is a change-tracking delta link, not a watermark.
	Tracking bool
	Overlap  time.Duration
	Log      zerolog.Logger
}

// Source is where the contacts come from.
func (s *DataverseContacts) Source() Source { return DataverseAPI() }

// Read reads the contacts from the cursor on.
func (s *DataverseContacts) Read(ctx context.Context, from Cursor, emit func(*Contact), reject func(Reject)) (Read, error) {
	var res Read
	seen := map[ID]bool{}
	count := func(ct *Contact) {
		seen[ct.ID] = true
		res.Stats.Rows++
		emit(ct)
	}
	var err error
	if s.Tracking {
		err = s.trackChanges(ctx, from.Position, &res, count, reject)
	} else {
		err = s.modifiedSince(ctx, from.Position, &res, count, reject)
	}
	if err != nil {
		return res, err
	}
	var again []ID
	for _, it := range from.Queue {
		if !seen[it.Contact] {
			again = append(again, it.Contact)
		}
	}
	gone, err := s.ReadQueued(ctx, again, count, reject)
	if err != nil {
		return res, err
	}
	res.Deleted = append(res.Deleted, gone...)
	s.Log.Info().Int("contacts", res.Stats.Rows).Int("deleted", len(res.Deleted)).Int("queued_again", len(from.Queue)).Bool("change_tracking", s.Tracking).Msg("read Dynamics contacts through the Web API")
	return res, nil
}

func (s *DataverseContacts) trackChanges(ctx context.Context, link string, res *Read, emit func(*Contact), reject func(Reject)) error {
	res.Complete = link == ""
	next, err := s.API.TrackChanges(ctx, link, emit, reject, func(id ID) { res.Deleted = append(res.Deleted, id) })
	if errors.Is(err, ErrDeltaRefused) {
		s.Log.Warn().Err(err).Msg("the stored delta link was refused: reading every contact again")
		res.Deleted = nil
		res.Complete = true
		next, err = s.API.TrackChanges(ctx, "", emit, reject, nil)
	}
	if err != nil {
		return err
	}
	res.Next = &next
	return nil
}

func (s *DataverseContacts) modifiedSince(ctx context.Context, wm string, res *Read, emit func(*Contact), reject func(Reject)) error {
	var since time.Time
	if wm != "" {
		var err error
		if since, err = time.Parse(time.RFC3339, wm); err != nil {
			return fmt.Errorf("state: stored watermark %q: %w", wm, err)
		}
		if notAfter := s.API.NotAfter; !notAfter.IsZero() && since.After(notAfter) {
			// Kept before change times were bounded, or while
			// max_clock_skew allowed it: reading "since" then would
			// read nothing for as long as that lasts.
			s.Log.Warn().Str("watermark", wm).Time("not_after", notAfter).
				Msg("the stored Dynamics watermark is later than the run's start plus max_clock_skew: not used; every contact is read")
			since = time.Time{}
		} else {
			since = since.Add(-s.Overlap)
		}
	}
	res.Complete = since.IsZero()
	latest := time.Time{}
	if !since.IsZero() {
		latest = since.Add(s.Overlap)
	}
	err := s.API.ModifiedSince(ctx, since, func(ct *Contact) {
		// A row dated in the future is rejected; it must not carry
		// the watermark past every real change either.
		if t := time.UnixMilli(ct.Modified); t.After(latest) && !ct.Bad {
			latest = t
		}
		emit(ct)
	}, reject)
	if err != nil {
		return err
	}
	if notAfter := s.API.NotAfter; !notAfter.IsZero() && latest.After(notAfter) {
		latest = notAfter // never past the run's start plus max_clock_skew
	}
	if !latest.IsZero() {
		next := latest.UTC().Format(time.RFC3339)
		res.Next = &next
	}
	return nil
}

// ReadQueued reads queued contacts again, in bulk, and returns those that
// no longer exist.
func (s *DataverseContacts) ReadQueued(ctx context.Context, ids []ID, emit func(*Contact), reject func(Reject)) ([]ID, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	start := time.Now()
	gone, err := s.API.Contacts(ctx, ids, emit, reject)
	if err != nil {
		return nil, fmt.Errorf("reading the %d queued contacts again: %w", len(ids), err)
	}
	for _, id := range gone {
		s.Log.Warn().Str("contact", id.String()).Msg("a queued contact no longer exists in Dynamics")
	}
	s.Log.Info().Int("contacts", len(ids)).Int("requests", (len(ids)+BulkChunk-1)/BulkChunk).Int("gone", len(gone)).
		Dur("took", time.Since(start)).Msg("read the retry queue again")
	return gone, nil
}

// CampaignProfiles reads a run's profiles through the Campaign Standard
// REST API: with a changed-since filter and a watermark, those changed
// since the watermark less the overlap; otherwise every profile (a full
// scan, compared with the snapshots so that only differences become
// writes). Profiles of the retry queue are read again, Concurrency at a
// time (the API has no batch read).
type CampaignProfiles struct {
	API *Campaign
	// FilterName and FilterParam name the resource's changed-since filter
	// ("" = none: every read is a full scan).
	FilterName, FilterParam string
	Overlap                 time.Duration
	Concurrency             int
	Log                     zerolog.Logger
}

// Source is where the profiles come from.
func (s *CampaignProfiles) Source() Source { return CampaignAPI() }

// Read reads the profiles from the cursor on.
// Their PKeys and field times go to keys.
func (s *CampaignProfiles) Read(ctx context.Context, from Cursor, keys *KeyWriter, emit func(*Profile), reject func(Reject)) (Read, error) {
	var res Read
	seen := map[string]bool{}
	var latest int64
	count := func(p *Profile) {
		seen[keys.Keys().Get(p.PKey)] = true
		if !p.Bad { // a row dated in the future must not carry the watermark past every real change
			latest = max(latest, p.Modified)
		}
		emit(p)
	}
	var since time.Time
	if wm := from.Position; s.FilterName != "" && wm != "" {
		t, err := time.Parse(time.RFC3339Nano, wm)
		if err != nil {
			return res, fmt.Errorf("state: stored Campaign watermark %q: %w", wm, err)
		}
		if notAfter := s.API.NotAfter; !notAfter.IsZero() && t.After(notAfter) {
			// Kept before change times were bounded, or while
			// max_clock_skew allowed it: asking for the profiles
			// changed since then would read nothing for as long as
			// that lasts.
			s.Log.Warn().Str("watermark", wm).Time("not_after", notAfter).
				Msg("the stored Campaign watermark is later than the run's start plus max_clock_skew: not used; every profile is read")
		} else {
			since = t.Add(-s.Overlap)
			latest = t.UnixMilli()
		}
	}
	// Without a watermark yet, the first read is a full scan rather than the
	// filter from the beginning of time: only a full scan is known to hold
	// every profile, so that a contact missing from it has none.
	var err error
	if !since.IsZero() {
		res.Stats, err = s.API.ChangedSince(ctx, s.FilterName, s.FilterParam, since, keys, count, reject)
	} else {
		res.Complete = true
		res.Stats, err = s.API.List(ctx, keys, count, reject)
	}
	if err != nil {
		return res, err
	}
	if notAfter := s.API.NotAfter; !notAfter.IsZero() {
		latest = min(latest, notAfter.UnixMilli()) // never past the run's start plus max_clock_skew
	}
	if latest > 0 {
		next := time.UnixMilli(latest).UTC().Format(time.RFC3339Nano)
		res.Next = &next
	}
	var again []string
	for _, it := range from.Queue {
		if it.PKey != "" && !seen[it.PKey] && it.Campaign {
			again = append(again, it.PKey)
		}
	}
	if err := s.readQueued(ctx, again, &res.Stats, keys, emit, reject); err != nil {
		return res, err
	}
	s.Log.Info().Int("profiles", res.Stats.Rows).Int("without_externalId", res.Stats.Unlinked).Bool("changed_filter", !since.IsZero()).Msg("read Campaign profiles through the REST API")
	return res, nil
}

// readQueued reads the queued profiles again, one request each, and takes
// them as the read took its own: numbered on from its records (the i-th
// queued PKey is record stats.Rows+i+1, whatever order the answers come
// in), a bad one rejected and still handed on marked bad, so that its
// contact is kept out of the run as a bad row of the read keeps it out.
// Dropping it instead would leave the contact to be decided against what
// state knew of its profile.
func (s *CampaignProfiles) readQueued(ctx context.Context, pkeys []string, stats *Stats, keys *KeyWriter, emit func(*Profile), reject func(Reject)) error {
	var mu sync.Mutex
	base := stats.Rows
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(s.Concurrency, 1))
	for i, pkey := range pkeys {
		g.Go(func() error {
			rec, found, err := s.API.fetch(gctx, pkey)
			if err != nil {
				return fmt.Errorf("reading queued profile %s again: %w", pkey, err)
			}
			if !found {
				s.Log.Warn().Str("profile", pkey).Msg("a queued profile no longer exists in Campaign")
				return nil
			}
			// keys is the reading goroutine's: the resource is read
			// into it while no other is.
			mu.Lock()
			defer mu.Unlock()
			var st Stats
			s.API.record(rec, base+i+1, &st, keys, emit, reject)
			stats.Rows += st.Rows
			stats.Rejected += st.Rejected
			stats.Unlinked += st.Unlinked
			return nil
		})
	}
	return g.Wait()
}
