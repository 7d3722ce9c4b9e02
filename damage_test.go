package main

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
)

// One stray quote in a Campaign drop: the run stops with exit 2 naming the
// file and the line where the quote opened, marks nothing processed and
// writes nothing; once the file is fixed, the next run carries every
// unsubscribe after the quote — the ten that the old reader lost.
func TestStrayQuoteStopsTheRun(t *testing.T) {
	p := newProject(t, fmt.Sprintf(dropConfig, ""))
	var contacts, profiles []string
	for i := 1; i <= 20; i++ {
		id := fmt.Sprintf("00000000-0000-0000-0000-%012d", i)
		contacts = append(contacts, id+",2026-11-20T10:00:00Z,false,false")
		profiles = append(profiles, fmt.Sprintf("@p%d,%s,2026-11-28 09:00:00.000Z,%v,false", i, id, i > 10))
	}
	writeFile(t, p.path("drops/d365/2026-11-28.csv"), dropContacts(contacts...))
	broken := slices.Clone(profiles)
	broken[9] = strings.Replace(broken[9], ",2026-11-28", `,"2026-11-28`, 1) // line 11
	writeFile(t, p.path("drops/campaign/2026-11-28.csv"), dropProfiles(broken...))

	for _, cmd := range []string{"validate", "plan", "run"} {
		r := runCLI(t, "--config", p.config, cmd)
		if r.code != exitUsage || !strings.Contains(r.stderr, "2026-11-28.csv: line 11: a quoted field opened here runs to the end of the file") {
			t.Fatalf("%s: exit %d, want 2 naming the file and line 11\n%s%s", cmd, r.code, r.stdout, r.stderr)
		}
	}
	onlyReport(t, p, "line 11")
	runs := runCLI(t, "--config", p.config, "runs", "--format", "json")
	if !strings.Contains(runs.stdout, `"exit_code": 2`) {
		t.Fatalf("the stopped run is not in the history: %s", runs.stdout)
	}

	// Fixed: both files are new still, and the ten unsubscribes arrive.
	writeFile(t, p.path("drops/campaign/2026-11-28.csv"), dropProfiles(profiles...))
	r := p.run(t)
	if !strings.Contains(r.stdout, "campaign->d365=10") {
		t.Fatalf("after the fix: %s", r.stdout)
	}
	for _, u := range p.out(t, "d365-updates", r.runID) {
		if u["donotemail"] != "true" {
			t.Errorf("update %v", u)
		}
	}
}

// A drop whose rows are mostly junk is not an export: the run stops with
// exit 2 naming the file and the share, writes nothing and marks nothing
// processed. Below the share, every bad row is in the rejects file, in
// order. (fixtures/junk.sh measures 5 M junk lines against the binary.)
func TestRejectShareStopsTheRun(t *testing.T) {
	p := newProject(t, fmt.Sprintf(dropConfig, ""))
	good := func(n int) []string {
		var rows []string
		for i := 1; i <= n; i++ {
			rows = append(rows, fmt.Sprintf("00000000-0000-0000-0000-%012d,2026-11-20T10:00:00Z,false,false", i))
		}
		return rows
	}
	junk := func(n int) []string {
		var rows []string
		for range n {
			rows = append(rows, "x")
		}
		return rows
	}
	writeFile(t, p.path("drops/campaign/1.csv"), dropProfiles("@p1,00000000-0000-0000-0000-000000000001,2026-11-20 09:00:00.000Z,true,false"))
	writeFile(t, p.path("drops/d365/1.csv"), dropContacts(slices.Concat(good(10), junk(11))...))
	r := runCLI(t, "--config", p.config, "run")
	if r.code != exitUsage || !strings.Contains(r.stderr, "1.csv: 11 of its 21 rows were rejected (52.4 %), more than max_reject_share 50 %") {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	onlyReport(t, p, "max_reject_share")

	// At 50 % the file is an export with bad rows: every one reported, in
	// line order, the good rows decided.
	writeFile(t, p.path("drops/d365/1.csv"), dropContacts(slices.Concat(junk(6), good(11), junk(5))...))
	r = p.run(t)
	rej := p.out(t, "rejects", r.runID)
	if len(rej) != 11 || !strings.Contains(r.stdout, "rejected=11") {
		t.Fatalf("rejects %v\n%s", rej, r.stdout)
	}
	for i, row := range rej {
		want := i + 2
		if i >= 6 {
			want = i + 13
		}
		if row["line"] != fmt.Sprint(want) || !strings.Contains(row["reason"], "the header has 4") {
			t.Errorf("reject %d: %v, want line %d", i, row, want)
		}
	}
	entries, _ := os.ReadDir(p.path("out"))
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".partial") {
			t.Errorf("a spill was left behind: %s", e.Name())
		}
	}
}
