package extract

import (
	"strings"
	"testing"
	"time"
)

// Each check names the config key it concerns; the defaults are set.
func TestOptionsCheck(t *testing.T) {
	api := func() DataverseConn {
		return DataverseConn{Used: true, URL: "https://org.crm.dynamics.com/", TenantID: "t",
			Credentials: Credentials{ClientID: "c", ClientSecretEnv: "OPTSYNC_SECRET"}}
	}
	for _, tc := range []struct {
		name string
		edit func(o *Options)
		want string
	}{
		{"unknown source", func(o *Options) { o.Campaign.Source = "ftp" }, `campaign.source: unknown source "ftp" (want csv)`},
		{"secret in the config, API unused", func(o *Options) { o.CampaignConn.ClientSecret = "x" }, "campaign.client_secret: a secret is never read"},
		{"no client", func(o *Options) { o.DataverseConn.ClientID = "" }, "d365.client_id is required with the API"},
		{"page size", func(o *Options) { o.DataverseConn.PageSize = 5001 }, "d365.page_size: 5001 is outside 1..5000"},
		{"concurrency", func(o *Options) { o.DataverseConn.Concurrency = 53 }, "d365.concurrency: 53 is outside 1..52"},
		{"timeout", func(o *Options) { o.DataverseConn.Timeout = "soon" }, `d365.timeout: "soon" is not a duration (90s, 5m)`},
		{"authority", func(o *Options) { o.DataverseConn.AuthorityURL = "login" }, `d365.authority_url: "login" is not a URL (the Entra ID host)`},
		{"campaign resource", func(o *Options) {
			o.CampaignConn = CampaignConn{Used: true, Organization: "o", Resource: "profiles", Credentials: Credentials{ClientID: "c", ClientSecretFile: "/s"}}
		}, `campaign.resource: "profiles" (want profileAndServices or profileAndServicesExt)`},
		{"clock skew", func(o *Options) { o.MaxClockSkew = "-1h" }, `max_clock_skew: "-1h" is not a duration (90s, 1h)`},
		{"field bytes", func(o *Options) { o.Input.MaxFieldBytes = 1<<30 + 1 }, "input.max_field_bytes: 1073741825 is outside 1..1073741824 (default 65536)"},
		{"field lines", func(o *Options) { o.Input.MaxFieldLines = -1 }, "input.max_field_lines: -1 is outside 1..1048576 (default 100)"},
		{"reject share without %", func(o *Options) { o.Input.MaxRejectShare = "50" }, `input.max_reject_share: "50" is not a share of rows (50%)`},
		{"reject share over 100%", func(o *Options) { o.Input.MaxRejectShare = "101%" }, `input.max_reject_share: "101%" is not a share of rows (50%)`},
		{"memory not a size", func(o *Options) { o.MemoryBudget = "plenty" }, `memory_budget: "plenty" is not a size of at least 64MB (1GB, 300MB)`},
		{"memory too small", func(o *Options) { o.MemoryBudget = "10MB" }, `memory_budget: "10MB" is not a size of at least 64MB (1GB, 300MB)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := Options{D365: Input{Key: "d365"}, Campaign: Input{Key: "campaign"}, DataverseConn: api()}
			tc.edit(&o)
			if err := o.Check(); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	o := Options{D365: Input{Key: "d365"}, Campaign: Input{Key: "campaign", Source: "api"}, DataverseConn: api()}
	if err := o.Check(); err != nil {
		t.Fatal(err)
	}
	d := o.DataverseConn
	if o.D365.Source != "csv" || d.URL != "https://org.crm.dynamics.com" || d.AuthorityURL != "https://login.microsoftonline.com" ||
		d.PageSize != 5000 || d.Concurrency != 4 || d.MaxTries != 5 || d.TimeoutDuration() != 2*time.Minute || d.OverlapDuration() != 5*time.Minute {
		t.Fatalf("defaults: %+v", o)
	}
	if o.MemoryBytes() != 1<<30 || o.Limits != (Limits{}) {
		t.Fatalf("memory budget %d, limits %+v", o.MemoryBytes(), o.Limits)
	}
	start := time.Date(2026, 12, 1, 2, 0, 0, 0, time.UTC)
	if got := o.NotAfter(start); !got.Equal(start.Add(time.Hour)) {
		t.Fatalf("NotAfter: %v", got)
	}
}

// A Campaign layout asks for per-field change times only when a mapping
// names a column for one.
func TestCampaignLayoutFieldTimes(t *testing.T) {
	o := Options{Campaign: Input{Fields: []string{"blackList", "blackListEmail"}, FieldTimes: []string{"", ""}}}
	if l := o.CampaignLayout(time.Time{}); l.FieldTimes != nil || len(l.Fields) != 2 || l.ColumnsKey != "campaign.columns" {
		t.Fatalf("no column named: %+v", l)
	}
	o.Campaign.FieldTimes[1] = "emailChanged"
	if l := o.CampaignLayout(time.Time{}); len(l.FieldTimes) != 2 || l.FieldTimes[1] != "emailChanged" {
		t.Fatalf("one column named: %+v", l)
	}
}

// memory_budget takes bytes or KB, MB, GB (powers of 1024), and input:
// becomes the readers' Limits.
func TestOptionsSizes(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  int64
	}{{"", 1 << 30}, {"1GB", 1 << 30}, {"300MB", 300 << 20}, {"1.5GiB", 3 << 29}, {"512mb", 512 << 20}, {"67108864", 64 << 20}} {
		o := Options{MemoryBudget: tc.value, Input: InputLimits{MaxFieldBytes: 10, MaxFieldLines: 2, MaxRejectShare: " 12.5% "}}
		if err := o.Check(); err != nil || o.MemoryBytes() != tc.want {
			t.Errorf("memory_budget %q: %d, %v; want %d", tc.value, o.MemoryBytes(), err, tc.want)
		}
		if o.Limits != (Limits{MaxFieldBytes: 10, MaxFieldLines: 2, MaxRejectShare: 0.125}) {
			t.Errorf("limits %+v", o.Limits)
		}
	}
}
