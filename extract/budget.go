package extract

import (
	"context"
	"fmt"
	"os"
	"runtime/debug"

	"github.com/rs/zerolog"

	"optsync/extract/spill"
)

// WithinBudget readies the process and tmpDir for a run's reads within
// memory_budget: the collector works harder as the heap nears the budget
// (a soft limit, unless GOMEMLIMIT says otherwise: the budget's shares
// keep what is live well below it), and tmpDir exists without the spill
// files a killed run left there.
func (o *Options) WithinBudget(tmpDir string, log zerolog.Logger) error {
	// Most of a run's heap is a few large arrays without pointers, cheap to
	// mark; collecting at 40 % growth instead of 100 % keeps a million-contact
	// backfill under 300 MB for little CPU. GOGC, when set, still decides.
	CollectAt(40)
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(o.MemoryBytes())
	}
	if err := os.MkdirAll(tmpDir, 0o700); err != nil {
		return fmt.Errorf("tmp_dir %s: %w", tmpDir, err)
	}
	if removed, err := spill.RemoveLeftovers(tmpDir); len(removed) > 0 || err != nil {
		log.Info().Strs("files", removed).AnErr("error", err).Msg("removed spill files left by a killed run")
	}
	return nil
}

// CollectAt sets the collector's growth target to percent, unless GOGC
// says otherwise (then it stays), and returns what sets the one before
// back.
func CollectAt(percent int) (restore func()) {
	if os.Getenv("GOGC") != "" {
		return func() {}
	}
	old := debug.SetGCPercent(percent)
	return func() { debug.SetGCPercent(old) }
}

// Budgets divides memory_budget between what a run holds at once; live,
// when set (tests), is what may be live in place of what the budget
// leaves (which has a floor).
func (o *Options) Budgets(live int64) spill.Budgets {
	if live > 0 {
		return spill.Live(live)
	}
	return spill.Divide(o.MemoryBytes())
}

// InputOf is where a system's records come from: its API (source: api),
// or its files, the backfill's flag winning over the config's csv.
func InputOf(name, source, csv, flag string) System {
	s := System{Name: name, Pattern: csv, Flag: flag}
	switch {
	case source == "api" && name == "d365":
		s.API = DataverseAPI()
	case source == "api":
		s.API = CampaignAPI()
	}
	return s
}

// ListAndRead lists what a run reads of both systems (Listing.List),
// readies tmpDir within the budget (WithinBudget) and reads the inputs
// (Reading.Read).
func (o *Options) ListAndRead(ctx context.Context, l Listing, d365, campaign System, r *Reading, tmpDir string) (*Records, error) {
	d365Inputs, campaignInputs, restamp, err := l.List(ctx, d365, campaign)
	if err != nil {
		return nil, err
	}
	if err := o.WithinBudget(tmpDir, l.Log); err != nil {
		return nil, err
	}
	in, d365Inputs, err := r.Read(ctx, d365Inputs, campaignInputs)
	if err != nil {
		return nil, err
	}
	in.D365Inputs, in.CampaignInputs, in.Restamp = d365Inputs, campaignInputs, restamp
	return in, nil
}
