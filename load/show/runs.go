package show

import (
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"optsync/load"
)

// Run is one line of the run history.
type Run struct {
	ID, Command, Outcome string
	Started, Ended       time.Time
	ExitCode             int
	Counts               map[string]int
}

// Runs writes the run history as a table, newest first; statePath names
// the state file when there is no run to show.
func Runs(out io.Writer, statePath string, runs []Run) error {
	if len(runs) == 0 {
		fmt.Fprintf(out, "no runs recorded in %s\n", statePath)
		return nil
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RUN\tSTARTED\tDURATION\tCOMMAND\tOUTCOME\tEXIT\tD365->CAMPAIGN\tCAMPAIGN->D365\tOPT-OUTS CLEARED\tSKIPPED\tREJECTED\tFAILED\tPENDING NOT SEEN")
	for _, r := range runs {
		dur := "-"
		if !r.Ended.IsZero() {
			dur = load.Took(r.Ended.Sub(r.Started))
		}
		cleared := strconv.Itoa(r.Counts["opt_outs_cleared"])
		if n := r.Counts["would_clear"]; n > 0 { // a safety stop wrote nothing
			cleared += " (would clear " + strconv.Itoa(n) + ")"
		}
		pending := "-"
		if n, ok := r.Counts["pending_not_seen"]; ok {
			pending = strconv.Itoa(n)
			if age := r.Counts["pending_oldest_age_seconds"]; n > 0 {
				pending += " (oldest " + (time.Duration(age) * time.Second).String() + ")"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t%d\t%d\t%d\t%s\n", r.ID, r.Started.Format(time.RFC3339), dur,
			r.Command, r.Outcome, r.ExitCode, r.Counts["d365->campaign"], r.Counts["campaign->d365"], cleared,
			r.Counts["skipped"], r.Counts["rejected"], r.Counts["failed"], pending)
	}
	return tw.Flush()
}
