package main

// The root package's test kit: the one way its tests run optsync (in
// process, as main does) and lay out a project folder. What the tests of
// several packages share (ids, export shapes, CSV files) is
// fixtures/testkit; the simulators' projects are in kit_sims_test.go.

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"optsync/fixtures/testkit"
)

// cliResult is what one in-process invocation of the CLI left behind.
type cliResult struct {
	code           int
	stdout, stderr string
	runID          string
}

var runIDInSummary = regexp.MustCompile(`optsync \w+ (\d{8}T\d{6}Z-[0-9a-f]+):`)

// runCLI runs optsync exactly as main does, minus the process, with JSON
// logs.
func runCLI(t testing.TB, args ...string) cliResult {
	t.Helper()
	return runHooked(t, hooks{}, args...)
}

// runHooked is runCLI with the points a test stops or pauses the run at:
// the only way hooks reach a run.
func runHooked(t testing.TB, h hooks, args ...string) cliResult {
	t.Helper()
	return runAsGiven(t, h, append([]string{"--log-format", "json"}, args...)...)
}

// runAsGiven runs the command line as a user types it: the log format is
// the console's unless args choose one.
func runAsGiven(t testing.TB, h hooks, args ...string) cliResult {
	t.Helper()
	var out, errb bytes.Buffer
	code := cmdline{stdout: &out, stderr: &errb, hooks: h}.run(context.Background(), append([]string{"optsync"}, args...))
	r := cliResult{code: code, stdout: out.String(), stderr: errb.String()}
	if m := runIDInSummary.FindStringSubmatch(r.stdout); m != nil {
		r.runID = m[1]
	}
	return r
}

// mainWith is main with a stop point: the process's own streams and
// signals (ctx), for the helper process that process_test.go starts and
// kills.
func mainWith(ctx context.Context, h hooks, args []string) int {
	return cmdline{stdout: os.Stdout, stderr: os.Stderr, hooks: h}.run(ctx, args)
}

// project is a config plus inputs in a temporary folder.
type project struct {
	dir    string
	config string
}

func newProject(t testing.TB, config string) *project {
	t.Helper()
	p := &project{dir: t.TempDir()}
	p.config = filepath.Join(p.dir, "optsync.yaml")
	testkit.WriteFile(t, p.config, config)
	return p
}

func (p *project) path(name string) string { return filepath.Join(p.dir, name) }

// cli runs optsync with the project's config.
func (p *project) cli(t testing.TB, args ...string) cliResult {
	t.Helper()
	return runHooked(t, hooks{}, append([]string{"--config", p.config}, args...)...)
}

// cliWith is cli with hooks.
func (p *project) cliWith(t testing.TB, h hooks, args ...string) cliResult {
	t.Helper()
	return runHooked(t, h, append([]string{"--config", p.config}, args...)...)
}

func (p *project) backfill(t testing.TB, extra ...string) cliResult {
	t.Helper()
	return p.cli(t, append([]string{"backfill"}, extra...)...)
}

// run runs `optsync run` (extra after it) and fails the test unless it
// exits 0.
func (p *project) run(t testing.TB, extra ...string) cliResult {
	t.Helper()
	r := p.cli(t, append([]string{"run"}, extra...)...)
	if r.code != 0 {
		t.Fatalf("run: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	return r
}

// outcomes maps a contact's number (testkit.GUID's n) to "direction
// outcome error" of its audit row in run runID (one pair mapped).
func (p *project) outcomes(t testing.TB, runID string) map[int]string {
	t.Helper()
	out := map[int]string{}
	for _, a := range p.out(t, "audit", runID) {
		out[testkit.GUIDNumber(a["contact_id"])] = strings.TrimSpace(a["direction"] + " " + a["outcome"] + " " + a["error"])
	}
	return out
}

// out is the rows of one of a run's files in out/ (audit, rejects, …).
func (p *project) out(t testing.TB, kind, runID string) []map[string]string {
	t.Helper()
	_, rows := testkit.ReadCSV(t, p.path(filepath.Join("out", kind+"-"+runID+".csv")))
	return rows
}

const onePairConfig = `direction: %s
policy: %s
mappings:
  - d365: donotemail
    campaign: blackListEmail
state: optsync.db
out_dir: out
safety:
  max_optin: "100%%"
d365:
  csv: d365.csv
campaign:
  csv: campaign.csv
`
