package main

import (
	"fmt"
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
