package extract

import (
	"errors"
	"strings"
	"testing"
)

// The run history's error text names config keys, never their values: as
// written and as Check resolved them.
func TestRedact(t *testing.T) {
	o := Options{D365: Input{Key: "d365", Columns: map[string]string{"donotemail": "Mail"}}, Campaign: Input{Key: "campaign"},
		DataverseConn: DataverseConn{Used: true, URL: "https://contoso.crm4.dynamics.com", TenantID: "7f1c0000-aaaa-bbbb-cccc-000000000001",
			Credentials: Credentials{ClientID: "2b9e0000-aaaa-bbbb-cccc-000000000002", ClientSecretEnv: "abcSecret123XYZ"}},
		CampaignConn: CampaignConn{ChangedFilter: ChangedFilter{Name: "Changed", Param: "since"}, Credentials: Credentials{ClientID: "ab1"}}}
	var p Private
	o.AddPrivate(&p)
	if err := o.Check(); err != nil {
		t.Fatal(err)
	}
	o.AddPrivate(&p)
	for _, tc := range []struct{ in, want string }{
		{"d365.client_secret_env: environment variable abcSecret123XYZ is not set", "d365.client_secret_env: environment variable <d365.client_secret_env> is not set"},
		{"token: 401 from https://contoso.crm4.dynamics.com/api: client 2b9e0000-aaaa-bbbb-cccc-000000000002 in tenant 7f1c0000-aaaa-bbbb-cccc-000000000001",
			"token: 401 from <d365.url>/api: client <d365.client_id> in tenant <d365.tenant_id>"},
		{"no column Mail", "no column Mail"}, // short, and not a credential
		{"the profile changed in Campaign since it was read", "the profile changed in Campaign since it was read"},
		{"client ab1 refused; tab1 is fine", "client <campaign.client_id> refused; tab1 is fine"},
	} {
		if got := p.Redact(tc.in); got != tc.want {
			t.Errorf("Redact(%q)\n got %q\nwant %q", tc.in, got, tc.want)
		}
	}
	if got := replaceValue("out, outer, shout, (out) out", "out", "<o>", true); got != "<o>, outer, shout, (<o>) <o>" {
		t.Errorf("whole words: %q", got)
	}
}

// A secret that is not where the config says is a SecretError, and a
// variable's name that may be the secret itself is not shown.
func TestSecret(t *testing.T) {
	t.Setenv("OPTSYNC_SET", " s3cret ")
	if v, err := (&Credentials{ClientSecretEnv: "OPTSYNC_SET"}).Secret("d365"); err != nil || v != " s3cret " {
		t.Fatalf("set: %q, %v", v, err)
	}
	for _, tc := range []struct {
		cr   Credentials
		want string
	}{
		{Credentials{ClientSecretEnv: "OPTSYNC_UNSET_FOR_TEST"}, "d365.client_secret_env: environment variable OPTSYNC_UNSET_FOR_TEST is not set"},
		{Credentials{ClientSecretEnv: "hunter2isMYsecret"}, "d365.client_secret_env: the environment variable it names is not set (its name is not shown"},
		{Credentials{ClientSecretFile: t.TempDir() + "/none"}, "d365.client_secret_file: open "},
	} {
		_, err := tc.cr.Secret("d365")
		var se *SecretError
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) || !errors.As(err, &se) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%+v: %v, want %q", tc.cr, err, tc.want)
		}
	}
}
