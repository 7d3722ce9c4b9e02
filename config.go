package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"optsync/extract"
	"optsync/transform"
)

// Config is the YAML file of the SPEC.
type Config struct {
	Direction string          `yaml:"direction"`
	Policy    string          `yaml:"policy"`
	Mappings  []MappingConfig `yaml:"mappings"`
	State     string          `yaml:"state"`
	OutDir    string          `yaml:"out_dir"`
	Safety    SafetyConfig    `yaml:"safety"`
	D365      D365Config      `yaml:"d365"`
	Campaign  CampaignConfig  `yaml:"campaign"`
	// AuditRetention is how long the decision log keeps a run's decisions:
	// days ("400" or "400d") or a Go duration ("72h"). Default 400 days.
	AuditRetention string `yaml:"audit_retention"`
	// MetricsFile, when set, gets the Prometheus textfile of every run.
	MetricsFile string `yaml:"metrics_file"`
	// MaxClockSkew is how far ahead of a run's start a change time may be
	// and still be believed (default 1h): a later one is a bad value.
	MaxClockSkew string `yaml:"max_clock_skew"`
	// PendingAlert: a write to an update file that the exports have not
	// shown for longer than this is logged as a warning every run: days
	// ("3d") or a Go duration ("36h"). Default 3 days.
	PendingAlert string `yaml:"pending_alert"`
	// Input bounds what an input file may hold (config_limits.go).
	Input InputConfig `yaml:"input"`
	// MaxRunTime is how long a run may take before it stops as on SIGTERM
	// (default 6h).
	MaxRunTime string `yaml:"max_run_time"`

	path           string
	rules          transform.Rules
	maxOptin       optinLimit
	maxMissing     missingLimit
	auditRetention time.Duration
	maxClockSkew   time.Duration
	limits         extract.Limits
	maxRunTime     time.Duration
	// private are the config's free-text values, as written and as
	// resolved, kept out of what the run history stores (redact).
	private      []privateValue
	pendingAlert time.Duration
}

// MappingConfig is one entry of mappings.
type MappingConfig struct {
	D365                   string `yaml:"d365"`
	Campaign               string `yaml:"campaign"`
	Invert                 bool   `yaml:"invert"`
	CampaignModifiedColumn string `yaml:"campaign_modified_column"`
}

// SafetyConfig holds the limits that stop a run before it writes.
type SafetyConfig struct {
	// MaxOptin is the most opt-outs a run may clear: a count, or a share of
	// the opt-outs known before the run, never below MinOptin.
	MaxOptin string `yaml:"max_optin"`
	MinOptin *int   `yaml:"min_optin"`
	// MaxMissing is the most records state knows on a side that a full
	// read of that side may lack: a count, or a share of those records.
	MaxMissing string `yaml:"max_missing"`
}

// SystemConfig says where one system's records come from and where its
// writes go.
type SystemConfig struct {
	Source string `yaml:"source"`
	// Target defaults to Source; csv means the run's update file.
	Target     string            `yaml:"target"`
	CSV        string            `yaml:"csv"`
	Columns    map[string]string `yaml:"columns"`
	TimeLayout string            `yaml:"time_layout"`
}

// Credentials name an API client and where its secret is: an environment
// variable or a file, never the config itself.
type Credentials struct {
	ClientID         string `yaml:"client_id"`
	ClientSecretEnv  string `yaml:"client_secret_env"`
	ClientSecretFile string `yaml:"client_secret_file"`
	ClientSecret     string `yaml:"client_secret"` // refused: see validate
}

// envName is what an environment variable may be called. A value of
// client_secret_env that is not a name is most likely the secret itself,
// pasted into the wrong key: it is never shown.
var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// shownEnvName says whether a client_secret_env value is written the way
// environment variables are (OPTSYNC_D365_SECRET), so that a message may
// name it. A valid name that is not — lower case, or one long word — may
// still be a secret.
func shownEnvName(s string) bool {
	return conventionalEnvName.MatchString(s) && (strings.Contains(s, "_") || len(s) <= 12)
}

var conventionalEnvName = regexp.MustCompile(`^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$`)

func (cr *Credentials) validate(system string, api bool, c *Config) error {
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
	cr.ClientSecretFile = c.resolve(cr.ClientSecretFile)
	return nil
}

// secret reads the client secret where the config says it is.
func (cr *Credentials) secret(system string) (string, error) {
	if cr.ClientSecretEnv != "" {
		v := os.Getenv(cr.ClientSecretEnv)
		if v == "" && !shownEnvName(cr.ClientSecretEnv) {
			return "", configErrorf("%s.client_secret_env: the environment variable it names is not set (its name is not shown: it is not written as variables are, and may be the secret itself)", system)
		}
		if v == "" {
			return "", configErrorf("%s.client_secret_env: environment variable %s is not set", system, cr.ClientSecretEnv)
		}
		return v, nil
	}
	b, err := os.ReadFile(cr.ClientSecretFile)
	if err != nil {
		return "", configErrorf("%s.client_secret_file: %v", system, err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", configErrorf("%s.client_secret_file: %s is empty", system, cr.ClientSecretFile)
	}
	return v, nil
}

// Tuning is how a connector paces itself.
type Tuning struct {
	PageSize    int    `yaml:"page_size"`
	Concurrency int    `yaml:"concurrency"`
	Timeout     string `yaml:"timeout"`
	// Overlap is read again behind a watermark: late commits exist, and
	// Dynamics' modifiedon has whole seconds.
	Overlap  string `yaml:"overlap"`
	MaxTries int    `yaml:"max_tries"`

	timeout, overlap time.Duration
}

type intSetting struct {
	key      string
	v        *int
	def, max int
}

func (t *Tuning) validate(system string, ints ...intSetting) error {
	ints = append(ints, intSetting{"max_tries", &t.MaxTries, 5, 20})
	for _, n := range ints {
		if *n.v == 0 {
			*n.v = n.def
		}
		if *n.v < 1 || *n.v > n.max {
			return fmt.Errorf("%s.%s: %d is outside 1..%d", system, n.key, *n.v, n.max)
		}
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

// D365Config adds the Dataverse Web API settings to a system's.
type D365Config struct {
	SystemConfig `yaml:",inline"`
	Credentials  `yaml:",inline"`
	Tuning       `yaml:",inline"`
	// URL is the organisation's URL, https://<org>.crm<N>.dynamics.com.
	URL      string `yaml:"url"`
	TenantID string `yaml:"tenant_id"`
	// AuthorityURL is the Entra ID host (sovereign clouds, tests).
	AuthorityURL   string `yaml:"authority_url"`
	BatchSize      int    `yaml:"batch_size"`
	ChangeTracking *bool  `yaml:"change_tracking"`
}

func (d *D365Config) api() bool { return d.Source == "api" || d.Target == "api" }

// tracking reports whether change tracking is to be used (default true).
func (d *D365Config) tracking() bool { return d.ChangeTracking == nil || *d.ChangeTracking }

// validateAPI checks the Web API settings when the API is a source or target.
func (d *D365Config) validateAPI(c *Config) error {
	if err := d.Credentials.validate("d365", d.api(), c); err != nil || !d.api() {
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
	return d.Tuning.validate("d365", intSetting{"page_size", &d.PageSize, 5000, 5000},
		intSetting{"batch_size", &d.BatchSize, 500, 1000}, intSetting{"concurrency", &d.Concurrency, 4, 52})
}

// CampaignConfig adds the Campaign Standard REST API settings.
type CampaignConfig struct {
	SystemConfig `yaml:",inline"`
	Credentials  `yaml:",inline"`
	Tuning       `yaml:",inline"`
	// BaseURL is the Adobe I/O host; Organization the tenant's path segment.
	BaseURL      string   `yaml:"base_url"`
	Organization string   `yaml:"organization"`
	IMSURL       string   `yaml:"ims_url"`
	Scopes       []string `yaml:"scopes"`
	// Resource is profileAndServices, or profileAndServicesExt for custom
	// fields and filters.
	Resource string `yaml:"resource"`
	// ChangedFilter is a custom filter defined in Campaign that returns the
	// profiles changed since a time: profileAndServicesExt/profile/by<Name>?<Param>=.
	ChangedFilter struct {
		Name  string `yaml:"name"`
		Param string `yaml:"param"`
	} `yaml:"changed_filter"`
}

func (cc *CampaignConfig) api() bool { return cc.Source == "api" || cc.Target == "api" }

func (cc *CampaignConfig) validateAPI(c *Config) error {
	if err := cc.Credentials.validate("campaign", cc.api(), c); err != nil || !cc.api() {
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
	return cc.Tuning.validate("campaign", intSetting{"page_size", &cc.PageSize, 500, 5000},
		intSetting{"concurrency", &cc.Concurrency, 4, 64})
}

// configError is a problem with the config; it exits 2.
type configError struct{ msg string }

func (e *configError) Error() string { return e.msg }

func configErrorf(format string, args ...any) error {
	return &configError{fmt.Sprintf(format, args...)}
}

// campaignFields is the fixed set Campaign allows to be mapped.
var campaignFields = map[string]bool{
	"blackList": true, "blackListEmail": true, "blackListFax": true, "blackListMobile": true,
	"blackListPhone": true, "blackListPostalMail": true, "blackListPushnotification": true, "ccpaOptOut": true,
}

// Dataverse logical names are lower-case; custom columns carry a prefix.
var logicalName = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// loadConfig reads and validates the config file.
func loadConfig(path string) (*Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, configErrorf("config: %v", err)
	}
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, configErrorf("config %s: %s", path, yamlProblems(err))
	}
	c.path = path
	if err := c.validate(); err != nil {
		return nil, configErrorf("config %s: %v", path, err)
	}
	return &c, nil
}

func (c *Config) validate() error {
	c.collectPrivate() // as written; again below as resolved
	dir, err := transform.ParseDirection(c.Direction)
	if c.Direction == "" {
		return errors.New("direction: missing (disabled, d365-to-campaign, campaign-to-d365 or bidirectional)")
	}
	if err != nil {
		return fmt.Errorf("direction: %w", err)
	}
	if c.Policy == "" {
		c.Policy = string(transform.Newest)
	}
	pol, err := transform.ParsePolicy(c.Policy)
	if err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	c.rules = transform.Rules{Direction: dir, Policy: pol}
	if len(c.Mappings) == 0 && dir != transform.Disabled {
		return fmt.Errorf("mappings: empty; direction %s needs at least one mapping", dir)
	}
	if len(c.Mappings) > extract.MaxFields {
		return fmt.Errorf("mappings: %d entries; Campaign has only %d fields to map", len(c.Mappings), extract.MaxFields)
	}
	byCampaign := map[string]int{}
	byD365 := map[string]int{}
	for i, m := range c.Mappings {
		at := fmt.Sprintf("mappings[%d] (%s ↔ %s)", i, m.D365, m.Campaign)
		if m.D365 == "" || m.Campaign == "" {
			return fmt.Errorf("%s: both d365 and campaign are required", at)
		}
		if !logicalName.MatchString(m.D365) {
			return fmt.Errorf("%s: d365 field %q is not a Dataverse logical name (lower-case letters, digits, _)", at, m.D365)
		}
		if !campaignFields[m.Campaign] {
			return fmt.Errorf("%s: campaign field %q is not one of blackList, blackListEmail, blackListFax, blackListMobile, blackListPhone, blackListPostalMail, blackListPushnotification, ccpaOptOut", at, m.Campaign)
		}
		if j, dup := byCampaign[m.Campaign]; dup {
			return fmt.Errorf("%s: campaign field %s is already fed by mappings[%d] (%s); two Dynamics fields cannot feed one Campaign field", at, m.Campaign, j, c.Mappings[j].D365)
		}
		byCampaign[m.Campaign] = i
		if j, dup := byD365[m.D365]; dup && (dir == transform.Bidirectional || dir == transform.CampaignToD365) {
			return fmt.Errorf("%s: d365 field %s is already mapped by mappings[%d] (to %s); in %s one Dynamics field cannot take two Campaign fields", at, m.D365, j, c.Mappings[j].Campaign, dir)
		}
		byD365[m.D365] = i
		c.rules.Pairs = append(c.rules.Pairs, transform.Pair{D365: m.D365, Campaign: m.Campaign, Invert: m.Invert})
	}
	if c.maxOptin, err = parseOptinLimit(c.Safety.MaxOptin); err != nil {
		return fmt.Errorf("safety.max_optin: %w", err)
	}
	c.maxOptin.min = defaultMinOptin
	if m := c.Safety.MinOptin; m != nil {
		if *m < 0 {
			return fmt.Errorf("safety.min_optin: %d is below 0", *m)
		}
		c.maxOptin.min = *m
	}
	if c.maxMissing, err = parseMissingLimit(c.Safety.MaxMissing); err != nil {
		return fmt.Errorf("safety.max_missing: %w", err)
	}
	for _, s := range []struct {
		name string
		sys  *SystemConfig
		api  bool // the API connector is built
	}{{"d365", &c.D365.SystemConfig, true}, {"campaign", &c.Campaign.SystemConfig, true}} {
		for _, kv := range []struct {
			key string
			val *string
		}{{"source", &s.sys.Source}, {"target", &s.sys.Target}} {
			if kv.key == "target" && *kv.val == "" {
				*kv.val = s.sys.Source
			}
			switch *kv.val {
			case "", "csv":
				*kv.val = "csv"
			case "api":
				if !s.api {
					return fmt.Errorf("%s.%s: api is not available in this build; use csv", s.name, kv.key)
				}
			default:
				return fmt.Errorf("%s.%s: unknown %s %q (want csv)", s.name, kv.key, kv.key, *kv.val)
			}
		}
		s.sys.CSV = c.resolve(s.sys.CSV)
	}
	if err := c.D365.validateAPI(c); err != nil {
		return err
	}
	if err := c.Campaign.validateAPI(c); err != nil {
		return err
	}
	if c.auditRetention, err = parseRetention(c.AuditRetention); err != nil {
		return fmt.Errorf("audit_retention: %w", err)
	}
	c.maxClockSkew = defaultClockSkew
	if c.MaxClockSkew != "" {
		if c.maxClockSkew, err = time.ParseDuration(strings.TrimSpace(c.MaxClockSkew)); err != nil || c.maxClockSkew < 0 {
			return fmt.Errorf("max_clock_skew: %q is not a duration (90s, 1h)", c.MaxClockSkew)
		}
	}
	c.pendingAlert = defaultPendingAlert
	if strings.TrimSpace(c.PendingAlert) != "" {
		if c.pendingAlert, err = parseRetention(c.PendingAlert); err != nil {
			return fmt.Errorf("pending_alert: %w", err)
		}
	}
	if err := c.validateLimits(); err != nil {
		return err
	}
	c.MetricsFile = c.resolve(c.MetricsFile)
	if c.State == "" {
		c.State = "optsync.db"
	}
	c.State = c.resolve(c.State)
	if c.OutDir == "" {
		c.OutDir = "out"
	}
	c.OutDir = c.resolve(c.OutDir)
	c.collectPrivate()
	return nil
}

// privateValue is one config value that the run history must not hold.
// credential marks the keys meant for credentials (client_id, the secret's
// env var or file, tenant_id): a secret pasted into the wrong key most
// likely lands in one of them, so their short values are hidden too.
type privateValue struct {
	key, value string
	credential bool
}

// collectPrivate adds the config's free-text values to c.private: every
// value that is not checked against a fixed set or a strict shape
// (direction, policy, source, target, resource, mapped field names,
// numbers and durations), since any of them may hold a secret pasted into
// the wrong key.
func (c *Config) collectPrivate() {
	add := func(key, v string) {
		v = strings.TrimSpace(v)
		credential := strings.Contains(key, "client_") || strings.HasSuffix(key, "tenant_id")
		pv := privateValue{key, v, credential}
		if len(v) < 3 || slices.Contains(c.private, pv) {
			return
		}
		c.private = append(c.private, pv)
	}
	add("state", c.State)
	add("out_dir", c.OutDir)
	add("metrics_file", c.MetricsFile)
	for i, m := range c.Mappings {
		add(fmt.Sprintf("mappings[%d].campaign_modified_column", i), m.CampaignModifiedColumn)
	}
	for _, s := range []struct {
		name string
		sys  *SystemConfig
		cr   *Credentials
	}{{"d365", &c.D365.SystemConfig, &c.D365.Credentials}, {"campaign", &c.Campaign.SystemConfig, &c.Campaign.Credentials}} {
		add(s.name+".csv", s.sys.CSV)
		add(s.name+".time_layout", s.sys.TimeLayout)
		for k, v := range s.sys.Columns {
			add(s.name+".columns."+k, v)
		}
		add(s.name+".client_id", s.cr.ClientID)
		add(s.name+".client_secret_env", s.cr.ClientSecretEnv)
		add(s.name+".client_secret_file", s.cr.ClientSecretFile)
		add(s.name+".client_secret", s.cr.ClientSecret)
	}
	add("d365.url", c.D365.URL)
	add("d365.tenant_id", c.D365.TenantID)
	add("d365.authority_url", c.D365.AuthorityURL)
	add("campaign.base_url", c.Campaign.BaseURL)
	add("campaign.organization", c.Campaign.Organization)
	add("campaign.ims_url", c.Campaign.IMSURL)
	add("campaign.changed_filter.name", c.Campaign.ChangedFilter.Name)
	add("campaign.changed_filter.param", c.Campaign.ChangedFilter.Param)
	for i, sc := range c.Campaign.Scopes {
		add(fmt.Sprintf("campaign.scopes[%d]", i), sc)
	}
	// Longest first, so a path is replaced before a shorter value inside it.
	slices.SortStableFunc(c.private, func(a, b privateValue) int { return len(b.value) - len(a.value) })
}

// redact is text for the run history: every config value in it replaced by
// its key (<d365.client_secret_env>). Values of 8 characters or more are
// replaced wherever they occur. Shorter ones are no secret unless they sit
// in a credential key, where they are replaced as whole words only (so that
// a short client id does not eat part of a word); other short values stay,
// or a changed_filter param "since" would turn every "since" of a service's
// message into a key name.
func (c *Config) redact(text string) string {
	for _, p := range c.private {
		short := len(p.value) < 8
		if short && !p.credential {
			continue
		}
		text = replaceValue(text, p.value, "<"+p.key+">", short)
	}
	return text
}

func replaceValue(s, old, repl string, wholeWord bool) string {
	if !wholeWord {
		return strings.ReplaceAll(s, old, repl)
	}
	word := func(b byte) bool {
		return b == '_' || b >= '0' && b <= '9' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z'
	}
	var b strings.Builder
	for {
		i := strings.Index(s, old)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		j := i + len(old)
		if (i == 0 || !word(s[i-1])) && (j == len(s) || !word(s[j])) {
			b.WriteString(s[:i])
			b.WriteString(repl)
			s = s[j:]
			continue
		}
		b.WriteString(s[:i+1])
		s = s[i+1:]
	}
}

// yamlProblems says what the YAML decoder found in the config's words, not
// the Go types': an unknown key is named with its section and, when one is
// close, the key that was probably meant.
func yamlProblems(err error) string {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return strings.TrimPrefix(err.Error(), "yaml: ")
	}
	sections := configSections()
	out := make([]string, 0, len(te.Errors))
	for _, e := range te.Errors {
		m := unknownField.FindStringSubmatch(e)
		if m == nil {
			out = append(out, e)
			continue
		}
		sec, ok := sections[m[3]]
		if !ok {
			out = append(out, e)
			continue
		}
		line, key := m[1], m[2]
		msg := fmt.Sprintf("line %s: unknown key %q", line, key)
		if sec.name != "" {
			msg += " in " + sec.name
		}
		if near := closest(key, sec.keys); near != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", near)
		}
		out = append(out, msg)
	}
	return strings.Join(out, "; ")
}

var unknownField = regexp.MustCompile(`^line (\d+): field (.+) not found in type (.+)$`)

// section is one mapping of the config: where it sits and its keys.
type section struct {
	name string
	keys []string
}

// configSections lists, by Go type, every mapping of the config file with
// its keys, from the yaml tags (inline structs add theirs to their parent).
func configSections() map[string]section {
	out := map[string]section{}
	var walk func(t reflect.Type, name string)
	walk = func(t reflect.Type, name string) {
		var keys []string
		var add func(t reflect.Type)
		add = func(t reflect.Type) {
			for i := range t.NumField() {
				f := t.Field(i)
				tag := f.Tag.Get("yaml")
				key, opts, _ := strings.Cut(tag, ",")
				if opts == "inline" {
					add(f.Type)
					continue
				}
				if key == "" || key == "-" {
					continue
				}
				keys = append(keys, key)
				ft := f.Type
				for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice {
					ft = ft.Elem()
				}
				if ft.Kind() == reflect.Struct {
					sub := key
					if name != "" {
						sub = name + "." + key
					}
					if f.Type.Kind() == reflect.Slice {
						sub = "an entry of " + sub
					}
					walk(ft, sub)
				}
			}
		}
		add(t)
		out[t.String()] = section{name: name, keys: keys}
	}
	walk(reflect.TypeFor[Config](), "")
	return out
}

// closest is the key nearest to s, if one is near enough to be a slip:
// at most two edits apart, or one a prefix of the other.
func closest(s string, keys []string) string {
	best, bestD := "", 3
	for _, k := range keys {
		d := editDistance(strings.ToLower(s), k)
		if strings.HasPrefix(k, strings.ToLower(s)) || strings.HasPrefix(strings.ToLower(s), k) {
			d = min(d, 2)
		}
		if d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// resolve makes a config path relative to the config file's folder.
func (c *Config) resolve(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(filepath.Dir(c.path), p)
}

// defaultClockSkew is max_clock_skew when the config does not set it.
const defaultClockSkew = time.Hour

// notAfter is the latest change time a run started at start believes: its
// start plus max_clock_skew. Every change time read (rows, per-field
// columns) and every one kept in state is held to it.
func (c *Config) notAfter(start time.Time) time.Time { return start.Add(c.maxClockSkew) }

// d365Layout and campaignLayout tell the readers which columns to take;
// notAfter is the latest change time believed (see Config.notAfter).
func (c *Config) d365Layout(notAfter time.Time) extract.Layout {
	l := extract.Layout{Columns: c.D365.Columns, TimeLayout: c.D365.TimeLayout, NotAfter: notAfter, ColumnsKey: "d365.columns", Limits: c.limits}
	for _, m := range c.Mappings {
		l.Fields = append(l.Fields, m.D365)
	}
	return l
}

func (c *Config) campaignLayout(notAfter time.Time) extract.Layout {
	l := extract.Layout{Columns: c.Campaign.Columns, TimeLayout: c.Campaign.TimeLayout, NotAfter: notAfter, ColumnsKey: "campaign.columns", Limits: c.limits}
	any := false
	for _, m := range c.Mappings {
		l.Fields = append(l.Fields, m.Campaign)
		l.FieldTimes = append(l.FieldTimes, m.CampaignModifiedColumn)
		any = any || m.CampaignModifiedColumn != ""
	}
	if !any {
		l.FieldTimes = nil
	}
	return l
}

// optinLimit is safety.max_optin: a count, or a percentage of the opt-outs
// known before the run (rounded up, never below safety.min_optin).
type optinLimit struct {
	count   int
	percent float64
	isPct   bool
	min     int
}

const (
	defaultMaxOptin = 1000
	defaultMinOptin = 10
)

// parseShare reads a count ("100") or a percentage ("2%").
func parseShare(s string) (count int, pct float64, isPct bool, err error) {
	if p, ok := strings.CutSuffix(s, "%"); ok {
		v, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || v < 0 || v > 100 {
			return 0, 0, false, fmt.Errorf("%q is not a percentage from 0%% to 100%%", s)
		}
		return 0, v, true, nil
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 0 {
		return 0, 0, false, fmt.Errorf("%q is neither a count (100) nor a percentage (2%%)", s)
	}
	return v, 0, false, nil
}

func parseOptinLimit(s string) (optinLimit, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return optinLimit{count: defaultMaxOptin, min: defaultMinOptin}, nil
	}
	n, pct, isPct, err := parseShare(s)
	return optinLimit{count: n, percent: pct, isPct: isPct, min: defaultMinOptin}, err
}

// allowed is the most opt-outs a run may clear when known opt-outs are at
// stake before it.
func (l optinLimit) allowed(known int) int {
	if l.isPct {
		// the epsilon keeps 29% of 100 at 29 despite binary fractions
		return max(int(math.Ceil(l.percent*float64(known)/100-1e-9)), l.min)
	}
	return l.count
}

func (l optinLimit) String() string {
	if l.isPct {
		return strconv.FormatFloat(l.percent, 'f', -1, 64) + "%"
	}
	return strconv.Itoa(l.count)
}

// explain says how the limit came about, for a stop message.
func (l optinLimit) explain(known, limit int) string {
	if !l.isPct {
		return "safety.max_optin " + l.String()
	}
	if limit == l.min && int(math.Ceil(l.percent*float64(known)/100-1e-9)) < l.min {
		return fmt.Sprintf("safety.max_optin %s of %s, raised to safety.min_optin %d", l, plural(known, "known opt-out"), l.min)
	}
	return fmt.Sprintf("safety.max_optin %s of %s", l, plural(known, "known opt-out"))
}

// missingLimit is safety.max_missing: a count, or a percentage of the
// records state knows on a side.
type missingLimit struct {
	count   int
	percent float64
	isPct   bool
}

const defaultMaxMissing = "10%"

func parseMissingLimit(s string) (missingLimit, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		s = defaultMaxMissing
	}
	n, pct, isPct, err := parseShare(s)
	return missingLimit{count: n, percent: pct, isPct: isPct}, err
}

// allowed is the most of known records a full read may lack.
func (l missingLimit) allowed(known int) int {
	if l.isPct {
		return int(math.Floor(l.percent*float64(known)/100 + 1e-9))
	}
	return l.count
}

func (l missingLimit) String() string {
	if l.isPct {
		return strconv.FormatFloat(l.percent, 'f', -1, 64) + "%"
	}
	return strconv.Itoa(l.count)
}

const defaultRetention = 400 * 24 * time.Hour

// parseRetention reads days ("400", "400d") or a Go duration ("72h").
// defaultPendingAlert is how long a write may wait to be imported before
// every run warns about it.
const defaultPendingAlert = 3 * 24 * time.Hour

func parseRetention(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return defaultRetention, nil
	}
	if days, err := strconv.Atoi(strings.TrimSuffix(s, "d")); err == nil && days > 0 {
		return time.Duration(days) * 24 * time.Hour, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return d, nil
	}
	return 0, fmt.Errorf("%q is neither a number of days (400d) nor a duration (72h)", s)
}
