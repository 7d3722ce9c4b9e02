package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"optsync/load"
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

// runReport is the page of one run (or a plan's preview, which is not in
// history): its record, and the trend of the sync runs up to it.
func runReport(run *state.Run, history []state.Run, preview bool, now time.Time) *report.Report {
	r := &report.Report{Kind: report.OneRun, Generated: now, Version: readBuildInfo().short(), Run: reportRun(run),
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

// periodReport adds up the runs started in [since, until].
func periodReport(history []state.Run, since, until time.Time) *report.Report {
	r := &report.Report{Kind: report.Period, Generated: until, Version: readBuildInfo().short(),
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

// writeReport renders a report into path, as every output file is
// written.
func writeReport(path string, r *report.Report) error {
	return load.WriteFile(path, load.FileOptions{}, func(w io.Writer) error { return report.Render(w, r) })
}

// writeOutReport renders a report into out_dir, which it creates or
// tightens as a run does.
func writeOutReport(outDir, name string, r *report.Report) (string, error) {
	d, err := load.OutDir(outDir)
	if err != nil {
		return filepath.Join(outDir, name), err
	}
	defer d.Close()
	return d.Path(name), d.WriteFile(name, load.FileOptions{}, func(w io.Writer) error { return report.Render(w, r) })
}

// reportCommand writes the report of one recorded run or of a period.
func reportCommand(cfg *Config, runID, since, output string, stdout io.Writer, log zerolog.Logger) error {
	if runID != "" && since != "" {
		return usage(errors.New("report takes --run ID or --since TIME, not both"))
	}
	now := time.Now().UTC()
	var from time.Time
	if since != "" {
		t, err := parseSince(since, now)
		if err != nil {
			return usage(err)
		}
		from = t
	}
	st, err := openReadOnly(cfg, log)
	if err != nil {
		return err
	}
	var history []state.Run
	if st != nil {
		history, err = st.Runs()
		st.Close()
		if err != nil {
			return err
		}
	}
	var r *report.Report
	name := ""
	if since != "" {
		r = periodReport(history, from, now)
		name = "report-since-" + from.UTC().Format("20060102T150405Z") + ".html"
	} else {
		i := slices.IndexFunc(history, func(h state.Run) bool { return h.ID == runID || (runID == "" && isSync(&h)) })
		if i < 0 {
			if runID == "" {
				return usagef("no run recorded in %s yet: nothing to report", cfg.State)
			}
			return usagef("--run %s: no such run in %s (see optsync runs)", runID, cfg.State)
		}
		r = runReport(&history[i], history, false, now)
		name = "report-" + history[i].ID + ".html"
	}
	if output == "" {
		output, err = writeOutReport(cfg.OutDir, name, r)
	} else {
		err = writeReport(output, r)
	}
	if err != nil {
		return err
	}
	log.Info().Str("file", output).Msg("written")
	fmt.Fprintln(stdout, output)
	return nil
}

// report writes the page of the run just recorded beside its audit file.
// A report that cannot be written does not change how the run ended: it
// is logged, and optsync report --run writes it again.
func (j *job) report(st *state.Store, run *state.Run) {
	var history []state.Run
	if st != nil {
		var err error
		if history, err = st.Runs(); err != nil {
			j.log.Error().Err(err).Msg("reading the run history for the report; the report of this run is not written (optsync report --run writes it)")
			return
		}
	}
	path, err := writeOutReport(j.cfg.OutDir, "report-"+run.ID+".html", runReport(run, history, j.plan, time.Now().UTC()))
	if err != nil {
		j.log.Error().Err(err).Str("file", path).Msg("writing the report; the run itself is not affected (optsync report --run writes it again)")
		return
	}
	j.log.Info().Str("file", path).Msg("written")
}
