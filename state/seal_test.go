package state

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"optsync/extract"
	"optsync/transform"
)

// sealedFile is a state file with something in every bucket: snapshots,
// totals, read positions, config, pairs, processed files, the retry queue,
// runs and the decision log.
func sealedFile(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "optsync.db")
	st, err := Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	run := &Run{ID: "20261129T020000Z-aaaaaa", Command: "run", Started: time.Date(2026, 11, 29, 2, 0, 0, 0, time.UTC), Outcome: "running"}
	if err := st.BeginRun(run); err != nil {
		t.Fatal(err)
	}
	b := st.NewBatch(3)
	for n := 1; n <= 3; n++ {
		s := fullSnap(n)
		b.Put(id(n), &s)
		b.AddLog(LogEntry{RunStarted: run.Started, Seq: uint32(n), RunID: run.ID, Contact: id(n), PKey: s.PKey, Pair: 0,
			Direction: "d365->campaign", Rule: "only-d365-changed", Outcome: "applied", Old: "false", New: "true"}, run.ID, testPairs)
	}
	run.Outcome = "ok"
	fin := &Final{Run: run, Config: &ConfigRecord{Direction: "bidirectional", Policy: "newest", Pairs: testPairs},
		Files: []ProcessedFile{{SHA256: "ab12", System: "d365", Path: "in.csv", RunID: run.ID}},
		Retry: []RetryItem{{Contact: id(2), PKey: "@kc", System: "campaign", Reason: "HTTP 500", RunID: run.ID, Since: run.Started}},
		Meta:  map[string]string{KeyCampaignWatermark: "2026-11-29T01:00:00Z"}}
	if err := st.Commit(context.Background(), b, fin); err != nil {
		t.Fatal(err)
	}
	return st, path
}

// readAll reads the file through every read path a command has.
func readAll(st *Store) error {
	if _, err := st.Runs(); err != nil {
		return err
	}
	if _, err := st.Meta(KeyCampaignWatermark); err != nil {
		return err
	}
	if _, err := st.RetryQueue(); err != nil {
		return err
	}
	if _, _, err := st.Processed("ab12"); err != nil {
		return err
	}
	if _, err := st.LastConfig(); err != nil {
		return err
	}
	if _, err := st.Totals(); err != nil {
		return err
	}
	if _, err := st.registry(); err != nil {
		return err
	}
	if err := st.QueryLog(LogQuery{}, func(*LogEntry) error { return nil }); err != nil {
		return err
	}
	c := id(1)
	if err := st.QueryLog(LogQuery{Contact: &c}, func(*LogEntry) error { return nil }); err != nil {
		return err
	}
	if err := st.Each(func(extract.ID, *transform.Snapshot) error { return nil }); err != nil {
		return err
	}
	r, err := st.Reader()
	if err != nil {
		return err
	}
	defer r.Close()
	var s transform.Snapshot
	for n := 1; n <= 3; n++ {
		if _, err := r.Get(id(n), &s); err != nil {
			return err
		}
	}
	return nil
}

// A flipped bit in any stored value, or in any key, of any bucket whose
// values decide something is found and named when the record is read —
// by a run (open for writing) and by a reader alike — never used; a
// backfill's open (OpenFull), which checks every seal as it walks the
// pages, names it before anything is read or written.
func TestSealsFindEveryFlippedBit(t *testing.T) {
	st, path := sealedFile(t)
	if err := readAll(st); err != nil {
		t.Fatalf("the good file: %v", err)
	}
	type entry struct {
		path [][]byte
		k    []byte
	}
	var entries []entry
	if err := st.db.View(func(tx *bolt.Tx) error {
		var walk func(p [][]byte, b *bolt.Bucket) error
		walk = func(p [][]byte, b *bolt.Bucket) error {
			return b.ForEach(func(k, v []byte) error {
				if v == nil && b.Bucket(k) != nil {
					return walk(append(p[:len(p):len(p)], append([]byte{}, k...)), b.Bucket(k))
				}
				entries = append(entries, entry{p, append([]byte{}, k...)})
				return nil
			})
		}
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error { return walk([][]byte{append([]byte{}, name...)}, b) })
	}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	buckets := map[string]bool{}
	for _, e := range entries {
		buckets[string(e.path[len(e.path)-1])] = true
	}
	for _, want := range []string{"contacts", "meta", "pairs", "files", "retry", "runs", "log", "log_index_packed", "log_runs"} {
		if !buckets[want] {
			t.Fatalf("the file has nothing in %s: the test proves nothing there (%v)", want, buckets)
		}
	}
	bucketOf := func(tx *bolt.Tx, p [][]byte) *bolt.Bucket {
		b := tx.Bucket(p[0])
		for _, n := range p[1:] {
			b = b.Bucket(n)
		}
		return b
	}
	for _, e := range entries {
		for _, what := range []string{"value", "key"} {
			name := string(e.path[len(e.path)-1]) + " " + printable(e.k) + " " + what
			t.Run(name, func(t *testing.T) {
				if err := os.WriteFile(path, good, 0o600); err != nil {
					t.Fatal(err)
				}
				db, err := bolt.Open(path, 0o600, nil)
				if err != nil {
					t.Fatal(err)
				}
				if err := db.Update(func(tx *bolt.Tx) error {
					b := bucketOf(tx, e.path)
					v := append([]byte{}, b.Get(e.k)...)
					if what == "value" {
						v[len(v)/3] ^= 0x10 // in the value, or in its seal
						return b.Put(e.k, v)
					}
					k := append([]byte{}, e.k...)
					k[len(k)-1] ^= 0x01
					if err := b.Delete(e.k); err != nil {
						return err
					}
					return b.Put(k, v)
				}); err != nil {
					t.Fatal(err)
				}
				db.Close()
				damaged, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				st, err := OpenFull(path, testPairs)
				if err == nil {
					st.Close()
				}
				var ce *CorruptError
				if !errors.As(err, &ce) || !strings.Contains(err.Error(), "checksum") || !strings.Contains(err.Error(), path) {
					t.Fatalf("a backfill's open: err %v, want a damaged state naming the checksum", err)
				}
				if now, _ := os.ReadFile(path); !bytes.Equal(now, damaged) {
					t.Fatalf("a backfill's open changed the damaged file")
				}
				for _, open := range []func(string, []transform.Pair) (*Store, error){Open, OpenReadOnly} {
					st, err := open(path, testPairs)
					if err == nil {
						err = readAll(st)
						st.Close()
					}
					var ce *CorruptError
					if !errors.As(err, &ce) || !strings.Contains(err.Error(), "checksum") || !strings.Contains(err.Error(), path) {
						t.Fatalf("err %v, want a damaged state naming the checksum", err)
					}
				}
			})
		}
	}
}

// A state file written by main's build before the seals (schema 4; see
// testdata/README.md) is read as it is by readers, and sealed whole by the
// first run that opens it: every snapshot, run, log entry and setting reads
// the same afterwards, and from then on a flipped bit in it is found.
func TestStateOfTheBuildBeforeSealsIsSealed(t *testing.T) {
	f, err := os.Open(filepath.Join("testdata", "schema4-main.db.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	orig, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "optsync.db")
	if err := os.WriteFile(path, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	type view struct {
		Snaps  map[extract.ID]transform.Snapshot
		Runs   []Run
		Log    []LogEntry
		Config *ConfigRecord
		File   ProcessedFile
		Totals Totals
		Reg    map[string]byte
	}
	look := func(st *Store) view {
		t.Helper()
		v := view{Snaps: map[extract.ID]transform.Snapshot{}}
		if err := st.Each(func(id extract.ID, s *transform.Snapshot) error { v.Snaps[id] = *s; return nil }); err != nil {
			t.Fatal(err)
		}
		var err error
		if v.Runs, err = st.Runs(); err != nil {
			t.Fatal(err)
		}
		if err := st.QueryLog(LogQuery{}, func(e *LogEntry) error { v.Log = append(v.Log, *e); return nil }); err != nil {
			t.Fatal(err)
		}
		if v.Config, err = st.LastConfig(); err != nil {
			t.Fatal(err)
		}
		if v.Totals, err = st.Totals(); err != nil {
			t.Fatal(err)
		}
		if v.Reg, err = st.registry(); err != nil {
			t.Fatal(err)
		}
		if len(v.Runs) == 0 || len(v.Snaps) == 0 || len(v.Log) == 0 || v.Config == nil {
			t.Fatalf("the fixture is missing what the test compares: %d runs, %d snapshots, %d log entries", len(v.Runs), len(v.Snaps), len(v.Log))
		}
		return v
	}
	pairs := []transform.Pair{{D365: "donotemail", Campaign: "blackListEmail"}, {D365: "donotphone", Campaign: "blackListPhone"},
		{D365: "donotpostalmail", Campaign: "blackListPostalMail"}, {D365: "donotfax", Campaign: "blackListFax"},
		{D365: "xx_smsconsent", Campaign: "blackListMobile", Invert: true}}
	ro, err := OpenReadOnly(path, pairs)
	if err != nil {
		t.Fatal(err)
	}
	before := look(ro)
	if n, sealed := schemaOf(t, ro); n != 4 || sealed {
		t.Fatalf("the fixture has schema %d, sealed %v; want 4, not sealed", n, sealed)
	}
	ro.Close()
	if now, _ := os.ReadFile(path); !bytes.Equal(now, orig) {
		t.Fatal("a reader changed the file")
	}

	st, err := Open(path, pairs)
	if err != nil {
		t.Fatal(err)
	}
	if n, sealed := schemaOf(t, st); n != SchemaVersion || !sealed {
		t.Fatalf("after a run opened it: schema %d, sealed %v", n, sealed)
	}
	if after := look(st); !reflect.DeepEqual(before, after) {
		t.Fatalf("sealing changed what the file says")
	}
	if _, err := os.Stat(path + ".sealing"); !os.IsNotExist(err) {
		t.Fatalf("the sealing copy was left behind: %v", err)
	}
	st.Close()

	// A bit of a sealed record flipped (the PKey inside it): found.
	raw, _ := os.ReadFile(path)
	var target []byte
	db, _ := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	_ = db.View(func(tx *bolt.Tx) error {
		k, v := tx.Bucket(bucketContacts).Cursor().First()
		target = append(append([]byte{}, k...), v...) // a leaf holds a key and its value side by side
		return nil
	})
	db.Close()
	at := bytes.Index(raw, target)
	if at < 0 {
		t.Fatal("the first record is not where a leaf keeps it")
	}
	raw[at+len(target)-8] ^= 0x02
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	ro, err = OpenReadOnly(path, pairs)
	if err == nil {
		err = ro.Each(func(extract.ID, *transform.Snapshot) error { return nil })
		ro.Close()
	}
	var ce *CorruptError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "contacts") {
		t.Fatalf("a flipped bit in a sealed record: %v", err)
	}
}
