package state

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Run is one entry of the run history.
type Run struct {
	ID        string         `json:"id"`
	Command   string         `json:"command"`
	Started   time.Time      `json:"started"`
	Ended     time.Time      `json:"ended,omitzero"`
	Outcome   string         `json:"outcome"` // running, ok, failed-writes, safety-stop, error, interrupted
	ExitCode  int            `json:"exit_code"`
	Direction string         `json:"direction"`
	Policy    string         `json:"policy"`
	Counts    map[string]int `json:"counts,omitempty"`
	// ConfigChanges lists what changed in the config since the last run.
	ConfigChanges []string `json:"config_changes,omitempty"`
	Error         string   `json:"error,omitempty"`
	// Version is the optsync build that made the run.
	Version string `json:"version,omitempty"`
	// Config is the config in effect, so that a report of an old run shows
	// what it ran with, not what the config file says today.
	Config *RunConfig `json:"config,omitempty"`
	// Rejects and FailedWrites keep the first examples of each reason: the
	// rejects file and the decision log may be gone (pruned, moved) by the
	// time someone asks for the report of an old run.
	Rejects      []Reasons `json:"rejects,omitempty"`
	FailedWrites []Reasons `json:"failed_writes,omitempty"`
	// Committed says the run's last transaction — the one that records
	// it with its outcome — committed: state holds every decision it
	// made, and its files may carry their final names.
	Committed bool `json:"committed,omitempty"`
}

// RunConfig is the config a run was made with.
type RunConfig struct {
	Direction string    `json:"direction"`
	Policy    string    `json:"policy"`
	Mappings  []Mapping `json:"mappings"`
	// MaxOptin is safety.max_optin as configured; Limit what it allowed for
	// this run's compared pairs.
	MaxOptin string `json:"max_optin"`
	Limit    int    `json:"limit"`
	D365     string `json:"d365"`     // source → target, e.g. "csv → csv"
	Campaign string `json:"campaign"` // likewise
	// Options are the command's flags that change decisions or limits.
	Options []string `json:"options,omitempty"`
}

// Mapping is one mapped pair of fields.
type Mapping struct {
	D365     string `json:"d365"`
	Campaign string `json:"campaign"`
	Invert   bool   `json:"invert,omitempty"`
}

// Reasons counts the rows (or writes) of one reason and keeps the first
// few as examples. Reason is the reason's shape: quoted cell text, ids,
// PKeys and numbers replaced by "…", so that rows differing only in those
// share one reason and no cell text is kept beyond ids and PKeys.
type Reasons struct {
	Reason   string    `json:"reason"`
	Count    int       `json:"count"`
	Examples []Example `json:"examples,omitempty"`
}

// Example is one row or write: where it is and whom it concerns. Message is
// the service's answer to a failed write (as the audit file holds it).
type Example struct {
	Source  string `json:"source,omitempty"` // a reject's file; a failed write's target system
	Line    int    `json:"line,omitempty"`
	ID      string `json:"id,omitempty"` // contact id, or a PKey for a profile row
	PKey    string `json:"pkey,omitempty"`
	Field   string `json:"field,omitempty"`
	Message string `json:"message,omitempty"`
}

// Bounds of what a run keeps of its rejects and failed writes: a night
// with a million bad rows adds a few kilobytes to the history, not more.
const (
	MaxReasons   = 16
	MaxExamples  = 5
	maxMessage   = 300
	OtherReasons = "other reasons"
)

var (
	quotedText = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	guidText   = regexp.MustCompile(`\{?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\}?`)
	pkeyText   = regexp.MustCompile(`@[A-Za-z0-9_-]+`)
	numberText = regexp.MustCompile(`\b[0-9]+\b`)
)

// ReasonShape reduces a reason to what rows with the same problem share.
func ReasonShape(reason string) string {
	s := quotedText.ReplaceAllString(reason, `"…"`)
	s = guidText.ReplaceAllString(s, "…")
	s = pkeyText.ReplaceAllString(s, "…")
	return numberText.ReplaceAllString(s, "N")
}

// AddReason counts one row or write under its reason's shape and keeps it
// as an example while its reason has fewer than MaxExamples. Past
// MaxReasons distinct reasons, the rest are counted together.
func AddReason(groups []Reasons, reason string, ex Example) []Reasons {
	if len(ex.Message) > maxMessage {
		ex.Message = strings.ToValidUTF8(ex.Message[:maxMessage], "") + "…"
	}
	return MergeReasons(groups, []Reasons{{Reason: ReasonShape(reason), Count: 1, Examples: []Example{ex}}})
}

// MergeReasons adds reasons already counted (another run's, for a report
// of a period) within the same bounds.
func MergeReasons(groups, more []Reasons) []Reasons {
	for _, m := range more {
		i := slices.IndexFunc(groups, func(g Reasons) bool { return g.Reason == m.Reason })
		if i < 0 && len(groups) >= MaxReasons {
			i = slices.IndexFunc(groups, func(g Reasons) bool { return g.Reason == OtherReasons })
			if i < 0 {
				groups = append(groups, Reasons{Reason: OtherReasons})
				i = len(groups) - 1
			}
		}
		if i < 0 {
			groups = append(groups, Reasons{Reason: m.Reason})
			i = len(groups) - 1
		}
		g := &groups[i]
		g.Count += m.Count
		for _, e := range m.Examples {
			// Runs over the same file find the same rows: show each once.
			if len(g.Examples) < MaxExamples && !slices.Contains(g.Examples, e) {
				g.Examples = append(g.Examples, e)
			}
		}
	}
	return groups
}

// Outcome of a run whose process died while it held the lock.
const OutcomeInterrupted = "interrupted"

func (s *Store) putRun(tx *bolt.Tx, r *Run) error {
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return s.vb(tx.Bucket(bucketRuns), "runs").Put(runKey(r), v)
}

// runKey orders the history by start time to the nanosecond; run ids carry
// whole seconds only.
func runKey(r *Run) []byte {
	k := binary.BigEndian.AppendUint64(nil, uint64(r.Started.UnixNano()))
	return append(k, r.ID...)
}

// BeginRun records a run as started. Runs left "running" by a process that
// died are marked interrupted first: holding the lock proves they are over.
func (s *Store) BeginRun(r *Run) error {
	return s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRuns)
		var stale []*Run
		if err := s.vb(b, "runs").ForEach(func(_, v []byte) error {
			var old Run
			if json.Unmarshal(v, &old) == nil && old.Outcome == "running" {
				stale = append(stale, &old)
			}
			return nil
		}); err != nil {
			return err
		}
		for _, old := range stale {
			old.Outcome = OutcomeInterrupted
			if err := s.putRun(tx, old); err != nil {
				return err
			}
		}
		return s.putRun(tx, r)
	})
}

// EndRun stores a run's final record without touching snapshots.
func (s *Store) EndRun(r *Run) error {
	return s.update(func(tx *bolt.Tx) error { return s.putRun(tx, r) })
}

// Runs lists the run history, newest first.
func (s *Store) Runs() ([]Run, error) {
	var runs []Run
	err := s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRuns)
		if b == nil {
			return nil
		}
		c := s.vb(b, "runs").Cursor()
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			var r Run
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("run %s: %w", k, err)
			}
			runs = append(runs, r)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("state %s: reading runs: %w", s.path, err)
	}
	return runs, nil
}
