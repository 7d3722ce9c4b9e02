package extract

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Options is what the config says of the reads: each system's input (CSV
// or API, the columns and time layout of its exports), how each API is
// reached and paced, how far ahead of a run a change time may be
// (max_clock_skew), what an input file may hold (input:) and what a run
// may hold in memory (memory_budget). The config
// file fills the fields as written; Check sets the defaults and reads the
// durations.
type Options struct {
	D365, Campaign Input
	DataverseConn  DataverseConn
	CampaignConn   CampaignConn
	// MaxClockSkew is max_clock_skew as written ("" is 1h).
	MaxClockSkew string
	// Input is input: as written; Check makes Limits of it.
	Input  InputLimits
	Limits Limits
	// MemoryBudget is memory_budget as written ("" is 1GB): what a run may
	// hold in memory; past it, records are sorted in runs on disk.
	MemoryBudget string

	maxClockSkew time.Duration
	memoryBudget int64
}

// InputLimits is input: as written. A quoted field that runs past
// max_field_bytes or max_field_lines (or to the end of the file) is a
// stray quote, and a file with more than max_reject_share of its rows
// rejected is not an export. Either stops the run, exit 2.
type InputLimits struct {
	MaxFieldBytes  int    `yaml:"max_field_bytes"`
	MaxFieldLines  int    `yaml:"max_field_lines"`
	MaxRejectShare string `yaml:"max_reject_share"`
}

// Input is one system's records, as its section of the config says: where
// they come from (source: csv or api), the exports (csv: a file, a glob or
// a folder, the drop) and which of their columns to take.
type Input struct {
	// Key is the system's section of the config (d365, campaign), for
	// messages.
	Key        string            `yaml:"-"`
	Source     string            `yaml:"source"`
	CSV        string            `yaml:"csv"`
	Columns    map[string]string `yaml:"columns"`
	TimeLayout string            `yaml:"time_layout"`
	// Fields are the mapped fields, in pair order; FieldTimes (Campaign
	// only) the columns holding each field's change time ("": none).
	Fields, FieldTimes []string `yaml:"-"`
}

// defaultClockSkew is max_clock_skew when the config does not set it.
const defaultClockSkew = time.Hour

// Check sets the defaults and checks the values; its errors name the
// config key (d365.source, campaign.page_size, max_clock_skew …).
func (o *Options) Check() error {
	for _, in := range []*Input{&o.D365, &o.Campaign} {
		switch in.Source {
		case "", "csv":
			in.Source = "csv"
		case "api":
		default:
			return fmt.Errorf("%s.source: unknown source %q (want csv)", in.Key, in.Source)
		}
	}
	if err := o.DataverseConn.Check(); err != nil {
		return err
	}
	if err := o.CampaignConn.Check(); err != nil {
		return err
	}
	o.maxClockSkew = defaultClockSkew
	if o.MaxClockSkew != "" {
		var err error
		if o.maxClockSkew, err = time.ParseDuration(strings.TrimSpace(o.MaxClockSkew)); err != nil || o.maxClockSkew < 0 {
			return fmt.Errorf("max_clock_skew: %q is not a duration (90s, 1h)", o.MaxClockSkew)
		}
	}
	return o.checkLimits()
}

// checkLimits checks input: and memory_budget.
func (o *Options) checkLimits() error {
	in := o.Input
	if in.MaxFieldBytes < 0 || in.MaxFieldBytes > 1<<30 {
		return fmt.Errorf("input.max_field_bytes: %d is outside 1..1073741824 (default 65536)", in.MaxFieldBytes)
	}
	if in.MaxFieldLines < 0 || in.MaxFieldLines > 1<<20 {
		return fmt.Errorf("input.max_field_lines: %d is outside 1..1048576 (default 100)", in.MaxFieldLines)
	}
	o.Limits = Limits{MaxFieldBytes: in.MaxFieldBytes, MaxFieldLines: in.MaxFieldLines}
	if s := strings.TrimSpace(in.MaxRejectShare); s != "" {
		v, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
		if err != nil || !strings.HasSuffix(s, "%") || v <= 0 || v > 100 {
			return fmt.Errorf("input.max_reject_share: %q is not a share of rows (50%%)", in.MaxRejectShare)
		}
		o.Limits.MaxRejectShare = v / 100
	}
	o.memoryBudget = defaultMemoryBudget
	if o.MemoryBudget != "" {
		n, err := parseSize(o.MemoryBudget)
		if err != nil || n < minMemoryBudget {
			return fmt.Errorf("memory_budget: %q is not a size of at least 64MB (1GB, 300MB)", o.MemoryBudget)
		}
		o.memoryBudget = n
	}
	return nil
}

// MemoryBytes is memory_budget in bytes: the peak a run may reach (RSS);
// the default before Check.
func (o *Options) MemoryBytes() int64 {
	if o.memoryBudget == 0 {
		return defaultMemoryBudget
	}
	return o.memoryBudget
}

// defaultMemoryBudget is memory_budget when the config does not set it.
// minMemoryBudget is the least that makes sense: the process itself, its
// buffers and the state file's pages as a commit writes them take some
// tens of MB whatever the budget.
const (
	defaultMemoryBudget = 1 << 30
	minMemoryBudget     = 64 << 20
)

// parseSize reads a size: a number of bytes, or with KB, MB, GB (powers of
// 1024; KiB, MiB, GiB too).
func parseSize(s string) (int64, error) {
	s = strings.ToUpper(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		n      int64
	}{{"KIB", 1 << 10}, {"MIB", 1 << 20}, {"GIB", 1 << 30}, {"KB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.n
			break
		}
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v <= 0 || v*float64(mult) > 1<<50 {
		return 0, errors.New("not a size")
	}
	return int64(v * float64(mult)), nil
}

// NotAfter is the latest change time a run started at start believes: its
// start plus max_clock_skew. Every change time read (rows, per-field
// columns) and every one kept in state is held to it.
func (o *Options) NotAfter(start time.Time) time.Time { return start.Add(o.maxClockSkew) }

// D365Layout and CampaignLayout tell the readers which columns to take;
// notAfter is the latest change time believed (see NotAfter).
func (o *Options) D365Layout(notAfter time.Time) Layout {
	return Layout{Columns: o.D365.Columns, TimeLayout: o.D365.TimeLayout, NotAfter: notAfter, ColumnsKey: "d365.columns", Limits: o.Limits,
		Fields: o.D365.Fields}
}

func (o *Options) CampaignLayout(notAfter time.Time) Layout {
	l := Layout{Columns: o.Campaign.Columns, TimeLayout: o.Campaign.TimeLayout, NotAfter: notAfter, ColumnsKey: "campaign.columns", Limits: o.Limits,
		Fields: o.Campaign.Fields}
	for _, f := range o.Campaign.FieldTimes {
		if f != "" {
			l.FieldTimes = o.Campaign.FieldTimes
		}
	}
	return l
}

// Credentials name an API client and where its secret is: an environment
// variable or a file, never the config itself.
type Credentials struct {
	ClientID         string `yaml:"client_id"`
	ClientSecretEnv  string `yaml:"client_secret_env"`
	ClientSecretFile string `yaml:"client_secret_file"`
	// ClientSecret is a secret written into the config: always refused.
	ClientSecret string `yaml:"client_secret"`
}

// envName is what an environment variable may be called. A value of
// client_secret_env that is not a name is most likely the secret itself,
// pasted into the wrong key: it is never shown.
var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Check refuses a secret in the config whether or not the API is used
// (api), and wants a client and one place for its secret when it is.
func (cr *Credentials) Check(system string, api bool) error {
	if cr.ClientSecret != "" {
		return fmt.Errorf("%s.client_secret: a secret is never read from the config file; name an environment variable (client_secret_env) or a file (client_secret_file)", system)
	}
	if cr.ClientSecretEnv != "" && !envName.MatchString(cr.ClientSecretEnv) {
		return fmt.Errorf("%s.client_secret_env must name an environment variable; the value given looks like a secret and is not shown", system)
	}
	if !api {
		return nil
	}
	if cr.ClientID == "" {
		return fmt.Errorf("%s.client_id is required with the API", system)
	}
	if (cr.ClientSecretEnv == "") == (cr.ClientSecretFile == "") {
		return fmt.Errorf("%s: name the client secret with exactly one of client_secret_env and client_secret_file", system)
	}
	return nil
}

// Tuning is how a connector paces itself: its reads here, and in load its
// writes, which share the client (timeout, max_tries) and concurrency.
type Tuning struct {
	PageSize    int `yaml:"page_size"`
	Concurrency int `yaml:"concurrency"`
	// Timeout and Overlap as written; Overlap is read again behind a
	// watermark: late commits exist, and Dynamics' modifiedon has whole
	// seconds.
	Timeout  string `yaml:"timeout"`
	Overlap  string `yaml:"overlap"`
	MaxTries int    `yaml:"max_tries"`

	timeout, overlap time.Duration
}

// TimeoutDuration is the timeout of one request (default 2m), and
// OverlapDuration what is read again behind a watermark (default 5m).
func (t *Tuning) TimeoutDuration() time.Duration { return t.timeout }
func (t *Tuning) OverlapDuration() time.Duration { return t.overlap }

// IntSetting is one whole-number setting of a section: its key, where it
// is, its default (for 0) and its largest value.
type IntSetting struct {
	Key      string
	V        *int
	Def, Max int
}

// CheckInts sets each setting left at 0 to its default and refuses one
// outside 1..Max, naming system.key.
func CheckInts(system string, ints ...IntSetting) error {
	for _, n := range ints {
		if *n.V == 0 {
			*n.V = n.Def
		}
		if *n.V < 1 || *n.V > n.Max {
			return fmt.Errorf("%s.%s: %d is outside 1..%d", system, n.Key, *n.V, n.Max)
		}
	}
	return nil
}

func (t *Tuning) check(system string, pageSize IntSetting, concurrency IntSetting) error {
	if err := CheckInts(system, pageSize, concurrency, IntSetting{"max_tries", &t.MaxTries, 5, 20}); err != nil {
		return err
	}
	for _, d := range []struct {
		key string
		s   string
		v   *time.Duration
		def time.Duration
	}{{"timeout", t.Timeout, &t.timeout, 2 * time.Minute}, {"overlap", t.Overlap, &t.overlap, 5 * time.Minute}} {
		*d.v = d.def
		if d.s != "" {
			v, err := time.ParseDuration(d.s)
			if err != nil || v < 0 {
				return fmt.Errorf("%s.%s: %q is not a duration (90s, 5m)", system, d.key, d.s)
			}
			*d.v = v
		}
	}
	return nil
}

func checkURL(key, raw, want string) (string, error) {
	u, err := url.Parse(raw)
	if raw == "" || err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", fmt.Errorf("%s: %q is not a URL (%s)", key, raw, want)
	}
	return strings.TrimRight(raw, "/"), nil
}

// DataverseConn is how the Dataverse Web API is reached, when it is read
// or written (Used): the config's d365: keys of the API.
type DataverseConn struct {
	Used        bool `yaml:"-"` // d365.source or d365.target is api
	Credentials `yaml:",inline"`
	Tuning      `yaml:",inline"`
	// URL is the organisation's URL, https://<org>.crm<N>.dynamics.com.
	URL      string `yaml:"url"`
	TenantID string `yaml:"tenant_id"`
	// AuthorityURL is the Entra ID host (sovereign clouds, tests).
	AuthorityURL   string `yaml:"authority_url"`
	ChangeTracking *bool  `yaml:"change_tracking"`
}

// Tracking reports whether change tracking is to be used (default true).
func (d *DataverseConn) Tracking() bool { return d.ChangeTracking == nil || *d.ChangeTracking }

// Check sets the defaults and checks the values when the API is used.
func (d *DataverseConn) Check() error {
	if err := d.Credentials.Check("d365", d.Used); err != nil || !d.Used {
		return err
	}
	var err error
	if d.URL, err = checkURL("d365.url", d.URL, "the organisation URL, https://<org>.crm.dynamics.com"); err != nil {
		return err
	}
	if d.TenantID == "" {
		return errors.New("d365.tenant_id is required with the API")
	}
	if d.AuthorityURL == "" {
		d.AuthorityURL = "https://login.microsoftonline.com"
	}
	if d.AuthorityURL, err = checkURL("d365.authority_url", d.AuthorityURL, "the Entra ID host"); err != nil {
		return err
	}
	return d.Tuning.check("d365", IntSetting{"page_size", &d.PageSize, 5000, 5000}, IntSetting{"concurrency", &d.Concurrency, 4, 52})
}

// CampaignConn is how the Campaign Standard REST API is reached, when it
// is read or written (Used): the config's campaign: keys of the API.
type CampaignConn struct {
	Used        bool `yaml:"-"` // campaign.source or campaign.target is api
	Credentials `yaml:",inline"`
	Tuning      `yaml:",inline"`
	// BaseURL is the Adobe I/O host; Organization the tenant's path segment.
	BaseURL      string   `yaml:"base_url"`
	Organization string   `yaml:"organization"`
	IMSURL       string   `yaml:"ims_url"`
	Scopes       []string `yaml:"scopes"`
	// Resource is profileAndServices, or profileAndServicesExt for custom
	// fields and filters.
	Resource      string        `yaml:"resource"`
	ChangedFilter ChangedFilter `yaml:"changed_filter"`
}

// ChangedFilter names a custom filter defined in Campaign that returns the
// profiles changed since a time: profileAndServicesExt/profile/by<Name>?<Param>=.
type ChangedFilter struct {
	Name  string `yaml:"name"`
	Param string `yaml:"param"`
}

// Check sets the defaults and checks the values when the API is used.
func (cc *CampaignConn) Check() error {
	if err := cc.Credentials.Check("campaign", cc.Used); err != nil || !cc.Used {
		return err
	}
	var err error
	if cc.BaseURL == "" {
		cc.BaseURL = "https://mc.adobe.io"
	}
	if cc.BaseURL, err = checkURL("campaign.base_url", cc.BaseURL, "the Adobe I/O host, https://mc.adobe.io"); err != nil {
		return err
	}
	if cc.IMSURL == "" {
		cc.IMSURL = "https://ims-na1.adobelogin.com"
	}
	if cc.IMSURL, err = checkURL("campaign.ims_url", cc.IMSURL, "the Adobe IMS host"); err != nil {
		return err
	}
	if cc.Organization == "" || strings.ContainsAny(cc.Organization, "/?#") {
		return fmt.Errorf("campaign.organization: %q is not an organization id", cc.Organization)
	}
	switch cc.Resource {
	case "":
		cc.Resource = "profileAndServices"
	case "profileAndServices", "profileAndServicesExt":
	default:
		return fmt.Errorf("campaign.resource: %q (want profileAndServices or profileAndServicesExt)", cc.Resource)
	}
	if (cc.ChangedFilter.Name == "") != (cc.ChangedFilter.Param == "") {
		return errors.New("campaign.changed_filter: name and param go together")
	}
	return cc.Tuning.check("campaign", IntSetting{"page_size", &cc.PageSize, 500, 5000}, IntSetting{"concurrency", &cc.Concurrency, 4, 64})
}
