package main

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"optsync/extract"
	"optsync/load"
	"optsync/state"
)

// campaignPseudoFile stands for the API among a run's input files.
const campaignPseudoFile = "campaign api"

// campaignConn is the Campaign Standard REST API connector of one run.
type campaignConn struct {
	cfg    *CampaignConfig
	reader *extract.Campaign
	writer *load.CampaignWriter // nil when the target is csv
	source bool
	log    zerolog.Logger
	meta   map[string]string
	// complete: this run read every profile (a full scan)
	complete bool
}

func newCampaignConn(cfg *CampaignConfig, fields, fieldTimes []string, log zerolog.Logger) (*campaignConn, error) {
	secret, err := cfg.secret("campaign")
	if err != nil {
		return nil, err
	}
	scopes := cfg.Scopes
	client := newAPIClient(apiClientConfig{
		TokenURL:     cfg.IMSURL + "/ims/token/v3",
		ClientID:     cfg.ClientID,
		ClientSecret: secret,
		Scopes:       scopes,
		Timeout:      cfg.timeout,
		MaxTries:     cfg.MaxTries,
		Header:       http.Header{"X-Api-Key": {cfg.ClientID}},
	}, log)
	api := cfg.BaseURL + "/" + cfg.Organization + "/campaign/"
	c := &campaignConn{cfg: cfg, source: cfg.Source == "api", log: log,
		reader: &extract.Campaign{Client: client, APIURL: api, Resource: cfg.Resource, Fields: fields, FieldTimes: fieldTimes, PageSize: cfg.PageSize}}
	if cfg.Target == "api" {
		c.writer = &load.CampaignWriter{Client: client, Reader: c.reader, APIURL: api, Resource: cfg.Resource, Concurrency: cfg.Concurrency, MaxTries: cfg.MaxTries}
	}
	return c, nil
}

// read reads the profiles of this run: with a changed-since filter, those
// changed since the stored watermark less the overlap; without one (or for
// a backfill), every profile — a full scan, compared with the snapshots so
// that only differences become writes. Profiles queued for a retry are read
// again, concurrency at a time (the API has no batch read). The new
// watermark goes with the run's last transaction.
func (c *campaignConn) read(ctx context.Context, st *state.Store, full bool, queue []state.RetryItem, emit func(*extract.Profile), reject func(extract.Reject)) (extract.Stats, error) {
	c.meta = map[string]string{}
	seen := map[string]bool{}
	var latest int64
	count := func(p *extract.Profile) {
		seen[p.PKey] = true
		if !p.Bad { // a row dated in the future must not carry the watermark past every real change
			latest = max(latest, p.Modified)
		}
		emit(p)
	}
	var stats extract.Stats
	var err error
	filter := c.cfg.ChangedFilter
	var since time.Time
	if filter.Name != "" && !full && st != nil {
		wm, err := st.Meta(state.KeyCampaignWatermark)
		if err != nil {
			return stats, err
		}
		if wm != "" {
			t, err := time.Parse(time.RFC3339Nano, wm)
			if err != nil {
				return stats, fmt.Errorf("state: stored Campaign watermark %q: %w", wm, err)
			}
			if notAfter := c.reader.NotAfter; !notAfter.IsZero() && t.After(notAfter) {
				// Kept before change times were bounded, or while
				// max_clock_skew allowed it: asking for the profiles
				// changed since then would read nothing for as long as
				// that lasts.
				c.log.Warn().Str("watermark", wm).Time("not_after", notAfter).
					Msg("the stored Campaign watermark is later than the run's start plus max_clock_skew: not used; every profile is read")
			} else {
				since = t.Add(-c.cfg.overlap)
				latest = t.UnixMilli()
			}
		}
	}
	// Without a watermark yet, the first read is a full scan rather than the
	// filter from the beginning of time: only a full scan is known to hold
	// every profile, so that a contact missing from it has none.
	if !since.IsZero() {
		stats, err = c.reader.ChangedSince(ctx, filter.Name, filter.Param, since, count, reject)
	} else {
		c.complete = true
		stats, err = c.reader.List(ctx, count, reject)
	}
	if err != nil {
		return stats, err
	}
	if notAfter := c.reader.NotAfter; !notAfter.IsZero() {
		latest = min(latest, notAfter.UnixMilli()) // never past the run's start plus max_clock_skew
	}
	if latest > 0 {
		c.meta[state.KeyCampaignWatermark] = time.UnixMilli(latest).UTC().Format(time.RFC3339Nano)
	}
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(c.cfg.Concurrency, 1))
	var again []string
	for _, it := range queue {
		if it.PKey != "" && !seen[it.PKey] && it.System != "d365" {
			again = append(again, it.PKey)
		}
	}
	for _, pkey := range again {
		g.Go(func() error {
			p, found, err := c.reader.Profile(gctx, pkey)
			if err != nil {
				return fmt.Errorf("reading queued profile %s again: %w", pkey, err)
			}
			if found && !p.Bad && p.PKey != "" {
				mu.Lock()
				defer mu.Unlock()
				stats.Rows++
				count(&p)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return stats, err
	}
	c.log.Info().Int("profiles", stats.Rows).Int("without_externalId", stats.Unlinked).Bool("changed_filter", !since.IsZero()).Msg("read Campaign profiles through the REST API")
	return stats, nil
}
