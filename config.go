package main

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"github.com/xrash/smetrics"
	"go.yaml.in/yaml/v3"

	"optsync/extract"
	"optsync/load"
	"optsync/state"
	"optsync/transform"
)

// Config is the YAML file of the SPEC. Its keys are read into the Options
// of the stage each concerns (validate), which documents and checks them;
// the root reads metrics_file and tmp_dir (default out_dir) itself, and
// resolves every path against the config file's folder.
type Config struct {
	Direction      string              `yaml:"direction"`
	Policy         string              `yaml:"policy"`
	Mappings       []Mapping           `yaml:"mappings"`
	State          string              `yaml:"state"`
	OutDir         string              `yaml:"out_dir"`
	Safety         transform.Safety    `yaml:"safety"`
	D365           D365Config          `yaml:"d365"`
	Campaign       CampaignConfig      `yaml:"campaign"`
	AuditRetention string              `yaml:"audit_retention"`
	MetricsFile    string              `yaml:"metrics_file"`
	MaxClockSkew   string              `yaml:"max_clock_skew"`
	PendingAlert   string              `yaml:"pending_alert"`
	Input          extract.InputLimits `yaml:"input"`
	MaxRunTime     string              `yaml:"max_run_time"`
	MemoryBudget   string              `yaml:"memory_budget"`
	TmpDir         string              `yaml:"tmp_dir"`

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

// Mapping is one entry of mappings: transform's pair, and the column of
// Campaign's exports that holds the field's change time (extract's).
type Mapping struct {
	transform.Mapping      `yaml:",inline"`
	CampaignModifiedColumn string `yaml:"campaign_modified_column"`
}

// D365Config is d365:: what extract reads (the exports, the Web API) and
// where load writes (target: csv, the run's update file, or api; default
// source).
type D365Config struct {
	extract.Input         `yaml:",inline"`
	extract.DataverseConn `yaml:",inline"`
	Target                string `yaml:"target"`
	BatchSize             int    `yaml:"batch_size"`
}

// CampaignConfig is campaign:, as d365: is.
type CampaignConfig struct {
	extract.Input        `yaml:",inline"`
	extract.CampaignConn `yaml:",inline"`
	Target               string `yaml:"target"`
}

// loadConfig reads and validates the config file.
func loadConfig(path string) (*Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, usagef("config: %v", err)
	}
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, usagef("config %s: %s", path, yamlProblems(err))
	}
	c.path = path
	if err := c.validate(); err != nil {
		return nil, usagef("config %s: %v", path, err)
	}
	return &c, nil
}

// validate hands each stage its part of the config and has it checked, in
// the order the stages run; the message names the key. Then the paths are
// resolved, and the sources and targets taken as the stages settled them.
func (c *Config) validate() error {
	d365, campaign := &c.D365, &c.Campaign
	d365.Key, campaign.Key = "d365", "campaign"
	c.transform = transform.Options{Direction: c.Direction, Policy: c.Policy, Safety: c.Safety}
	c.extract = extract.Options{MaxClockSkew: c.MaxClockSkew, MemoryBudget: c.MemoryBudget, Input: c.Input,
		D365: d365.Input, Campaign: campaign.Input, DataverseConn: d365.DataverseConn, CampaignConn: campaign.CampaignConn}
	c.extract.DataverseConn.Used, c.extract.CampaignConn.Used = d365.Source == "api" || d365.Target == "api", campaign.Source == "api" || campaign.Target == "api"
	for _, m := range c.Mappings {
		c.transform.Mappings = append(c.transform.Mappings, m.Mapping)
		c.extract.D365.Fields = append(c.extract.D365.Fields, m.D365)
		c.extract.Campaign.Fields = append(c.extract.Campaign.Fields, m.Campaign)
		c.extract.Campaign.FieldTimes = append(c.extract.Campaign.FieldTimes, m.CampaignModifiedColumn)
	}
	c.load = load.Options{D365Target: cmp.Or(d365.Target, d365.Source), CampaignTarget: cmp.Or(campaign.Target, campaign.Source),
		D365BatchSize: d365.BatchSize, D365API: c.extract.DataverseConn.Used}
	c.state = state.Options{AuditRetention: c.AuditRetention, PendingAlert: c.PendingAlert, MaxRunTime: c.MaxRunTime}
	c.addPrivate() // as written; again below as resolved
	// The secret files are found from the config's folder.
	for _, conn := range []*extract.Credentials{&c.extract.DataverseConn.Credentials, &c.extract.CampaignConn.Credentials} {
		conn.ClientSecretFile = c.resolve(conn.ClientSecretFile)
	}
	for _, check := range []func() error{c.transform.Check, c.extract.Check, c.load.Check, c.state.Check} {
		if err := check(); err != nil {
			return err
		}
	}
	c.extract.D365.CSV, c.extract.Campaign.CSV = c.resolve(d365.CSV), c.resolve(campaign.CSV)
	d365.Input, d365.Target = c.extract.D365, c.load.D365Target
	campaign.Input, campaign.Target = c.extract.Campaign, c.load.CampaignTarget
	c.MetricsFile = c.resolve(c.MetricsFile)
	c.State, c.OutDir = c.resolve(cmp.Or(c.State, "optsync.db")), c.resolve(cmp.Or(c.OutDir, "out"))
	c.TmpDir = cmp.Or(c.resolve(c.TmpDir), c.OutDir)
	c.state.Path, c.load.OutDir = c.State, c.OutDir
	c.addPrivate()
	return nil
}

// addPrivate adds the config's free-text values to c.private: the root's
// own, its paths, and the reads' (extract.Private).
func (c *Config) addPrivate() {
	for _, v := range [][2]string{{"state", c.State}, {"out_dir", c.OutDir}, {"metrics_file", c.MetricsFile}, {"tmp_dir", c.TmpDir},
		{"d365.csv", c.D365.CSV}, {"campaign.csv", c.Campaign.CSV}} {
		c.private.Add(v[0], v[1])
	}
	c.extract.AddPrivate(&c.private)
}

// yamlProblems says what the YAML decoder found in the config's words, not
// the Go types': an unknown key is named with its section and, when one is
// close, the key that was probably meant.
func yamlProblems(err error) string {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return strings.TrimPrefix(err.Error(), "yaml: ")
	}
	sections := map[string]section{}
	addSections(sections, reflect.TypeFor[Config](), "")
	out := slices.Clone(te.Errors)
	for i, e := range te.Errors {
		m := unknownField.FindStringSubmatch(e)
		if m == nil || sections[m[3]].keys == nil {
			continue
		}
		sec, key := sections[m[3]], m[2]
		out[i] = fmt.Sprintf("line %s: unknown key %q", m[1], key)
		if sec.name != "" {
			out[i] += " in " + sec.name
		}
		if near := closest(key, sec.keys); near != "" {
			out[i] += fmt.Sprintf(" (did you mean %q?)", near)
		}
	}
	return strings.Join(out, "; ")
}

var unknownField = regexp.MustCompile(`^line (\d+): field (.+) not found in type (.+)$`)

// section is one mapping of the config: where it sits and its keys.
type section struct {
	name string
	keys []string
}

// addSections adds the mapping of Go type t, at name, and those within it
// to sections, by the type's name as the decoder gives it; the keys are the
// yaml tags (inline structs add theirs to their parent's).
func addSections(sections map[string]section, t reflect.Type, name string) {
	var keys []string
	var add func(t reflect.Type)
	add = func(t reflect.Type) {
		for f := range t.Fields() {
			key, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if opts == "inline" {
				add(f.Type)
			}
			if key == "" || key == "-" {
				continue
			}
			keys = append(keys, key)
			if ft := f.Type; ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct {
				addSections(sections, ft.Elem(), "an entry of "+strings.TrimPrefix(name+"."+key, "."))
			} else if ft.Kind() == reflect.Struct {
				addSections(sections, ft, strings.TrimPrefix(name+"."+key, "."))
			}
		}
	}
	add(t)
	sections[t.String()] = section{name: name, keys: keys}
}

// closest is the key nearest to s, if one is near enough to be a slip:
// at most two edits apart, or one a prefix of the other.
func closest(s string, keys []string) string {
	s = strings.ToLower(s)
	best, bestD := "", 3
	for _, k := range keys {
		d := smetrics.WagnerFischer(s, k, 1, 1, 1) // Levenshtein
		if strings.HasPrefix(k, s) || strings.HasPrefix(s, k) {
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
