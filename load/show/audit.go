package show

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/jszwec/csvutil"

	"optsync/load"
)

// JSON writes v indented, as every command's --format json does.
func JSON(out io.Writer, v any) error {
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false) // "d365->campaign", not "d365-\u003ecampaign"
	return enc.Encode(v)
}

// Audit writes the decisions of an audit query in format (table, csv or
// json); now, when set, is what state holds for the contact asked about,
// which comes first (in json, with the decisions as its history).
func Audit(out io.Writer, format string, rows []load.AuditRow, now *Contact) error {
	if rows == nil {
		rows = []load.AuditRow{}
	}
	switch format {
	case "json":
		if now != nil {
			now.History = rows
			return JSON(out, now)
		}
		return JSON(out, rows)
	case "csv":
		return auditCSV(out, rows)
	}
	if now != nil {
		if err := now.Print(out); err != nil {
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
	return auditTable(out, rows)
}

func auditCSV(out io.Writer, rows []load.AuditRow) error {
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

func auditTable(out io.Writer, rows []load.AuditRow) error {
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

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
