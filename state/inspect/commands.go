package inspect

import (
	"fmt"
	"io"
	"time"

	"github.com/rs/zerolog"

	"optsync/extract"
	"optsync/load"
	"optsync/load/report"
	"optsync/load/show"
	"optsync/state"
	"optsync/transform"
)

// Source is the state a read-only command reads: the file, the config's
// mappings, and the logger that says when a run holds the file.
type Source struct {
	Path  string
	Pairs []transform.Pair
	Log   zerolog.Logger
}

// open opens the state file to read; nil when there is none yet.
func (s Source) open() (*state.Store, error) { return state.OpenToRead(s.Path, s.Pairs, s.Log) }

// history is the run history, newest first; none without a state file.
func (s Source) history() ([]state.Run, error) {
	st, err := s.open()
	if st == nil || err != nil {
		return nil, err
	}
	defer st.Close()
	return st.RunsNow()
}

// ParseSince reads RFC 3339, a date, or an age ("72h", "30d").
func ParseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse("2006-01-02", s); err == nil {
		return t, nil
	}
	if d, err := state.ParseDays(s, state.DefaultRetention); err == nil {
		return now.Add(-d), nil
	}
	return time.Time{}, queryErrorf("--since %q: want RFC 3339, a date (2026-11-01) or an age (72h, 30d)", s)
}

// ListRuns prints the run history, newest first: format table or json.
func ListRuns(src Source, format string, out io.Writer) error {
	if format != "table" && format != "json" {
		return queryErrorf("--format %q: want table or json", format)
	}
	runs, err := src.history()
	if err != nil {
		return err
	}
	if format == "json" {
		if runs == nil {
			runs = []state.Run{}
		}
		return show.JSON(out, runs)
	}
	return show.Runs(out, src.Path, Runs(runs))
}

// AuditFlags are audit's flags as given.
type AuditFlags struct {
	Contact, Run, Since, Field, Format string
}

// AuditCommand answers "what was decided for whom, and why" from the
// decision log kept in state; for one contact it first says what state
// holds for that person now.
func AuditCommand(src Source, f AuditFlags, out io.Writer) error {
	q, err := f.query()
	if err != nil {
		return err
	}
	if f.Format != "table" && f.Format != "csv" && f.Format != "json" {
		return queryErrorf("--format %q: want table, csv or json", f.Format)
	}
	st, err := src.open()
	if err != nil {
		return err
	}
	if st != nil {
		defer st.Close()
	}
	if q.Field != "" {
		if err := CheckField(st, src.Pairs, q.Field); err != nil {
			return err
		}
	}
	rows, err := Audit(st, src.Path, q)
	if err != nil {
		return err
	}
	var now *show.Contact
	if q.Contact != nil && f.Format != "csv" {
		if now, err = Present(st, src.Pairs, *q.Contact, q.Field); err != nil {
			return err
		}
	}
	return show.Audit(out, f.Format, rows, now)
}

func (f AuditFlags) query() (state.LogQuery, error) {
	var q state.LogQuery
	if f.Contact != "" {
		id, err := contact(f.Contact)
		if err != nil {
			return q, err
		}
		q.Contact = id
	}
	q.RunID, q.Field = f.Run, f.Field
	if f.Since != "" {
		t, err := ParseSince(f.Since, time.Now())
		if err != nil {
			return q, err
		}
		q.Since = t
	}
	if q.Contact == nil && q.RunID == "" && q.Since.IsZero() {
		return q, queryErrorf("audit needs --contact ID, --run ID or --since TIME")
	}
	return q, nil
}

func contact(v string) (*extract.ID, error) {
	id, ok := extract.ParseID(v)
	if !ok {
		return nil, queryErrorf("--contact %q is not a GUID", v)
	}
	return &id, nil
}

// Export writes every snapshot as CSV (one contact's, with contact): one
// row per contact and pair. A file (output) holds personal data: it is
// created new, 0600, never through a link, and an existing path is refused
// unless force says to replace it (a link even then: what it points to is
// not optsync's).
func Export(src Source, output string, force bool, contactID string, stdout io.Writer) error {
	var only *extract.ID
	if contactID != "" {
		var err error
		if only, err = contact(contactID); err != nil {
			return err
		}
	}
	if output == "" {
		return exportSnapshots(src, only, stdout)
	}
	return load.WriteExport("state export", output, force, func(w io.Writer) error { return exportSnapshots(src, only, w) })
}

func exportSnapshots(src Source, only *extract.ID, out io.Writer) error {
	st, err := src.open()
	if err != nil {
		return err
	}
	if st != nil {
		defer st.Close()
	}
	w, err := show.NewSnapshotCSV(out)
	if err != nil {
		return err
	}
	absent, err := Snapshots(st, src.Pairs, only, w.Write)
	if err != nil {
		return err
	}
	if absent {
		src.Log.Warn().Str("contact", only.String()).Msg("state holds no record of this contact")
	}
	return w.Flush()
}

// ReportCommand writes the report of one recorded run (runID; the latest
// when "") or of the runs since a time, to output or else into outDir, and
// prints the file's path. version is this binary's.
func ReportCommand(src Source, outDir, runID, since, output, version string, stdout io.Writer) error {
	if runID != "" && since != "" {
		return queryErrorf("report takes --run ID or --since TIME, not both")
	}
	now := time.Now().UTC()
	var from time.Time
	if since != "" {
		t, err := ParseSince(since, now)
		if err != nil {
			return err
		}
		from = t
	}
	history, err := src.history()
	if err != nil {
		return err
	}
	var r *report.Report
	name := ""
	if since != "" {
		r = PeriodReport(history, from, now, version)
		name = "report-since-" + from.UTC().Format("20060102T150405Z") + ".html"
	} else {
		i, err := ReportedRun(history, runID, src.Path)
		if err != nil {
			return err
		}
		r = RunReport(&history[i], history, false, now, version)
		name = "report-" + history[i].ID + ".html"
	}
	if output == "" {
		output, err = load.WriteOutReport(outDir, name, r)
	} else {
		err = load.WriteReport(output, r)
	}
	if err != nil {
		return err
	}
	src.Log.Info().Str("file", output).Msg("written")
	fmt.Fprintln(stdout, output)
	return nil
}

// Reporter writes the page of each run recorded beside its audit file
// (WriteRunReport), for the run's history (state.History.Report).
func Reporter(preview bool, outDir, version string, log zerolog.Logger) func(*state.Store, *state.Run) {
	return func(st *state.Store, run *state.Run) { WriteRunReport(st, run, preview, outDir, version, log) }
}

// WriteRunReport writes the page of the run just recorded beside its
// audit file (preview: a plan's). A report that cannot be written does not
// change how the run ended: it is logged, and optsync report --run writes
// it again.
func WriteRunReport(st *state.Store, run *state.Run, preview bool, outDir, version string, log zerolog.Logger) {
	var history []state.Run
	if st != nil {
		// The page's trend is of the last trendRuns runs: the rest of the
		// history is not read.
		n := 0
		if err := st.RunsNewest(func(h *state.Run) bool {
			history = append(history, *h)
			if isSync(h) && (h.ID == run.ID || h.Started.Before(run.Started)) {
				n++
			}
			return n < trendRuns
		}); err != nil {
			log.Error().Err(err).Msg("reading the run history for the report; the report of this run is not written (optsync report --run writes it)")
			return
		}
	}
	page := RunReport(run, history, preview, time.Now().UTC(), version)
	path, err := load.WriteOutReport(outDir, "report-"+run.ID+".html", page)
	if err != nil {
		log.Error().Err(err).Str("file", path).Msg("writing the report; the run itself is not affected (optsync report --run writes it again)")
		return
	}
	log.Info().Str("file", path).Msg("written")
}
