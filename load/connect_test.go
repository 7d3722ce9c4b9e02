package load

import (
	"errors"
	"testing"
	"time"

	"optsync/extract"
)

// TestConnect: a connector for each system the config reaches through its
// API, its writer only when the system is written through it, and none
// held by a plan; a secret that cannot be read stops it.
func TestConnect(t *testing.T) {
	o := &extract.Options{D365: extract.Input{Key: "d365", Fields: []string{"donotemail"}},
		Campaign:      extract.Input{Key: "campaign", Fields: []string{"blackListEmail"}, FieldTimes: []string{""}},
		DataverseConn: extract.DataverseConn{Used: true, Credentials: extract.Credentials{ClientID: "c", ClientSecretEnv: "S"}, URL: "https://org.crm.dynamics.com", TenantID: "t"}}
	if err := o.Check(); err != nil {
		t.Fatal(err)
	}
	notAfter := time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)
	secret := func(string, extract.Credentials) (string, error) { return "s", nil }
	for _, target := range []string{"csv", "api"} {
		c, err := Connect(ConnectOptions{Extract: o, Load: &Options{D365Target: target, CampaignTarget: "csv"}, Tracking: true, NotAfter: notAfter, Secret: secret})
		if err != nil {
			t.Fatal(err)
		}
		if c.Contacts == nil || !c.Contacts.Tracking || c.Contacts.API.NotAfter != notAfter || c.Contacts.API.Fields[0] != "donotemail" || c.Profiles != nil || c.Campaign != nil {
			t.Errorf("%s: %+v", target, c)
		}
		if (c.Dataverse != nil) != (target == "api") {
			t.Errorf("target %s: writer %v", target, c.Dataverse)
		}
		if a := c.Writers(false, nil, nil, nil, c.Contacts.Log); a.Dataverse != c.Dataverse || a.Campaign != nil {
			t.Errorf("target %s: writers %+v", target, a)
		}
		if a := c.Writers(true, nil, nil, nil, c.Contacts.Log); a.Dataverse != nil || a.Campaign != nil {
			t.Errorf("a plan holds writers: %+v", a)
		}
	}
	bad := errors.New("d365.client_secret_env: environment variable S is not set")
	_, err := Connect(ConnectOptions{Extract: o, Load: &Options{}, Secret: func(string, extract.Credentials) (string, error) { return "", bad }})
	if !errors.Is(err, bad) {
		t.Errorf("secret: %v", err)
	}
}
