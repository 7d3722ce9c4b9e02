package main

import (
	"strings"
	"testing"
)

const d365API = "d365:\n  source: api\n  url: https://org.crm.dynamics.com\n  tenant_id: t\n  client_id: c\n  client_secret_env: OPTSYNC_TEST_SECRET\n"

func TestConfigErrors(t *testing.T) {
	base := func(direction, policy, mappings string) string {
		return "direction: " + direction + "\npolicy: " + policy + "\nmappings:\n" + mappings + "d365:\n  csv: d.csv\ncampaign:\n  csv: c.csv\n"
	}
	m := func(d, c string) string { return "  - d365: " + d + "\n    campaign: " + c + "\n" }
	cases := []struct {
		name, config, want string
	}{
		{"unknown direction", base("sideways", "newest", m("donotemail", "blackListEmail")), `direction: unknown direction "sideways"`},
		{"missing direction", strings.Replace(base("x", "newest", m("donotemail", "blackListEmail")), "direction: x\n", "", 1), "direction: missing"},
		{"unknown policy", base("bidirectional", "loudest", m("donotemail", "blackListEmail")), `policy: unknown policy "loudest"`},
		{"campaign field outside the set", base("bidirectional", "newest", m("donotemail", "emailOptOut")), `mappings[0] (donotemail ↔ emailOptOut): campaign field "emailOptOut" is not one of`},
		{"two d365 fields to one campaign field", base("d365-to-campaign", "newest", m("donotemail", "blackListEmail")+m("donotbulkemail", "blackListEmail")),
			"mappings[1] (donotbulkemail ↔ blackListEmail): campaign field blackListEmail is already fed by mappings[0]"},
		{"one d365 field to two campaign fields, bidirectional", base("bidirectional", "newest", m("donotemail", "blackListEmail")+m("donotemail", "blackList")),
			"mappings[1] (donotemail ↔ blackList): d365 field donotemail is already mapped by mappings[0]"},
		{"one d365 field to two campaign fields, campaign-to-d365", base("campaign-to-d365", "newest", m("donotemail", "blackListEmail")+m("donotemail", "blackList")),
			"d365 field donotemail is already mapped"},
		{"empty mappings", base("bidirectional", "newest", ""), "mappings: empty"},
		{"unknown key", base("bidirectional", "newest", m("donotemail", "blackListEmail")) + "colour: blue\n", `line 10: unknown key "colour"`},
		{"misspelt key", strings.Replace(base("bidirectional", "newest", m("donotemail", "blackListEmail")), "mappings:", "mapping:", 1),
			`config ` + "%CONFIG%" + `: line 3: unknown key "mapping" (did you mean "mappings"?)`},
		{"misspelt nested key", base("bidirectional", "newest", m("donotemail", "blackListEmail")+"    inverted: true\n"),
			`line 6: unknown key "inverted" in an entry of mappings (did you mean "invert"?)`},
		{"misspelt safety key", base("bidirectional", "newest", m("donotemail", "blackListEmail")) + "safety:\n  max_optins: 5\n",
			`unknown key "max_optins" in safety (did you mean "max_optin"?)`},
		{"bad max_optin", base("bidirectional", "newest", m("donotemail", "blackListEmail")) + "safety:\n  max_optin: lots\n", `safety.max_optin: "lots"`},
		{"percentage over 100", base("bidirectional", "newest", m("donotemail", "blackListEmail")) + "safety:\n  max_optin: 150%\n", "safety.max_optin"},
		{"bad max_missing", base("bidirectional", "newest", m("donotemail", "blackListEmail")) + "safety:\n  max_missing: some\n", `safety.max_missing: "some"`},
		{"negative min_optin", base("bidirectional", "newest", m("donotemail", "blackListEmail")) + "safety:\n  min_optin: -1\n", "safety.min_optin: -1 is below 0"},
		{"campaign api without client", strings.Replace(base("bidirectional", "newest", m("donotemail", "blackListEmail")), "campaign:\n  csv: c.csv", "campaign:\n  source: api", 1), "campaign.client_id is required"},
		{"campaign api without organization", strings.Replace(base("bidirectional", "newest", m("donotemail", "blackListEmail")), "campaign:\n  csv: c.csv", "campaign:\n  target: api\n  client_id: c\n  client_secret_env: X", 1), "campaign.organization"},
		{"campaign inline secret", strings.Replace(base("bidirectional", "newest", m("donotemail", "blackListEmail")), "campaign:\n  csv: c.csv", "campaign:\n  csv: c.csv\n  client_secret: hunter2", 1), "campaign.client_secret: a secret is never read"},
		{"campaign changed filter half", strings.Replace(base("bidirectional", "newest", m("donotemail", "blackListEmail")), "campaign:\n  csv: c.csv", "campaign:\n  source: api\n  organization: o\n  client_id: c\n  client_secret_env: X\n  changed_filter: {name: Changed}", 1), "campaign.changed_filter"},
		{"campaign unknown resource", strings.Replace(base("bidirectional", "newest", m("donotemail", "blackListEmail")), "campaign:\n  csv: c.csv", "campaign:\n  source: api\n  organization: o\n  client_id: c\n  client_secret_env: X\n  resource: profiles", 1), "campaign.resource"},
		{"d365 api without client", strings.Replace(base("bidirectional", "newest", m("donotemail", "blackListEmail")), "d365:\n  csv: d.csv", "d365:\n  source: api", 1), "d365.client_id is required"},
		{"d365 api without url", strings.Replace(base("bidirectional", "newest", m("donotemail", "blackListEmail")), "d365:\n  csv: d.csv", "d365:\n  source: api\n  client_id: c\n  client_secret_env: X", 1), "d365.url"},
		{"inline secret", strings.Replace(base("bidirectional", "newest", m("donotemail", "blackListEmail")), "d365:\n  csv: d.csv", "d365:\n  source: api\n  client_secret: hunter2", 1), "d365.client_secret: a secret is never read from the config file"},
		{"page size over 5000", strings.Replace(base("bidirectional", "newest", m("donotemail", "blackListEmail")), "d365:\n  csv: d.csv", d365API+"  page_size: 5001\n", 1), "d365.page_size: 5001 is outside 1..5000"},
		{"batch size over 1000", strings.Replace(base("bidirectional", "newest", m("donotemail", "blackListEmail")), "d365:\n  csv: d.csv", d365API+"  batch_size: 1001\n", 1), "d365.batch_size"},
		{"concurrency over 52", strings.Replace(base("bidirectional", "newest", m("donotemail", "blackListEmail")), "d365:\n  csv: d.csv", d365API+"  concurrency: 53\n", 1), "d365.concurrency"},
		{"two secret sources", strings.Replace(base("bidirectional", "newest", m("donotemail", "blackListEmail")), "d365:\n  csv: d.csv", d365API+"  client_secret_file: s.txt\n", 1), "exactly one of client_secret_env and client_secret_file"},
		{"bad d365 name", base("bidirectional", "newest", m("Do Not Email", "blackListEmail")), "is not a Dataverse logical name"},
		{"memory_budget not a size", base("bidirectional", "newest", m("donotemail", "blackListEmail")) + "memory_budget: plenty\n", `memory_budget: "plenty" is not a size of at least 64MB`},
		{"memory_budget too small", base("bidirectional", "newest", m("donotemail", "blackListEmail")) + "memory_budget: 10MB\n", `memory_budget: "10MB" is not a size of at least 64MB`},
		{"secret as the env name", strings.Replace(base("bidirectional", "newest", m("donotemail", "blackListEmail")), "d365:\n  csv: d.csv", strings.Replace(d365API, "OPTSYNC_TEST_SECRET", "hunter2~Xq.9-zz", 1), 1),
			"d365.client_secret_env must name an environment variable; the value given looks like a secret and is not shown"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newProject(t, tc.config)
			for _, cmd := range []string{"validate", "backfill", "plan"} {
				r := p.cli(t, cmd)
				if r.code != exitUsage {
					t.Fatalf("%s: exit %d, want 2\n%s", cmd, r.code, r.stderr)
				}
				want := strings.ReplaceAll(tc.want, "%CONFIG%", p.config)
				if !strings.Contains(strings.ReplaceAll(r.stderr, `\"`, `"`), want) {
					t.Fatalf("%s: stderr does not name the entry %q:\n%s", cmd, tc.want, r.stderr)
				}
				if strings.Contains(r.stderr, "hunter2") {
					t.Fatalf("%s: the secret is in the message:\n%s", cmd, r.stderr)
				}
			}
		})
	}
}

func TestConfigValid(t *testing.T) {
	cases := []struct{ name, config string }{
		{"disabled needs no mappings", "direction: disabled\n"},
		{"one d365 field to two campaign fields is fine one-way", "direction: d365-to-campaign\nmappings:\n  - d365: donotemail\n    campaign: blackListEmail\n  - d365: donotemail\n    campaign: blackList\n"},
		{"count limit", "direction: bidirectional\nmappings:\n  - d365: donotemail\n    campaign: blackListEmail\nsafety:\n  max_optin: 100\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newProject(t, tc.config)
			if r := p.cli(t, "validate"); r.code != 0 {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
		})
	}
}

// TestMemoryBudget reads memory_budget's sizes, and tmp_dir defaults to
// out_dir.
func TestMemoryBudget(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  int64
	}{{"", 1 << 30}, {"1GB", 1 << 30}, {"300MB", 300 << 20}, {"1.5GiB", 3 << 29}, {"512mb", 512 << 20}, {"67108864", 64 << 20}} {
		t.Run(tc.value, func(t *testing.T) {
			cfg := "direction: bidirectional\nmappings:\n  - d365: donotemail\n    campaign: blackListEmail\nout_dir: o\n"
			if tc.value != "" {
				cfg += "memory_budget: " + tc.value + "\n"
			}
			p := newProject(t, cfg)
			c, err := loadConfig(p.config)
			if err != nil {
				t.Fatal(err)
			}
			if c.extract.MemoryBytes() != tc.want {
				t.Fatalf("memory_budget %q: %d, want %d", tc.value, c.extract.MemoryBytes(), tc.want)
			}
			if c.TmpDir != p.path("o") {
				t.Fatalf("tmp_dir %s, want out_dir %s", c.TmpDir, p.path("o"))
			}
		})
	}
}

func TestRelativePathsResolveAgainstConfig(t *testing.T) {
	p := newProject(t, "direction: bidirectional\nmappings:\n  - d365: donotemail\n    campaign: blackListEmail\nstate: s/state.db\nout_dir: o\nd365:\n  csv: in/d.csv\ncampaign:\n  csv: /abs/c.csv\n")
	cfg, err := loadConfig(p.config)
	if err != nil {
		t.Fatal(err)
	}
	for got, want := range map[string]string{cfg.State: p.path("s/state.db"), cfg.OutDir: p.path("o"), cfg.D365.CSV: p.path("in/d.csv"), cfg.Campaign.CSV: "/abs/c.csv"} {
		if got != want {
			t.Errorf("got %s, want %s", got, want)
		}
	}
}

// The run history's error text names config keys, never their values.
func TestRedact(t *testing.T) {
	p := newProject(t, `direction: bidirectional
mappings:
  - d365: donotemail
    campaign: blackListEmail
out_dir: out
d365:
  source: api
  url: https://contoso.crm4.dynamics.com
  tenant_id: 7f1c0000-aaaa-bbbb-cccc-000000000001
  client_id: 2b9e0000-aaaa-bbbb-cccc-000000000002
  client_secret_env: abcSecret123XYZ
  columns: {donotemail: "Mail"}
campaign:
  csv: drops
  changed_filter: {name: Changed, param: since}
  client_id: ab1
`)
	cfg, err := loadConfig(p.config)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ in, want string }{
		{"d365.client_secret_env: environment variable abcSecret123XYZ is not set", "d365.client_secret_env: environment variable <d365.client_secret_env> is not set"},
		{"token: 401 from https://contoso.crm4.dynamics.com/api: client 2b9e0000-aaaa-bbbb-cccc-000000000002 in tenant 7f1c0000-aaaa-bbbb-cccc-000000000001",
			"token: 401 from <d365.url>/api: client <d365.client_id> in tenant <d365.tenant_id>"},
		{"input " + p.path("drops") + "/2.csv: no column Mail", "input <campaign.csv>/2.csv: no column Mail"},
		// short values outside credential keys are no secret: a service's
		// "since" stays "since" although changed_filter.param is "since"
		{"timeout writing out_dir " + p.path("out") + ": Mailbox", "timeout writing out_dir <out_dir>: Mailbox"},
		{"the profile changed in Campaign since it was read", "the profile changed in Campaign since it was read"},
		// short credential values as whole words
		{"client ab1 refused; tab1 is fine", "client <campaign.client_id> refused; tab1 is fine"},
	} {
		if got := cfg.private.Redact(tc.in); got != tc.want {
			t.Errorf("redact(%q)\n got %q\nwant %q", tc.in, got, tc.want)
		}
	}
}
