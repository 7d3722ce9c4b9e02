package main

import (
	"flag"
	"fmt"
	"io/fs"
	"optsync/fixtures/testkit"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// update rewrites the golden files of the scenario folders from what the
// runs give now: `go test . -run TestScenarioFolders -update`, then read the
// diff before committing it.
var update = flag.Bool("update", false, "rewrite the golden files under fixtures/scenarios/<case>/night*/golden")

// TestScenarioFolders runs every folder fixtures/scenarios/<case>/ night by
// night through the real CLI and compares what each night left behind with
// its golden files. The layout and the normalisation are described in
// fixtures/scenarios/README.md.
func TestScenarioFolders(t *testing.T) {
	configs, err := filepath.Glob("fixtures/scenarios/*/optsync.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(configs) == 0 {
		t.Fatal("no scenario folders in fixtures/scenarios")
	}
	for _, c := range configs {
		dir := filepath.Dir(c)
		// Not in parallel: the CLI library keeps some state per process.
		t.Run(filepath.Base(dir), func(t *testing.T) { runScenarioFolder(t, dir) })
	}
}

// nights are a case's night folders in their order (night2 before night10).
func nights(t *testing.T, dir string) []string {
	t.Helper()
	ds, err := filepath.Glob(filepath.Join(dir, "night*"))
	if err != nil {
		t.Fatal(err)
	}
	num := func(d string) int {
		n, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(d), "night"))
		if err != nil {
			t.Fatalf("%s: a night folder is night<number>", d)
		}
		return n
	}
	slices.SortFunc(ds, func(a, b string) int { return num(a) - num(b) })
	for i, d := range ds {
		if num(d) != i+1 {
			t.Fatalf("%s: nights are numbered from 1 without a gap", d)
		}
	}
	if len(ds) == 0 {
		t.Fatalf("%s: no night folders", dir)
	}
	return ds
}

func runScenarioFolder(t *testing.T, dir string) {
	config, err := os.ReadFile(filepath.Join(dir, "optsync.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// The nights' files are read from out/: a config that writes them
	// elsewhere would leave them unchecked.
	if !strings.Contains(string(config), "\nout_dir: out\n") {
		t.Fatalf("%s/optsync.yaml: a scenario's config sets out_dir: out", dir)
	}
	p := newProject(t, string(config))
	for _, d := range []string{"drops/d365", "drops/campaign"} {
		if err := os.MkdirAll(p.path(d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	n := newNormaliser(p.dir)
	for _, night := range nights(t, dir) {
		got := runNight(t, p, night)
		golden := filepath.Join(night, "golden")
		// stdout first: the night's own run id is in its summary line.
		order := []string{"stdout", "stderr"}
		for _, name := range sortedKeys(got) {
			if !slices.Contains(order, name) {
				order = append(order, name)
			}
		}
		for _, name := range order {
			got[name] = n.normalise(got[name])
		}
		if *update {
			writeGolden(t, golden, got)
			continue
		}
		compareGolden(t, golden, got)
	}
}

// runNight lays a night's inputs into the project, runs its command line
// and returns what it left behind, by golden file name, not yet normalised.
func runNight(t *testing.T, p *project, night string) map[string]string {
	t.Helper()
	if b, err := os.ReadFile(filepath.Join(night, "remove")); err == nil {
		for _, f := range strings.Fields(string(b)) {
			if err := os.Remove(p.path(f)); err != nil {
				t.Fatalf("%s/remove: %v", night, err)
			}
		}
	} else if !os.IsNotExist(err) {
		t.Fatal(err)
	}
	input := filepath.Join(night, "input")
	if _, err := os.Stat(input); err == nil {
		err := filepath.WalkDir(input, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, err := filepath.Rel(input, path)
			if err != nil {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			testkit.WriteFile(t, p.path(rel), string(b))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	cmd, err := os.ReadFile(filepath.Join(night, "command"))
	if err != nil {
		t.Fatal(err)
	}
	args := strings.Fields(strings.ReplaceAll(string(cmd), "{dir}", p.dir))
	before := dirNames(t, p.path("out"))
	r := p.cli(t, args...)
	got := map[string]string{
		"exit":   fmt.Sprintln(r.code),
		"stdout": r.stdout,
		"stderr": notable(r.stderr),
	}
	// The files this night wrote to out_dir, named without their run id;
	// not the HTML report, whose charts follow the wall clock (its own tests
	// check it).
	for _, name := range dirNames(t, p.path("out")) {
		if slices.Contains(before, name) || strings.HasPrefix(name, "report") {
			continue
		}
		key := name
		if r.runID != "" {
			key = strings.Replace(name, "-"+r.runID, "", 1)
		}
		if _, ok := got[key]; ok {
			t.Fatalf("%s: out/%s would overwrite the golden file %s", night, name, key)
		}
		got[key] = testkit.ReadFile(t, p.path(filepath.Join("out", name)))
	}
	// What state holds after the night, read only.
	export := filepath.Join(t.TempDir(), "state.csv")
	if er := p.cli(t, "state", "export", "--output", export); er.code != 0 {
		t.Fatalf("%s: state export: exit %d\n%s", night, er.code, er.stderr)
	}
	got["state.csv"] = testkit.ReadFile(t, export)
	return got
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		if !e.IsDir() {
			names = append(names, e.Name())
		}
	}
	return names
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func writeGolden(t *testing.T, golden string, got map[string]string) {
	t.Helper()
	if err := os.RemoveAll(golden); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(golden, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range got {
		if err := os.WriteFile(filepath.Join(golden, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// compareGolden checks that a night left exactly the golden files, each
// with the golden text.
func compareGolden(t *testing.T, golden string, got map[string]string) {
	t.Helper()
	want := dirNames(t, golden)
	if len(want) == 0 {
		t.Fatalf("%s: no golden files (run with -update to write them)", golden)
	}
	for _, name := range want {
		if _, ok := got[name]; !ok {
			t.Errorf("%s: the night did not write %s", golden, name)
		}
	}
	for _, name := range sortedKeys(got) {
		if !slices.Contains(want, name) {
			t.Errorf("%s: the night wrote %s, which has no golden file:\n%s", golden, name, got[name])
			continue
		}
		w := testkit.ReadFile(t, filepath.Join(golden, name))
		if w != got[name] {
			t.Errorf("%s/%s differs (-want +got):\n%s", golden, name, lineDiff(w, got[name]))
		}
	}
}

// lineDiff lists the lines of want and got that the other lacks, in order:
// enough to see which row changed without a diff library.
func lineDiff(want, got string) string {
	wl, gl := strings.SplitAfter(want, "\n"), strings.SplitAfter(got, "\n")
	var b strings.Builder
	for _, l := range wl {
		if !slices.Contains(gl, l) {
			fmt.Fprintf(&b, "- %s", strings.TrimSuffix(l, "\n")+"\n")
		}
	}
	for _, l := range gl {
		if !slices.Contains(wl, l) {
			fmt.Fprintf(&b, "+ %s", strings.TrimSuffix(l, "\n")+"\n")
		}
	}
	if b.Len() == 0 {
		return "(the same lines in another order or number)\n"
	}
	return b.String()
}

// normaliser makes a case's outputs the same from one test run to the next.
// It replaces, in this order:
//   - the project's temporary folder by {dir};
//   - each run id by {run1}, {run2} … in the order the case first shows them
//     (night by night; in a night stdout, stderr, then the files by name);
//   - a time (RFC 3339, or Campaign's "2006-01-02 15:04:05.000Z") that falls
//     within the case's own wall-clock time by {now}: the times the inputs
//     carry lie outside it and stay as they are;
//   - the summary's elapsed time (took=14ms) by {elapsed}, and the age of
//     writes not yet seen in an export (pending_oldest=0s, "age":"0s",
//     "pending_oldest_age_seconds": 0) by {age}: both count wall-clock
//     time the case does not control;
//   - the random id of state-identity ("id: 89a1…") by {state-id}.
type normaliser struct {
	dir   string
	start time.Time
	runs  []string
}

func newNormaliser(dir string) *normaliser {
	// A second's slack: times are written truncated to the second.
	return &normaliser{dir: dir, start: time.Now().Add(-time.Second).Truncate(time.Second)}
}

var (
	runIDPattern = regexp.MustCompile(`\d{8}T\d{6}Z-[0-9a-f]+`)
	clockFigures = []struct {
		re   *regexp.Regexp
		with string
	}{
		{regexp.MustCompile(`\btook=\S+`), "took={elapsed}"},
		{regexp.MustCompile(`\bpending_oldest=\S+`), "pending_oldest={age}"},
		{regexp.MustCompile(`"age":"[^"]*"`), `"age":"{age}"`},
		{regexp.MustCompile(`"pending_oldest_age_seconds": ?\d+`), `"pending_oldest_age_seconds": {age}`},
		{regexp.MustCompile(`(?m)^id: [0-9a-f]{32}$`), "id: {state-id}"},
	}
	timePattern = regexp.MustCompile(`\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)`)
)

func (n *normaliser) normalise(s string) string {
	s = strings.ReplaceAll(s, n.dir, "{dir}")
	s = runIDPattern.ReplaceAllStringFunc(s, func(id string) string {
		i := slices.Index(n.runs, id)
		if i < 0 {
			n.runs = append(n.runs, id)
			i = len(n.runs) - 1
		}
		return fmt.Sprintf("{run%d}", i+1)
	})
	end := time.Now().Add(time.Second)
	s = timePattern.ReplaceAllStringFunc(s, func(ts string) string {
		at, err := time.Parse(time.RFC3339Nano, strings.Replace(ts, " ", "T", 1))
		if err != nil || at.Before(n.start) || at.After(end) {
			return ts
		}
		return "{now}"
	})
	for _, f := range clockFigures {
		s = f.re.ReplaceAllString(s, f.with)
	}
	return s
}

// notable keeps the log lines of a night worth a golden file: warnings and
// errors, not the info and debug lines that narrate the run.
func notable(stderr string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(stderr, "\n") {
		if !strings.Contains(line, `"level":"info"`) && !strings.Contains(line, `"level":"debug"`) {
			b.WriteString(line)
		}
	}
	return b.String()
}
