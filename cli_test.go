package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// cliResult is what one in-process invocation of the CLI left behind.
type cliResult struct {
	code           int
	stdout, stderr string
	runID          string
}

var runIDInSummary = regexp.MustCompile(`optsync \w+ (\d{8}T\d{6}Z-[0-9a-f]+):`)

// runCLI runs optsync exactly as main does, minus the process.
func runCLI(t *testing.T, args ...string) cliResult {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), append([]string{"optsync", "--log-format", "json"}, args...), &out, &errb, hooks{})
	r := cliResult{code: code, stdout: out.String(), stderr: errb.String()}
	if m := runIDInSummary.FindStringSubmatch(r.stdout); m != nil {
		r.runID = m[1]
	}
	return r
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// readCSV returns the rows of a CSV file as maps keyed by header.
func readCSV(t *testing.T, path string) (header []string, rows []map[string]string) {
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
	if len(recs) == 0 {
		t.Fatalf("%s: no header", path)
	}
	for _, rec := range recs[1:] {
		m := map[string]string{}
		for i, h := range recs[0] {
			m[h] = rec[i]
		}
		rows = append(rows, m)
	}
	return recs[0], rows
}

// project is a config plus inputs in a temporary folder.
type project struct {
	dir    string
	config string
}

func newProject(t *testing.T, config string) *project {
	t.Helper()
	p := &project{dir: t.TempDir()}
	p.config = filepath.Join(p.dir, "optsync.yaml")
	writeFile(t, p.config, config)
	return p
}

func (p *project) path(name string) string { return filepath.Join(p.dir, name) }

func (p *project) backfill(t *testing.T, extra ...string) cliResult {
	t.Helper()
	return runCLI(t, append([]string{"--config", p.config, "backfill"}, extra...)...)
}

func (p *project) out(t *testing.T, kind, runID string) []map[string]string {
	t.Helper()
	_, rows := readCSV(t, p.path(filepath.Join("out", kind+"-"+runID+".csv")))
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

func contactsCSV(rows ...string) string {
	return "contactid,modifiedon,donotemail\n" + strings.Join(rows, "\n") + "\n"
}

func profilesCSV(rows ...string) string {
	return "PKey,externalId,lastModified,blackListEmail\n" + strings.Join(rows, "\n") + "\n"
}
