package state

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
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
}

// Outcome of a run whose process died while it held the lock.
const OutcomeInterrupted = "interrupted"

func putRun(tx *bolt.Tx, r *Run) error {
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketRuns).Put(runKey(r), v)
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
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRuns)
		var stale []*Run
		if err := b.ForEach(func(_, v []byte) error {
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
			if err := putRun(tx, old); err != nil {
				return err
			}
		}
		return putRun(tx, r)
	})
}

// EndRun stores a run's final record without touching snapshots.
func (s *Store) EndRun(r *Run) error {
	return s.db.Update(func(tx *bolt.Tx) error { return putRun(tx, r) })
}

// Runs lists the run history, newest first.
func (s *Store) Runs() ([]Run, error) {
	var runs []Run
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRuns)
		if b == nil {
			return nil
		}
		c := b.Cursor()
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
