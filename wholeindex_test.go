package main

import (
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"optsync/fixtures/testkit"
	"optsync/state"
)

// TestBackfillKilledBetweenChunks: a backfill commits its records a chunk
// per transaction and writes the PKey index whole, its keys beside each
// chunk of records (the rest after the last), marking it built with the
// run's last transaction. Killed after any transaction but the last, it
// leaves an index not marked built (never used: the next run builds it
// again) and totals a recount agrees with; the next backfill ends with the
// index a read of every record makes and the same state as a backfill never
// interrupted. Both ways round: a first backfill (about as many index keys
// as records; the keys end first) and one over a state where a few hundred
// contacts changed (far more keys than records: most go after them).
func TestBackfillKilledBetweenChunks(t *testing.T) {
	backfill := []string{"backfill", "--allow-mass-optin"}
	t.Run("first", func(t *testing.T) { killBetweenChunks(t, "1500", false, func(*project) {}) })
	t.Run("changed", func(t *testing.T) {
		// (A contact the killed run committed with a write pending that
		// the next backfill's exports do not show: as before this test,
		// its pending flag is not the one an uninterrupted run keeps,
		// so the pending columns are not compared here.)
		killBetweenChunks(t, "200", true, func(p *project) {
			if r := runCLI(t, append([]string{"--config", p.config}, backfill...)...); r.code != 0 {
				t.Fatalf("backfill: %d %s", r.code, r.stderr)
			}
			changeContacts(t, p.path("d365_contacts.csv"), 400)
		})
	})
}

// killBetweenChunks kills a backfill of the demo (after prepare) after its
// first, second, … transaction of chunk contacts, each in a project of its
// own, and checks what each kill leaves and what the next backfill makes
// of it.
func killBetweenChunks(t *testing.T, chunk string, noPending bool, prepare func(*project)) {
	backfill := []string{"backfill", "--allow-mass-optin"}
	clean := spillProject(t)
	prepare(clean)
	if r := runCLI(t, append([]string{"--config", clean.config}, backfill...)...); r.code != 0 {
		t.Fatalf("backfill: %d %s", r.code, r.stderr)
	}
	want := stateWithoutTimes(t, clean, noPending)
	checkIndexes(t, clean, true)
	killed := 0
	for at := 1; ; at++ {
		p := spillProject(t)
		prepare(p)
		_, _, _, signaled := helperProcessEnv(t, []string{"OPTSYNC_HELPER_CHUNK=" + chunk, "OPTSYNC_HELPER_KILL_AT=" + strconv.Itoa(at)},
			"kill-after-first-chunk", append([]string{"--config", p.config}, backfill...)...)
		if !signaled {
			break // fewer transactions than at
		}
		if checkIndexes(t, p, false) {
			// the run's last transaction: everything committed
			if got := stateWithoutTimes(t, p, noPending); got != want {
				t.Fatalf("killed after its last transaction, state differs:\n%s", firstLineDiff(want, got))
			}
			continue
		}
		killed++
		if r := runCLI(t, append([]string{"--config", p.config}, backfill...)...); r.code != 0 {
			t.Fatalf("the backfill after the kill after transaction %d: %d %s", at, r.code, r.stderr)
		}
		checkIndexes(t, p, true)
		if got := stateWithoutTimes(t, p, noPending); got != want {
			t.Fatalf("after a kill after transaction %d and the next backfill, state differs:\n%s", at, firstLineDiff(want, got))
		}
	}
	if killed < 2 {
		t.Fatalf("killed between chunks %d times: the backfill should take more transactions", killed)
	}
}

// changeContacts rewrites a Dynamics export: n of its plain rows (no
// quotes, every column) changed since: a later modifiedon, emails allowed
// where they were not and the other way round. The messy rows stay as
// they are.
func changeContacts(t *testing.T, path string, n int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	for i := 1; i < len(lines) && n > 0; i++ {
		f := strings.Split(lines[i], ",")
		if strings.Contains(lines[i], `"`) || len(f) != 10 {
			continue
		}
		f[2] = "2026-11-30 12:00:00"
		if f[5] == "Allow" {
			f[5] = "Do Not Allow"
		} else {
			f[5] = "Allow"
		}
		lines[i] = strings.Join(f, ",")
		n--
	}
	testkit.WriteFile(t, path, strings.Join(lines, "\n"))
}

// checkIndexes opens the project's state: its totals agree with a recount,
// and its indexes, when built, with every record; with built set they
// must be. It says whether they are built.
func checkIndexes(t *testing.T, p *project, built bool) bool {
	t.Helper()
	cfg, err := loadConfig(p.config)
	if err != nil {
		t.Fatal(err)
	}
	st, err := state.OpenReadOnly(cfg.State, cfg.transform.Rules.Pairs)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ready, err := st.IndexesReady()
	if err != nil {
		t.Fatal(err)
	}
	if built && !ready {
		t.Fatal("the indexes are not marked built")
	}
	if err := st.VerifyIndexes(); err != nil {
		t.Fatal(err)
	}
	kept, err := st.Totals()
	if err != nil {
		t.Fatal(err)
	}
	if full, err := st.Recount(); err != nil || !reflect.DeepEqual(kept, full) {
		t.Fatalf("kept totals %+v, a recount %+v (%v)", kept, full, err)
	}
	return ready
}

// stateWithoutTimes is `state export` without the columns that name when
// (agreed_since, last_decided): those of contacts a killed run committed
// name that run; with noPending, without the pending writes either.
func stateWithoutTimes(t *testing.T, p *project, noPending bool) string {
	t.Helper()
	r := runCLI(t, "--config", p.config, "state", "export")
	if r.code != 0 {
		t.Fatalf("state export: %d %s", r.code, r.stderr)
	}
	var b strings.Builder
	for _, line := range strings.Split(r.stdout, "\n") {
		f := strings.Split(line, ",")
		if len(f) > 12 {
			f[5], f[12] = "", ""
			if noPending {
				f[8], f[9] = "", ""
			}
		}
		b.WriteString(strings.Join(f, ",") + "\n")
	}
	return b.String()
}
