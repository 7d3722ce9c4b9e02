package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"optsync/extract"
	"optsync/load"
	"optsync/state"
)

// dataversePseudoFile stands for the API among a run's input files, so that
// rejects and superseded rows can name where a record came from.
const dataversePseudoFile = "dataverse"

// d365Conn is the Dataverse Web API connector of one run.
type d365Conn struct {
	cfg    *D365Config
	reader *extract.Dataverse
	writer *load.DataverseWriter // nil when the target is csv
	source bool                  // contacts are read through the API
	log    zerolog.Logger

	// what the read found, for the run's last transaction
	meta    map[string]string
	deleted []extract.ID
	// complete: this run read every contact (a first or refused delta
	// link, no watermark, a backfill)
	complete bool
}

func newD365Conn(cfg *D365Config, fields []string, log zerolog.Logger) (*d365Conn, error) {
	secret, err := cfg.secret("d365")
	if err != nil {
		return nil, err
	}
	c := &d365Conn{cfg: cfg, source: cfg.Source == "api", log: log}
	client := newAPIClient(apiClientConfig{
		TokenURL:     cfg.AuthorityURL + "/" + cfg.TenantID + "/oauth2/v2.0/token",
		ClientID:     cfg.ClientID,
		ClientSecret: secret,
		Scopes:       []string{cfg.URL + "/.default"},
		Timeout:      cfg.timeout,
		MaxTries:     cfg.MaxTries,
		// A throttled service gets fewer writes in flight for the rest of
		// the run: slower, but the run finishes.
		OnThrottle: func() {
			if c.writer != nil {
				c.writer.Throttled()
			}
		},
	}, log)
	base := cfg.URL + "/api/data/v9.2/"
	c.reader = &extract.Dataverse{Client: client, BaseURL: base, Fields: fields, PageSize: cfg.PageSize, Concurrency: cfg.Concurrency}
	if cfg.Target == "api" {
		c.writer = &load.DataverseWriter{Client: client, Reader: c.reader, BaseURL: base, BatchSize: cfg.BatchSize, Concurrency: cfg.Concurrency, Log: log}
	}
	return c, nil
}

// read reads the contacts of this run: with change tracking, what changed
// since the stored delta link (everything on the first run, or for a
// backfill); without, what was modified since the stored watermark less
// the overlap. Contacts waiting in the retry queue are read again, in bulk,
// with their current ETags. Nothing is stored here: the new delta link or
// watermark goes with the run's last transaction.
func (c *d365Conn) read(ctx context.Context, st *state.Store, full bool, queue []state.RetryItem, emit func(*extract.Contact), reject func(extract.Reject)) error {
	c.meta = map[string]string{}
	stored := func(key string) (string, error) {
		if st == nil || full {
			return "", nil
		}
		return st.Meta(key)
	}
	seen := map[extract.ID]bool{}
	n := 0
	count := func(ct *extract.Contact) {
		seen[ct.ID] = true
		n++
		emit(ct)
	}
	if c.cfg.tracking() {
		link, err := stored(state.KeyD365Delta)
		if err != nil {
			return err
		}
		c.complete = link == ""
		next, err := c.reader.TrackChanges(ctx, link, count, reject, func(id extract.ID) { c.deleted = append(c.deleted, id) })
		if errors.Is(err, extract.ErrDeltaRefused) {
			c.log.Warn().Err(err).Msg("the stored delta link was refused: reading every contact again")
			c.deleted = nil
			c.complete = true
			next, err = c.reader.TrackChanges(ctx, "", count, reject, nil)
		}
		if err != nil {
			return err
		}
		c.meta[state.KeyD365Delta] = next
	} else {
		wm, err := stored(state.KeyD365Watermark)
		if err != nil {
			return err
		}
		var since time.Time
		if wm != "" {
			if since, err = time.Parse(time.RFC3339, wm); err != nil {
				return fmt.Errorf("state: stored watermark %q: %w", wm, err)
			}
			if notAfter := c.reader.NotAfter; !notAfter.IsZero() && since.After(notAfter) {
				// Kept before change times were bounded, or while
				// max_clock_skew allowed it: reading "since" then would
				// read nothing for as long as that lasts.
				c.log.Warn().Str("watermark", wm).Time("not_after", notAfter).
					Msg("the stored Dynamics watermark is later than the run's start plus max_clock_skew: not used; every contact is read")
				since = time.Time{}
			} else {
				since = since.Add(-c.cfg.overlap)
			}
		}
		c.complete = since.IsZero()
		latest := time.Time{}
		if !since.IsZero() {
			latest = since.Add(c.cfg.overlap)
		}
		err = c.reader.ModifiedSince(ctx, since, func(ct *extract.Contact) {
			// A row dated in the future is rejected; it must not carry
			// the watermark past every real change either.
			if t := time.UnixMilli(ct.Modified); t.After(latest) && !ct.Bad {
				latest = t
			}
			count(ct)
		}, reject)
		if err != nil {
			return err
		}
		if notAfter := c.reader.NotAfter; !notAfter.IsZero() && latest.After(notAfter) {
			latest = notAfter // never past the run's start plus max_clock_skew
		}
		if !latest.IsZero() {
			c.meta[state.KeyD365Watermark] = latest.UTC().Format(time.RFC3339)
		}
	}
	var again []extract.ID
	for _, it := range queue {
		if !seen[it.Contact] {
			again = append(again, it.Contact)
		}
	}
	gone, err := c.readQueued(ctx, again, count, reject)
	if err != nil {
		return err
	}
	c.deleted = append(c.deleted, gone...)
	c.log.Info().Int("contacts", n).Int("deleted", len(c.deleted)).Int("queued_again", len(queue)).Bool("change_tracking", c.cfg.tracking()).Msg("read Dynamics contacts through the Web API")
	return nil
}

// readQueued reads queued contacts again, in bulk, and returns those that
// no longer exist.
func (c *d365Conn) readQueued(ctx context.Context, ids []extract.ID, emit func(*extract.Contact), reject func(extract.Reject)) ([]extract.ID, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	start := time.Now()
	gone, err := c.reader.Contacts(ctx, ids, emit, reject)
	if err != nil {
		return nil, fmt.Errorf("reading the %d queued contacts again: %w", len(ids), err)
	}
	for _, id := range gone {
		c.log.Warn().Str("contact", id.String()).Msg("a queued contact no longer exists in Dynamics")
	}
	c.log.Info().Int("contacts", len(ids)).Int("requests", (len(ids)+extract.BulkChunk-1)/extract.BulkChunk).Int("gone", len(gone)).
		Dur("took", time.Since(start)).Msg("read the retry queue again")
	return gone, nil
}
