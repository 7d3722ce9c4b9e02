package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"

	"github.com/xrash/smetrics"
	"go.yaml.in/yaml/v3"

	"optsync/extract"
	"optsync/load"
	"optsync/state"
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
	// Input bounds what an input file may hold (extract.InputLimits).
	Input InputConfig `yaml:"input"`
	// MaxRunTime is how long a run may take before it stops as on SIGTERM
	// (default 6h).
	MaxRunTime string `yaml:"max_run_time"`
	// MemoryBudget bounds what a run holds in memory (default 1GB): past
	// it, records are sorted in runs on disk in TmpDir (default out_dir).
	MemoryBudget string `yaml:"memory_budget"`
	TmpDir       string `yaml:"tmp_dir"`

	path string
	// What each stage is given, from the values above (validate).
	extract   extract.Options
	transform transform.Options
	load      load.Options
	state     state.Options
	// private are the config's free-text values, as written and as
	// resolved, kept out of what the run history stores.
	private extract.Private
}

// InputConfig is input: (extract.InputLimits).
type InputConfig struct {
	MaxFieldBytes  int    `yaml:"max_field_bytes"`
	MaxFieldLines  int    `yaml:"max_field_lines"`
	MaxRejectShare string `yaml:"max_reject_share"`
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
	ClientSecret     string `yaml:"client_secret"` // refused: see extract.Credentials.Check
}

// Tuning is how a connector paces itself (extract.Tuning).
type Tuning struct {
	PageSize    int    `yaml:"page_size"`
	Concurrency int    `yaml:"concurrency"`
	Timeout     string `yaml:"timeout"`
	// Overlap is read again behind a watermark: late commits exist, and
	// Dynamics' modifiedon has whole seconds.
	Overlap  string `yaml:"overlap"`
	MaxTries int    `yaml:"max_tries"`
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

// configError is a problem with the config; it exits 2.
type configError struct{ msg string }

func (e *configError) Error() string { return e.msg }

func configErrorf(format string, args ...any) error {
	return &configError{fmt.Sprintf(format, args...)}
}

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

// validate hands each stage its part of the config and has it checked, in
// the order the stages run; the message names the key. What the root reads
// itself it resolves here: paths against the config file's folder, and the
// sources and targets as the stages settled them.
func (c *Config) validate() error {
	c.addPrivate() // as written; again below as resolved
	c.transform = transform.Options{Direction: c.Direction, Policy: c.Policy,
		MaxOptin: c.Safety.MaxOptin, MinOptin: c.Safety.MinOptin, MaxMissing: c.Safety.MaxMissing}
	d365 := extract.Input{Key: "d365", Source: c.D365.Source, Columns: c.D365.Columns, TimeLayout: c.D365.TimeLayout}
	campaign := extract.Input{Key: "campaign", Source: c.Campaign.Source, Columns: c.Campaign.Columns, TimeLayout: c.Campaign.TimeLayout}
	for _, m := range c.Mappings {
		c.transform.Mappings = append(c.transform.Mappings, transform.Mapping{D365: m.D365, Campaign: m.Campaign, Invert: m.Invert})
		d365.Fields = append(d365.Fields, m.D365)
		campaign.Fields = append(campaign.Fields, m.Campaign)
		campaign.FieldTimes = append(campaign.FieldTimes, m.CampaignModifiedColumn)
	}
	if err := c.transform.Check(); err != nil {
		return err
	}
	c.extract = extract.Options{D365: d365, Campaign: campaign, MaxClockSkew: c.MaxClockSkew, MemoryBudget: c.MemoryBudget,
		Input: extract.InputLimits{MaxFieldBytes: c.Input.MaxFieldBytes, MaxFieldLines: c.Input.MaxFieldLines, MaxRejectShare: c.Input.MaxRejectShare},
		DataverseConn: extract.DataverseConn{Used: c.D365.api(), Credentials: extract.Credentials(c.D365.Credentials),
			Tuning: c.D365.Tuning.extract(), URL: c.D365.URL, TenantID: c.D365.TenantID, AuthorityURL: c.D365.AuthorityURL},
		CampaignConn: extract.CampaignConn{Used: c.Campaign.api(), Credentials: extract.Credentials(c.Campaign.Credentials),
			Tuning: c.Campaign.Tuning.extract(), BaseURL: c.Campaign.BaseURL, Organization: c.Campaign.Organization, IMSURL: c.Campaign.IMSURL,
			Scopes: c.Campaign.Scopes, Resource: c.Campaign.Resource, FilterName: c.Campaign.ChangedFilter.Name, FilterParam: c.Campaign.ChangedFilter.Param}}
	c.extract.AddPrivate(&c.private)
	// The secret files are found from the config's folder.
	for _, cn := range []struct {
		used bool
		file *string
	}{{c.D365.api(), &c.extract.DataverseConn.ClientSecretFile}, {c.Campaign.api(), &c.extract.CampaignConn.ClientSecretFile}} {
		if cn.used {
			*cn.file = c.resolve(*cn.file)
		}
	}
	if err := c.extract.Check(); err != nil {
		return err
	}
	c.load = load.Options{D365Target: c.D365.target(), CampaignTarget: c.Campaign.target(), D365BatchSize: c.D365.BatchSize, D365API: c.D365.api()}
	if err := c.load.Check(); err != nil {
		return err
	}
	c.state = state.Options{AuditRetention: c.AuditRetention, PendingAlert: c.PendingAlert, MaxRunTime: c.MaxRunTime}
	if err := c.state.Check(); err != nil {
		return err
	}
	c.D365.Source, c.D365.Target = c.extract.D365.Source, c.load.D365Target
	c.Campaign.Source, c.Campaign.Target = c.extract.Campaign.Source, c.load.CampaignTarget
	c.D365.CSV, c.Campaign.CSV = c.resolve(c.D365.CSV), c.resolve(c.Campaign.CSV)
	c.MetricsFile = c.resolve(c.MetricsFile)
	if c.State == "" {
		c.State = "optsync.db"
	}
	c.State = c.resolve(c.State)
	if c.OutDir == "" {
		c.OutDir = "out"
	}
	c.OutDir = c.resolve(c.OutDir)
	c.state.Path, c.load.OutDir = c.State, c.OutDir
	if c.TmpDir == "" {
		c.TmpDir = c.OutDir
	} else {
		c.TmpDir = c.resolve(c.TmpDir)
	}
	c.addPrivate()
	c.extract.AddPrivate(&c.private)
	return nil
}

// addPrivate adds the root's own free-text values, its paths, to
// c.private (extract.Private): the stages add theirs.
func (c *Config) addPrivate() {
	for _, v := range [][2]string{{"state", c.State}, {"out_dir", c.OutDir}, {"metrics_file", c.MetricsFile}, {"tmp_dir", c.TmpDir},
		{"d365.csv", c.D365.CSV}, {"campaign.csv", c.Campaign.CSV}} {
		c.private.Add(v[0], v[1])
	}
}

// target is where the system's writes go: as configured, or where its
// records come from.
func (s *SystemConfig) target() string {
	if s.Target == "" {
		return s.Source
	}
	return s.Target
}

func (t Tuning) extract() extract.Tuning {
	return extract.Tuning{PageSize: t.PageSize, Concurrency: t.Concurrency, MaxTries: t.MaxTries, Timeout: t.Timeout, Overlap: t.Overlap}
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
		d := smetrics.WagnerFischer(strings.ToLower(s), k, 1, 1, 1) // Levenshtein
		if strings.HasPrefix(k, strings.ToLower(s)) || strings.HasPrefix(strings.ToLower(s), k) {
			d = min(d, 2)
		}
		if d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

// resolve makes a config path relative to the config file's folder.
func (c *Config) resolve(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(filepath.Dir(c.path), p)
}
