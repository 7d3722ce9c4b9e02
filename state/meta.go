package state

import (
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"optsync/extract"
	"optsync/transform"
)

var (
	bucketFiles = []byte("files")
	bucketRetry = []byte("retry")
	keyConfig   = []byte("config")
)

// Meta keys of the connectors' read positions.
const (
	KeyD365Delta     = "d365_delta"     // the Dataverse @odata.deltaLink to read changes from
	KeyD365Watermark = "d365_watermark" // without change tracking: the latest modifiedon read
	// KeyCampaignWatermark is the latest lastModified read through the
	// changed-since filter.
	KeyCampaignWatermark = "campaign_watermark"
)

// Meta reads a connector's stored value ("" when none).
func (s *Store) Meta(key string) (string, error) {
	var v string
	err := s.view(func(tx *bolt.Tx) error {
		if meta := tx.Bucket(bucketMeta); meta != nil {
			v = string(s.vb(meta, "meta").Get([]byte("conn:" + key)))
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("state %s: %w", s.path, err)
	}
	return v, nil
}

// forgetReadPositions drops the connectors' stored read positions (delta
// link, watermarks), so that the next run reads every record again: what a
// newly added mapping needs to know both sides.
func forgetReadPositions(tx *bolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	for _, k := range []string{KeyD365Delta, KeyD365Watermark, KeyCampaignWatermark} {
		if err := meta.Delete([]byte("conn:" + k)); err != nil {
			return err
		}
	}
	return nil
}

// RetryItem is a contact whose write failed or was refused: the next run
// reads it again and decides it again.
type RetryItem struct {
	Contact extract.ID `json:"-"`
	PKey    string     `json:"pkey,omitempty"` // the profile, for a point read
	System  string     `json:"system"`         // the target that refused: d365, campaign or both
	Reason  string     `json:"reason"`
	RunID   string     `json:"run_id"`
	Since   time.Time  `json:"since"`
}

// eachValue calls fn with each key and value (unsealed) of the top-level
// bucket named name, in key order, in a read transaction of its own; none
// while the bucket does not exist.
func (s *Store) eachValue(bucket []byte, name string, fn func(k, v []byte) error) error {
	return s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		if b == nil {
			return nil
		}
		return s.vb(b, name).ForEach(fn)
	})
}

// RetryQueue lists the queued contacts, in id order.
func (s *Store) RetryQueue() ([]RetryItem, error) {
	var items []RetryItem
	err := s.eachValue(bucketRetry, "retry", func(k, v []byte) error {
		var it RetryItem
		if len(k) != 16 || json.Unmarshal(v, &it) != nil {
			return fmt.Errorf("retry queue entry %x malformed", k)
		}
		copy(it.Contact[:], k)
		items = append(items, it)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("state %s: retry queue: %w", s.path, err)
	}
	return items, nil
}

// ProcessedFile is an input file a run has finished with, remembered by its
// content so that a file drop processed once is not processed again.
type ProcessedFile struct {
	SHA256    string    `json:"sha256"`
	System    string    `json:"system"` // d365 or campaign
	Path      string    `json:"path"`
	Size      int64     `json:"size"`
	RunID     string    `json:"run_id"`
	Processed time.Time `json:"processed"`
	// Seen is the stamp the file was last seen with and its path, a space
	// between (extract.InputFile.Stamp): a file at that path with that
	// stamp is this one, not read again. Empty when none vouched for it.
	Seen string `json:"seen,omitempty"`
}

// seenAs is the Seen of a file at path with stamp (none without one).
func seenAs(stamp, path string) string {
	if stamp == "" {
		return ""
	}
	return stamp + " " + path
}

// Processed reports whether a file with this content was processed, and by
// which run.
func (s *Store) Processed(sum string) (ProcessedFile, bool, error) {
	var pf ProcessedFile
	found := false
	err := s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketFiles)
		if b == nil {
			return nil
		}
		v := s.vb(b, "files").Get([]byte(sum))
		if v == nil {
			return nil
		}
		found = true
		return json.Unmarshal(v, &pf)
	})
	if err != nil {
		return pf, false, fmt.Errorf("state %s: processed files: %w", s.path, err)
	}
	return pf, found, nil
}

// ProcessedStamps says which processed file, if any, was seen at path
// with stamp (ProcessedFile.Seen): its SHA-256. The records are read once,
// on the first call: a record or two a night.
func (s *Store) ProcessedStamps() func(path, stamp string) (sum string, ok bool, err error) {
	if s == nil {
		return nil
	}
	var seen map[string]string
	return func(path, stamp string) (string, bool, error) {
		if seen == nil {
			seen = map[string]string{}
			err := s.eachValue(bucketFiles, "files", func(k, v []byte) error {
				var pf ProcessedFile
				if err := json.Unmarshal(v, &pf); err != nil {
					return fmt.Errorf("the record of processed file %s: %w", printable(k), err)
				}
				if pf.Seen != "" {
					seen[pf.Seen] = pf.SHA256
				}
				return nil
			})
			if err != nil {
				seen = nil
				return "", false, fmt.Errorf("state %s: processed files: %w", s.path, err)
			}
		}
		sum, ok := seen[seenAs(stamp, path)]
		return sum, ok, nil
	}
}

// ConfigRecord is the part of the config that decisions depend on.
type ConfigRecord struct {
	Direction string           `json:"direction"`
	Policy    string           `json:"policy"`
	Pairs     []transform.Pair `json:"pairs"`
}

// LastConfig is the config the last committed run used (nil: none yet).
func (s *Store) LastConfig() (*ConfigRecord, error) {
	var rec *ConfigRecord
	err := s.view(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			return nil
		}
		v := s.vb(meta, "meta").Get(keyConfig)
		if v == nil {
			return nil
		}
		rec = &ConfigRecord{}
		return json.Unmarshal(v, rec)
	})
	if err != nil {
		return nil, fmt.Errorf("state %s: last config: %w", s.path, err)
	}
	return rec, nil
}

// restamp gives the records of files processed before the stamps they
// were seen with now; what else they say (the run that processed them,
// the path then) stays.
func (s *Store) restamp(tx *bolt.Tx, files []ProcessedFile) error {
	fb := tx.Bucket(bucketFiles)
	if fb == nil || len(files) == 0 {
		return nil
	}
	x := s.vb(fb, "files")
	for _, f := range files {
		v := x.Get([]byte(f.SHA256))
		if v == nil {
			continue // not processed after all (a record dropped since)
		}
		var pf ProcessedFile
		if err := json.Unmarshal(v, &pf); err != nil {
			return fmt.Errorf("the record of processed file %s: %w", f.SHA256, err)
		}
		if pf.Seen == f.Seen {
			continue
		}
		pf.Seen = f.Seen
		nv, err := json.Marshal(pf)
		if err != nil {
			return err
		}
		if err := x.Put([]byte(f.SHA256), nv); err != nil {
			return err
		}
	}
	return nil
}

// finish writes a run's closing records inside its last transaction.
func (s *Store) finish(tx *bolt.Tx, fin *Final, c *counts, ops *indexOps) error {
	if len(fin.Files) > 0 {
		fb, err := tx.CreateBucketIfNotExists(bucketFiles)
		if err != nil {
			return err
		}
		for _, f := range fin.Files {
			v, err := json.Marshal(f)
			if err != nil {
				return err
			}
			if err := s.vb(fb, "files").Put([]byte(f.SHA256), v); err != nil {
				return err
			}
		}
	}
	if err := s.restamp(tx, fin.Restamp); err != nil {
		return err
	}
	if len(fin.Retry) > 0 || len(fin.RetryDone) > 0 {
		rb, err := tx.CreateBucketIfNotExists(bucketRetry)
		if err != nil {
			return err
		}
		for _, id := range fin.RetryDone {
			if err := rb.Delete(id[:]); err != nil {
				return err
			}
		}
		for _, it := range fin.Retry {
			v, err := json.Marshal(it)
			if err != nil {
				return err
			}
			if err := s.vb(rb, "retry").Put(it.Contact[:], v); err != nil {
				return err
			}
		}
	}
	if len(fin.Forget) > 0 {
		if err := s.forget(tx, fin.Forget, c, ops); err != nil {
			return err
		}
	}
	if fin.ForgetReadPositions {
		if err := forgetReadPositions(tx); err != nil {
			return err
		}
	}
	for k, v := range fin.Meta {
		if err := s.vb(tx.Bucket(bucketMeta), "meta").Put([]byte("conn:"+k), []byte(v)); err != nil {
			return err
		}
	}
	if fin.Config != nil {
		v, err := json.Marshal(fin.Config)
		if err != nil {
			return err
		}
		if err := s.vb(tx.Bucket(bucketMeta), "meta").Put(keyConfig, v); err != nil {
			return err
		}
	}
	if !fin.PruneBefore.IsZero() {
		if _, err := s.pruneLog(tx, fin.PruneBefore); err != nil {
			return fmt.Errorf("pruning the decision log: %w", err)
		}
	}
	if fin.Run != nil {
		return s.putRun(tx, fin.Run)
	}
	return nil
}

// runStarted finds a run's start time by its id.
func (s *Store) runStarted(tx *bolt.Tx, id string) (time.Time, bool) {
	b := tx.Bucket(bucketRuns)
	if b == nil {
		return time.Time{}, false
	}
	c := s.vb(b, "runs").Cursor()
	for k, v := c.Last(); k != nil; k, v = c.Prev() {
		if len(k) > 8 && string(k[8:]) == id {
			var r Run
			if json.Unmarshal(v, &r) == nil {
				return r.Started, true
			}
		}
	}
	return time.Time{}, false
}

// Queued reads one contact's entry of the retry queue.
func (s *Store) Queued(id extract.ID) (RetryItem, bool, error) {
	var it RetryItem
	found := false
	err := s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRetry)
		if b == nil {
			return nil
		}
		v := s.vb(b, "retry").Get(id[:])
		if v == nil {
			return nil
		}
		found = true
		it.Contact = id
		return json.Unmarshal(v, &it)
	})
	if err != nil {
		return it, false, fmt.Errorf("state %s: retry queue: %w", s.path, err)
	}
	return it, found, nil
}
