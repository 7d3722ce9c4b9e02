//go:build linux

package main

import (
	"fmt"
	"optsync/fixtures/testkit"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// failStateWrites makes every later write to the state file fail, at the
// file level, in this process: the descriptor bbolt holds is found in
// /proc/self/fd and a read-only descriptor of the same file put in its
// place, so bbolt's writes get EBADF as from a failing disk.
func failStateWrites(t *testing.T, statePath string) {
	t.Helper()
	want, err := filepath.EvalSymlinks(statePath)
	if err != nil {
		t.Error(err)
		return
	}
	fds, _ := os.ReadDir("/proc/self/fd")
	hit := 0
	for _, e := range fds {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err != nil || target != want {
			continue
		}
		var fd int
		fmt.Sscan(e.Name(), &fd)
		ro, err := os.Open(want)
		if err != nil {
			t.Error(err)
			return
		}
		if err := syscall.Dup3(int(ro.Fd()), fd, syscall.O_CLOEXEC); err != nil {
			t.Error(err)
		}
		ro.Close()
		hit++
	}
	if hit == 0 {
		t.Errorf("no descriptor of %s is open", want)
	}
}

// uncommittedScenario: six contacts whose two sides differ, a write each
// into one of the update files, in drops.
func uncommittedScenario(t *testing.T) *project {
	t.Helper()
	p := newProject(t, fmt.Sprintf(dropConfig, ""))
	var cs, ps []string
	for i := 1; i <= 6; i++ {
		id := testkit.GUID(i)
		// odd: Dynamics newer and opted out; even: Campaign newer and opted out
		cs = append(cs, fmt.Sprintf("%s,2026-11-20T1%d:00:00Z,%v,false", id, i%2, i%2 == 1))
		ps = append(ps, fmt.Sprintf("@p%d,%s,2026-11-20 10:30:00.000Z,%v,false", i, id, i%2 == 0))
	}
	testkit.WriteFile(t, p.path("drops/d365/1.csv"), testkit.Contacts2(cs...))
	testkit.WriteFile(t, p.path("drops/campaign/1.csv"), testkit.Profiles2(ps...))
	return p
}

func outNames(t *testing.T, p *project) []string {
	t.Helper()
	entries, err := os.ReadDir(p.path("out"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// updateRows is every row of a run's update files, by file kind and key.
func updateRows(t *testing.T, p *project, runID string) []string {
	t.Helper()
	var out []string
	for _, kind := range []string{"d365-updates", "campaign-updates"} {
		if _, err := os.Stat(p.path("out/" + kind + "-" + runID + ".csv")); err != nil {
			continue
		}
		for _, r := range p.out(t, kind, runID) {
			out = append(out, kind+" "+fmt.Sprint(r))
		}
	}
	slices.Sort(out)
	return out
}

// A run whose state writes fail after it wrote its files leaves no update
// file that looks finished: they keep names that say their run did not
// commit (…-uncommitted.csv), the state file opens as the last commit left
// it, and the next run reports them, places under the final name the rows
// of the contacts that did commit (their writes are nowhere else) and
// decides the others again. Together the two runs write exactly what an
// uninterrupted run writes.
func TestFailedCommitLeavesNoImportableUpdateFile(t *testing.T) {
	ref := uncommittedScenario(t)
	rr := ref.run(t)
	want := updateRows(t, ref, rr.runID)
	if len(want) != 6 {
		t.Fatalf("the reference run wrote %v", want)
	}

	p := uncommittedScenario(t)
	h := hooks{commitChunk: 2, afterChunk: func(n int) {
		if n == 1 {
			failStateWrites(t, p.path("optsync.db"))
		}
	}}
	r := p.cliWith(t, h, "run")
	if r.code != exitFailure || !strings.Contains(r.stderr, "-uncommitted.csv") || !strings.Contains(r.stderr, "bad file descriptor") {
		t.Fatalf("the run whose commit failed: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	failed := ""
	for _, name := range outNames(t, p) {
		if strings.HasPrefix(name, "d365-updates-") || strings.HasPrefix(name, "campaign-updates-") || strings.HasPrefix(name, "audit-") {
			if !strings.HasSuffix(name, "-uncommitted.csv") {
				t.Fatalf("the failed run left %s, a file that looks finished", name)
			}
			failed = strings.TrimSuffix(strings.SplitN(name, "-", 3)[2], "-uncommitted.csv")
			if strings.HasPrefix(name, "audit-") {
				failed = strings.TrimSuffix(strings.TrimPrefix(name, "audit-"), "-uncommitted.csv")
			}
		}
	}
	if failed == "" {
		t.Fatalf("no file of the failed run: %v", outNames(t, p))
	}
	// The state file opens, for readers too, as the first transaction left it.
	if rr := p.cli(t, "runs", "--format", "json"); rr.code != 0 {
		t.Fatalf("runs after the failed commit: exit %d\n%s", rr.code, rr.stderr)
	}
	checkTotalsPairs(t, p, 2)

	next := p.run(t)
	if !strings.Contains(next.stderr, "a run did not commit its decisions") || !strings.Contains(next.stderr, failed) {
		t.Fatalf("the next run does not report the uncommitted files:\n%s", next.stderr)
	}
	recovered, again := updateRows(t, p, failed), updateRows(t, p, next.runID)
	if len(recovered) == 0 || len(again) == 0 {
		t.Fatalf("the rows committed (%v) and those decided again (%v)", recovered, again)
	}
	if got := slices.Sorted(slices.Values(append(slices.Clone(recovered), again...))); !slices.Equal(got, want) {
		t.Fatalf("the recovered file and the next run's together:\n%v\nwant what an uninterrupted run writes:\n%v", got, want)
	}
	for _, name := range outNames(t, p) {
		if strings.Contains(name, "-updates-") && strings.HasSuffix(name, "-uncommitted.csv") && !strings.Contains(name, failed) {
			t.Fatalf("%s: the next run's files are final", name)
		}
	}
	checkTotalsPairs(t, p, 2)
	// Recovered once: the run after says nothing more of it.
	if again := p.run(t); strings.Contains(again.stderr, "a run did not commit its decisions") {
		t.Fatalf("the recovery was made twice:\n%s", again.stderr)
	}
}

// A run killed after its last transaction committed, before it named its
// files, has them named by the next run: state holds all of its decisions.
func TestCommittedRunFilesNamedByTheNextRun(t *testing.T) {
	p := uncommittedScenario(t)
	_, _, stderr, signaled := helperProcessEnv(t, []string{"OPTSYNC_HELPER_CHUNK=1000"}, "kill-after-first-chunk", "--config", p.config, "run")
	if !signaled {
		t.Fatalf("the run was meant to be killed after its commit:\n%s", stderr)
	}
	var killed string
	for _, name := range outNames(t, p) {
		if strings.HasPrefix(name, "d365-updates-") {
			if !strings.HasSuffix(name, "-uncommitted.csv") {
				t.Fatalf("%s looks finished before its run named it", name)
			}
			killed = strings.TrimSuffix(strings.TrimPrefix(name, "d365-updates-"), "-uncommitted.csv")
		}
	}
	r := p.run(t)
	if !strings.Contains(r.stderr, "now carry their final names") {
		t.Fatalf("the next run does not name them:\n%s", r.stderr)
	}
	if rows := updateRows(t, p, killed); len(rows) != 6 {
		t.Fatalf("the killed run's update files: %v", rows)
	}
	for _, name := range outNames(t, p) {
		if strings.HasSuffix(name, "-uncommitted.csv") {
			t.Fatalf("%s is left", name)
		}
	}
}
