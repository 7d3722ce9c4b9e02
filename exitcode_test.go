package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/urfave/cli/v2"

	"optsync/extract"
	"optsync/fixtures/testkit"
	"optsync/load"
	"optsync/load/show"
	"optsync/state"
	"optsync/state/inspect"
	"optsync/transform"
)

// TestExitCodes: each kind of error the stages and commands return exits
// with the SPEC's code, however deep it is wrapped.
func TestExitCodes(t *testing.T) {
	plain := errors.New("x")
	for _, tc := range []struct {
		name string
		err  error
		want int
	}{
		{"nil", nil, exitOK},
		{"plain", plain, exitFailure},
		{"usage", usagef("--format %q: want table or json", "x"), exitUsage},
		{"config", func() error { _, err := loadConfig(filepath.Join(t.TempDir(), "none.yaml")); return err }(), exitUsage},
		{"missing column", &extract.MissingColumnError{}, exitUsage},
		{"broken file", &extract.BrokenFileError{}, exitUsage},
		{"input not there", &extract.InputError{}, exitUsage},
		{"secret not found", &extract.SecretError{}, exitUsage},
		{"failed writes", &load.FailedWritesError{Err: plain}, exitWriteFailed},
		{"safety stop", &transform.SafetyStopError{Err: plain}, exitSafety},
		{"query", inspect.NoSuchRun("r1", "s.db"), exitUsage},
		{"state reset's query", state.QueryErrorf("--field x: no mapping of that Dynamics field in c.yaml"), exitUsage},
		{"output refused", &load.OutputRefusedError{}, exitUsage},
		{"no completion for the shell", &show.ShellError{Shell: "tcsh"}, exitUsage},
		{"locked", &state.LockedError{Path: "s.db"}, exitLocked},
		{"corrupt state", &state.CorruptError{Path: "s.db"}, exitFailure},
		{"lost state", &state.LostError{Path: "s.db"}, exitFailure},
		{"seal", &state.SealError{Bucket: "b"}, exitFailure},
		{"SIGINT", &signalError{sig: syscall.SIGINT}, 130},
		{"SIGTERM", &signalError{sig: syscall.SIGTERM}, 143},
		{"max_run_time", &signalError{sig: syscall.SIGTERM, after: 1}, 143},
		{"cli help topic", cli.Exit("No help topic for 'x'", 3), exitUsage},
		{"another ExitCoder", fmt.Errorf("check: %w", otherExitCoder{}), exitFailure},
		{"wrapped locked", fmt.Errorf("open: %w", &state.LockedError{Path: "s.db"}), exitLocked},
		{"wrapped safety", fmt.Errorf("run: %w", &transform.SafetyStopError{Err: plain}), exitSafety},
	} {
		if got := exitCode(tc.err); got != tc.want {
			t.Errorf("%s: exit %d, want %d", tc.name, got, tc.want)
		}
	}
}

// TestInputsNotThereExitUsage: an input the command line or the config
// names that is not there to read stops the run before anything is read,
// exits 2 and names it.
func TestInputsNotThereExitUsage(t *testing.T) {
	p := newProject(t, fmt.Sprintf(onePairConfig, "bidirectional", "newest"))
	testkit.WriteFile(t, p.path("campaign.csv"), testkit.Profiles("@p1,"+testkit.GUID(1)+",2026-11-20 09:00:00.000Z,false"))
	if err := os.Mkdir(p.path("folder"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"backfill"}, "input " + p.path("d365.csv") + " does not exist"},
		{[]string{"backfill", "--d365-csv", p.path("nosuch.csv")}, "input " + p.path("nosuch.csv") + " does not exist"},
		{[]string{"backfill", "--d365-csv", p.path("folder")}, "d365 input " + p.path("folder") + " is not a file"},
		{[]string{"run"}, "input " + p.path("d365.csv") + " does not exist"},
	} {
		r := p.cli(t, tc.args...)
		if r.code != exitUsage || !strings.Contains(r.stdout+r.stderr, tc.want) {
			t.Errorf("%q: exit %d, want %d and %q\n%s%s", tc.args, r.code, exitUsage, tc.want, r.stdout, r.stderr)
		}
	}
}

// TestLibraryComplaintsExitUsage: what urfave/cli itself refuses (a bad
// flag of a command of commands, help of a command that does not exist)
// exits 2 like the rest of the usage errors, with the library's message.
// The help cases run in a child process: the library's help command is a
// package variable, and running it in-process grows it a cycle of
// subcommands that the fish completion of a later test recurses into.
func TestLibraryComplaintsExitUsage(t *testing.T) {
	if args := os.Getenv("OPTSYNC_TEST_ARGS"); args != "" {
		code := cmdline{stdout: os.Stdout, stderr: os.Stderr}.run(context.Background(), append([]string{"optsync"}, strings.Fields(args)...))
		os.Exit(code)
	}
	for _, tc := range []struct {
		args string
		want string
	}{
		{"state --bogus", "flag provided but not defined: -bogus"},
		{"state help nosuch", "No help topic for 'nosuch'"},
		{"state nosuch", "No help topic for 'nosuch'"},
		{"runs --help extra", "No help topic for 'extra'"},
		{"run --force=maybe", "invalid boolean value"},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestLibraryComplaintsExitUsage$")
		cmd.Env = append(os.Environ(), "OPTSYNC_TEST_ARGS="+tc.args, "OPTSYNC_LOG_FORMAT=json")
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != exitUsage || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%s: %v, want exit %d and %q\n%s", tc.args, err, exitUsage, tc.want, stderr.String())
		}
		if tc.args == "state --bogus" && (!strings.Contains(stdout.String(), "Incorrect Usage: flag provided but not defined: -bogus") || !strings.Contains(stdout.String(), "optsync state - snapshot tools")) {
			t.Errorf("state --bogus: no usage shown\n%s", stdout.String())
		}
	}
}

// otherExitCoder has an ExitCode method, as *exec.ExitError does, but is
// not urfave/cli's own error.
type otherExitCoder struct{}

func (otherExitCoder) Error() string { return "exit status 3" }
func (otherExitCoder) ExitCode() int { return 3 }

// TestHistoryKeepsTheProcessExitCode: a run's record in the history
// holds the code the process exited with, and an outcome named after it,
// whatever ended it: a run that finished, one a broken file stopped, a
// state reset.
func TestHistoryKeepsTheProcessExitCode(t *testing.T) {
	p := newProject(t, fmt.Sprintf(dropConfig, ""))
	id := testkit.GUID(1)
	testkit.WriteFile(t, p.path("drops/d365/2026-11-27.csv"), testkit.Contacts2(id+",2026-11-20T10:00:00Z,true,false"))
	testkit.WriteFile(t, p.path("drops/campaign/2026-11-27.csv"), testkit.Profiles2("@p1,"+id+",2026-11-27 09:00:00.000Z,false,false"))
	var codes []int
	codes = append(codes, p.cli(t, "run").code)
	testkit.WriteFile(t, p.path("drops/campaign/2026-11-28.csv"), testkit.Profiles2(`@p1,`+id+`,"2026-11-28 09:00:00.000Z,true,false`))
	codes = append(codes, p.cli(t, "run").code)
	codes = append(codes, p.cli(t, "state", "reset").code)
	if codes[0] != exitOK || codes[1] != exitUsage || codes[2] != exitOK {
		t.Fatalf("exit codes %v, want 0 2 0", codes)
	}
	var runs []state.Run
	if err := json.Unmarshal([]byte(p.cli(t, "runs", "--format", "json").stdout), &runs); err != nil {
		t.Fatal(err)
	}
	if len(runs) != 3 {
		t.Fatalf("%d runs recorded, want 3", len(runs))
	}
	outcomes := []string{"ok", "error", "ok"}
	for i, r := range runs { // newest first
		want := len(codes) - 1 - i
		if r.ExitCode != codes[want] || r.Outcome != outcomes[want] {
			t.Errorf("%s: recorded exit %d %s, the process exited %d (%s)", r.Command, r.ExitCode, r.Outcome, codes[want], outcomes[want])
		}
	}
}
