// Package inspect answers the read-only commands from state: the
// decisions recorded (audit), what state holds for a contact, the run
// history (runs, and the model of the HTML report), the snapshots (state
// export), and runs those commands (commands.go: ListRuns, AuditCommand,
// Export, ReportCommand). It returns plain values for load/show and
// load/report to render; it never writes to state.
package inspect

import (
	"slices"
	"strings"
	"time"

	"optsync/extract"
	"optsync/load"
	"optsync/load/show"
	"optsync/state"
	"optsync/transform"
)

// QueryError is a question that names what state does not hold
// (state.QueryError): exit 2.
type QueryError = state.QueryError

func queryErrorf(format string, args ...any) error { return state.QueryErrorf(format, args...) }

// NoSuchRun is the error of a --run that names no run of the history.
func NoSuchRun(runID, statePath string) error {
	return queryErrorf("--run %s: no such run in %s (see optsync runs)", runID, statePath)
}

// Audit returns the decisions the log holds for q, oldest first; st is
// nil when there is no state yet. A q.RunID not in the history is a
// QueryError naming statePath, not an empty answer.
func Audit(st *state.Store, statePath string, q state.LogQuery) ([]load.AuditRow, error) {
	var rows []load.AuditRow
	if st == nil {
		return rows, nil
	}
	if q.RunID != "" {
		runs, err := st.Runs()
		if err != nil {
			return nil, err
		}
		if !slices.ContainsFunc(runs, func(r state.Run) bool { return r.ID == q.RunID }) {
			return nil, NoSuchRun(q.RunID, statePath)
		}
	}
	err := st.QueryLog(q, func(e *state.LogEntry) error {
		rows = append(rows, load.AuditRow{
			RunID: e.RunID, DecidedAt: e.RunStarted.Format(time.RFC3339), ContactID: e.Contact.String(), ProfilePKey: e.PKey,
			D365Field: e.D365Field, CampaignField: e.CampaignField, Direction: e.Direction, OldValue: e.Old, NewValue: e.New,
			Rule: e.Rule, D365Modified: extract.FormatTime(e.D365Modified), CampaignModified: extract.FormatTime(e.CampaignModified),
			Outcome: e.Outcome, Error: e.Error,
		})
		return nil
	})
	return rows, err
}

// CheckField refuses (QueryError) a field that names no mapping: a typo
// must not read as "no history". pairs are the config's mappings; a
// mapping the decision log still has entries of counts too.
func CheckField(st *state.Store, pairs []transform.Pair, field string) error {
	known := slices.Clone(pairs)
	if st != nil {
		logged, err := st.LogPairs()
		if err != nil {
			return err
		}
		for _, p := range logged {
			if !slices.ContainsFunc(known, func(q transform.Pair) bool { return q.D365 == p.D365 && q.Campaign == p.Campaign }) {
				known = append(known, p)
			}
		}
	}
	for _, p := range known {
		if p.D365 == field || p.Campaign == field {
			return nil
		}
	}
	var names []string
	for _, p := range pairs {
		names = append(names, p.D365, p.Campaign)
	}
	return queryErrorf("--field %s is not a mapped field; the mapped fields are %s", field, strings.Join(names, ", "))
}

// Runs turns the run history into the lines runs shows.
func Runs(runs []state.Run) []show.Run {
	out := make([]show.Run, len(runs))
	for i, r := range runs {
		out[i] = show.Run{ID: r.ID, Command: r.Command, Outcome: r.Outcome, Started: r.Started, Ended: r.Ended,
			ExitCode: r.ExitCode, Counts: r.Counts}
	}
	return out
}
