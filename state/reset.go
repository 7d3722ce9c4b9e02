package state

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"optsync/load"
	"optsync/transform"
)

// Reset is state reset: it forgets agreed snapshots so the next run
// decides those pairs as at first sight (the vendor's Replay data), and
// records that it did in the run history.
type Reset struct {
	Path, OutDir string
	// Rules are the config's; Field, when set, picks the mappings of one
	// Dynamics field; ConfigPath names the config in messages.
	Rules      *transform.Rules
	Field      string
	ConfigPath string
	// ExitCode is the process's exit code of an error (main's one table):
	// the run's record keeps the code the command exits with.
	ExitCode func(error) int
	// Redact keeps config values out of the recorded error.
	Redact func(string) string
	Log    zerolog.Logger
}

// Run forgets the snapshots and says how many on out.
func (r Reset) Run(ctx context.Context, out io.Writer) error {
	pairs := r.Rules.Pairs
	if r.Field != "" {
		pairs = nil
		for _, p := range r.Rules.Pairs {
			if strings.EqualFold(p.D365, r.Field) {
				pairs = append(pairs, p)
			}
		}
		if pairs == nil {
			return QueryErrorf("--field %s: no mapping of that Dynamics field in %s", r.Field, r.ConfigPath)
		}
	}
	if err := CheckKept(r.Path, r.OutDir, false); err != nil {
		return err
	}
	st, err := Open(r.Path, r.Rules.Pairs)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := CheckIdentity(st, r.OutDir, false); err != nil {
		return err
	}
	started := time.Now().UTC()
	run := &Run{ID: NewRunID(started), Command: "state reset", Started: started, Outcome: "running",
		Direction: string(r.Rules.Direction), Policy: string(r.Rules.Policy)}
	if err := st.BeginRun(run); err != nil {
		return err
	}
	n, err := st.Reset(ctx, pairs)
	if err := st.endCommand(run, err, map[string]int{"snapshots_forgotten": n}, r.ExitCode, r.Redact); err != nil {
		return err
	}
	names := make([]string, len(pairs))
	for i, p := range pairs {
		names[i] = PairName(p)
	}
	r.Log.Info().Int("contacts", n).Strs("mappings", names).Msg("snapshots forgotten")
	fmt.Fprintf(out, "forgot the agreed snapshot of %s for %s; the next run decides them as at first sight\n",
		strings.Join(names, ", "), load.Plural(n, "contact"))
	return nil
}

// endCommand records how a maintenance command (state reset, state
// compact) ended: its counts, its error (redacted) and the exit code the
// process exits with; it returns err, or the record's failure.
func (s *Store) endCommand(run *Run, err error, counts map[string]int, exitCode func(error) int, redact func(string) string) error {
	run.End(exitCode(err), counts)
	if err != nil {
		run.Error = redact(err.Error())
	}
	if rerr := s.EndRun(run); err == nil {
		err = rerr
	}
	return err
}

// End closes the record of a run that ends with exit code code — the
// process's, from main's one table of exit codes — and names its outcome
// after it: ok, failed-writes, safety-stop, interrupted (a signal or
// max_run_time: 128+signal) or error.
func (r *Run) End(code int, counts map[string]int) {
	r.Ended, r.ExitCode, r.Counts = time.Now().UTC(), code, counts
	switch {
	case code == 0:
		r.Outcome = "ok"
	case code == 3:
		r.Outcome = "failed-writes"
	case code == 4:
		r.Outcome = "safety-stop"
	case code > 128:
		r.Outcome = OutcomeInterrupted
	default:
		r.Outcome = "error"
	}
}
