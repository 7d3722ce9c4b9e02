package state

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"optsync/load"
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

// Reasons and Example are load's (a run's rejects and failed
// writes are counted as load writes them); the history keeps them.
type (
	Reasons = load.Reasons
	Example = load.Example
)

// MergeReasons adds reasons already counted (load.MergeReasons).
func MergeReasons(groups, more []Reasons) []Reasons { return load.MergeReasons(groups, more) }

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
// A run's own open does this in its transaction (OpenRun with a run).
func (s *Store) BeginRun(r *Run) error {
	return s.update(func(tx *bolt.Tx) error { return s.beginRun(tx, r) })
}

func (s *Store) beginRun(tx *bolt.Tx, r *Run) error {
	stale, err := s.runsWith(tx, "running")
	if err != nil {
		return err
	}
	for i := range stale {
		stale[i].Outcome = OutcomeInterrupted
		if err := s.putRun(tx, &stale[i]); err != nil {
			return err
		}
	}
	return s.putRun(tx, r)
}

// runsWith lists the runs whose outcome is outcome, newest first. The
// history grows by a run a night, a kilobyte or two of JSON each: a night
// that parsed all of it several times paid for the history, tens of
// milliseconds a parse after three years of nights. A record is parsed only when its
// bytes hold the outcome as a JSON string; the pages it lies in are
// checked as every read checks them.
func (s *Store) runsWith(tx *bolt.Tx, outcome string) ([]Run, error) {
	b := tx.Bucket(bucketRuns)
	if b == nil {
		return nil, nil
	}
	quoted, _ := json.Marshal(outcome)
	var runs []Run
	c := s.vb(b, "runs").Cursor()
	for k, v := c.Last(); k != nil; k, v = c.Prev() {
		if !bytes.Contains(v, quoted) {
			continue
		}
		var r Run
		if json.Unmarshal(v, &r) == nil && r.Outcome == outcome {
			runs = append(runs, r)
		}
	}
	return runs, nil
}

// runsOf is runsWith in a read view of its own.
func (s *Store) runsOf(outcome string) ([]Run, error) {
	var runs []Run
	err := s.view(func(tx *bolt.Tx) (err error) {
		runs, err = s.runsWith(tx, outcome)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("state %s: reading runs: %w", s.path, err)
	}
	return runs, nil
}

// runStarts maps the start of each run in the history (Unix ms) to its
// id, read from the keys alone (runKey), without parsing any record.
func (s *Store) runStarts() (map[int64]string, error) {
	starts := map[int64]string{}
	err := s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRuns)
		if b == nil {
			return nil
		}
		c := s.vb(b, "runs").Cursor()
		// newest first: of two runs started in the same millisecond, the
		// older is named, as a walk of the whole history named it
		for k, _ := c.Last(); k != nil; k, _ = c.Prev() {
			if len(k) > 8 {
				starts[time.Unix(0, int64(binary.BigEndian.Uint64(k))).UnixMilli()] = string(k[8:])
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("state %s: reading runs: %w", s.path, err)
	}
	return starts, nil
}

// EndRun stores a run's final record without touching snapshots.
func (s *Store) EndRun(r *Run) error {
	return s.update(func(tx *bolt.Tx) error { return s.putRun(tx, r) })
}

// Runs lists the run history, newest first.
func (s *Store) Runs() ([]Run, error) {
	var runs []Run
	err := s.RunsNewest(func(r *Run) bool {
		runs = append(runs, *r)
		return true
	})
	return runs, err
}

// RunsNow is Runs as a reader shows them. A run recorded as running while
// no run holds the state's lock was killed before it could record how it
// ended; it is shown interrupted, as the next run will record it, rather
// than running for as long as no run comes. The history is read while no
// run can start (whileIdle), so a run that starts meanwhile is never
// taken for a killed one.
func (s *Store) RunsNow() ([]Run, error) {
	var runs []Run
	idle, err := whileIdle(s.path, func() error {
		var err error
		runs, err = s.Runs()
		return err
	})
	if err != nil {
		return nil, err
	}
	if !idle {
		return s.Runs()
	}
	for i := range runs {
		if runs[i].Outcome == "running" {
			runs[i].Outcome = OutcomeInterrupted
		}
	}
	return runs, nil
}

// RunsNewest hands the runs of the history to more, newest first, until
// it returns false: what needs the last few runs parses only those.
func (s *Store) RunsNewest(more func(*Run) bool) error {
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
			if !more(&r) {
				return nil
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("state %s: reading runs: %w", s.path, err)
	}
	return nil
}
