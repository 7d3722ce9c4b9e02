package transform

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"optsync/extract"
)

// Options is what the config says of the rules: direction, policy,
// mappings and the safety limits (safety:). The config file fills the
// fields as written; Check reads them into Rules, OptinLimit and
// MissingLimit, which are what a run decides and stops with.
type Options struct {
	Direction, Policy string
	Mappings          []Mapping
	Safety

	// Set by Check.
	Rules        Rules
	OptinLimit   OptinLimit
	MissingLimit MissingLimit
}

// Safety is the config's safety: as written, the limits that stop a run
// before it writes.
type Safety struct {
	// MaxOptin is the most opt-outs a run may clear: a count, or a share
	// of the opt-outs known before the run, never below MinOptin.
	MaxOptin string `yaml:"max_optin"`
	MinOptin *int   `yaml:"min_optin"`
	// MaxMissing is the most records state knows on a side that a full
	// read of that side may lack: a count, or a share of those records.
	MaxMissing string `yaml:"max_missing"`
}

// Mapping is one entry of mappings: which Dynamics field feeds which
// Campaign field.
type Mapping struct {
	D365     string `yaml:"d365"`
	Campaign string `yaml:"campaign"`
	Invert   bool   `yaml:"invert"`
}

// campaignFields is the fixed set Campaign allows to be mapped.
var campaignFields = map[string]bool{
	"blackList": true, "blackListEmail": true, "blackListFax": true, "blackListMobile": true,
	"blackListPhone": true, "blackListPostalMail": true, "blackListPushnotification": true, "ccpaOptOut": true,
}

// Dataverse logical names are lower-case; custom columns carry a prefix.
var logicalName = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// RunRules are the rules of a run that started at started: replay, and
// whether a system's writes go to update files — a write there is seen
// only after someone imports it.
func (o *Options) RunRules(replay, importD365, importCampaign bool, started time.Time) Rules {
	r := o.Rules
	r.Replay, r.ImportD365, r.ImportCampaign, r.Started = replay, importD365, importCampaign, started.UnixMilli()
	return r
}

// Check reads the options into Rules and the safety limits; its errors
// name the config key (direction, mappings[1], safety.max_optin …).
func (o *Options) Check() error {
	dir, err := ParseDirection(o.Direction)
	if o.Direction == "" {
		return errors.New("direction: missing (disabled, d365-to-campaign, campaign-to-d365 or bidirectional)")
	}
	if err != nil {
		return fmt.Errorf("direction: %w", err)
	}
	if o.Policy == "" {
		o.Policy = string(Newest)
	}
	pol, err := ParsePolicy(o.Policy)
	if err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	o.Rules = Rules{Direction: dir, Policy: pol}
	if len(o.Mappings) == 0 && dir != Disabled {
		return fmt.Errorf("mappings: empty; direction %s needs at least one mapping", dir)
	}
	if len(o.Mappings) > extract.MaxFields {
		return fmt.Errorf("mappings: %d entries; Campaign has only %d fields to map", len(o.Mappings), extract.MaxFields)
	}
	byCampaign := map[string]int{}
	byD365 := map[string]int{}
	for i, m := range o.Mappings {
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
			return fmt.Errorf("%s: campaign field %s is already fed by mappings[%d] (%s); two Dynamics fields cannot feed one Campaign field", at, m.Campaign, j, o.Mappings[j].D365)
		}
		byCampaign[m.Campaign] = i
		if j, dup := byD365[m.D365]; dup && (dir == Bidirectional || dir == CampaignToD365) {
			return fmt.Errorf("%s: d365 field %s is already mapped by mappings[%d] (to %s); in %s one Dynamics field cannot take two Campaign fields", at, m.D365, j, o.Mappings[j].Campaign, dir)
		}
		byD365[m.D365] = i
		o.Rules.Pairs = append(o.Rules.Pairs, Pair{D365: m.D365, Campaign: m.Campaign, Invert: m.Invert})
	}
	if o.OptinLimit, err = ParseOptinLimit(o.MaxOptin); err != nil {
		return fmt.Errorf("safety.max_optin: %w", err)
	}
	if m := o.MinOptin; m != nil {
		if *m < 0 {
			return fmt.Errorf("safety.min_optin: %d is below 0", *m)
		}
		o.OptinLimit.Min = *m
	}
	if o.MissingLimit, err = ParseMissingLimit(o.MaxMissing); err != nil {
		return fmt.Errorf("safety.max_missing: %w", err)
	}
	return nil
}

// OptinLimit is safety.max_optin: a count, or a percentage of the opt-outs
// known before the run (rounded up, never below Min, safety.min_optin).
type OptinLimit struct {
	count   int
	percent float64
	isPct   bool
	Min     int
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

// ParseOptinLimit reads safety.max_optin ("" is the default, 1000), with
// the default safety.min_optin.
func ParseOptinLimit(s string) (OptinLimit, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return OptinLimit{count: defaultMaxOptin, Min: defaultMinOptin}, nil
	}
	n, pct, isPct, err := parseShare(s)
	return OptinLimit{count: n, percent: pct, isPct: isPct, Min: defaultMinOptin}, err
}

// Allowed is the most opt-outs a run may clear when known opt-outs are at
// stake before it.
func (l OptinLimit) Allowed(known int) int {
	if l.isPct {
		return max(l.share(known), l.Min)
	}
	return l.count
}

// share is the percentage of known, rounded up; the epsilon keeps 29% of
// 100 at 29 despite binary fractions.
func (l OptinLimit) share(known int) int {
	return int(math.Ceil(l.percent*float64(known)/100 - 1e-9))
}

func (l OptinLimit) String() string { return shareString(l.isPct, l.percent, l.count) }

// Explain says how the limit came about, for a stop message.
func (l OptinLimit) Explain(known, limit int) string {
	if !l.isPct {
		return "safety.max_optin " + l.String()
	}
	if limit == l.Min && l.share(known) < l.Min {
		return fmt.Sprintf("safety.max_optin %s of %s, raised to safety.min_optin %d", l, knownOptOuts(known), l.Min)
	}
	return fmt.Sprintf("safety.max_optin %s of %s", l, knownOptOuts(known))
}

func knownOptOuts(n int) string {
	if n == 1 || n == -1 {
		return strconv.Itoa(n) + " known opt-out"
	}
	return strconv.Itoa(n) + " known opt-outs"
}

// MissingLimit is safety.max_missing: a count, or a percentage of the
// records state knows on a side.
type MissingLimit struct {
	count   int
	percent float64
	isPct   bool
}

const defaultMaxMissing = "10%"

// ParseMissingLimit reads safety.max_missing ("" is the default, 10%).
func ParseMissingLimit(s string) (MissingLimit, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		s = defaultMaxMissing
	}
	n, pct, isPct, err := parseShare(s)
	return MissingLimit{count: n, percent: pct, isPct: isPct}, err
}

// Allowed is the most of known records a full read may lack.
func (l MissingLimit) Allowed(known int) int {
	if l.isPct {
		return int(math.Floor(l.percent*float64(known)/100 + 1e-9))
	}
	return l.count
}

func (l MissingLimit) String() string { return shareString(l.isPct, l.percent, l.count) }

func shareString(isPct bool, percent float64, count int) string {
	if isPct {
		return strconv.FormatFloat(percent, 'f', -1, 64) + "%"
	}
	return strconv.Itoa(count)
}
