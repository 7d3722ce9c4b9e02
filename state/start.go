package state

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"optsync/extract"
	"optsync/load"
	"optsync/transform"
)

// NewRunID names a run by its start, with a random tail: two runs started
// in the same second differ.
func NewRunID(t time.Time) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return t.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
}

// PairName names a mapping in messages and the run history.
func PairName(p transform.Pair) string {
	s := p.D365 + " ↔ " + p.Campaign
	if p.Invert {
		s += " (invert)"
	}
	return s
}

// OpenToRead opens the state file for a command that only reads it; nil
// when there is no state yet. While a run holds the state, it reads the
// run's last commit, and says so.
func OpenToRead(path string, pairs []transform.Pair, log zerolog.Logger) (*Store, error) {
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) { // a dangling link is an error, not "no state"
		return nil, nil
	}
	st, err := OpenReadOnly(path, pairs)
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

// RunKind is how a run uses the state file.
type RunKind int

const (
	// Incremental: a run, which reads what changed.
	Incremental RunKind = iota
	// Backfill reads every record: the whole file is checked first.
	Backfill
	// NewState is backfill --new-state: a state file found is moved aside.
	NewState
	// Plan changes nothing, not even a first empty state file; while a
	// run holds the state, it plans against the run's last commit.
	Plan
)

// OpenRun opens the state file as a run of kind uses it, once it is sure
// the run does not start over silently: not from nothing while outDir
// holds what earlier runs left, nor from another state file than theirs.
// A deliberate start over (NewState) makes the new file this folder's
// state at once, even if the run stops. aside is where NewState moved the
// file it found ("" when there was none). A plan without a state file
// gets nil.
func OpenRun(path, outDir string, pairs []transform.Pair, kind RunKind, log zerolog.Logger) (st *Store, aside string, err error) {
	return openRun(path, outDir, pairs, kind, nil, log)
}

// openRun is OpenRun that, given run (not for a plan), records it begun
// (BeginRun) in the transaction that opens the file, once the checks
// that may refuse the file passed: a night pays for one commit at its
// start, not two.
func openRun(path, outDir string, pairs []transform.Pair, kind RunKind, run *Run, log zerolog.Logger) (st *Store, aside string, err error) {
	if err := CheckKept(path, outDir, kind == NewState); err != nil {
		return nil, "", err
	}
	var b *beginning
	if run != nil && kind != Plan {
		b = &beginning{run: run, check: func(st *Store) error { return CheckIdentity(st, outDir, kind == NewState) }}
	}
	if st, aside, err = openForRun(path, pairs, kind, b, log); err != nil {
		return nil, aside, err
	}
	if err := CheckIdentity(st, outDir, kind == NewState); err != nil {
		if st != nil {
			st.Close()
		}
		return nil, aside, err
	}
	if kind == NewState {
		KeepIdentity(st, outDir, log)
	}
	return st, aside, nil
}

// Prepare readies state for a run recorded as started (BeginRun) under
// config now: it removes what interrupted runs left in outDir, records
// the config's changes since the last run with the run (and a deliberate
// start over: newState, the file found moved to aside), lets readers read
// the last commit beside the run, and places the files of runs that did
// not commit.
func (s *Store) Prepare(run *Run, now *ConfigRecord, outDir string, newState bool, aside string, log zerolog.Logger) (ConfigDiff, error) {
	current := ""
	if run != nil {
		current = run.ID
	}
	s.RemovePartials(outDir, current, log)
	diff, err := s.ConfigChanges(now, log)
	if err != nil {
		return diff, err
	}
	run.ConfigChanges = diff.Changes
	if newState {
		what := "there was no state file"
		if aside != "" {
			what = "the state file found was moved aside to " + aside
		}
		change := "state started over deliberately (backfill --new-state): " + what + "; every contact is decided as at first sight"
		log.Warn().Str("change", change).Msg("starting over")
		run.ConfigChanges = append(run.ConfigChanges, change)
	}
	// Until the commit, readers (runs, audit, state export) may read the
	// last committed state beside this run.
	if err := s.Share(); err != nil {
		return diff, err
	}
	return diff, RecoverUncommitted(s, outDir, now.Pairs, log)
}

func openForRun(path string, pairs []transform.Pair, kind RunKind, b *beginning, log zerolog.Logger) (st *Store, aside string, err error) {
	switch kind {
	case Plan:
		st, err = OpenToRead(path, pairs, log)
	case NewState:
		st, aside, err = openNew(path, pairs, b)
	case Backfill:
		st, err = openWriter(path, pairs, true, b)
	default:
		st, err = openWriter(path, pairs, false, b)
	}
	return st, aside, err
}

// RunNames names past runs by their start (Unix ms): a write not yet
// seen remembers only when the run that wrote it started. st may be nil.
func RunNames(st *Store) (func(int64) string, error) {
	byStart := map[int64]string{}
	if st != nil {
		var err error
		if byStart, err = st.runStarts(); err != nil {
			return nil, err
		}
	}
	return func(at int64) string { return byStart[at] }, nil
}

// RemovePartials removes the temporary files that runs killed before
// they could clean up left in outDir: those of every run in the history
// but current. Holding the run lock proves those runs are over, whatever
// their record says: a run killed after its last commit, while it wrote
// its report, is recorded as it ended. A file a live process holds open
// (a report command writing a past run's report) is left (load.
// RemovePartials). A failure is logged: it stops nothing.
func (s *Store) RemovePartials(outDir, current string, log zerolog.Logger) {
	starts, err := s.runStarts()
	if err != nil {
		log.Warn().Err(err).Msg("reading the run history for files of interrupted runs")
		return
	}
	var ids []string
	for _, id := range starts {
		if id != current {
			ids = append(ids, id)
		}
	}
	removed, err := load.RemovePartials(outDir, ids)
	if len(removed) > 0 {
		log.Info().Int("files", len(removed)).Strs("names", removed[:min(len(removed), 10)]).Msg("removed the temporary files of interrupted runs")
	}
	if err != nil {
		log.Warn().Err(err).Msg("removing the temporary files of interrupted runs")
	}
}

// NewRunConfig is the config in effect, kept with the run for its report:
// maxOptin is safety.max_optin as configured, d365 and campaign each
// system's source → target, options the flags that change decisions or
// limits.
func NewRunConfig(rules *transform.Rules, maxOptin, d365, campaign string, options []string) *RunConfig {
	rc := &RunConfig{Direction: string(rules.Direction), Policy: string(rules.Policy), MaxOptin: maxOptin,
		D365: d365, Campaign: campaign, Options: options}
	for _, p := range rules.Pairs {
		rc.Mappings = append(rc.Mappings, Mapping{D365: p.D365, Campaign: p.Campaign, Invert: p.Invert})
	}
	return rc
}

// NewRun is the record of a run of command, by build version, starting at
// started with config.
func NewRun(command string, started time.Time, version string, config *RunConfig) *Run {
	return &Run{ID: NewRunID(started), Command: command, Started: started, Outcome: "running",
		Direction: config.Direction, Policy: config.Policy, Version: version, Config: config}
}

// ConfigDiff is how the config changed since the last run: the changes
// for the history, whether a mapping was added (systems read through an
// API are read in full) and the mappings removed (their snapshots go with
// the run's commit).
type ConfigDiff struct {
	Changes      []string
	MappingAdded bool
	Removed      []transform.Pair
}

// ConfigChanges compares the config (now) with the one the last run used:
// changes are logged and recorded with the run. Nothing is changed in
// state here: a mapping added makes every system read through its API
// read in full (its read positions are dropped with the run's commit), and
// a mapping removed loses its snapshots once the run has committed, so a
// run that stops (safety limit, missing column, …) leaves state as it was.
func (s *Store) ConfigChanges(now *ConfigRecord, log zerolog.Logger) (ConfigDiff, error) {
	var diff ConfigDiff
	removed, err := s.Unmapped(now.Pairs)
	if err != nil {
		return diff, err
	}
	diff.Removed = removed
	last, err := s.LastConfig()
	if err != nil {
		return diff, err
	}
	if last != nil {
		if last.Direction != now.Direction {
			diff.Changes = append(diff.Changes, fmt.Sprintf("direction %s → %s", last.Direction, now.Direction))
		}
		if last.Policy != now.Policy {
			diff.Changes = append(diff.Changes, fmt.Sprintf("policy %s → %s", last.Policy, now.Policy))
		}
		for _, p := range now.Pairs {
			if !slices.Contains(last.Pairs, p) {
				diff.MappingAdded = true
				diff.Changes = append(diff.Changes, "mapping added: "+PairName(p)+" (systems read through an API are read in full this run; for file drops, run a backfill)")
			}
		}
	}
	for _, p := range removed {
		if last == nil || slices.Contains(last.Pairs, p) {
			diff.Changes = append(diff.Changes, "mapping removed, its snapshots dropped with the run's commit: "+PairName(p))
		} else {
			// A run that committed but was killed before dropping them.
			log.Info().Str("mapping", PairName(p)).Msg("the snapshots of a mapping removed earlier are dropped with this run's commit")
		}
	}
	for _, c := range diff.Changes {
		log.Warn().Str("change", c).Msg("config changed since the last run")
	}
	return diff, nil
}

// Ending is what a run hands state with its last transaction, beside its
// decisions: what its reads found and what its writes left to do.
type Ending struct {
	Run    *Run
	Config *ConfigRecord
	// MappingAdded: every system read through its API is read in full
	// next time (ConfigDiff).
	MappingAdded bool
	// Meta are the reads' next positions (NextPositions); Deleted the
	// contacts deleted in Dynamics.
	Meta    map[string]string
	Deleted []extract.ID
	// Queued is the retry queue the run read, now settled; Failed the
	// writes refused or not sent, queued for the next run.
	Queued []RetryItem
	Failed map[extract.ID]load.Refused
	// Retention is how long the decision log keeps a run's decisions
	// (Options.Retention).
	Retention time.Duration
	Files     []ProcessedFile
	// Restamp are drop files processed before whose records learn the
	// stamp they were seen with now (Restamps).
	Restamp []ProcessedFile
}

// Final is the ending as the last transaction writes it.
func (e *Ending) Final() *Final {
	run := e.Run
	fin := &Final{Run: run, Config: e.Config, ForgetReadPositions: e.MappingAdded, Meta: map[string]string{}, Forget: e.Deleted, Files: e.Files, Restamp: e.Restamp}
	maps.Copy(fin.Meta, e.Meta)
	for _, it := range e.Queued {
		fin.RetryDone = append(fin.RetryDone, it.Contact)
	}
	for id, f := range e.Failed {
		it := RetryItem{Contact: id, PKey: f.PKey, RunID: run.ID, Since: run.Started}
		switch {
		case f.D365 != "" && f.Campaign != "":
			it.System, it.Reason = "d365+campaign", f.D365+"; "+f.Campaign
		case f.D365 != "":
			it.System, it.Reason = "d365", f.D365
		default:
			it.System, it.Reason = "campaign", f.Campaign
		}
		fin.Retry = append(fin.Retry, it)
	}
	if e.Retention > 0 {
		fin.PruneBefore = run.Started.Add(-e.Retention)
	}
	return fin
}

// QueryError is a question that names what state does not hold — a run id
// not in the history, a field no mapping has — or a read-only command's
// flag that asks nothing it can answer (a --format, --since or --contact
// it cannot read). The command did nothing; it exits 2 like any usage
// error.
type QueryError struct{ msg string }

func (e *QueryError) Error() string { return e.msg }

// QueryErrorf makes a QueryError.
func QueryErrorf(format string, args ...any) error {
	return &QueryError{msg: fmt.Sprintf(format, args...)}
}
