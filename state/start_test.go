package state

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"optsync/extract"
	"optsync/load"
	"optsync/transform"
)

// A run's outcome is named after the exit code it ends with.
func TestRunEnd(t *testing.T) {
	for code, want := range map[int]string{0: "ok", 1: "error", 2: "error", 3: "failed-writes", 4: "safety-stop", 75: "error", 130: OutcomeInterrupted, 143: OutcomeInterrupted} {
		r := Run{Outcome: "running"}
		r.End(code, map[string]int{"x": 1})
		if r.Outcome != want || r.ExitCode != code || r.Ended.IsZero() || r.Counts["x"] != 1 {
			t.Errorf("code %d: %+v, want outcome %s", code, r, want)
		}
	}
}

// The final record queues the refused writes by the system that refused
// them, settles the queue read, keeps every connector's read position.
func TestEndingFinal(t *testing.T) {
	started := time.Date(2026, 12, 1, 2, 0, 0, 0, time.UTC)
	a, b, c := extract.ID{1}, extract.ID{2}, extract.ID{3}
	end := Ending{Run: &Run{ID: "r1", Started: started}, MappingAdded: true, Retention: 24 * time.Hour,
		Meta:   map[string]string{"d365": "delta", "campaign": "mark"},
		Queued: []RetryItem{{Contact: c}},
		Failed: map[extract.ID]load.Refused{a: {D365: "412", Campaign: "429", PKey: "@p"}, b: {Campaign: "500"}}}
	fin := end.Final()
	if !fin.ForgetReadPositions || fin.Meta["d365"] != "delta" || fin.Meta["campaign"] != "mark" ||
		len(fin.RetryDone) != 1 || fin.RetryDone[0] != c || !fin.PruneBefore.Equal(started.Add(-24*time.Hour)) {
		t.Fatalf("final: %+v", fin)
	}
	if len(fin.Retry) != 2 {
		t.Fatalf("retry: %+v", fin.Retry)
	}
	for _, it := range fin.Retry {
		want := map[extract.ID]string{a: "d365+campaign 412; 429", b: "campaign 500"}[it.Contact]
		if it.System+" "+it.Reason != want || it.RunID != "r1" || !it.Since.Equal(started) {
			t.Errorf("%v: %+v, want %s", it.Contact, it, want)
		}
	}
	if (&Ending{Run: &Run{}}).Final().PruneBefore != (time.Time{}) {
		t.Error("no retention prunes nothing")
	}
}

// A missing state file beside what earlier runs left is refused, unless
// the run starts over on purpose; another state file than out_dir's runs
// used is refused too.
func TestCheckKeptAndIdentity(t *testing.T) {
	dir := t.TempDir()
	path, out := filepath.Join(dir, "s.db"), filepath.Join(dir, "out")
	if err := CheckKept(path, out, false); err != nil {
		t.Fatalf("first run: %v", err)
	}
	if err := os.MkdirAll(out, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, "d365-updates-20261130T020000Z-abcdef.csv"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var lost *LostError
	if err := CheckKept(path, out, false); !errors.As(err, &lost) {
		t.Fatalf("lost state: %v", err)
	}
	if err := CheckKept(path, out, true); err != nil {
		t.Fatalf("--new-state: %v", err)
	}
	st, err := Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	KeepIdentity(st, out, zerolog.Nop())
	if err := CheckIdentity(st, out, false); err != nil {
		t.Fatalf("same state: %v", err)
	}
	other := filepath.Join(dir, "other")
	if err := os.MkdirAll(other, 0o700); err != nil {
		t.Fatal(err)
	}
	d, err := load.OutDir(other)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.WriteStateIdentity(load.StateIdentity{ID: "another", State: "x"}); err != nil {
		t.Fatal(err)
	}
	d.Close()
	if err := CheckIdentity(st, other, false); !errors.As(err, &lost) || !strings.Contains(err.Error(), "names another") {
		t.Fatalf("another state: %v", err)
	}
}

// Config changes since the last committed run are listed and logged; a
// removed mapping is reported, its snapshots kept until the commit.
func TestConfigChanges(t *testing.T) {
	st, err := Open(filepath.Join(t.TempDir(), "s.db"), testPairs)
	if err != nil {
		t.Fatal(err)
	}
	last := &ConfigRecord{Direction: "bidirectional", Policy: "newest", Pairs: testPairs}
	run := &Run{ID: "r1", Started: time.Now(), Outcome: "running"}
	if err := st.BeginRun(run); err != nil {
		t.Fatal(err)
	}
	if err := st.Commit(context.Background(), st.NewBatch(0), &Final{Run: run, Config: last}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	added := transform.Pair{D365: "donotphone", Campaign: "blackListPhone"}
	now := &ConfigRecord{Direction: "d365-to-campaign", Policy: "newest", Pairs: []transform.Pair{testPairs[0], added}}
	if st, err = Open(st.path, now.Pairs); err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var logged bytes.Buffer
	diff, err := st.ConfigChanges(now, zerolog.New(&logged))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"direction bidirectional → d365-to-campaign", "mapping added: donotphone ↔ blackListPhone",
		"mapping removed, its snapshots dropped with the run's commit: " + PairName(testPairs[1])}
	if !diff.MappingAdded || len(diff.Removed) != 1 || diff.Removed[0] != testPairs[1] || len(diff.Changes) != 3 {
		t.Fatalf("diff: %+v", diff)
	}
	for i, w := range want {
		if !strings.HasPrefix(diff.Changes[i], w) || !strings.Contains(logged.String(), w) {
			t.Errorf("change %d: %q, want %q (logged: %s)", i, diff.Changes[i], w, logged.String())
		}
	}
}

// state reset refuses a field no mapping has, naming the config, before
// it opens anything.
func TestResetUnknownField(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	err := Reset{Path: path, Rules: &transform.Rules{Pairs: testPairs}, Field: "nosuch", ConfigPath: "optsync.yaml"}.Run(context.Background(), nil)
	var qe *QueryError
	if !errors.As(err, &qe) || err.Error() != "--field nosuch: no mapping of that Dynamics field in optsync.yaml" {
		t.Fatalf("got %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("state file made: %v", err)
	}
}

// OpenRun: a plan without state gets none and makes none; a state file
// that is not out_dir's is refused and left unlocked for the next try.
func TestOpenRun(t *testing.T) {
	dir := t.TempDir()
	path, out := filepath.Join(dir, "s.db"), filepath.Join(dir, "out")
	st, _, err := OpenRun(path, out, testPairs, Plan, zerolog.Nop())
	if st != nil || err != nil {
		t.Fatalf("plan without state: %v, %v", st, err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a plan made the state file: %v", err)
	}
	if err := os.MkdirAll(out, 0o700); err != nil {
		t.Fatal(err)
	}
	d, err := load.OutDir(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.WriteStateIdentity(load.StateIdentity{ID: "another", State: "x"}); err != nil {
		t.Fatal(err)
	}
	d.Close()
	st, err = Open(path, testPairs) // made, with an identity of its own
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	var lost *LostError
	if _, _, err := OpenRun(path, out, testPairs, Incremental, zerolog.Nop()); !errors.As(err, &lost) {
		t.Fatalf("another state: %v", err)
	}
	st, aside, err := OpenRun(path, out, testPairs, NewState, zerolog.Nop())
	if err != nil || aside == "" {
		t.Fatalf("--new-state after a refusal: %v (aside %q)", err, aside)
	}
	defer st.Close()
	if kept, _, _ := load.ReadStateIdentity(out); kept.ID != st.ID() {
		t.Fatalf("out_dir names %s, the new state is %s", kept.ID, st.ID())
	}
}

// A run's open records it begun in its own transaction: one commit at the
// start of a run, not two (each writes the whole free list and syncs
// three times). A run the checks refuse leaves the file as it was.
func TestRunBegunByItsOpen(t *testing.T) {
	dir := t.TempDir()
	path, out := filepath.Join(dir, "s.db"), filepath.Join(dir, "out")
	st, err := Open(path, testPairs)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.BeginRun(&Run{ID: "old", Command: "run", Started: time.Now().Add(-time.Hour), Outcome: "running"}); err != nil {
		t.Fatal(err)
	}
	id := st.ID()
	st.Close()
	lastTx := func() int {
		t.Helper()
		r, err := OpenReadOnly(path, testPairs)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		var txid int
		_ = r.view(func(tx *bolt.Tx) error { txid = tx.ID(); return nil })
		return txid
	}
	outcomes := func() map[string]string {
		t.Helper()
		r, err := OpenReadOnly(path, testPairs)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		runs, err := r.Runs()
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		for _, run := range runs {
			m[run.ID] = run.Outcome
		}
		return m
	}
	if err := os.MkdirAll(out, 0o700); err != nil {
		t.Fatal(err)
	}
	identity := func(id string) {
		t.Helper()
		d, err := load.OutDir(out)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if err := d.WriteStateIdentity(load.StateIdentity{ID: id, State: path}); err != nil {
			t.Fatal(err)
		}
	}

	identity("another")
	before := lastTx()
	var lost *LostError
	if _, _, err := openRun(path, out, testPairs, Incremental, &Run{ID: "refused", Command: "run", Started: time.Now(), Outcome: "running"}, zerolog.Nop()); !errors.As(err, &lost) {
		t.Fatalf("another state's out_dir: %v", err)
	}
	if got := lastTx(); got != before {
		t.Fatalf("a refused run committed: transaction %d, was %d", got, before)
	}
	if got := outcomes(); len(got) != 1 || got["old"] != "running" {
		t.Fatalf("a refused run changed the history: %v", got)
	}

	identity(id)
	st, _, err = openRun(path, out, testPairs, Incremental, &Run{ID: "new", Command: "run", Started: time.Now(), Outcome: "running"}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if n := st.commits.Load(); n != 1 {
		t.Fatalf("the run's start made %d commits, want 1", n)
	}
	st.Close()
	if got := lastTx(); got != before+1 {
		t.Fatalf("last transaction %d, want %d", got, before+1)
	}
	if got := outcomes(); got["old"] != OutcomeInterrupted || got["new"] != "running" {
		t.Fatalf("history after the start: %v", got)
	}
	if c, ok := readCommitted(path); !ok || c.txid != uint64(before+1) || c.id != id {
		t.Fatalf("the record beside the state file: %+v (%v), want transaction %d of %s", c, ok, before+1, id)
	}
}
