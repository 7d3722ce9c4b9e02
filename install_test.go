package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"optsync/fixtures/testkit"
	"optsync/state"
)

// Under go test the binary carries no VCS information: --version says so
// rather than print an empty revision.
func TestVersionWithoutVCS(t *testing.T) {
	r := runCLI(t, "--version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "optsync version ") || !strings.Contains(r.stdout, "no VCS revision") {
		t.Fatalf("--version: exit %d %q", r.code, r.stdout)
	}
	r = runCLI(t, "version")
	if r.code != 0 || !strings.Contains(r.stdout, "revision:    unknown") || !strings.Contains(r.stdout, "go:          go1.") {
		t.Fatalf("version: exit %d %q", r.code, r.stdout)
	}
}

// TestBuiltBinaryNamesItsRevision builds optsync from a clone of the
// committed tree the way the README says (go build, VCS stamping on) and
// checks that --version, version and the run history name the revision,
// and that the bash completion script completes through the binary.
func TestBuiltBinaryNamesItsRevision(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("not a git checkout (%v): no revision to stamp", err)
	}
	rev := strings.TrimSpace(string(head))
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Fatal(err)
	}
	// A clone, with the working tree's files laid over it: go stamps VCS
	// information only where .git is a folder, and a worktree's .git is a
	// file. What is built is what is checked out here, at revision HEAD.
	src := filepath.Join(t.TempDir(), "src")
	if out, err := exec.Command("git", "clone", "-q", "--no-checkout", strings.TrimSpace(string(top)), src).CombinedOutput(); err != nil {
		t.Fatalf("git clone: %v\n%s", err, out)
	}
	if out, err := exec.Command("git", "-C", src, "checkout", "-q", rev).CombinedOutput(); err != nil {
		t.Fatalf("git checkout: %v\n%s", err, out)
	}
	files, err := exec.Command("git", "ls-files", "-co", "--exclude-standard", "-z").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range strings.Split(strings.TrimRight(string(files), "\x00"), "\x00") {
		b, err := os.ReadFile(f)
		if os.IsNotExist(err) {
			continue // deleted here, not yet committed
		}
		if err != nil {
			t.Fatal(err)
		}
		testkit.WriteFile(t, filepath.Join(src, f), string(b))
	}
	bin := filepath.Join(t.TempDir(), "optsync")
	build := exec.Command("go", "build", "-buildvcs=true", "-o", bin, ".")
	build.Dir = src
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil || !strings.Contains(string(out), "revision "+rev) || !strings.Contains(string(out), "committed 20") {
		t.Fatalf("--version: %v %q, want revision %s", err, out, rev)
	}
	out, err = exec.Command(bin, "version").Output()
	if err != nil || !strings.Contains(string(out), "revision:    "+rev) || !strings.Contains(string(out), "modified:    ") {
		t.Fatalf("version: %v %q", err, out)
	}

	// The run history keeps the version that made each run.
	p := demoProject(t)
	if out, err := exec.Command(bin, "--config", p.config, "backfill", "--allow-mass-optin").CombinedOutput(); err != nil {
		t.Fatalf("backfill: %v\n%s", err, out)
	}
	out, err = exec.Command(bin, "--config", p.config, "runs", "--format", "json").Output()
	var runs []state.Run
	if err != nil || json.Unmarshal(out, &runs) != nil || len(runs) != 1 || !strings.Contains(runs[0].Version, rev[:12]) {
		t.Fatalf("runs: %v %s", err, out)
	}

	// What the completion scripts ask: the words that may follow; nothing
	// runs. (urfave/cli reads these from os.Args, so only a real process
	// shows them.)
	out, err = exec.Command(bin, "--config", p.config, "backfill", "--d", "--generate-bash-completion").Output()
	if err != nil || strings.TrimSpace(string(out)) != "--d365-csv" {
		t.Fatalf("flag completion: %v %q", err, out)
	}
	if again := runsJSON(t, p); len(again) != 1 {
		t.Fatalf("asking for completions ran a backfill: %d runs", len(again))
	}

	// Completion as bash does it: the script asks the binary on PATH.
	if _, err := exec.LookPath("bash"); err == nil {
		script, err := exec.Command(bin, "completion", "bash").Output()
		if err != nil {
			t.Fatal(err)
		}
		sh := filepath.Join(t.TempDir(), "optsync.bash")
		testkit.WriteFile(t, sh, string(script))
		for _, tc := range []struct{ line, want string }{
			{`COMP_WORDS=(optsync rep); COMP_CWORD=1`, "report"},
			{`COMP_WORDS=(optsync report --si); COMP_CWORD=2`, "--since"},
		} {
			cmd := exec.Command("bash", "-c", "source "+sh+"; "+tc.line+`; _optsync_complete; echo "${COMPREPLY[@]}"`)
			cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"))
			out, err := cmd.CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != tc.want {
				t.Errorf("%s: %v %q, want %q", tc.line, err, out, tc.want)
			}
		}
	}
}

func TestCompletionAndMan(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want []string
	}{
		{[]string{"completion", "bash"}, 0, []string{"--generate-bash-completion", "complete ", "optsync"}},
		{[]string{"completion", "zsh"}, 0, []string{"#compdef optsync", "--generate-bash-completion"}},
		{[]string{"completion", "fish"}, 0, []string{"complete -c optsync", "report", "backfill"}},
		{[]string{"completion", "tcsh"}, exitUsage, []string{"want bash, zsh or fish"}},
		{[]string{"man"}, 0, []string{".TH optsync 1", "report", "--since", "completion"}},
	} {
		r := runCLI(t, tc.args...)
		if r.code != tc.code {
			t.Errorf("%v: exit %d, want %d\n%s", tc.args, r.code, tc.code, r.stderr)
		}
		for _, w := range tc.want {
			if !strings.Contains(r.stdout+r.stderr, w) {
				t.Errorf("%v: output lacks %q", tc.args, w)
			}
		}
	}
}
