package load

import (
	"fmt"

	"optsync/extract"
)

// Options is what the config says of the writes: the folder of the run's
// files (out_dir), where each system's writes go (target: csv, the run's
// update file, or api) and how the Dataverse writes are batched. The
// config file fills the fields as written; Check sets the defaults.
type Options struct {
	OutDir                     string
	D365Target, CampaignTarget string
	// D365BatchSize is d365.batch_size: the changes sent in one $batch,
	// checked when the Dataverse API is used (D365API).
	D365BatchSize int
	D365API       bool
}

// Check sets the defaults and checks the values; its errors name the
// config key (d365.target, d365.batch_size …).
func (o *Options) Check() error {
	for _, t := range []struct {
		system string
		v      *string
	}{{"d365", &o.D365Target}, {"campaign", &o.CampaignTarget}} {
		switch *t.v {
		case "", "csv":
			*t.v = "csv"
		case "api":
		default:
			return fmt.Errorf("%s.target: unknown target %q (want csv)", t.system, *t.v)
		}
	}
	if !o.D365API {
		return nil
	}
	return extract.CheckInts("d365", extract.IntSetting{Key: "batch_size", V: &o.D365BatchSize, Def: 500, Max: 1000})
}
