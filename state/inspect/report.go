package inspect

import (
	"slices"
	"time"

	"optsync/load/report"
	"optsync/state"
)

// trendRuns is how many runs a run's report charts.
const trendRuns = 30

// isSync says whether a history entry is a run or backfill (the runs a
// trend compares), not a state reset.
func isSync(r *state.Run) bool { return r.Command == "run" || r.Command == "backfill" }

func reportRun(r *state.Run) report.Run {
	return report.Run{ID: r.ID, Command: r.Command, Outcome: r.Outcome, ExitCode: r.ExitCode,
		Started: r.Started, Ended: r.Ended, Error: r.Error, Version: r.Version, Counts: r.Counts}
}

func reportPoint(r *state.Run) report.Point {
	return report.Point{RunID: r.ID, Started: r.Started, Outcome: r.Outcome, Counts: r.Counts}
}

func reportReasons(groups []state.Reasons) []report.Reasons {
	out := make([]report.Reasons, len(groups))
	for i, g := range groups {
		out[i] = report.Reasons{Reason: g.Reason, Count: g.Count}
		for _, e := range g.Examples {
			out[i].Examples = append(out[i].Examples, report.Example(e))
		}
	}
	return out
}

func reportConfig(c *state.RunConfig) *report.Config {
	if c == nil {
		return nil
	}
	rc := &report.Config{Direction: c.Direction, Policy: c.Policy, MaxOptin: c.MaxOptin, Limit: c.Limit,
		D365: c.D365, Campaign: c.Campaign, Options: c.Options}
	for _, m := range c.Mappings {
		rc.Mappings = append(rc.Mappings, report.Mapping(m))
	}
	return rc
}

// RunReport is the page of one run (or a plan's preview, which is not in
// history): its record, and the trend of the sync runs up to it.
func RunReport(run *state.Run, history []state.Run, preview bool, now time.Time, version string) *report.Report {
	r := &report.Report{Kind: report.OneRun, Generated: now, Version: version, Run: reportRun(run),
		Counts: run.Counts, Rejects: reportReasons(run.Rejects), FailedWrites: reportReasons(run.FailedWrites),
		Config: reportConfig(run.Config)}
	if preview {
		r.Kind = report.Preview
	}
	for _, c := range run.ConfigChanges {
		r.ConfigChanges = append(r.ConfigChanges, report.ConfigChange{RunID: run.ID, Started: run.Started, Change: c})
	}
	// history is newest first; the trend is oldest first and ends at run.
	var trend []report.Point
	if preview {
		trend = append(trend, reportPoint(run))
	}
	for i := range history {
		h := &history[i]
		if len(trend) == trendRuns {
			break
		}
		if isSync(h) && (h.ID == run.ID || h.Started.Before(run.Started)) {
			trend = append(trend, reportPoint(h))
		}
	}
	slices.Reverse(trend)
	r.Trend = trend
	return r
}

// PeriodReport adds up the runs started in [since, until].
func PeriodReport(history []state.Run, since, until time.Time, version string) *report.Report {
	r := &report.Report{Kind: report.Period, Generated: until, Version: version,
		Since: since, Until: until, Counts: map[string]int{}}
	var rejects, failed []state.Reasons
	for i := range history { // newest first
		h := &history[i]
		if h.Started.Before(since) || h.Started.After(until) {
			continue
		}
		if len(r.Runs) == 0 {
			r.Run, r.Config = reportRun(h), reportConfig(h.Config)
		}
		r.Runs = append(r.Runs, reportRun(h))
		for k, n := range h.Counts {
			r.Counts[k] += n
		}
		if isSync(h) {
			r.Trend = append(r.Trend, reportPoint(h))
		}
		rejects = state.MergeReasons(rejects, h.Rejects)
		failed = state.MergeReasons(failed, h.FailedWrites)
		for k := len(h.ConfigChanges) - 1; k >= 0; k-- {
			r.ConfigChanges = append(r.ConfigChanges, report.ConfigChange{RunID: h.ID, Started: h.Started, Change: h.ConfigChanges[k]})
		}
	}
	slices.Reverse(r.Trend)
	slices.Reverse(r.ConfigChanges)
	r.Rejects, r.FailedWrites = reportReasons(rejects), reportReasons(failed)
	return r
}

// ReportedRun is the index in history (newest first) of the run whose
// report is asked for: runID's, or without one the latest run or backfill.
// None is a QueryError naming statePath.
func ReportedRun(history []state.Run, runID, statePath string) (int, error) {
	i := slices.IndexFunc(history, func(h state.Run) bool { return h.ID == runID || (runID == "" && isSync(&h)) })
	switch {
	case i >= 0:
		return i, nil
	case runID == "":
		return -1, queryErrorf("no run recorded in %s yet: nothing to report", statePath)
	}
	return -1, NoSuchRun(runID, statePath)
}
