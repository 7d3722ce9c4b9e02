package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"optsync/fixtures/testkit"
)

// spillProject is the demo (its messy exports: bad rows, duplicates,
// superseded rows, relinked profiles) in a folder of its own, with its
// spill files in tmp_dir tmp.
func spillProject(t *testing.T) *project {
	t.Helper()
	p := &project{dir: t.TempDir()}
	for _, name := range []string{"d365_contacts.csv", "campaign_profiles.csv"} {
		copyFile(t, filepath.Join("fixtures", "demo", name), p.path(name))
	}
	cfg, err := os.ReadFile(filepath.Join("fixtures", "demo", "optsync.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	p.config = p.path("optsync.yaml")
	testkit.WriteFile(t, p.config, string(cfg)+"\ntmp_dir: tmp\n")
	return p
}

var (
	spilledRuns = regexp.MustCompile(`"sorted_runs_on_disk":(\d+)`)
	summaryTook = regexp.MustCompile(` (took|pending_oldest)=\S+`)
	runIDParts  = regexp.MustCompile(`^(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z-[0-9a-f]+$`)
)

// spillStep runs one command in a process of its own (with a budget of a
// few KB when budget is set) and returns what it wrote, with the folder,
// the run ids and start times so far (repl, added to) replaced by
// placeholders: the summary line, the audit, update and rejects files, and
// state as `state export` shows it.
func spillStep(t *testing.T, p *project, budget string, repl *[]string, args ...string) (out map[string]string, spilled int) {
	t.Helper()
	var env []string
	if budget != "" {
		env = []string{"OPTSYNC_HELPER_BUDGET=" + budget}
	}
	code, stdout, stderr, _ := helperProcessEnv(t, env, "none", append([]string{"--config", p.config, "--log-level", "info"}, args...)...)
	if code != 0 {
		t.Fatalf("%v: exit %d\n%s%s", args, code, stdout, stderr)
	}
	for _, m := range spilledRuns.FindAllStringSubmatch(stderr, -1) {
		n, _ := strconv.Atoi(m[1])
		spilled += n
	}
	m := runIDInSummary.FindStringSubmatch(stdout)
	if m == nil {
		t.Fatalf("no run id in %q", stdout)
	}
	id := m[1]
	ts := runIDParts.FindStringSubmatch(id)
	start := ts[1] + "-" + ts[2] + "-" + ts[3] + "T" + ts[4] + ":" + ts[5] + ":" + ts[6] + "Z"
	if len(*repl) == 0 {
		*repl = append(*repl, p.dir, "DIR")
	}
	step := strconv.Itoa(len(*repl) / 4)
	// Start times are whole seconds: two runs may share one, in one
	// project and not in the other, so every start reads START (the run
	// ids, distinct, tell the runs apart).
	*repl = append(*repl, id, "RUN"+step, start, "START")
	norm := strings.NewReplacer(*repl...).Replace
	out = map[string]string{"summary": norm(summaryTook.ReplaceAllString(stdout, ""))}
	for _, kind := range []string{"audit", "d365-updates", "campaign-updates", "rejects"} {
		b, err := os.ReadFile(p.path(filepath.Join("out", kind+"-"+id+".csv")))
		if err != nil {
			t.Fatal(err)
		}
		out[kind] = norm(string(b))
	}
	r := runCLI(t, "--config", p.config, "state", "export")
	if r.code != 0 {
		t.Fatalf("state export: %d %s", r.code, r.stderr)
	}
	out["state"] = norm(r.stdout)
	return out, spilled
}

// spillSteps are a first backfill, a repeat backfill over its state and a
// run reading the same exports as changes (through the indexes).
var spillSteps = [][]string{{"backfill", "--allow-mass-optin"}, {"backfill"}, {"run"}}

// TestSpillingMatchesInMemory: the same inputs decided with everything in
// memory and with a budget so small that every sorter spills every few
// records (external merge sort) give the same files and the same state,
// byte for byte, in backfills and in a run; and no spill file is left.
func TestSpillingMatchesInMemory(t *testing.T) {
	inMemory, spilling := spillProject(t), spillProject(t)
	var replM, replS []string
	for _, args := range spillSteps {
		want, n := spillStep(t, inMemory, "", &replM, args...)
		if n != 0 {
			t.Fatalf("%v: the default budget spilled %d runs", args, n)
		}
		got, n := spillStep(t, spilling, "4096", &replS, args...)
		if n < 10 {
			t.Fatalf("%v: a budget of 4 KB spilled %d runs, want many", args, n)
		}
		for k := range want {
			if got[k] != want[k] {
				t.Errorf("%v: %s differs when spilling:\n%s", args, k, firstLineDiff(want[k], got[k]))
			}
		}
	}
	if left, _ := os.ReadDir(spilling.path("tmp")); len(left) > 0 {
		t.Fatalf("files left in tmp_dir: %v", left)
	}
}

func firstLineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := range max(len(w), len(g)) {
		var a, b string
		if i < len(w) {
			a = w[i]
		}
		if i < len(g) {
			b = g[i]
		}
		if a != b {
			return "line " + strconv.Itoa(i+1) + ":\n  want " + a + "\n  got  " + b
		}
	}
	return ""
}

// TestSpillingBackfillKilled: a backfill killed (SIGKILL) while it holds
// sorted runs on disk leaves no file behind in tmp_dir, and the next
// backfill ends as one never interrupted does.
func TestSpillingBackfillKilled(t *testing.T) {
	t.Setenv("OPTSYNC_HELPER_BUDGET", "4096")
	killed, clean := spillProject(t), spillProject(t)
	h := startHelper(t, "pause-after-decide", "--config", killed.config, "backfill", "--allow-mass-optin")
	if !h.waitPaused() {
		t.Fatalf("the backfill ended before it paused:\n%s", h.stderr.String())
	}
	// Paused with its sorted runs open: files without a name in tmp_dir.
	fds, err := os.ReadDir("/proc/" + strconv.Itoa(h.cmd.Process.Pid) + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	open := 0
	for _, fd := range fds {
		if target, err := os.Readlink("/proc/" + strconv.Itoa(h.cmd.Process.Pid) + "/fd/" + fd.Name()); err == nil && strings.HasPrefix(target, killed.path("tmp")) {
			open++
		}
	}
	if open == 0 {
		t.Fatal("the paused backfill holds no spill file in tmp_dir: nothing spilled")
	}
	if left, _ := os.ReadDir(killed.path("tmp")); len(left) > 0 {
		t.Fatalf("spill files with a name in tmp_dir while the run holds them: %v", left)
	}
	if err := h.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := h.cmd.Wait(); err == nil {
		t.Fatal("the backfill was not killed")
	}
	if left, _ := os.ReadDir(killed.path("tmp")); len(left) > 0 {
		t.Fatalf("files left in tmp_dir after the kill: %v", left)
	}
	// The next backfill, and the same one never interrupted.
	var replK, replC []string
	got, _ := spillStep(t, killed, "4096", &replK, spillSteps[0]...)
	want, _ := spillStep(t, clean, "4096", &replC, spillSteps[0]...)
	for k := range want {
		if got[k] != want[k] {
			t.Errorf("%s differs after the kill:\n%s", k, firstLineDiff(want[k], got[k]))
		}
	}
	if left, _ := os.ReadDir(killed.path("tmp")); len(left) > 0 {
		t.Fatalf("files left in tmp_dir: %v", left)
	}
}
