package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"optsync/extract"
	"optsync/state"
	"optsync/transform"
)

// TestHelperProcess is not a test: the tests below start the test binary
// again as an optsync process, optionally one that kills itself at a chosen
// point the way an operator's kill -9 would.
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv("OPTSYNC_HELPER")
	if mode == "" {
		t.Skip("helper process only")
	}
	var h hooks
	switch mode {
	case "kill-before-commit":
		h.beforeCommit = func() { _ = syscall.Kill(os.Getpid(), syscall.SIGKILL); select {} }
	case "sigterm-while-deciding":
		// A real SIGTERM through main's handler; waiting for the context
		// it cancels makes the point of arrival exact without a sleep.
		h.afterDecide = func(ctx context.Context) {
			_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
			<-ctx.Done()
		}
	}
	ctx, stop := withSignals(context.Background())
	defer stop()
	args := append([]string{"optsync"}, strings.Split(os.Getenv("OPTSYNC_HELPER_ARGS"), "\x1f")...)
	code := run(ctx, args, os.Stdout, os.Stderr, h)
	stop()
	os.Exit(code)
}

func helperProcess(t *testing.T, mode string, args ...string) (code int, stdout, stderr string, signaled bool) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), "OPTSYNC_HELPER="+mode, "OPTSYNC_HELPER_ARGS="+strings.Join(args, "\x1f"))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		ws := ee.Sys().(syscall.WaitStatus)
		return ee.ExitCode(), out.String(), errb.String(), ws.Signaled()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, out.String(), errb.String(), false
}

func TestSecondRunOnLockedStateExits75(t *testing.T) {
	p := newProject(t, "direction: bidirectional\nmappings:\n  - d365: donotemail\n    campaign: blackListEmail\nstate: optsync.db\nd365:\n  csv: d365.csv\ncampaign:\n  csv: campaign.csv\n")
	writeFile(t, p.path("d365.csv"), contactsCSV())
	writeFile(t, p.path("campaign.csv"), profilesCSV())
	holder, err := state.Open(p.path("optsync.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	for _, cmd := range []string{"backfill", "runs"} {
		code, _, stderr, _ := helperProcess(t, "plain", "--log-format", "console", "--config", p.config, cmd)
		if code != exitLocked {
			t.Fatalf("%s: exit %d, want 75\n%s", cmd, code, stderr)
		}
		if !strings.Contains(stderr, "pid "+strconv.Itoa(os.Getpid())) || !strings.Contains(stderr, "started ") {
			t.Fatalf("%s: message does not name the holder's pid and start time:\n%s", cmd, stderr)
		}
	}
}

// killScenario builds inputs where both directions write and a snapshot
// from an earlier backfill matters.
func killScenario(t *testing.T) *project {
	p := newProject(t, fmt.Sprintf(onePairConfig, "bidirectional", "newest"))
	writeFile(t, p.path("d365.csv"), contactsCSV(
		"00000000-0000-0000-0000-000000000001,2026-11-20T10:00:00Z,true",
		"00000000-0000-0000-0000-000000000002,2026-11-20T10:00:00Z,false",
		"00000000-0000-0000-0000-000000000003,2026-11-20T10:00:00Z,false",
		"00000000-0000-0000-0000-000000000004,2026-11-20T08:00:00Z,false",
	))
	writeFile(t, p.path("campaign.csv"), profilesCSV(
		"@p1,00000000-0000-0000-0000-000000000001,2026-11-20 09:00:00.000Z,false",
		"@p2,00000000-0000-0000-0000-000000000002,2026-11-20 11:00:00.000Z,true",
		"@p3,00000000-0000-0000-0000-000000000003,2026-11-20 09:00:00.000Z,false",
		"@p4,00000000-0000-0000-0000-000000000004,2026-11-20 09:00:00.000Z,true",
	))
	return p
}

// dumpState reads every snapshot of a state file.
func dumpState(t *testing.T, path string) map[extract.ID]transform.Snapshot {
	t.Helper()
	pairs := []transform.Pair{{D365: "donotemail", Campaign: "blackListEmail"}}
	st, err := state.OpenReadOnly(path, pairs)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r, err := st.Reader()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got := map[extract.ID]transform.Snapshot{}
	for i := 1; i <= 4; i++ {
		id, _ := extract.ParseID("00000000-0000-0000-0000-00000000000" + strconv.Itoa(i))
		var s transform.Snapshot
		if ok, err := r.Get(id, &s); err != nil {
			t.Fatal(err)
		} else if ok {
			got[id] = s
		}
	}
	return got
}

// stable drops the columns that name the run.
func stable(rows []map[string]string) []map[string]string {
	for _, r := range rows {
		delete(r, "run_id")
		delete(r, "decided_at")
	}
	return rows
}

func TestKilledBeforeCommitNextRunCompletes(t *testing.T) {
	// Uninterrupted reference.
	ref := killScenario(t)
	rr := ref.backfill(t)
	if rr.code != 0 {
		t.Fatalf("reference: exit %d %s", rr.code, rr.stderr)
	}

	p := killScenario(t)
	_, _, stderr, signaled := helperProcess(t, "kill-before-commit", "--config", p.config, "backfill")
	if !signaled {
		t.Fatalf("the helper was meant to die by SIGKILL before committing; stderr:\n%s", stderr)
	}
	if got := dumpState(t, p.path("optsync.db")); len(got) != 0 {
		t.Fatalf("a run killed before its commit left %d snapshots", len(got))
	}
	r := p.backfill(t)
	if r.code != 0 {
		t.Fatalf("run after kill: exit %d %s", r.code, r.stderr)
	}
	for _, kind := range []string{"audit", "d365-updates", "campaign-updates"} {
		want, got := stable(ref.out(t, kind, rr.runID)), stable(p.out(t, kind, r.runID))
		if len(want) == 0 || !equalRows(want, got) {
			t.Errorf("%s after kill differs from the uninterrupted run:\nwant %v\ngot  %v", kind, want, got)
		}
	}
	want, got := dumpState(t, ref.path("optsync.db")), dumpState(t, p.path("optsync.db"))
	if len(want) != 4 || len(got) != len(want) {
		t.Fatalf("state: want %d snapshots, got %d", len(want), len(got))
	}
	for id, s := range want {
		// Decided is the second each run committed; the rest must match.
		g := got[id]
		if g.Decided == 0 || s.Decided == 0 {
			t.Errorf("state of %s has no decision time", id)
		}
		g.Decided, s.Decided = 0, 0
		// So is when each pending write was made (its run's start).
		for i := range g.Pairs {
			for _, ps := range []*transform.PairState{&g.Pairs[i], &s.Pairs[i]} {
				if (ps.DWritten.Known() != (ps.DWrittenAt != 0)) || (ps.CWritten.Known() != (ps.CWrittenAt != 0)) {
					t.Errorf("state of %s: a pending write without its run, or a run without a write: %+v", id, *ps)
				}
				ps.DWrittenAt, ps.CWrittenAt = 0, 0
			}
		}
		if g != s {
			t.Errorf("state of %s: want %+v, got %+v", id, s, g)
		}
	}
	// The killed run is on record as interrupted.
	r = runCLI(t, "--config", p.config, "runs")
	if !strings.Contains(r.stdout, "interrupted") {
		t.Errorf("runs does not show the killed run as interrupted:\n%s", r.stdout)
	}
	// And a third run over the same exports writes nothing.
	r = p.backfill(t)
	if rows := p.out(t, "audit", r.runID); len(rows) != 0 {
		t.Errorf("a repeat after recovery wrote %v", rows)
	}
}

func equalRows(a, b []map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if len(a[i]) != len(b[i]) {
			return false
		}
		for k, v := range a[i] {
			if b[i][k] != v {
				return false
			}
		}
	}
	return true
}
