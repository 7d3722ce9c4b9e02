package main

import (
	"bufio"
	"encoding/csv"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestCases runs every sequence in fixtures/scenarios/cases through the real
// CLI: each step writes its input files, runs optsync (backfill, run, plan
// …) and compares what the step left behind with the case's golden output.
// The format is described in fixtures/scenarios/README.md.
func TestCases(t *testing.T) {
	files, err := filepath.Glob("fixtures/scenarios/cases/*.txt")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no cases in fixtures/scenarios/cases")
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".txt")
		// Not in parallel: the CLI library keeps some state per process.
		t.Run(name, func(t *testing.T) { runCase(t, f) })
	}
}

// caseSection is one "-- name --" part of a case file.
type caseSection struct {
	name, body string
	line       int
}

func parseCase(t *testing.T, path string) []caseSection {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []caseSection
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	n := 0
	var cur *caseSection
	var body strings.Builder
	flush := func() {
		if cur != nil {
			cur.body = body.String()
			out = append(out, *cur)
		}
		body.Reset()
	}
	for sc.Scan() {
		n++
		line := sc.Text()
		if strings.HasPrefix(line, "-- ") && !strings.HasSuffix(line, " --") {
			t.Fatalf("%s:%d: a section line ends with \" --\"", path, n)
		}
		if strings.HasPrefix(line, "-- ") && strings.HasSuffix(line, " --") && len(line) > 6 {
			flush()
			cur = &caseSection{name: strings.TrimSpace(line[3 : len(line)-3]), line: n}
			continue
		}
		if cur != nil {
			body.WriteString(line + "\n")
		}
	}
	flush()
	return out
}

const caseConfig = `direction: bidirectional
policy: newest
mappings:
  - d365: donotemail
    campaign: blackListEmail
state: optsync.db
out_dir: out
safety:
  max_optin: "100%"
d365:
  csv: drops/d365
campaign:
  csv: drops/campaign
`

type caseStep struct {
	args []string
	line int
	res  cliResult
}

func runCase(t *testing.T, path string) {
	sections := parseCase(t, path)
	p := newProject(t, caseConfig)
	for _, dir := range []string{"drops/d365", "drops/campaign"} {
		if err := os.MkdirAll(p.path(dir), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	var steps []*caseStep
	var step *caseStep
	// subst puts the run ids of earlier steps where {run1}, {run2} … stand.
	subst := func(s string) string {
		for i, st := range steps {
			s = strings.ReplaceAll(s, fmt.Sprintf("{run%d}", i+1), st.res.runID)
		}
		return s
	}
	at := func(sec caseSection) string { return fmt.Sprintf("%s:%d", path, sec.line) }
	for _, sec := range sections {
		kind, arg, _ := strings.Cut(sec.name, " ")
		switch kind {
		case "config":
			writeFile(t, p.config, sec.body)
		case "file":
			content := sec.body
			if name, ok := strings.CutSuffix(arg, " (quoted)"); ok {
				var err error
				if content, err = strconv.Unquote(strings.TrimSpace(sec.body)); err != nil {
					t.Fatalf("%s: %v", at(sec), err)
				}
				arg = name
			}
			writeFile(t, p.path(arg), content)
		case "rm":
			if err := os.Remove(p.path(arg)); err != nil {
				t.Fatalf("%s: %v", at(sec), err)
			}
		case "step":
			step = &caseStep{args: strings.Fields(strings.ReplaceAll(arg, "{dir}", p.dir)), line: sec.line}
			// A backfill reads d365.csv and campaign.csv of the case folder
			// unless the step names other files.
			if slices.Contains(step.args, "backfill") && !slices.Contains(step.args, "--d365-csv") {
				step.args = append(step.args, "--d365-csv", p.path("d365.csv"), "--campaign-csv", p.path("campaign.csv"))
			}
			args := append([]string{"--config", p.config}, step.args...)
			step.res = runCLI(t, args...)
			steps = append(steps, step)
			if !slices.ContainsFunc(sections, func(s caseSection) bool {
				return s.name == "want exit" && s.line > sec.line && nextStep(sections, sec.line) > s.line
			}) && step.res.code != 0 {
				t.Fatalf("%s: %s: exit %d\n%s%s", at(sec), arg, step.res.code, step.res.stdout, step.res.stderr)
			}
		case "want":
			if step == nil {
				t.Fatalf("%s: want before any step", at(sec))
			}
			checkWant(t, p, step, arg, subst(sec.body), at(sec))
		default:
			t.Fatalf("%s: unknown section %q", at(sec), sec.name)
		}
	}
}

// nextStep is the line of the first step section after line (or a line past
// the end).
func nextStep(sections []caseSection, line int) int {
	for _, s := range sections {
		if s.line > line && strings.HasPrefix(s.name, "step ") {
			return s.line
		}
	}
	return 1 << 30
}

func checkWant(t *testing.T, p *project, step *caseStep, what, body, where string) {
	t.Helper()
	r := step.res
	fail := func(format string, args ...any) {
		t.Helper()
		t.Errorf("%s (step %q): %s\nstdout:\n%swarnings and errors:\n%s", where, step.args[0], fmt.Sprintf(format, args...), r.stdout, notable(r.stderr))
	}
	switch what {
	case "exit":
		want, err := strconv.Atoi(strings.TrimSpace(body))
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		if r.code != want {
			fail("exit %d, want %d", r.code, want)
		}
	case "stdout", "stderr":
		out := r.stdout
		if what == "stderr" {
			out = r.stderr
		}
		for _, line := range strings.Split(strings.TrimSpace(body), "\n") {
			if line = strings.TrimSpace(line); line != "" && !strings.Contains(out, line) {
				fail("%s lacks %q", what, line)
			}
		}
	case "summary":
		tokens := strings.Fields(r.stdout)
		for _, kv := range strings.Fields(body) {
			if !slices.Contains(tokens, kv) {
				fail("summary lacks %s", kv)
			}
		}
	case "audit", "rejects", "campaign-updates", "d365-updates":
		if r.runID == "" {
			fail("no run id in the summary")
			return
		}
		path := p.path(filepath.Join("out", what+"-"+r.runID+".csv"))
		var got [][]string
		if _, err := os.Stat(path); err == nil {
			got = readRows(t, path)
		} else if what != "d365-updates" && what != "campaign-updates" {
			fail("%s is missing", path)
			return
		}
		compareRows(fail, what, got, body)
	case "state":
		out := p.path("state-export.csv")
		_ = os.Remove(out) // the last check's: export does not overwrite
		if er := runCLI(t, "--config", p.config, "state", "export", "--output", out); er.code != 0 {
			t.Fatalf("%s: state export: %s", where, er.stderr)
		}
		compareRows(fail, what, readRows(t, out), body)
	default:
		t.Fatalf("%s: unknown want %q", where, what)
	}
}

func readRows(t *testing.T, path string) [][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return recs
}

// compareRows checks the rows of a written CSV (header first) against a
// golden table naming the columns it cares about. A source column is
// compared by file name.
func compareRows(fail func(string, ...any), what string, got [][]string, golden string) {
	want, err := csv.NewReader(strings.NewReader(golden)).ReadAll()
	if err != nil || len(want) == 0 {
		fail("golden %s table: %v", what, err)
		return
	}
	cols := make([]int, len(want[0]))
	for i, name := range want[0] {
		cols[i] = -1
		if len(got) > 0 {
			cols[i] = slices.Index(got[0], name)
		}
		if cols[i] < 0 && len(got) > 0 {
			fail("%s has no column %q (has %v)", what, name, got[0])
			return
		}
	}
	var have []string
	for _, row := range got[min(1, len(got)):] {
		cells := make([]string, len(cols))
		for i, c := range cols {
			cells[i] = row[c]
			if want[0][i] == "source" {
				cells[i] = filepath.Base(cells[i])
			}
		}
		have = append(have, csvLine(cells))
	}
	var exp []string
	for _, row := range want[1:] {
		exp = append(exp, csvLine(row))
	}
	if !slices.Equal(have, exp) {
		fail("%s rows differ\n got: %s\nwant: %s", what, strings.Join(have, "\n      "), strings.Join(exp, "\n      "))
	}
}

func csvLine(cells []string) string {
	var b strings.Builder
	w := csv.NewWriter(&b)
	_ = w.Write(cells)
	w.Flush()
	return strings.TrimSuffix(b.String(), "\n")
}

// notable keeps the log lines worth reading next to a failure.
func notable(stderr string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(stderr, "\n") {
		if !strings.Contains(line, `"level":"info"`) && !strings.Contains(line, `"level":"debug"`) {
			b.WriteString(line)
		}
	}
	return b.String()
}
