package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	"optsync/extract"
	"optsync/load"
	"optsync/load/show"
	"optsync/state"
	"optsync/state/inspect"
)

// openReadOnly opens the state file for a command that only reads it; nil
// when there is no state yet. While a run holds the state, it reads the
// run's last commit, and says so.
func openReadOnly(cfg *Config, log zerolog.Logger) (*state.Store, error) {
	if _, err := os.Lstat(cfg.State); errors.Is(err, fs.ErrNotExist) { // a dangling link is an error, not "no state"
		return nil, nil
	}
	st, err := state.OpenReadOnly(cfg.State, cfg.transform.Rules.Pairs)
	if err != nil {
		return nil, err
	}
	if h := st.Holder; h != nil {
		log.Warn().Int("holder_pid", h.PID).Str("holder_host", h.Host).Time("holder_started", h.Started).
			Msgf("a run has held the state since %s (pid %d on %s); showing state as of its last commit",
				h.Started.UTC().Format(time.RFC3339), h.PID, h.Host)
	}
	return st, nil
}

// parseSince reads RFC 3339, a date, or an age ("72h", "30d").
func parseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse("2006-01-02", s); err == nil {
		return t, nil
	}
	if d, err := state.ParseDays(s, state.DefaultRetention); err == nil {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("--since %q: want RFC 3339, a date (2026-11-01) or an age (72h, 30d)", s)
}

// auditCommand answers "what was decided for whom, and why" from the
// decision log kept in state; for one contact it first says what state
// holds for that person now.
func auditCommand(cfg *Config, c *cli.Context, out io.Writer, log zerolog.Logger) error {
	q, err := auditQuery(c)
	if err != nil {
		return err
	}
	format := c.String("format")
	if format != "table" && format != "csv" && format != "json" {
		return usagef("--format %q: want table, csv or json", format)
	}
	st, err := openReadOnly(cfg, log)
	if err != nil {
		return err
	}
	if st != nil {
		defer st.Close()
	}
	pairs := cfg.transform.Rules.Pairs
	if q.Field != "" {
		if err := inspect.CheckField(st, pairs, q.Field); err != nil {
			return err
		}
	}
	rows, err := inspect.Audit(st, cfg.State, q)
	if err != nil {
		return err
	}
	var now *show.Contact
	if q.Contact != nil && format != "csv" {
		if now, err = inspect.Present(st, pairs, *q.Contact, q.Field); err != nil {
			return err
		}
	}
	return show.Audit(out, format, rows, now)
}

// auditQuery reads audit's flags: --contact, --run, --since, --field.
func auditQuery(c *cli.Context) (state.LogQuery, error) {
	var q state.LogQuery
	if v := c.String("contact"); v != "" {
		id, ok := extract.ParseID(v)
		if !ok {
			return q, usagef("--contact %q is not a GUID", v)
		}
		q.Contact = &id
	}
	q.RunID, q.Field = c.String("run"), c.String("field")
	if v := c.String("since"); v != "" {
		t, err := parseSince(v, time.Now())
		if err != nil {
			return q, usage(err)
		}
		q.Since = t
	}
	if q.Contact == nil && q.RunID == "" && q.Since.IsZero() {
		return q, usage(errors.New("audit needs --contact ID, --run ID or --since TIME"))
	}
	return q, nil
}

// stateExport writes every snapshot as CSV (one contact's, with contact):
// one row per contact and pair. A file (--output) holds personal data: it
// is created new, 0600, never through a link, and an existing path is
// refused unless force says to replace it (a link even then: what it
// points to is not optsync's).
func stateExport(cfg *Config, output string, force bool, contact string, stdout io.Writer, log zerolog.Logger) error {
	var only *extract.ID
	if contact != "" {
		id, ok := extract.ParseID(contact)
		if !ok {
			return usagef("--contact %q is not a GUID", contact)
		}
		only = &id
	}
	if output == "" {
		return exportSnapshots(cfg, only, stdout, log)
	}
	return load.WriteExport("state export", output, force, func(w io.Writer) error { return exportSnapshots(cfg, only, w, log) })
}

// exportSnapshots writes the snapshots' CSV (only's, when set) to out.
func exportSnapshots(cfg *Config, only *extract.ID, out io.Writer, log zerolog.Logger) error {
	st, err := openReadOnly(cfg, log)
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
	absent, err := inspect.Snapshots(st, cfg.transform.Rules.Pairs, only, w.Write)
	if err != nil {
		return err
	}
	if absent {
		log.Warn().Str("contact", only.String()).Msg("state holds no record of this contact")
	}
	return w.Flush()
}

// stateReset forgets agreed snapshots so the next run decides those pairs
// as at first sight, and records that it did in the run history.
func stateReset(ctx context.Context, cfg *Config, field string, out io.Writer, log zerolog.Logger) error {
	pairs := cfg.transform.Rules.Pairs
	if field != "" {
		pairs = nil
		for _, p := range cfg.transform.Rules.Pairs {
			if strings.EqualFold(p.D365, field) {
				pairs = append(pairs, p)
			}
		}
		if pairs == nil {
			return usagef("--field %s: no mapping of that Dynamics field in %s", field, cfg.path)
		}
	}
	if err := checkStateKept(cfg, false); err != nil {
		return err
	}
	st, err := state.Open(cfg.State, cfg.transform.Rules.Pairs)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := checkIdentity(cfg, st, false); err != nil {
		return err
	}
	started := time.Now().UTC()
	run := &state.Run{ID: newRunID(started), Command: "state reset", Started: started, Outcome: "running",
		Direction: string(cfg.transform.Rules.Direction), Policy: string(cfg.transform.Rules.Policy)}
	if err := st.BeginRun(run); err != nil {
		return err
	}
	n, err := st.Reset(ctx, pairs)
	run.Ended, run.Counts = time.Now().UTC(), map[string]int{"snapshots_forgotten": n}
	run.Outcome, run.ExitCode = "ok", exitOK
	if err != nil {
		run.Outcome, run.ExitCode, run.Error = "error", exitFailure, cfg.private.Redact(err.Error())
	}
	if rerr := st.EndRun(run); err == nil {
		err = rerr
	}
	if err != nil {
		return err
	}
	names := make([]string, len(pairs))
	for i, p := range pairs {
		names[i] = pairName(p)
	}
	log.Info().Int("contacts", n).Strs("mappings", names).Msg("snapshots forgotten")
	fmt.Fprintf(out, "forgot the agreed snapshot of %s for %s; the next run decides them as at first sight\n",
		strings.Join(names, ", "), plural(n, "contact"))
	return nil
}
