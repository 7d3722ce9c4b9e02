package state

import (
	"context"
	"optsync/load"
	"optsync/transform"
	"time"

	"github.com/rs/zerolog"
)

// History keeps a run's record in the run history: begun, then closed
// however the run ends, and the run's report written beside its files. A
// plan is not in the history; its report previews the run.
type History struct {
	Store *Store
	Run   *Run
	Plan  bool
	// Code is the exit code of the error a run returns (main's one table
	// of them): the record keeps it.
	Code   func(error) int
	Counts func() map[string]int
	// Redact takes config values out of an error's text: a secret pasted
	// into the wrong key would otherwise end up in the state file.
	Redact func(string) string
	// Report writes the page of the run just recorded.
	Report func(*Store, *Run)
	Log    zerolog.Logger

	now    *ConfigRecord // the config the run started with
	outDir string
}

// Start opens state for the run (OpenRun: a run never starts over
// silently from a lost state), records it begun and readies state for it
// with the configured mappings pairs (Prepare). From then on End,
// deferred, closes the run's record and the store; a start that fails has
// closed them.
func (h *History) Start(path, outDir string, kind RunKind, pairs []transform.Pair) (diff ConfigDiff, err error) {
	now := &ConfigRecord{Direction: h.Run.Direction, Policy: h.Run.Policy, Pairs: pairs}
	h.now, h.outDir = now, outDir
	// The open records the run begun (BeginRun) in its own transaction.
	st, aside, err := openRun(path, outDir, now.Pairs, kind, h.Run, h.Log)
	if err != nil || h.Plan {
		h.Store = st
		return diff, err
	}
	h.Store = st
	if diff, err = st.Prepare(h.Run, now, outDir, kind == NewState, aside, h.Log); err != nil {
		h.End(&err)
	}
	return diff, err
}

// End closes the record of a run that returned *errp, once the run is
// over (deferred), then the store: a plan's report previews the run; whatever stopped a
// run that had not closed its record itself (as a safety stop or a commit
// does) is recorded as its end.
func (h *History) End(errp *error) {
	defer h.Store.Close()
	err, run := *errp, h.Run
	if h.Plan {
		if err == nil {
			run.Ended, run.Outcome, run.Counts = time.Now().UTC(), "planned", h.Counts()
			h.Report(h.Store, run)
		}
		return
	}
	if err == nil || run.Outcome != "running" {
		return
	}
	run.End(h.Code(err), h.Counts())
	run.Error = h.Redact(err.Error())
	if rerr := h.Store.EndRun(run); rerr != nil {
		h.Log.Error().Err(rerr).Msg("recording the failed run")
		return
	}
	h.Report(h.Store, run)
}

// Stopped records a run stopped at a safety limit by err, and returns err.
func (h *History) Stopped(err error) error {
	h.Run.End(h.Code(err), h.Counts())
	if rerr := h.Store.EndRun(h.Run); rerr != nil {
		return rerr
	}
	h.Report(h.Store, h.Run)
	return err
}

// Commit commits a finished run that returns result (Store.CommitRun),
// then writes its report. A plan commits nothing.
func (h *History) Commit(ctx context.Context, result error, c RunCommit) error {
	if h.Plan {
		return nil
	}
	c.Run, c.Config, c.Code, c.Log = h.Run, h.now, h.Code(result), h.Log
	c.Pairs, c.OutDir = h.now.Pairs, h.outDir
	if err := h.Store.CommitRun(ctx, c); err != nil {
		return err
	}
	h.Report(h.Store, h.Run)
	return nil
}

// Kind is how a run uses the state file.
func Kind(plan, newState, incremental bool) RunKind {
	switch {
	case plan:
		return Plan
	case newState:
		return NewState
	case !incremental:
		return Backfill
	}
	return Incremental
}

// Flags are the command's flags that change decisions or limits, for the
// run's record.
func Flags(replay, force, allowMassOptin, newState bool) []string {
	var on []string
	for _, o := range []struct {
		on   bool
		name string
	}{{replay, "--replay"}, {force, "--force"}, {allowMassOptin, "--allow-mass-optin"}, {newState, "--new-state"}} {
		if o.on {
			on = append(on, o.name)
		}
	}
	return on
}

// Guard works the safety limits out for the run d decided (Store.Guard),
// and counts them in the run's summary and record.
func (h *History) Guard(d *transform.Decider, before Totals, in transform.GuardInputs, sum *load.Summary) (transform.Guard, error) {
	g, err := h.Store.Guard(d, before, in)
	sum.AddGuard(&g)
	if err == nil {
		h.Run.Config.Limit = g.OptinLimit
	}
	return g, err
}

// Pending counts in sum the writes to update files that no export has
// shown yet after the run d decided, and warns of those older than
// alertAfter (Summary.AddPending).
func (h *History) Pending(d *transform.Decider, before Before, alertAfter time.Duration, sum *load.Summary) error {
	pending, err := h.Store.PendingGroups(d, before.Totals.Pending, h.Run.Started, alertAfter)
	if err == nil {
		sum.AddPending(pending, before.RunName, h.Run.Started, alertAfter, h.Log)
	}
	return err
}
