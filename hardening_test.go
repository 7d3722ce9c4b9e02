package main

import (
	"errors"
	"fmt"
	"io/fs"
	"optsync/fixtures/testkit"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// hostileProject is a backfill's worth of inputs whose files a co-tenant
// has been at.
func hostileProject(t *testing.T) *project {
	t.Helper()
	p := newProject(t, fmt.Sprintf(onePairConfig, "bidirectional", "newest"))
	testkit.WriteFile(t, p.path("d365.csv"), testkit.Contacts("00000000-0000-0000-0000-000000000001,2026-11-20T10:00:00Z,true"))
	testkit.WriteFile(t, p.path("campaign.csv"), testkit.Profiles("@p1,00000000-0000-0000-0000-000000000001,2026-11-20 09:00:00.000Z,false"))
	return p
}

// plantLink puts a link at path to a file of someone else's and returns a
// check that the file is as it was.
func plantLink(t *testing.T, path string) func() {
	t.Helper()
	target := filepath.Join(t.TempDir(), "someone-elses-file")
	if err := os.WriteFile(target, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		b, err := os.ReadFile(target)
		fi, _ := os.Stat(target)
		if err != nil || string(b) != "precious" || fi.Mode().Perm() != 0o644 {
			t.Errorf("the file behind the link at %s changed: %q %v", path, b, err)
		}
	}
}

func wantRegular(t *testing.T, path string, perm os.FileMode) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm() != perm {
		t.Errorf("%s is %v, want a regular file %v", path, fi.Mode(), perm)
	}
}

// A run over a 0755 out_dir leaves it 0700 with every file 0600; the
// metrics file and a report written over links replace the links and
// leave what they point to alone.
func TestRunTightensOutDirAndWritesThroughNoLink(t *testing.T) {
	p := hostileProject(t)
	if err := os.Mkdir(p.path("out"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p.path("out"), 0o755); err != nil {
		t.Fatal(err)
	}
	metrics := p.path("optsync.prom")
	metricsTarget := plantLink(t, metrics)
	r := p.cli(t, "--metrics-file", metrics, "backfill")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	metricsTarget()
	wantRegular(t, metrics, 0o644) // counts only: node_exporter reads it
	if fi, _ := os.Stat(p.path("out")); fi.Mode().Perm() != 0o700 {
		t.Errorf("out_dir is %v after the run, want 0700", fi.Mode().Perm())
	}
	files, _ := filepath.Glob(p.path("out/*"))
	if len(files) != 6 { // audit, rejects, two update files, the report, the state identity
		t.Fatalf("out_dir holds %v", files)
	}
	for _, f := range files {
		wantRegular(t, f, 0o600)
	}

	report := p.path("report.html")
	reportTarget := plantLink(t, report)
	if r := p.cli(t, "report", "--output", report); r.code != 0 {
		t.Fatalf("report: exit %d: %s", r.code, r.stderr)
	}
	reportTarget()
	wantRegular(t, report, 0o600)

	// A report into out_dir tightens it as a run does.
	if err := os.Chmod(p.path("out"), 0o755); err != nil {
		t.Fatal(err)
	}
	if r := p.cli(t, "report"); r.code != 0 {
		t.Fatalf("report: exit %d: %s", r.code, r.stderr)
	}
	if fi, _ := os.Stat(p.path("out")); fi.Mode().Perm() != 0o700 {
		t.Errorf("out_dir is %v after a report, want 0700", fi.Mode().Perm())
	}
}

// state export --output refuses an existing path unless --force, never
// writes through a link (nor replaces one), and what it writes is 0600
// whatever was there.
func TestStateExportOutputIsNew(t *testing.T) {
	p := hostileProject(t)
	if r := p.backfill(t); r.code != 0 {
		t.Fatal(r.stderr)
	}
	export := func(args ...string) cliResult {
		return p.cli(t, append([]string{"state", "export"}, args...)...)
	}

	link := p.path("link.csv")
	linkTarget := plantLink(t, link)
	for _, force := range [][]string{nil, {"--force"}} {
		r := export(append([]string{"--output", link}, force...)...)
		if r.code != exitUsage || !strings.Contains(r.stderr, "is a symbolic link") {
			t.Errorf("export %v onto a link: exit %d: %s", force, r.code, r.stderr)
		}
		linkTarget()
	}

	existing := p.path("export.csv")
	if err := os.WriteFile(existing, []byte("last week's"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := export("--output", existing); r.code != exitUsage || !strings.Contains(r.stderr, "pass --force") {
		t.Errorf("export onto an existing file: exit %d: %s", r.code, r.stderr)
	}
	if b, _ := os.ReadFile(existing); string(b) != "last week's" {
		t.Errorf("the existing file was changed without --force: %q", b)
	}
	if r := export("--output", existing, "--force"); r.code != 0 {
		t.Fatalf("export --force: exit %d: %s", r.code, r.stderr)
	}
	wantRegular(t, existing, 0o600)
	if _, rows := testkit.ReadCSV(t, existing); len(rows) != 1 {
		t.Errorf("export holds %v", rows)
	}

	fresh := p.path("new/fresh.csv")
	if err := os.Mkdir(filepath.Dir(fresh), 0o755); err != nil {
		t.Fatal(err)
	}
	if r := export("--output", fresh); r.code != 0 {
		t.Fatalf("export: exit %d: %s", r.code, r.stderr)
	}
	wantRegular(t, fresh, 0o600)
	if entries, _ := os.ReadDir(filepath.Dir(fresh)); len(entries) != 1 {
		t.Errorf("the folder holds %v (a temporary file left?)", entries)
	}
}

// A state path that is a link is used when it resolves to an existing
// regular file; a dangling one makes every command refuse, and nothing is
// created where it points.
func TestStatePathLink(t *testing.T) {
	p := hostileProject(t)
	elsewhere := filepath.Join(t.TempDir(), "optsync.db")
	if err := os.Symlink(elsewhere, p.path("optsync.db")); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"backfill"}, {"runs"}, {"plan", "--backfill"}, {"state", "export"}, {"state", "reset"}, {"state", "compact"}} {
		r := p.cli(t, args...)
		if r.code == 0 || !strings.Contains(r.stderr, "does not create state through a link") {
			t.Errorf("%v over a dangling state link: exit %d: %s", args, r.code, r.stderr)
		}
		if _, err := os.Lstat(elsewhere); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("%v created state through the link", args)
		}
	}

	// The operator's link to a state file on a data volume is followed.
	if err := os.Remove(p.path("optsync.db")); err != nil {
		t.Fatal(err)
	}
	if r := p.backfill(t); r.code != 0 {
		t.Fatal(r.stderr)
	}
	if err := os.Rename(p.path("optsync.db"), elsewhere); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, p.path("optsync.db")); err != nil {
		t.Fatal(err)
	}
	r := p.backfill(t)
	if r.code != 0 || !strings.Contains(r.stdout, "d365->campaign=0 campaign->d365=0") {
		t.Fatalf("backfill through the link: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if fi, err := os.Lstat(p.path("optsync.db")); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Errorf("the state link was replaced: %v %v", fi, err)
	}
}
