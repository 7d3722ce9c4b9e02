package extract

import (
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
