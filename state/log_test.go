package state

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"optsync/extract"
	"optsync/transform"
)

var logT0 = time.Date(2026, 11, 29, 2, 0, 0, 123456789, time.UTC)

func TestLogEntryRoundTrip(t *testing.T) {
	pairs := make([]transform.Pair, extract.MaxFields)
	for i := range pairs {
		pairs[i] = transform.Pair{D365: fmt.Sprint("d", i), Campaign: fmt.Sprint("c", i)}
	}
	runs := map[int64]logRun{logT0.UnixNano(): {ID: "20261129T020000Z-ab", Pairs: pairs}}
	var cases []LogEntry
	n := 0
	for _, rule := range append(slices.Clone(logRules), "custom-rule") {
		for _, outcome := range append(slices.Clone(logOutcomes), "retried") {
			for _, dir := range logDirections {
				for _, old := range logValues {
					for _, nw := range logValues {
						n++
						cases = append(cases, LogEntry{RunStarted: logT0, Seq: uint32(n), Contact: id(n), PKey: "@p" + fmt.Sprint(n),
							Pair: n % extract.MaxFields, Direction: dir, Old: old, New: nw, Rule: rule, Outcome: outcome,
							D365Modified: int64(n) * 1_000_003, CampaignModified: -int64(n), Error: strings.Repeat("e", n%3)})
					}
				}
			}
		}
	}
	long := LogEntry{RunStarted: logT0, Seq: 1<<32 - 1, Contact: id(65535), PKey: "@" + strings.Repeat("k", 300),
		Pair: 7, Rule: "rule-not-in-table", Outcome: "outcome-not-in-table", Error: strings.Repeat("x", 70_000),
		D365Modified: 1 << 50, CampaignModified: -1 << 50}
	noRun := LogEntry{RunStarted: logT0.Add(time.Nanosecond), Seq: 3, Contact: id(9), Pair: 2, Rule: transform.RuleSourceOfTruth, Outcome: "applied"}
	cases = append(cases, long, noRun)
	for _, e := range cases {
		v := e.encode()
		got, err := decodeLog(logKey(e.RunStarted, e.Seq), v, runs)
		if err != nil {
			t.Fatalf("%+v: %v", e, err)
		}
		want := e
		if r, ok := runs[e.RunStarted.UnixNano()]; ok {
			want.RunID, want.D365Field, want.CampaignField = r.ID, r.Pairs[e.Pair].D365, r.Pairs[e.Pair].Campaign
		}
		if !got.RunStarted.Equal(want.RunStarted) {
			t.Fatalf("RunStarted %v, want %v", got.RunStarted, want.RunStarted)
		}
		got.RunStarted = want.RunStarted
		if got != want {
			t.Fatalf("round trip\n got %+v\nwant %+v", got, want)
		}
		// Known vocabulary is stored as a code, not as text.
		if code(logRules, e.Rule) != 0 && bytes.Contains(v, []byte(e.Rule)) {
			t.Fatalf("rule %q stored in full", e.Rule)
		}
		if code(logOutcomes, e.Outcome) != 0 && bytes.Contains(v, []byte(e.Outcome)) {
			t.Fatalf("outcome %q stored in full", e.Outcome)
		}
	}
	if _, err := decodeLog(logKey(logT0, 1), long.encode()[:40], runs); err == nil {
		t.Errorf("truncated entry decoded without error")
	}
}

var (
	pairsAB = []transform.Pair{testPairs[0], testPairs[1]}
	pairsBA = []transform.Pair{testPairs[1], testPairs[0]}
)

type logRunSpec struct {
	id      string
	started time.Time
	pairs   []transform.Pair
	entries [][3]int // seq, contact, pair index
}

// r2 maps its pairs in the other order, so its pair index 1 is donotemail.
var logRunSpecs = []logRunSpec{
	{"r2", logT0.Add(time.Hour), pairsBA, [][3]int{{1, 1, 1}, {2, 1, 0}}},
	{"r1", logT0, pairsAB, [][3]int{{1, 1, 1}, {2, 2, 0}, {3, 1, 1}}},
	{"r3", logT0.Add(2 * time.Hour), pairsAB, [][3]int{{2, 1, 1}, {1, 2, 0}}},
}

// fillLog commits each run's entries (in the order above, not time order)
// with its run record.
func fillLog(t *testing.T, st *Store) {
	t.Helper()
	for _, r := range logRunSpecs {
		b := st.NewBatch(0)
		for _, e := range r.entries {
			b.AddLog(LogEntry{RunStarted: r.started, Seq: uint32(e[0]), Contact: id(e[1]), Pair: e[2],
				Outcome: "applied", Rule: transform.RuleOnlyD365Changed}, r.id, r.pairs)
		}
		if err := st.Commit(context.Background(), b, &Final{Run: &Run{ID: r.id, Started: r.started, Outcome: "ok"}}); err != nil {
			t.Fatal(err)
		}
	}
}

func queryNames(t *testing.T, st *Store, q LogQuery) []string {
	t.Helper()
	var out []string
	err := st.QueryLog(q, func(e *LogEntry) error {
		field := e.D365Field
		if e.CampaignField == "" || e.RunID == "" {
			return fmt.Errorf("entry %+v not resolved through log_runs", e)
		}
		out = append(out, fmt.Sprintf("%s/%d/%d/%s", e.RunID, e.Seq, e.Contact[15], field))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestQueryLog(t *testing.T) {
	st, err := Open(filepath.Join(t.TempDir(), "state.db"), testPairs)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if got := queryNames(t, st, LogQuery{}); got != nil {
		t.Fatalf("empty log: %v", got)
	}
	fillLog(t, st)
	checkQueries(t, st)
	// The index appends each run's entries, in contact order within it.
	var got []string
	for _, k := range indexEntries(t, st, bucketLogPacked) {
		got = append(got, fmt.Sprintf("%s/%d/%d", time.Unix(0, int64(binary.BigEndian.Uint64(k))).Sub(logT0), k[23], binary.BigEndian.Uint32(k[24:])))
	}
	want := []string{"0s/1/1", "0s/1/3", "0s/2/2", "1h0m0s/1/1", "1h0m0s/1/2", "2h0m0s/1/2", "2h0m0s/2/1"}
	if !slices.Equal(got, want) {
		t.Errorf("log_index keys (run/contact/seq) %v, want %v", got, want)
	}
	if err := st.VerifyIndexes(); err != nil {
		t.Error(err)
	}
}

// withoutLogIndex makes st's log look as schema 7 kept it, indexed by
// contact first (log_contact): no log_index (of either layout), no mark,
// schema 7.
func withoutLogIndex(t *testing.T, st *Store) {
	t.Helper()
	if err := st.db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketLogIndex, bucketLogPacked} {
			if tx.Bucket(name) != nil {
				if err := tx.DeleteBucket(name); err != nil {
					return err
				}
			}
		}
		meta := st.vb(tx.Bucket(bucketMeta), "meta")
		if err := meta.Put(keySchema, []byte("7")); err != nil {
			return err
		}
		if err := meta.Delete(keyLogPackedOK); err != nil {
			return err
		}
		return meta.Delete(keyLogIndexOK)
	}); err != nil {
		t.Fatal(err)
	}
}

// A file of schema 7 keeps its log indexed by contact first: its writes keep
// log_contact, and the first run builds log_index from the log (in
// transactions of its own), dropping log_contact with the last; every
// question is answered the same before, after, and by a file whose build
// was stopped half-way (a kill between two of its transactions), which
// the next run builds again.
func TestLogIndexBuiltFromAnOlderFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st, err := Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	withoutLogIndex(t, st)
	st.Close()
	if st, err = Open(path, testPairs); err != nil {
		t.Fatal(err)
	}
	defer func() { st.Close() }()
	fillLog(t, st)
	if n := len(bucketKeys(t, st, bucketLogContact)); n != 7 || len(indexEntries(t, st, bucketLogPacked)) != 0 {
		t.Fatalf("an older file's writes: log_contact holds %d entries, log_index_packed %d", n, len(indexEntries(t, st, bucketLogPacked)))
	}
	checkQueries(t, st)
	if ready, err := st.IndexesReady(); err != nil || ready {
		t.Fatalf("indexes ready without log_index: %v %v", ready, err)
	}

	// Stopped after its first transaction of two entries.
	st.indexChunk = 2
	if _, err := st.BuildIndexes(&stopAfter{Context: context.Background(), n: 1}, 1<<20, t.TempDir()); !errors.Is(err, context.Canceled) {
		t.Fatalf("a build stopped half-way: %v", err)
	}
	// (packed, the block being filled goes with a later transaction: the
	// first wrote none of the 7 entries)
	if n := len(indexEntries(t, st, bucketLogPacked)); n >= 7 || !hasBucket(t, st, bucketLogPacked) {
		t.Fatalf("the stopped build wrote %d entries of log_index_packed, want fewer than 7 (the test stops it elsewhere)", n)
	}
	if ready, err := st.IndexesReady(); err != nil || ready {
		t.Fatalf("indexes ready after a build stopped half-way: %v %v", ready, err)
	}
	st.Close()
	if st, err = OpenReadOnly(path, testPairs); err != nil {
		t.Fatal(err)
	}
	checkQueries(t, st)
	st.Close()

	if st, err = Open(path, testPairs); err != nil {
		t.Fatal(err)
	}
	if _, err := st.BuildIndexes(context.Background(), 64, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	if ready, err := st.IndexesReady(); err != nil || !ready {
		t.Fatalf("indexes not ready after the build: %v %v", ready, err)
	}
	if n, _ := schemaOf(t, st); n != SchemaVersion {
		t.Errorf("schema %d after the build, want %d", n, SchemaVersion)
	}
	if n := len(bucketKeys(t, st, bucketLogContact)); n != 0 {
		t.Errorf("log_contact still holds %d entries", n)
	}
	if err := st.VerifyIndexes(); err != nil {
		t.Error(err)
	}
	checkQueries(t, st)
	// and the next run's entries go to log_index
	fillLog(t, st)
	if err := st.VerifyIndexes(); err != nil {
		t.Error(err)
	}
}

// stopAfter is a context that is done once Err has been asked n times.
type stopAfter struct {
	context.Context
	n int
}

func (c *stopAfter) Err() error {
	if c.n--; c.n < 0 {
		return context.Canceled
	}
	return nil
}

func checkQueries(t *testing.T, st *Store) {
	t.Helper()
	a, b, c := id(1), id(2), id(3)
	cases := []struct {
		name string
		q    LogQuery
		want []string
	}{
		{"all", LogQuery{}, []string{"r1/1/1/xx_sms", "r1/2/2/donotemail", "r1/3/1/xx_sms", "r2/1/1/donotemail", "r2/2/1/xx_sms", "r3/1/2/donotemail", "r3/2/1/xx_sms"}},
		{"contact-a", LogQuery{Contact: &a}, []string{"r1/1/1/xx_sms", "r1/3/1/xx_sms", "r2/1/1/donotemail", "r2/2/1/xx_sms", "r3/2/1/xx_sms"}},
		{"contact-b", LogQuery{Contact: &b}, []string{"r1/2/2/donotemail", "r3/1/2/donotemail"}},
		{"contact-none", LogQuery{Contact: &c}, nil},
		{"run-r2", LogQuery{RunID: "r2"}, []string{"r2/1/1/donotemail", "r2/2/1/xx_sms"}},
		{"run-unknown", LogQuery{RunID: "nope"}, nil},
		{"since-r2", LogQuery{Since: logT0.Add(time.Hour)}, []string{"r2/1/1/donotemail", "r2/2/1/xx_sms", "r3/1/2/donotemail", "r3/2/1/xx_sms"}},
		{"since-after-all", LogQuery{Since: logT0.Add(3 * time.Hour)}, nil},
		{"field-d365", LogQuery{Field: "donotemail"}, []string{"r1/2/2/donotemail", "r2/1/1/donotemail", "r3/1/2/donotemail"}},
		{"field-campaign", LogQuery{Field: "blackListMobile"}, []string{"r1/1/1/xx_sms", "r1/3/1/xx_sms", "r2/2/1/xx_sms", "r3/2/1/xx_sms"}},
		{"contact-and-field", LogQuery{Contact: &a, Field: "blackListEmail"}, []string{"r2/1/1/donotemail"}},
		{"contact-and-since", LogQuery{Contact: &b, Since: logT0.Add(time.Minute)}, []string{"r3/1/2/donotemail"}},
		{"contact-and-run", LogQuery{Contact: &a, RunID: "r1"}, []string{"r1/1/1/xx_sms", "r1/3/1/xx_sms"}},
		{"run-and-field", LogQuery{RunID: "r1", Field: "donotemail"}, []string{"r1/2/2/donotemail"}},
		{"run-and-since-later", LogQuery{RunID: "r1", Since: logT0.Add(time.Second)}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := queryNames(t, st, tc.q); !slices.Equal(got, tc.want) {
				t.Errorf("\n got %v\nwant %v", got, tc.want)
			}
		})
	}
	stop := errors.New("stop")
	for _, q := range []LogQuery{{}, {Contact: &a}} {
		calls := 0
		if err := st.QueryLog(q, func(*LogEntry) error { calls++; return stop }); !errors.Is(err, stop) || calls != 1 {
			t.Errorf("callback error (%+v): err=%v after %d calls", q, err, calls)
		}
	}
}

func bucketKeys(t *testing.T, st *Store, name []byte) [][]byte {
	t.Helper()
	var out [][]byte
	if err := st.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(name)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, _ []byte) error { out = append(out, slices.Clone(k)); return nil })
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// indexEntries are the entries' keys of the packed index name, in order.
func indexEntries(t *testing.T, st *Store, name []byte) [][]byte {
	t.Helper()
	var out [][]byte
	if err := st.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(name)
		if b == nil {
			return nil
		}
		return st.packed(b, string(name)).ForEach(func(k, _ []byte) error { out = append(out, slices.Clone(k)); return nil })
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func hasBucket(t *testing.T, st *Store, name []byte) (has bool) {
	t.Helper()
	if err := st.db.View(func(tx *bolt.Tx) error { has = tx.Bucket(name) != nil; return nil }); err != nil {
		t.Fatal(err)
	}
	return has
}

func TestPruneLog(t *testing.T) {
	st, err := Open(filepath.Join(t.TempDir(), "state.db"), testPairs)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	fillLog(t, st)
	prune := func(before time.Time) {
		t.Helper()
		if err := st.Commit(context.Background(), st.NewBatch(0), &Final{PruneBefore: before}); err != nil {
			t.Fatal(err)
		}
	}
	runKeys := func() (out []string) {
		for _, k := range bucketKeys(t, st, bucketLogRuns) {
			out = append(out, time.Unix(0, int64(binary.BigEndian.Uint64(k))).Sub(logT0).String())
		}
		return out
	}
	// The cutoff is r2's exact start: r2 is kept, r1 goes.
	prune(logT0.Add(time.Hour))
	a := id(1)
	if got, want := queryNames(t, st, LogQuery{}), []string{"r2/1/1/donotemail", "r2/2/1/xx_sms", "r3/1/2/donotemail", "r3/2/1/xx_sms"}; !slices.Equal(got, want) {
		t.Errorf("after prune: %v, want %v", got, want)
	}
	if got, want := queryNames(t, st, LogQuery{Contact: &a}), []string{"r2/1/1/donotemail", "r2/2/1/xx_sms", "r3/2/1/xx_sms"}; !slices.Equal(got, want) {
		t.Errorf("contact after prune: %v, want %v", got, want)
	}
	if n, m := len(bucketKeys(t, st, bucketLog)), len(indexEntries(t, st, bucketLogPacked)); n != 4 || m != 4 {
		t.Errorf("log has %d entries, contact index %d; want 4 and 4", n, m)
	}
	if got, want := runKeys(), []string{"1h0m0s", "2h0m0s"}; !slices.Equal(got, want) {
		t.Errorf("log_runs keys %v, want %v", got, want)
	}
	prune(logT0.Add(2*time.Hour + time.Nanosecond))
	if n, m := len(bucketKeys(t, st, bucketLog)), len(indexEntries(t, st, bucketLogPacked)); n != 0 || m != 0 || len(runKeys()) != 0 {
		t.Errorf("after pruning all: log %d, index %d, runs %v", n, m, runKeys())
	}
	if got := queryNames(t, st, LogQuery{Contact: &a}); got != nil {
		t.Errorf("contact after pruning all: %v", got)
	}
}

// TestLogIndexOfOneKeyPerEntryIsRebuilt: a file of schema 9 indexes its log
// by run, then contact, one bbolt key per entry (log_index, marked
// index_log). Until the first run builds log_index_packed from the log,
// its writes keep log_index and every question is answered through it —
// also after a build stopped half-way (a kill between two of its
// transactions); the build's last transaction drops log_index and its
// mark, and stores schema 10.
func TestLogIndexOfOneKeyPerEntryIsRebuilt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st, err := Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	fillLog(t, st)
	a := id(1)
	wantA := append(queryNames(t, st, LogQuery{Contact: &a}), "r4/1/1/donotemail")
	// The layout of schema 9.
	entries := indexEntries(t, st, bucketLogPacked)
	if err := st.update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bucketLogPacked); err != nil {
			return err
		}
		b, err := tx.CreateBucket(bucketLogIndex)
		if err != nil {
			return err
		}
		for _, k := range entries {
			if err := st.vb(b, "log_index").Put(k, nil); err != nil {
				return err
			}
		}
		vm := st.vb(tx.Bucket(bucketMeta), "meta")
		if err := vm.Delete(keyLogPackedOK); err != nil {
			return err
		}
		if err := vm.Put(keyLogIndexOK, []byte("1")); err != nil {
			return err
		}
		return vm.Put(keySchema, []byte("9"))
	}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	if st, err = Open(path, testPairs); err != nil {
		t.Fatal(err)
	}
	defer func() { st.Close() }()
	if ready, err := st.IndexesReady(); err != nil || ready {
		t.Fatalf("a log index of one key per entry is taken as ready (%v)", err)
	}
	// a run's entries go to log_index as they did
	b := st.NewBatch(0)
	r4 := logT0.Add(3 * time.Hour)
	for _, e := range [][3]int{{1, 1, 0}, {2, 3, 1}} {
		b.AddLog(LogEntry{RunStarted: r4, Seq: uint32(e[0]), Contact: id(e[1]), Pair: e[2],
			Outcome: "applied", Rule: transform.RuleOnlyD365Changed}, "r4", pairsAB)
	}
	if err := st.Commit(context.Background(), b, &Final{Run: &Run{ID: "r4", Started: r4, Outcome: "ok"}}); err != nil {
		t.Fatal(err)
	}
	if n := len(bucketKeys(t, st, bucketLogIndex)); n != len(entries)+2 || hasBucket(t, st, bucketLogPacked) {
		t.Fatalf("a write to a file of schema 9: log_index holds %d keys, want %d (log_index_packed there: %v)", n, len(entries)+2, hasBucket(t, st, bucketLogPacked))
	}
	if got := queryNames(t, st, LogQuery{Contact: &a}); !slices.Equal(got, wantA) {
		t.Fatalf("contact a through log_index: %v, want %v", got, wantA)
	}

	// Stopped after its first transaction: the file answers as before.
	st.indexChunk = 2
	if _, err := st.BuildIndexes(&stopAfter{Context: context.Background(), n: 1}, 1<<20, t.TempDir()); !errors.Is(err, context.Canceled) {
		t.Fatalf("a build stopped half-way: %v", err)
	}
	if ready, err := st.IndexesReady(); err != nil || ready {
		t.Fatalf("indexes ready after a build stopped half-way: %v %v", ready, err)
	}
	st.Close()
	if st, err = OpenReadOnly(path, testPairs); err != nil {
		t.Fatal(err)
	}
	if got := queryNames(t, st, LogQuery{Contact: &a}); !slices.Equal(got, wantA) {
		t.Fatalf("contact a after a stopped build: %v, want %v", got, wantA)
	}
	st.Close()

	if st, err = Open(path, testPairs); err != nil {
		t.Fatal(err)
	}
	if _, err := st.BuildIndexes(context.Background(), 1<<20, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	if ready, err := st.IndexesReady(); err != nil || !ready {
		t.Fatalf("indexes not ready after the build: %v %v", ready, err)
	}
	if n, _ := schemaOf(t, st); n != SchemaVersion || SchemaVersion < 10 {
		t.Errorf("schema %d after the build, want %d (10 or later)", n, SchemaVersion)
	}
	if hasBucket(t, st, bucketLogIndex) || hasBucket(t, st, bucketLogContact) {
		t.Error("the old index is still there")
	}
	if err := st.view(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketMeta).Get(keyLogIndexOK) != nil {
			return errors.New("its mark is still there")
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	if err := st.VerifyIndexes(); err != nil {
		t.Error(err)
	}
	if n := len(indexEntries(t, st, bucketLogPacked)); n != len(entries)+2 || len(bucketKeys(t, st, bucketLogPacked)) != 1 {
		t.Errorf("log_index_packed holds %d entries in %d blocks, want %d in 1", n, len(bucketKeys(t, st, bucketLogPacked)), len(entries)+2)
	}
	if got := queryNames(t, st, LogQuery{Contact: &a}); !slices.Equal(got, wantA) {
		t.Fatalf("contact a after the build: %v, want %v", got, wantA)
	}
}

// TestDamagedLogIndexBlockIsReported: a flipped bit in a block of the log's
// index is found by its seal: a question by contact reports the file
// damaged, naming the index and the block, and does not answer short.
func TestDamagedLogIndexBlockIsReported(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st, err := Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	fillLog(t, st)
	blocks := bucketKeys(t, st, bucketLogPacked)
	if len(blocks) != 1 {
		t.Fatalf("the log's index is %d blocks, want 1", len(blocks))
	}
	var bv []byte
	if err := st.db.View(func(tx *bolt.Tx) error {
		bv = slices.Clone(tx.Bucket(bucketLogPacked).Get(blocks[0]))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	raw, _ := os.ReadFile(path)
	target := append(slices.Clone(blocks[0]), bv...)
	at := bytes.Index(raw, target)
	if at < 0 {
		t.Fatal("the block is not where a leaf keeps it")
	}
	raw[at+len(target)-sealSize-3] ^= 0x04 // in its last entry
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	// found by the open's check of the pages it reaches, or by the question
	ask := func() error {
		ro, err := OpenReadOnly(path, testPairs)
		if err != nil {
			return err
		}
		defer ro.Close()
		a := id(1)
		return ro.QueryLog(LogQuery{Contact: &a}, func(*LogEntry) error { return nil })
	}
	err = ask()
	var ce *CorruptError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "log_index_packed") || !strings.Contains(err.Error(), fmt.Sprintf("%x", blocks[0])) {
		t.Fatalf("a question through a damaged block: %v", err)
	}
}
