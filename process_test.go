package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"optsync/extract"
	"optsync/fixtures/testkit"
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
	// A budget of a few KB: every sorter spills every few records.
	h.memoryBudget, _ = strconv.ParseInt(os.Getenv("OPTSYNC_HELPER_BUDGET"), 10, 64)
	switch mode {
	case "kill-before-commit":
		h.beforeCommit = func() { _ = syscall.Kill(os.Getpid(), syscall.SIGKILL); select {} }
	case "kill-after-decide": // its files are still under temporary names
		h.afterDecide = func(context.Context) { _ = syscall.Kill(os.Getpid(), syscall.SIGKILL); select {} }
	case "pause-after-decide":
		// Tell the test the run is paused mid-run, holding the state, and
		// wait for it to close stdin: as long as the test needs, no sleep.
		h.afterDecide = func(context.Context) {
			fmt.Fprintln(os.Stdout, pausedLine)
			_, _ = io.Copy(io.Discard, os.Stdin)
		}
	case "kill-after-first-chunk":
		// OPTSYNC_HELPER_KILL_AT, when set, names the chunk after which
		// the run is killed instead of the first.
		h.commitChunk, _ = strconv.Atoi(os.Getenv("OPTSYNC_HELPER_CHUNK"))
		at, err := strconv.Atoi(os.Getenv("OPTSYNC_HELPER_KILL_AT"))
		if err != nil {
			at = 1
		}
		h.afterChunk = func(n int) {
			if n == at {
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {}
			}
		}
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
	code := mainWith(ctx, h, args)
	stop()
	os.Exit(code)
}

func helperProcess(t *testing.T, mode string, args ...string) (code int, stdout, stderr string, signaled bool) {
	t.Helper()
	return helperProcessEnv(t, nil, mode, args...)
}

func helperProcessEnv(t *testing.T, env []string, mode string, args ...string) (code int, stdout, stderr string, signaled bool) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), "OPTSYNC_HELPER="+mode, "OPTSYNC_HELPER_ARGS="+strings.Join(args, "\x1f"))
	cmd.Env = append(cmd.Env, env...)
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

const pausedLine = "optsync-test: paused after deciding"

// helper is a helper process the test talks to while it runs.
type helper struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *bufio.Reader
	stderr bytes.Buffer
}

func startHelper(t *testing.T, mode string, args ...string) *helper {
	t.Helper()
	h := &helper{cmd: exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")}
	h.cmd.Env = append(os.Environ(), "OPTSYNC_HELPER="+mode, "OPTSYNC_HELPER_ARGS="+strings.Join(args, "\x1f"))
	var err error
	if h.stdin, err = h.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := h.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	h.stdout = bufio.NewReader(out)
	h.cmd.Stderr = &h.stderr
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.stdin.Close()
		_ = h.cmd.Process.Kill()
		_ = h.cmd.Wait()
	})
	return h
}

// waitPaused reads the helper's stdout up to the line it prints when it
// pauses; false when it ended first.
func (h *helper) waitPaused() bool {
	for {
		line, err := h.stdout.ReadString('\n')
		if strings.TrimSpace(line) == pausedLine {
			return true
		}
		if err != nil {
			return false
		}
	}
}

// finish lets a paused helper go on and returns its exit code and output.
func (h *helper) finish(t *testing.T) (int, string) {
	t.Helper()
	h.stdin.Close()
	rest, _ := io.ReadAll(h.stdout)
	err := h.cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), string(rest)
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, string(rest)
}

func TestSecondRunOnLockedStateExits75(t *testing.T) {
	p := newProject(t, "direction: bidirectional\nmappings:\n  - d365: donotemail\n    campaign: blackListEmail\nstate: optsync.db\nd365:\n  csv: d365.csv\ncampaign:\n  csv: campaign.csv\n")
	testkit.WriteFile(t, p.path("d365.csv"), testkit.Contacts())
	testkit.WriteFile(t, p.path("campaign.csv"), testkit.Profiles())
	holder, err := state.Open(p.path("optsync.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	if err := holder.Share(); err != nil { // as a run does while it decides
		t.Fatal(err)
	}
	for _, cmd := range [][]string{{"backfill"}, {"run"}, {"state", "reset"}, {"state", "compact"}} {
		code, _, stderr, _ := helperProcess(t, "plain", append([]string{"--log-format", "console", "--config", p.config}, cmd...)...)
		if code != exitLocked {
			t.Fatalf("%s: exit %d, want 75\n%s", cmd, code, stderr)
		}
		if !strings.Contains(stderr, "pid "+strconv.Itoa(os.Getpid())) || !strings.Contains(stderr, "started ") {
			t.Fatalf("%s: message does not name the holder's pid and start time:\n%s", cmd, stderr)
		}
	}
	// Readers answer, from the last commit, and say a run holds the state.
	code, _, stderr, _ := helperProcess(t, "plain", "--log-format", "console", "--config", p.config, "runs")
	if code != 0 || !strings.Contains(stderr, "a run has held the state since") || !strings.Contains(stderr, "pid "+strconv.Itoa(os.Getpid())) ||
		!strings.Contains(stderr, "showing state as of its last commit") {
		t.Fatalf("runs while a run holds the state: exit %d\n%s", code, stderr)
	}
}

// TestConcurrentStartsAllNameTheHolder starts 20 runs at once against an
// existing state: one proceeds (and pauses, holding the state), and every
// other refuses with exit 75 naming that one's pid, host and start time.
func TestConcurrentStartsAllNameTheHolder(t *testing.T) {
	p := newProject(t, fmt.Sprintf(onePairConfig, "bidirectional", "newest"))
	testkit.WriteFile(t, p.path("d365.csv"), testkit.Contacts("00000000-0000-0000-0000-000000000001,2026-11-20T10:00:00Z,true"))
	testkit.WriteFile(t, p.path("campaign.csv"), campaignOptOuts("2026-11-20 09:00:00.000Z", 1))
	if r := p.backfill(t); r.code != 0 {
		t.Fatalf("first backfill: exit %d %s", r.code, r.stderr)
	}
	const n = 20
	hs := make([]*helper, n)
	for i := range hs {
		hs[i] = startHelper(t, "pause-after-decide", "--log-format", "console", "--config", p.config, "backfill")
	}
	type result struct {
		i      int
		paused bool
	}
	results := make(chan result, n)
	for i, h := range hs {
		go func() { results <- result{i, h.waitPaused()} }()
	}
	var holder *helper
	var refused []*helper
	for range n {
		r := <-results
		if r.paused {
			if holder != nil {
				t.Fatal("two runs got the state at once")
			}
			holder = hs[r.i]
		} else {
			refused = append(refused, hs[r.i])
		}
	}
	if holder == nil {
		t.Fatal("no run got the state")
	}
	want := fmt.Sprintf("pid %d on ", holder.cmd.Process.Pid)
	for _, h := range refused {
		code, _ := h.finish(t)
		if code != exitLocked || !strings.Contains(h.stderr.String(), want) || !strings.Contains(h.stderr.String(), ", started 20") {
			t.Errorf("a refused run (exit %d) does not name the holder (%s…):\n%s", code, want, h.stderr.String())
		}
	}
	if code, _ := holder.finish(t); code != 0 {
		t.Fatalf("the holder: exit %d\n%s", code, holder.stderr.String())
	}
}

// TestReadersAnswerWhileARunIsPausedMidDecide: with a run paused after its
// decisions, runs, audit and state export answer from the last commit and
// say a run holds the state; a second run and a state reset exit 75; the
// paused run then finishes as usual.
func TestReadersAnswerWhileARunIsPausedMidDecide(t *testing.T) {
	p := newProject(t, fmt.Sprintf(dropConfig, ""))
	night1(t, p)
	first := p.run(t)
	testkit.WriteFile(t, p.path("drops/d365/2026-11-28.csv"), testkit.Contacts2(guid3+",2026-11-28T01:00:00Z,true,false"))
	h := startHelper(t, "pause-after-decide", "--config", p.config, "run")
	if !h.waitPaused() {
		code, out := h.finish(t)
		t.Fatalf("the run did not pause: exit %d\n%s%s", code, out, h.stderr.String())
	}
	r := p.cli(t, "runs")
	if r.code != 0 || !strings.Contains(r.stdout, first.runID) || !strings.Contains(r.stdout, "running") ||
		!strings.Contains(r.stderr, "a run has held the state since") || !strings.Contains(r.stderr, fmt.Sprintf("pid %d", h.cmd.Process.Pid)) {
		t.Fatalf("runs while a run is paused: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := p.cli(t, "audit", "--contact", guid2); r.code != 0 || !strings.Contains(r.stdout, "conflict-d365-newer") ||
		!strings.Contains(r.stdout, "a run (pid") {
		t.Fatalf("audit while a run is paused: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := p.cli(t, "state", "export", "--contact", guid3); r.code != 0 || strings.Count(r.stdout, "\n") != 3 ||
		strings.Contains(r.stdout, "2026-11-28T01:00:00Z") {
		t.Fatalf("state export (of the last commit) while a run is paused: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, cmd := range [][]string{{"run"}, {"backfill"}, {"state", "reset"}} {
		if r := p.cli(t, cmd...); r.code != exitLocked {
			t.Fatalf("%s while a run holds the state: exit %d\n%s", cmd, r.code, r.stderr)
		}
	}
	code, out := h.finish(t)
	if code != 0 || !strings.Contains(out, "d365->campaign=1") {
		t.Fatalf("the paused run: exit %d\n%s%s", code, out, h.stderr.String())
	}
	if r := p.cli(t, "state", "export", "--contact", guid3); !strings.Contains(r.stdout, "2026-11-28T01:00:00Z") {
		t.Fatalf("state export after the run:\n%s", r.stdout)
	}
}

// killScenario builds inputs where both directions write and a snapshot
// from an earlier backfill matters.
func killScenario(t *testing.T) *project {
	p := newProject(t, fmt.Sprintf(onePairConfig, "bidirectional", "newest"))
	testkit.WriteFile(t, p.path("d365.csv"), testkit.Contacts(
		"00000000-0000-0000-0000-000000000001,2026-11-20T10:00:00Z,true",
		"00000000-0000-0000-0000-000000000002,2026-11-20T10:00:00Z,false",
		"00000000-0000-0000-0000-000000000003,2026-11-20T10:00:00Z,false",
		"00000000-0000-0000-0000-000000000004,2026-11-20T08:00:00Z,false",
	))
	testkit.WriteFile(t, p.path("campaign.csv"), testkit.Profiles(
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
	// Before any run comes, runs already tells the killed run over.
	if r := p.cli(t, "runs", "--format", "json"); r.code != 0 || !strings.Contains(r.stdout, `"outcome": "interrupted"`) ||
		strings.Contains(r.stdout, `"outcome": "running"`) {
		t.Fatalf("runs right after the kill: exit %d\n%s%s", r.code, r.stdout, r.stderr)
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
	r = p.cli(t, "runs")
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
