package load

import "testing"

func TestOptionsCheck(t *testing.T) {
	o := Options{D365Target: "", CampaignTarget: "api", D365BatchSize: 2000}
	if err := o.Check(); err != nil || o.D365Target != "csv" {
		t.Fatalf("batch_size is not checked without the Dataverse API: %v, %+v", err, o)
	}
	o = Options{D365API: true}
	if err := o.Check(); err != nil || o.D365BatchSize != 500 {
		t.Fatalf("default batch size: %v, %+v", err, o)
	}
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{CampaignTarget: "sftp"}, `campaign.target: unknown target "sftp" (want csv)`},
		{Options{D365API: true, D365BatchSize: 1001}, "d365.batch_size: 1001 is outside 1..1000"},
		{Options{D365API: true, D365BatchSize: -1}, "d365.batch_size: -1 is outside 1..1000"},
	} {
		if err := tc.o.Check(); err == nil || err.Error() != tc.want {
			t.Errorf("%+v: got %v, want %q", tc.o, err, tc.want)
		}
	}
}
