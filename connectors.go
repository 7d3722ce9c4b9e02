package main

import (
	"context"
	"net/http"

	"github.com/rs/zerolog"

	"optsync/extract"
	"optsync/extract/apiclient"
	"optsync/load"
	"optsync/state"
	"optsync/transform"
)

// apiSource is how a run reads one system through its API: from the
// cursor the last run left (a plain value: a connector does not read
// state), handing back the next one with what it read.
type apiSource[R any] interface {
	Source() extract.Source
	Read(ctx context.Context, from extract.Cursor, emit func(*R), reject func(extract.Reject)) (extract.Read, error)
}

// readAPI reads a system through its API from the cursor state keeps under
// key (none for a full read: a backfill, a mapping added, no state), and
// returns what the read found and the cursor to keep under next with the
// run's last transaction. Nothing is stored here.
func readAPI[R any](ctx context.Context, src apiSource[R], st *state.Store, key, next string, full bool, queue []state.RetryItem,
	emit func(*R), reject func(extract.Reject)) (extract.Read, map[string]string, error) {
	from := extract.Cursor{Queue: make([]extract.Queued, len(queue))}
	for i, it := range queue {
		from.Queue[i] = extract.Queued{Contact: it.Contact, PKey: it.PKey, Campaign: it.System != "d365"}
	}
	if key != "" && st != nil && !full {
		var err error
		if from.Position, err = st.Meta(key); err != nil {
			return extract.Read{}, nil, err
		}
	}
	res, err := src.Read(ctx, from, emit, reject)
	meta := map[string]string{}
	if err == nil && res.Next != nil {
		meta[next] = *res.Next
	}
	return res, meta, err
}

// d365Conn is what a run holds of the Dataverse connector: its reader and
// writer, and what its read found, for the run's last transaction.
type d365Conn struct {
	reader   *extract.Dataverse
	contacts *extract.DataverseContacts
	writer   *load.DataverseWriter // nil when the target is csv
	source   bool                  // contacts are read through the API
	tracking bool

	// what the read found, for the run's last transaction
	meta    map[string]string
	deleted []extract.ID
	// complete: this run read every contact (a first or refused delta
	// link, no watermark, a backfill)
	complete bool
}

func newD365Conn(cfg *Config, fields []string, log zerolog.Logger) (*d365Conn, error) {
	o := &cfg.extract.DataverseConn
	secret, err := secret("d365", o.Credentials)
	if err != nil {
		return nil, err
	}
	c := &d365Conn{source: cfg.D365.Source == "api", tracking: cfg.D365.tracking()}
	client := apiclient.New(apiclient.Config{
		TokenURL:     o.AuthorityURL + "/" + o.TenantID + "/oauth2/v2.0/token",
		ClientID:     o.ClientID,
		ClientSecret: secret,
		Scopes:       []string{o.URL + "/.default"},
		Timeout:      o.TimeoutDuration(),
		MaxTries:     o.MaxTries,
		// A throttled service gets fewer writes in flight for the rest of
		// the run: slower, but the run finishes.
		OnThrottle: func() {
			if c.writer != nil {
				c.writer.Throttled()
			}
		},
	}, log)
	base := o.URL + "/api/data/v9.2/"
	c.reader = &extract.Dataverse{Client: client, BaseURL: base, Fields: fields, PageSize: o.PageSize, Concurrency: o.Concurrency}
	c.contacts = &extract.DataverseContacts{API: c.reader, Tracking: c.tracking, Overlap: o.OverlapDuration(), Log: log}
	if cfg.load.D365Target == "api" {
		c.writer = &load.DataverseWriter{Client: client, Reader: c.reader, BaseURL: base, BatchSize: cfg.load.D365BatchSize, Concurrency: o.Concurrency, Log: log}
	}
	return c, nil
}

// read reads the contacts of this run (see extract.DataverseContacts): the
// run takes the stored delta link or watermark from state and hands it to
// the connector; the new one goes with the run's last transaction.
func (c *d365Conn) read(ctx context.Context, st *state.Store, full bool, queue []state.RetryItem, emit func(*extract.Contact), reject func(extract.Reject)) error {
	key := state.KeyD365Watermark
	if c.tracking {
		key = state.KeyD365Delta
	}
	res, meta, err := readAPI(ctx, c.contacts, st, key, key, full, queue, emit, reject)
	c.meta, c.deleted, c.complete = meta, res.Deleted, res.Complete
	return err
}

// readQueued reads queued contacts again, in bulk, and returns those that
// no longer exist.
func (c *d365Conn) readQueued(ctx context.Context, ids []extract.ID, emit func(*extract.Contact), reject func(extract.Reject)) ([]extract.ID, error) {
	return c.contacts.ReadQueued(ctx, ids, emit, reject)
}

// campaignConn is what a run holds of the Campaign connector: its reader
// and writer, and what its read found, for the run's last transaction.
type campaignConn struct {
	reader   *extract.Campaign
	profiles *extract.CampaignProfiles
	writer   *load.CampaignWriter // nil when the target is csv
	source   bool
	filtered bool // a changed-since filter is configured
	meta     map[string]string
	// complete: this run read every profile (a full scan)
	complete bool
}

func newCampaignConn(cfg *Config, fields, fieldTimes []string, log zerolog.Logger) (*campaignConn, error) {
	o := &cfg.extract.CampaignConn
	secret, err := secret("campaign", o.Credentials)
	if err != nil {
		return nil, err
	}
	client := apiclient.New(apiclient.Config{
		TokenURL:     o.IMSURL + "/ims/token/v3",
		ClientID:     o.ClientID,
		ClientSecret: secret,
		Scopes:       o.Scopes,
		Timeout:      o.TimeoutDuration(),
		MaxTries:     o.MaxTries,
		Header:       http.Header{"X-Api-Key": {o.ClientID}},
	}, log)
	api := o.BaseURL + "/" + o.Organization + "/campaign/"
	c := &campaignConn{source: cfg.Campaign.Source == "api", filtered: o.FilterName != "",
		reader: &extract.Campaign{Client: client, APIURL: api, Resource: o.Resource, Fields: fields, FieldTimes: fieldTimes, PageSize: o.PageSize}}
	c.profiles = &extract.CampaignProfiles{API: c.reader, FilterName: o.FilterName, FilterParam: o.FilterParam,
		Overlap: o.OverlapDuration(), Concurrency: o.Concurrency, Log: log}
	if cfg.load.CampaignTarget == "api" {
		c.writer = &load.CampaignWriter{Client: client, Reader: c.reader, APIURL: api, Resource: o.Resource, Concurrency: o.Concurrency, MaxTries: o.MaxTries}
	}
	return c, nil
}

// read reads the profiles of this run (see extract.CampaignProfiles): the
// run takes the stored watermark from state and hands it to the connector;
// the new one goes with the run's last transaction.
func (c *campaignConn) read(ctx context.Context, st *state.Store, full bool, queue []state.RetryItem, emit func(*extract.Profile), reject func(extract.Reject)) (extract.Stats, error) {
	key := ""
	if c.filtered { // without a filter every read is a full scan: no watermark to read
		key = state.KeyCampaignWatermark
	}
	res, meta, err := readAPI(ctx, c.profiles, st, key, state.KeyCampaignWatermark, full, queue, emit, reject)
	c.meta, c.complete = meta, res.Complete
	return res.Stats, err
}

// apiWriters are the run's writes through the APIs (see load.APIWriters);
// a plan holds none.
func (j *job) apiWriters() *load.APIWriters {
	a := &load.APIWriters{Pairs: j.cfg.transform.Rules.Pairs, Redact: j.cfg.redact, Log: j.log,
		Stage: func(name string, total int64, unit string) load.Bar { return j.progress.Stage(name, total, unit) }}
	if j.plan {
		return a
	}
	if j.dv != nil {
		a.Dataverse = j.dv.writer
	}
	if j.cv != nil {
		a.Campaign = j.cv.writer
	}
	return a
}

// apply sends the held writes to their APIs and counts what they refused
// in the run's summary. It returns the contacts whose writes were refused.
func (j *job) apply(ctx context.Context, api *load.APIWriters, held []load.Held, w *load.Writer, sum *summary) (map[extract.ID]load.Refused, error) {
	sent, err := api.Apply(ctx, held, w)
	if err != nil {
		return nil, err
	}
	for _, r := range sent.Writes {
		if r.RaceRestored {
			sum.RaceRestored++
			continue
		}
		sum.Failed++
		ex := state.Example{Source: "Campaign", ID: r.ID.String(), PKey: r.PKey, Field: r.Field, Message: r.Message}
		if r.Target == transform.ToD365 {
			ex.Source = "Dynamics 365"
		}
		sum.failedWrites = state.AddReason(sum.failedWrites, r.Message, ex)
	}
	return sent.Refused, nil
}
