package state

import (
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
