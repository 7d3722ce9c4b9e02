package state

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"optsync/extract"
)

// The decision log keeps every audit row of every run. Entries are keyed by
// the run's start time and a sequence number, so a run's entries sit
// together in time order; a second bucket indexes them by contact, so one
// person's history is a single prefix scan.
var (
	bucketLog        = []byte("log")
	bucketLogContact = []byte("log_contact")
)

// LogEntry is one decision as kept in state: an audit row.
type LogEntry struct {
	RunStarted       time.Time
	Seq              uint32
	RunID            string
	Contact          extract.ID
	PKey             string
	D365Field        string
	CampaignField    string
	Direction        string
	Old, New         string
	Rule             string
	D365Modified     int64 // Unix ms
	CampaignModified int64 // Unix ms
	Outcome          string
	Error            string
}

func logKey(started time.Time, seq uint32) []byte {
	k := binary.BigEndian.AppendUint64(make([]byte, 0, 12), uint64(started.UnixNano()))
	return binary.BigEndian.AppendUint32(k, seq)
}

func (e *LogEntry) encode() []byte {
	v := make([]byte, 0, 128)
	v = append(v, e.Contact[:]...)
	v = binary.AppendVarint(v, e.D365Modified)
	v = binary.AppendVarint(v, e.CampaignModified)
	for _, s := range []string{e.RunID, e.PKey, e.D365Field, e.CampaignField, e.Direction, e.Old, e.New, e.Rule, e.Outcome, e.Error} {
		v = binary.AppendUvarint(v, uint64(len(s)))
		v = append(v, s...)
	}
	return v
}

func decodeLog(k, v []byte) (LogEntry, error) {
	var e LogEntry
	if len(k) != 12 || len(v) < 16 {
		return e, errors.New("decision log entry malformed")
	}
	e.RunStarted = time.Unix(0, int64(binary.BigEndian.Uint64(k))).UTC()
	e.Seq = binary.BigEndian.Uint32(k[8:])
	copy(e.Contact[:], v)
	v = v[16:]
	for _, dst := range []*int64{&e.D365Modified, &e.CampaignModified} {
		x, n := binary.Varint(v)
		if n <= 0 {
			return e, errors.New("decision log entry truncated")
		}
		*dst, v = x, v[n:]
	}
	for _, dst := range []*string{&e.RunID, &e.PKey, &e.D365Field, &e.CampaignField, &e.Direction, &e.Old, &e.New, &e.Rule, &e.Outcome, &e.Error} {
		l, n := binary.Uvarint(v)
		if n <= 0 || uint64(len(v)-n) < l {
			return e, errors.New("decision log entry truncated")
		}
		*dst, v = string(v[n:n+int(l)]), v[n+int(l):]
	}
	return e, nil
}

func putLog(tx *bolt.Tx, entries []LogEntry) error {
	if len(entries) == 0 {
		return nil
	}
	lb, err := tx.CreateBucketIfNotExists(bucketLog)
	if err != nil {
		return err
	}
	ib, err := tx.CreateBucketIfNotExists(bucketLogContact)
	if err != nil {
		return err
	}
	lb.FillPercent = 1 // always appended at the end: time only grows
	for i := range entries {
		e := &entries[i]
		k := logKey(e.RunStarted, e.Seq)
		if err := lb.Put(k, e.encode()); err != nil {
			return err
		}
		if err := ib.Put(append(e.Contact[:len(e.Contact):len(e.Contact)], k...), nil); err != nil {
			return err
		}
	}
	return nil
}

// LogQuery selects decision-log entries; zero fields select everything.
type LogQuery struct {
	Contact *extract.ID
	RunID   string
	Since   time.Time
	Field   string // a Dynamics or Campaign field name
}

// QueryLog calls fn for each matching entry, oldest first.
func (s *Store) QueryLog(q LogQuery, fn func(*LogEntry) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		lb := tx.Bucket(bucketLog)
		if lb == nil {
			return nil
		}
		match := func(k, v []byte) error {
			e, err := decodeLog(k, v)
			if err != nil {
				return fmt.Errorf("state %s: %w", s.path, err)
			}
			if (q.RunID != "" && e.RunID != q.RunID) || (!q.Since.IsZero() && e.RunStarted.Before(q.Since)) ||
				(q.Field != "" && e.D365Field != q.Field && e.CampaignField != q.Field) ||
				(q.Contact != nil && e.Contact != *q.Contact) {
				return nil
			}
			return fn(&e)
		}
		if q.Contact != nil {
			ib := tx.Bucket(bucketLogContact)
			if ib == nil {
				return nil
			}
			c := ib.Cursor()
			prefix := q.Contact[:]
			for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
				lk := k[16:]
				if err := match(lk, lb.Get(lk)); err != nil {
					return err
				}
			}
			return nil
		}
		from := []byte{}
		if !q.Since.IsZero() {
			from = logKey(q.Since, 0)
		}
		if q.RunID != "" {
			if started, ok := runStarted(tx, q.RunID); ok {
				from = logKey(started, 0)
			} else {
				return nil
			}
		}
		c := lb.Cursor()
		for k, v := c.Seek(from); k != nil; k, v = c.Next() {
			if q.RunID != "" && !bytes.Equal(k[:8], from[:8]) {
				break
			}
			if err := match(k, v); err != nil {
				return err
			}
		}
		return nil
	})
}

// pruneLog deletes entries of runs started before cutoff.
func pruneLog(tx *bolt.Tx, cutoff time.Time) (int, error) {
	lb, ib := tx.Bucket(bucketLog), tx.Bucket(bucketLogContact)
	if lb == nil || ib == nil {
		return 0, nil
	}
	end := logKey(cutoff, 0)
	var doomed [][]byte
	c := lb.Cursor()
	for k, v := c.First(); k != nil && bytes.Compare(k, end) < 0; k, v = c.Next() {
		if len(v) < 16 {
			continue
		}
		doomed = append(doomed, append(append([]byte{}, v[:16]...), k...))
	}
	for _, ik := range doomed {
		if err := lb.Delete(ik[16:]); err != nil {
			return 0, err
		}
		if err := ib.Delete(ik); err != nil {
			return 0, err
		}
	}
	return len(doomed), nil
}
