package state

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"optsync/load/progress"
)

// scatteredFixture is carryFixture's file after some nights: batches of
// contacts here and there rewritten (and the log grown), so that their
// leaves lie where the free list had room.
func scatteredFixture(t *testing.T) string {
	t.Helper()
	path, _, _ := carryFixture(t)
	st, err := Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 5))
	for night := range 6 {
		b := st.NewBatch(40)
		for range 40 {
			n := 1 + rng.IntN(fixtureContacts)
			s := fullSnap(n + 1000*(night+1))
			b.Put(id(2*n), &s)
		}
		if err := st.Commit(context.Background(), b, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// dumpFile is every bucket's keys and values (a bucket's sequence too),
// as bbolt reads them, by path.
func dumpFile(t *testing.T, path string) map[string][]byte {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	out := map[string][]byte{}
	var walk func(prefix string, b *bolt.Bucket) error
	walk = func(prefix string, b *bolt.Bucket) error {
		out[prefix+"\x00sequence"] = []byte{byte(b.Sequence())}
		return b.ForEach(func(k, v []byte) error {
			if v == nil {
				if child := b.Bucket(k); child != nil {
					return walk(prefix+"/"+string(k), child)
				}
			}
			out[prefix+"/"+string(k)] = bytes.Clone(v)
			return nil
		})
	}
	if err := db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error { return walk(string(name), b) })
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func testCompact(path string) Compact {
	return Compact{Path: path, OutDir: filepath.Join(filepath.Dir(path), "out"), Pairs: testPairs,
		ExitCode: func(err error) int {
			if err != nil {
				return 1
			}
			return 0
		},
		Redact: func(s string) string { return s }, Log: zerolog.Nop()}
}

// TestCompactCopiesEverything: the compacted file holds every bucket,
// key, value and sequence the file held, opens (its record of the last
// commit removed with the old file), reads the same records and indexes,
// and takes commits.
func TestCompactCopiesEverything(t *testing.T) {
	path := scatteredFixture(t)
	want := dumpFile(t, path)
	st, err := Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	records := all(t, st)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	before, after, err := testCompact(path).compact(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if before <= 0 || after <= 0 {
		t.Fatalf("sizes %d before, %d after", before, after)
	}
	got := dumpFile(t, path)
	if !reflect.DeepEqual(got, want) {
		for k, v := range want {
			if !bytes.Equal(got[k], v) {
				t.Errorf("%q: %x after, %x before", k, got[k], v)
			}
		}
		t.Fatalf("the compacted file holds %d entries, the file %d", len(got), len(want))
	}
	if _, err := os.Stat(path + compactingSuffix); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the copy's name is left: %v", err)
	}
	st, err = Open(path, testPairs)
	if err != nil {
		t.Fatalf("the compacted file does not open: %v", err)
	}
	defer st.Close()
	if got := all(t, st); !reflect.DeepEqual(got, records) {
		t.Fatal("the compacted file's records differ")
	}
	checkTotals(t, st, "after the compact")
	b := st.NewBatch(1)
	s := fullSnap(9999)
	b.Put(id(2), &s)
	if err := st.Commit(context.Background(), b, nil); err != nil {
		t.Fatalf("a commit to the compacted file: %v", err)
	}
}

// TestCompactRecordsItsRun: the command says what it did (and on a
// terminal shows the bytes it copied as it goes), and the run history (of
// the compacted file) shows it; it holds the run lock.
func TestCompactRecordsItsRun(t *testing.T) {
	path := scatteredFixture(t)
	var out, shown bytes.Buffer
	c := testCompact(path)
	c.Progress = progress.New(&shown, true) // as on a terminal
	if err := c.Run(context.Background(), &out); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "compacted "+path+": ") {
		t.Errorf("it says %q", out.String())
	}
	if !strings.Contains(shown.String(), "compacting state: ") || strings.Contains(shown.String(), "compacting state: 0 B") {
		t.Errorf("on a terminal it shows %q", shown.String())
	}
	st, err := Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	runs, err := st.Runs()
	if err != nil {
		t.Fatal(err)
	}
	if last := runs[0]; last.Command != "state compact" || last.Outcome != "ok" || last.Ended.Before(last.Started) {
		t.Fatalf("the newest run recorded: %+v", last)
	}
	// Another run holds the lock: the command waits for nothing and
	// changes nothing.
	if err := testCompact(path).Run(context.Background(), &out); !errors.As(err, new(*LockedError)) {
		t.Fatalf("a compact while a run holds the state: %v, want a *LockedError", err)
	}
}

// countdown is a context that is done once Err was asked n times.
type countdown struct {
	context.Context
	n int
}

func (c *countdown) Err() error {
	if c.n--; c.n < 0 {
		return context.Canceled
	}
	return nil
}

// TestCompactLeavesTheFileWhenItStops: a compact stopped half-way (here
// by its context; a kill stops it the same way, before the rename) or
// refused (a damaged file) leaves the file byte for byte as it was, with
// its record, and no copy; a copy a killed compact left is removed by the
// next.
func TestCompactLeavesTheFileWhenItStops(t *testing.T) {
	path := scatteredFixture(t)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	record, err := os.ReadFile(path + committedSuffix)
	if err != nil {
		t.Fatal(err)
	}
	unchanged := func(step string) {
		t.Helper()
		if now, err := os.ReadFile(path); err != nil || !bytes.Equal(now, data) {
			t.Fatalf("%s: the file changed (%v)", step, err)
		}
		if now, err := os.ReadFile(path + committedSuffix); err != nil || !bytes.Equal(now, record) {
			t.Fatalf("%s: the record of the last commit changed (%v)", step, err)
		}
		if _, err := os.Stat(path + compactingSuffix); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("%s: the copy is left: %v", step, err)
		}
	}
	if _, _, err := testCompact(path).compact(&countdown{Context: context.Background(), n: 1}); !errors.Is(err, context.Canceled) {
		t.Fatalf("stopped: %v", err)
	}
	unchanged("stopped half-way")

	if err := os.WriteFile(path+compactingSuffix, []byte("a copy a kill left"), 0o600); err != nil {
		t.Fatal(err)
	}
	damaged, leaves, pageSize := carryFixture(t)
	flipInFile(t, damaged, leaves[len(leaves)/2].id, pageSize)
	var ce *CorruptError
	if _, _, err := testCompact(damaged).compact(context.Background()); !errors.As(err, &ce) {
		t.Fatalf("a damaged file compacted: %v, want a *CorruptError", err)
	}

	if _, _, err := testCompact(path).compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + compactingSuffix); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the copy a killed compact left is still there: %v", err)
	}
}

// TestCompactsLeftoverGoesWithTheNextRun: the copy a compact killed before
// its rename left is removed by the next run's open too.
func TestCompactsLeftoverGoesWithTheNextRun(t *testing.T) {
	path, _, _ := carryFixture(t)
	if err := os.WriteFile(path+compactingSuffix, []byte("a copy a kill left"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := os.Stat(path + compactingSuffix); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the copy a killed compact left is still there: %v", err)
	}
}
