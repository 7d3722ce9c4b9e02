package main

import (
	"bytes"
	"io/fs"
	"optsync/fixtures/testkit"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// everything is every byte a test's commands left: their output and every
// file under the project's folder but the config.
func everything(t *testing.T, dir, config string, results ...cliResult) []byte {
	t.Helper()
	var all bytes.Buffer
	for _, r := range results {
		all.WriteString(r.stdout)
		all.WriteString(r.stderr)
	}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() || path == config {
			return err
		}
		b, err := os.ReadFile(path)
		all.Write(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return all.Bytes()
}

// The client secret written as client_secret_env — the slip of pasting it
// into the wrong key — shows up in no output and no byte of any file,
// state included; no config value is kept in the run history's errors.
func TestSecretInTheEnvKeyIsNeverShownNorStored(t *testing.T) {
	for _, tc := range []struct {
		name, value string
		// shown: a name written as variables are may be named in messages
		// (never in state)
		shown bool
		// isName: the value may name an environment variable at all
		isName bool
	}{
		{"not a variable name", testSecret, false, false},
		{"a valid name in lower case", "vR8qXQdoNotLog2026secret", false, true},
		{"one long upper-case word", "VR8QXQ2026DONOTLOG", false, true},
		{"a variable name that is not set", "OPTSYNC_NOT_SET_ANYWHERE", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newAPIProject(t, 3, "")
			cfg, err := os.ReadFile(p.config)
			if err != nil {
				t.Fatal(err)
			}
			testkit.WriteFile(t, p.config, strings.Replace(string(cfg), "client_secret_env: OPTSYNC_TEST_D365_SECRET", "client_secret_env: "+tc.value, 1))
			var results []cliResult
			for _, args := range [][]string{{"run"}, {"backfill", "--d365-csv", ""}, {"validate", "--online"}, {"plan"}, {"runs", "--format", "json"}, {"report"}, {"state", "export"}} {
				r := p.cli(t, append([]string{"--metrics-file", p.path("optsync.prom")}, args...)...)
				results = append(results, r)
				if args[0] == "run" {
					if r.code != exitUsage {
						t.Errorf("run: exit %d, want 2: %s", r.code, r.stderr)
					}
					if !tc.shown && !strings.Contains(r.stderr, "not shown") {
						t.Errorf("run: the message does not say the value is not shown: %s", r.stderr)
					}
				}
			}
			// A valid name gets the run started: its failure is in the
			// history, which is what must not hold the value.
			if recorded := strings.Contains(results[4].stdout, `"error": "d365.client_secret_env`); recorded != tc.isName {
				t.Errorf("run recorded in the history: %v, want %v\n%s", recorded, !recorded, results[4].stdout)
			}
			all := everything(t, p.dir, p.config, results...)
			if !tc.shown {
				if bytes.Contains(all, []byte(tc.value)) {
					t.Fatalf("%q is in an output or a file", tc.value)
				}
				return
			}
			// Named on stderr, where the operator needs it; never stored.
			if !strings.Contains(results[0].stderr, tc.value) {
				t.Errorf("the message does not name the variable: %s", results[0].stderr)
			}
			if b, err := os.ReadFile(p.path("optsync.db")); err != nil || bytes.Contains(b, []byte(tc.value)) {
				t.Errorf("the state file holds %q (%v)", tc.value, err)
			}
			if !strings.Contains(results[4].stdout, "<d365.client_secret_env>") {
				t.Errorf("the history's error does not name the key instead: %s", results[4].stdout)
			}
		})
	}
}
