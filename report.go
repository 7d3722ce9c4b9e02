package main

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/rs/zerolog"

	"optsync/load"
	"optsync/load/report"
	"optsync/state"
	"optsync/state/inspect"
)

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
		r = inspect.PeriodReport(history, from, now, readBuildInfo().short())
		name = "report-since-" + from.UTC().Format("20060102T150405Z") + ".html"
	} else {
		i, err := inspect.ReportedRun(history, runID, cfg.State)
		if err != nil {
			return err
		}
		r = inspect.RunReport(&history[i], history, false, now, readBuildInfo().short())
		name = "report-" + history[i].ID + ".html"
	}
	if output == "" {
		output, err = load.WriteOutReport(cfg.OutDir, name, r)
	} else {
		err = load.WriteReport(output, r)
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
	page := inspect.RunReport(run, history, j.plan, time.Now().UTC(), readBuildInfo().short())
	path, err := load.WriteOutReport(j.cfg.OutDir, "report-"+run.ID+".html", page)
	if err != nil {
		j.log.Error().Err(err).Str("file", path).Msg("writing the report; the run itself is not affected (optsync report --run writes it again)")
		return
	}
	j.log.Info().Str("file", path).Msg("written")
}
