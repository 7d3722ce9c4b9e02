package load

import (
	"net/http"
	"time"

	"github.com/rs/zerolog"

	"optsync/extract"
	"optsync/extract/apiclient"
	"optsync/load/progress"
	"optsync/transform"
)

// Connections are a run's API connectors: for each system the config
// reaches through its API (to read it, write it, or both), one client
// shared by its reader (extract) and, when the system is written through
// its API, its writer.
type Connections struct {
	extract.APIs
	Dataverse *DataverseWriter // nil when Dynamics is written to update files
	Campaign  *CampaignWriter  // nil when Campaign is written to update files
}

// ConnectOptions are what the connectors are made of.
type ConnectOptions struct {
	Extract *extract.Options
	Load    *Options
	// Tracking: Dynamics is read with change tracking (a delta link), not
	// by a watermark.
	Tracking bool
	// NotAfter is the latest change time the run believes.
	NotAfter time.Time
	// Secret reads a client secret where the config says it is (nil:
	// Credentials.Secret).
	Secret func(system string, cr extract.Credentials) (string, error)
	Log    zerolog.Logger
}

// Connect makes the connectors the config asks for; nothing is sent yet.
func Connect(o ConnectOptions) (*Connections, error) {
	c := &Connections{}
	if o.Secret == nil {
		o.Secret = func(system string, cr extract.Credentials) (string, error) { return cr.Secret(system) }
	}
	if o.Extract.DataverseConn.Used {
		if err := c.dataverse(o); err != nil {
			return nil, err
		}
	}
	if o.Extract.CampaignConn.Used {
		if err := c.campaign(o); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func (c *Connections) dataverse(o ConnectOptions) error {
	conn := &o.Extract.DataverseConn
	secret, err := o.Secret("d365", conn.Credentials)
	if err != nil {
		return err
	}
	client := apiclient.New(apiclient.Config{
		TokenURL:     conn.AuthorityURL + "/" + conn.TenantID + "/oauth2/v2.0/token",
		ClientID:     conn.ClientID,
		ClientSecret: secret,
		Scopes:       []string{conn.URL + "/.default"},
		Timeout:      conn.TimeoutDuration(),
		MaxTries:     conn.MaxTries,
		// A throttled service gets fewer writes in flight for the rest of
		// the run: slower, but the run finishes.
		OnThrottle: func() {
			if c.Dataverse != nil {
				c.Dataverse.Throttled()
			}
		},
	}, o.Log)
	base := conn.URL + "/api/data/v9.2/"
	reader := &extract.Dataverse{Client: client, BaseURL: base, Fields: o.Extract.D365.Fields, PageSize: conn.PageSize,
		Concurrency: conn.Concurrency, NotAfter: o.NotAfter}
	c.Contacts = &extract.DataverseContacts{API: reader, Tracking: o.Tracking, Overlap: conn.OverlapDuration(), Log: o.Log}
	if o.Load.D365Target == "api" {
		c.Dataverse = &DataverseWriter{Client: client, Reader: reader, BaseURL: base, BatchSize: o.Load.D365BatchSize,
			Concurrency: conn.Concurrency, Log: o.Log}
	}
	return nil
}

func (c *Connections) campaign(o ConnectOptions) error {
	conn := &o.Extract.CampaignConn
	secret, err := o.Secret("campaign", conn.Credentials)
	if err != nil {
		return err
	}
	client := apiclient.New(apiclient.Config{
		TokenURL:     conn.IMSURL + "/ims/token/v3",
		ClientID:     conn.ClientID,
		ClientSecret: secret,
		Scopes:       conn.Scopes,
		Timeout:      conn.TimeoutDuration(),
		MaxTries:     conn.MaxTries,
		Header:       http.Header{"X-Api-Key": {conn.ClientID}},
	}, o.Log)
	api := conn.BaseURL + "/" + conn.Organization + "/campaign/"
	l := o.Extract.CampaignLayout(o.NotAfter)
	reader := &extract.Campaign{Client: client, APIURL: api, Resource: conn.Resource, Fields: l.Fields, FieldTimes: l.FieldTimes,
		PageSize: conn.PageSize, NotAfter: o.NotAfter}
	c.Profiles = &extract.CampaignProfiles{API: reader, FilterName: conn.ChangedFilter.Name, FilterParam: conn.ChangedFilter.Param,
		Overlap: conn.OverlapDuration(), Concurrency: conn.Concurrency, Log: o.Log}
	if o.Load.CampaignTarget == "api" {
		c.Campaign = &CampaignWriter{Client: client, Reader: reader, APIURL: api, Resource: conn.Resource,
			Concurrency: conn.Concurrency, MaxTries: conn.MaxTries}
	}
	return nil
}

// Writers are the run's writes through the APIs, held until every
// decision is made; a plan holds none (it writes nothing).
func (c *Connections) Writers(plan bool, pairs []transform.Pair, redact func(string) string, prog *progress.Progress, log zerolog.Logger) *APIWriters {
	a := &APIWriters{Pairs: pairs, Redact: redact, Log: log,
		Stage: func(name string, total int64, unit string) Bar { return prog.Stage(name, total, unit) }}
	if !plan {
		a.Dataverse, a.Campaign = c.Dataverse, c.Campaign
	}
	return a
}
