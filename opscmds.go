package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jszwec/csvutil"
	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	"optsync/extract"
	"optsync/load"
	"optsync/state"
	"optsync/transform"
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
	var q state.LogQuery
	if v := c.String("contact"); v != "" {
		id, ok := extract.ParseID(v)
		if !ok {
			return usagef("--contact %q is not a GUID", v)
		}
		q.Contact = &id
	}
	q.RunID, q.Field = c.String("run"), c.String("field")
	if v := c.String("since"); v != "" {
		t, err := parseSince(v, time.Now())
		if err != nil {
			return usage(err)
		}
		q.Since = t
	}
	if q.Contact == nil && q.RunID == "" && q.Since.IsZero() {
		return usage(errors.New("audit needs --contact ID, --run ID or --since TIME"))
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
	if q.Field != "" {
		if err := checkField(cfg, st, q.Field); err != nil {
			return err
		}
	}
	var rows []load.AuditRow
	var now *presentState
	if st != nil {
		if q.RunID != "" {
			runs, err := st.Runs()
			if err != nil {
				return err
			}
			if !slices.ContainsFunc(runs, func(r state.Run) bool { return r.ID == q.RunID }) {
				return usagef("--run %s: no such run in %s (see optsync runs)", q.RunID, cfg.State)
			}
		}
		err = st.QueryLog(q, func(e *state.LogEntry) error {
			rows = append(rows, load.AuditRow{
				RunID: e.RunID, DecidedAt: e.RunStarted.Format(time.RFC3339), ContactID: e.Contact.String(), ProfilePKey: e.PKey,
				D365Field: e.D365Field, CampaignField: e.CampaignField, Direction: e.Direction, OldValue: e.Old, NewValue: e.New,
				Rule: e.Rule, D365Modified: extract.FormatTime(e.D365Modified), CampaignModified: extract.FormatTime(e.CampaignModified),
				Outcome: e.Outcome, Error: e.Error,
			})
			return nil
		})
		if err != nil {
			return err
		}
	}
	if q.Contact != nil && format != "csv" {
		if now, err = present(cfg, st, *q.Contact, q.Field); err != nil {
			return err
		}
	}
	if rows == nil {
		rows = []load.AuditRow{}
	}
	switch format {
	case "json":
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false) // "d365->campaign", not "d365-\u003ecampaign"
		if now != nil {
			now.History = rows
			return enc.Encode(now)
		}
		return enc.Encode(rows)
	case "csv":
		w := csv.NewWriter(out)
		enc := csvutil.NewEncoder(w)
		if err := enc.EncodeHeader(load.AuditRow{}); err != nil {
			return err
		}
		for i := range rows {
			if err := enc.Encode(load.CSVSafe(rows[i])); err != nil {
				return err
			}
		}
		w.Flush()
		return w.Error()
	}
	if now != nil {
		if err := now.print(out); err != nil {
			return err
		}
		if !now.Known && len(rows) == 0 {
			return nil
		}
		fmt.Fprintln(out)
		if len(rows) == 0 {
			fmt.Fprintln(out, "history: no decisions recorded for this contact (its pairs were in step, or blank, whenever it was compared)")
			return nil
		}
		fmt.Fprintln(out, "history, oldest first:")
	}
	if len(rows) == 0 {
		fmt.Fprintln(out, "no decisions recorded for that query")
		return nil
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DECIDED\tRUN\tCONTACT\tPROFILE\tPAIR\tDIRECTION\tCHANGE\tRULE\tD365 MODIFIED\tCAMPAIGN MODIFIED\tOUTCOME")
	for _, r := range rows {
		change := r.OldValue + " → " + r.NewValue
		if r.OldValue == "" {
			change = "(unknown) → " + r.NewValue
		}
		rule, outcome := dash(r.Rule), r.Outcome
		if r.Outcome == load.Skipped {
			change, rule, outcome = "-", "-", "skipped: "+r.Error
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s ↔ %s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.DecidedAt, r.RunID, r.ContactID, r.ProfilePKey,
			r.D365Field, r.CampaignField, dash(r.Direction), change, rule, r.D365Modified, r.CampaignModified, outcome)
	}
	return tw.Flush()
}

// checkField refuses a --field that names no mapping: a typo must not read
// as "no history". A mapping the decision log still has entries of counts.
func checkField(cfg *Config, st *state.Store, field string) error {
	pairs := slices.Clone(cfg.transform.Rules.Pairs)
	if st != nil {
		logged, err := st.LogPairs()
		if err != nil {
			return err
		}
		for _, p := range logged {
			if !slices.ContainsFunc(pairs, func(q transform.Pair) bool { return q.D365 == p.D365 && q.Campaign == p.Campaign }) {
				pairs = append(pairs, p)
			}
		}
	}
	var names []string
	for _, p := range pairs {
		if p.D365 == field || p.Campaign == field {
			return nil
		}
	}
	for _, p := range cfg.transform.Rules.Pairs {
		names = append(names, p.D365, p.Campaign)
	}
	return usagef("--field %s is not a mapped field; the mapped fields are %s", field, strings.Join(names, ", "))
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
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
	fi, err := os.Lstat(output)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("state export: %w", err)
	case fi.Mode()&fs.ModeSymlink != 0:
		return usagef("state export: --output %s is a symbolic link; optsync neither writes through a link nor replaces one: remove it or name the file itself", output)
	case !fi.Mode().IsRegular():
		return usagef("state export: --output %s exists and is not a regular file (%s)", output, fi.Mode().Type())
	case !force:
		return usagef("state export: --output %s exists; pass --force to replace it", output)
	}
	err = load.WriteFile(output, load.FileOptions{NoReplace: !force}, func(w io.Writer) error { return exportSnapshots(cfg, only, w, log) })
	if errors.Is(err, fs.ErrExist) {
		return usagef("state export: %w; pass --force to replace it", err)
	}
	if err != nil {
		return fmt.Errorf("state export: %w", err)
	}
	return nil
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
	w := csv.NewWriter(out)
	if err := w.Write([]string{"contact_id", "profile_pkey", "d365_field", "campaign_field", "agreed_opted_out", "agreed_since",
		"d365_value", "campaign_value", "d365_written_pending", "campaign_written_pending", "d365_modified", "campaign_modified", "last_decided",
		"campaign_field_modified", "campaign_conflict"}); err != nil {
		return err
	}
	row := func(id extract.ID, s *transform.Snapshot, agreed *state.Agreed) error {
		decided := ""
		if s.Decided != 0 {
			decided = time.Unix(s.Decided, 0).UTC().Format(time.RFC3339)
		}
		for i, p := range cfg.transform.Rules.Pairs {
			ps := s.Pairs[i]
			dRaw, dPending := ps.DRaw, ps.DWritten
			if p.Invert { // the Dynamics columns in the field's own polarity
				dRaw, dPending = dRaw.Not(), dPending.Not()
			}
			pkey := s.PKey
			if !s.CSeen {
				pkey = ""
			}
			since := ""
			if ps.S.Known() && agreed[i] != 0 {
				since = time.Unix(agreed[i], 0).UTC().Format(time.RFC3339)
			}
			// the field's own change time, when the export gives one
			fieldTime := seen(s.CSeen && ps.CTimeKnown, ps.CTime)
			if err := w.Write([]string{id.String(), pkey, p.D365, p.Campaign, ps.S.String(), since, dRaw.String(), ps.CRaw.String(),
				dPending.String(), ps.CWritten.String(), seen(s.DSeen, s.DModified), seen(s.CSeen, s.CModified), decided,
				fieldTime, strconv.FormatBool(s.CConflict)}); err != nil {
				return err
			}
		}
		return nil
	}
	switch {
	case st == nil:
	case only != nil:
		r, err := st.Reader()
		if err != nil {
			return err
		}
		var s transform.Snapshot
		found, err := r.Get(*only, &s)
		agreed := r.Agreed()
		r.Close()
		if err != nil {
			return err
		}
		if found {
			if err := row(*only, &s, &agreed); err != nil {
				return err
			}
		} else {
			log.Warn().Str("contact", only.String()).Msg("state holds no record of this contact")
		}
	default:
		if err := st.EachAgreed(row); err != nil {
			return err
		}
	}
	w.Flush()
	return w.Error()
}

func seen(ok bool, ms int64) string {
	if !ok {
		return ""
	}
	return extract.FormatTime(ms)
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
		run.Outcome, run.ExitCode, run.Error = "error", exitFailure, cfg.redact(err.Error())
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
