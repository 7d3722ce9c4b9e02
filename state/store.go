// Package state keeps what optsync knows between runs in one bbolt file:
// per-contact snapshots, the run history and the schema version. The file is
// locked for as long as a run holds it open.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"optsync/transform"
)

// SchemaVersion is bumped whenever a stored layout changes. 3: contact
// records keep the Dynamics ETag as read and, per pending write, the start
// of the run that wrote it (record version 3); records of versions 1 and 2
// are still read. (2 was never released: builds between wrote it.)
const SchemaVersion = 3

var (
	bucketMeta     = []byte("meta")
	bucketPairs    = []byte("pairs")
	bucketContacts = []byte("contacts")
	bucketRuns     = []byte("runs")
	keySchema      = []byte("schema")
)

// LockedError says another run holds the state file.
type LockedError struct {
	Path    string
	PID     int
	Host    string
	Started time.Time
}

func (e *LockedError) Error() string {
	if e.PID == 0 {
		return fmt.Sprintf("state %s is locked by another optsync run (its lock details are not readable yet)", e.Path)
	}
	return fmt.Sprintf("state %s is locked by another optsync run: pid %d on %s, started %s",
		e.Path, e.PID, e.Host, e.Started.UTC().Format(time.RFC3339))
}

type lockInfo struct {
	PID     int       `json:"pid"`
	Host    string    `json:"host"`
	Started time.Time `json:"started"`
}

// Store is an open state file.
type Store struct {
	db       *bolt.DB
	path     string
	lockPath string
	readOnly bool
	// pairIDs[i] is the stored id of the configured pair i (0: none yet).
	pairIDs []byte
	// A run that writes nothing changes nothing in state but its entry in
	// the run history: a configured pair new to the file gets its id at
	// open, but the id (and a newer schema version) is stored only with
	// the first transaction that writes records (see persist).
	newPairs     map[string]byte
	schemaBehind bool
	// unmapped holds the ids of registered pairs that are not configured
	// (a mapping removed, until DropUnmapped drops them after the run's
	// commit): their entries in a record are kept when it is written.
	unmapped map[byte]bool
}

// Open opens (creating if needed) the state file for a run that may write,
// taking its exclusive lock. A held lock gives a *LockedError at once.
// pairs are the configured mappings, in order; each gets a stable stored id.
// A missing folder is created 0700, as out_dir is: the file holds
// personal data.
func Open(path string, pairs []transform.Pair) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating the folder of state %s: %w", path, err)
	}
	return open(path, pairs, false)
}

// OpenReadOnly opens an existing state file for reading; it waits for no
// writer and fails with *LockedError while one holds the file.
func OpenReadOnly(path string, pairs []transform.Pair) (*Store, error) {
	if _, err := os.Lstat(path); err != nil {
		return nil, fmt.Errorf("state %s: %w", path, err)
	}
	return open(path, pairs, true)
}

func open(path string, pairs []transform.Pair, readOnly bool) (*Store, error) {
	s := &Store{path: path, lockPath: path + ".lock", readOnly: readOnly}
	real, err := resolvePath(path)
	if err != nil {
		return nil, err
	}
	db, err := bolt.Open(real, 0o600, &bolt.Options{
		Timeout:        100 * time.Millisecond,
		ReadOnly:       readOnly,
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
		// Each time a growing file is mapped again, bbolt copies every
		// node of the open write transaction out of the old mapping; a
		// large first mapping (address space, not memory) avoids that.
		InitialMmapSize: 1 << 30,
		OpenFile: func(name string, flag int, mode os.FileMode) (*os.File, error) {
			return openFile(name, flag, mode, readOnly)
		},
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		le := &LockedError{Path: path}
		if b, rerr := os.ReadFile(s.lockPath); rerr == nil {
			var li lockInfo
			if json.Unmarshal(b, &li) == nil {
				le.PID, le.Host, le.Started = li.PID, li.Host, li.Started
			}
		}
		return nil, le
	}
	if err != nil {
		return nil, fmt.Errorf("opening state %s: %w", path, err)
	}
	s.db = db
	if !readOnly {
		if err := s.writeLockInfo(); err != nil {
			db.Close()
			return nil, err
		}
	}
	if err := s.init(pairs); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) writeLockInfo() error {
	host, _ := os.Hostname()
	b, _ := json.Marshal(lockInfo{PID: os.Getpid(), Host: host, Started: time.Now().UTC()})
	if err := os.WriteFile(s.lockPath, b, 0o600); err != nil {
		return fmt.Errorf("writing lock details %s: %w", s.lockPath, err)
	}
	return nil
}

// init checks the schema and resolves the configured pairs to stored ids,
// registering new ones.
func (s *Store) init(pairs []transform.Pair) error {
	s.pairIDs = make([]byte, len(pairs))
	check := func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			return nil
		}
		if v := meta.Get(keySchema); v != nil {
			var n int
			if _, err := fmt.Sscan(string(v), &n); err != nil || n > SchemaVersion {
				return fmt.Errorf("state %s has schema %q; this optsync reads schema %d or older", s.path, v, SchemaVersion)
			}
		}
		return nil
	}
	if s.readOnly {
		return s.db.View(func(tx *bolt.Tx) error {
			if err := check(tx); err != nil {
				return err
			}
			if reg := tx.Bucket(bucketMeta); reg != nil {
				if reg = reg.Bucket(bucketPairs); reg != nil {
					for i, p := range pairs {
						if v := reg.Get(pairKey(p)); len(v) == 1 {
							s.pairIDs[i] = v[0]
						}
					}
				}
			}
			return nil
		})
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		if err := check(tx); err != nil {
			return err
		}
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if v := meta.Get(keySchema); v == nil {
			if err := meta.Put(keySchema, []byte(fmt.Sprint(SchemaVersion))); err != nil {
				return err
			}
		} else {
			s.schemaBehind = string(v) != fmt.Sprint(SchemaVersion)
		}
		reg, err := meta.CreateBucketIfNotExists(bucketPairs)
		if err != nil {
			return err
		}
		for _, name := range [][]byte{bucketContacts, bucketRuns} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		used := map[byte]bool{}
		configured := map[string]bool{}
		for _, p := range pairs {
			configured[string(pairKey(p))] = true
		}
		s.unmapped = map[byte]bool{}
		_ = reg.ForEach(func(k, v []byte) error {
			if len(v) == 1 {
				used[v[0]] = true
				if !configured[string(k)] {
					s.unmapped[v[0]] = true
				}
			}
			return nil
		})
		for i, p := range pairs {
			k := pairKey(p)
			if v := reg.Get(k); len(v) == 1 {
				s.pairIDs[i] = v[0]
				continue
			}
			id := byte(0)
			for c := 1; c < 256; c++ {
				if !used[byte(c)] {
					id = byte(c)
					break
				}
			}
			if id == 0 {
				return fmt.Errorf("state %s: no free pair id left (255 mappings registered)", s.path)
			}
			used[id] = true
			if s.newPairs == nil {
				s.newPairs = map[string]byte{}
			}
			s.newPairs[string(k)] = id
			s.pairIDs[i] = id
		}
		return nil
	})
}

// persist stores, in a transaction that writes records, what open only
// noted: the ids of configured pairs new to the file and the schema
// version of the layout the records are written in.
func (s *Store) persist(tx *bolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	if s.schemaBehind {
		if err := meta.Put(keySchema, []byte(fmt.Sprint(SchemaVersion))); err != nil {
			return err
		}
	}
	reg := meta.Bucket(bucketPairs)
	for k, id := range s.newPairs {
		if err := reg.Put([]byte(k), []byte{id}); err != nil {
			return err
		}
	}
	return nil
}

// persisted notes that a transaction that called persist has committed.
func (s *Store) persisted() {
	s.schemaBehind = false
	s.newPairs = nil
}

// pairKey identifies a mapping across runs; flipping invert makes it a new
// mapping, since its snapshots were kept in the other polarity.
func pairKey(p transform.Pair) []byte {
	inv := "0"
	if p.Invert {
		inv = "1"
	}
	return []byte(p.D365 + "\x1f" + p.Campaign + "\x1f" + inv)
}

// Close releases the file and its lock.
func (s *Store) Close() error {
	if s.db == nil {
		return nil
	}
	if !s.readOnly {
		os.Remove(s.lockPath)
	}
	err := s.db.Close()
	s.db = nil
	return err
}
