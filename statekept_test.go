package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"optsync/fixtures/testkit"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// lostStateProject has made two nights: contact 1 agreed opted in on both
// sides; then Dynamics opted it out (night 2, decided only-d365-changed and
// written to Campaign's update file). A third night has Campaign's profile
// saved again (newer, still opted in, the update file not imported yet).
func lostStateProject(t *testing.T) *project {
	t.Helper()
	p := newProject(t, fmt.Sprintf(dropConfig, ""))
	testkit.WriteFile(t, p.path("drops/d365/1.csv"), testkit.Contacts2(guid1+",2026-11-20T10:00:00Z,false,false"))
	testkit.WriteFile(t, p.path("drops/campaign/1.csv"), testkit.Profiles2("@p1,"+guid1+",2026-11-20 09:00:00.000Z,false,false"))
	p.run(t)
	testkit.WriteFile(t, p.path("drops/d365/2.csv"), testkit.Contacts2(guid1+",2026-11-25T10:00:00Z,true,false"))
	r := p.run(t)
	if a := p.out(t, "audit", r.runID); len(a) != 1 || a[0]["rule"] != "only-d365-changed" || a[0]["new_value"] != "true" {
		t.Fatalf("night 2: %v", a)
	}
	testkit.WriteFile(t, p.path("drops/campaign/3.csv"), testkit.Profiles2("@p1,"+guid1+",2026-11-27 09:00:00.000Z,false,false"))
	return p
}

func wantLostStop(t *testing.T, p *project, r cliResult, says string) {
	t.Helper()
	if r.code != exitFailure {
		t.Fatalf("exit %d, want 1\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	for _, w := range []string{"state " + p.path("optsync.db") + " " + says,
		"restore the file from a backup, or start over deliberately with `optsync backfill --new-state`"} {
		if !strings.Contains(r.stderr, w) {
			t.Fatalf("the message does not say %q:\n%s", w, r.stderr)
		}
	}
}

// A state file truncated to 0 bytes, or lost while out_dir holds what
// earlier runs left, stops every command that would decide (exit 1, naming
// the file and the way back) instead of deciding as at first sight — which
// here would clear the opt-out night 2 set (campaign->d365 true → false,
// conflict-campaign-newer, where the intact state writes it to Campaign
// again). backfill
// --new-state is the deliberate start over, and the run history says so.
func TestLostStateStopsTheRun(t *testing.T) {
	p := lostStateProject(t)
	intact := p.path("intact.db")
	copyFile(t, p.path("optsync.db"), intact)
	commands := [][]string{{"run"}, {"backfill", "--d365-csv", p.path("drops/d365/2.csv"), "--campaign-csv", p.path("drops/campaign/3.csv")},
		{"plan"}, {"state", "reset"}}
	// the readers say so too (bbolt used to answer "write optsync.db: bad
	// file descriptor" for an empty file)
	readers := [][]string{{"runs"}, {"audit", "--contact", guid1}, {"state", "export"}}

	if err := os.WriteFile(p.path("optsync.db"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range append(commands, readers...) {
		r := p.cli(t, cmd...)
		wantLostStop(t, p, r, "is damaged: it is empty")
		if fi, err := os.Stat(p.path("optsync.db")); err != nil || fi.Size() != 0 {
			t.Fatalf("%v touched the empty state file: %v %v", cmd, fi, err)
		}
	}

	if err := os.Remove(p.path("optsync.db")); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range commands {
		r := p.cli(t, cmd...)
		wantLostStop(t, p, r, "does not exist, but out_dir "+p.path("out")+" holds what earlier runs left (campaign-updates-")
		if !strings.Contains(r.stderr, "does not start over silently") {
			t.Fatalf("%v: %s", cmd, r.stderr)
		}
		if _, err := os.Lstat(p.path("optsync.db")); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("%v created a state file", cmd)
		}
	}

	// Another job's state file (or a new one) in its place is refused too.
	other := newProject(t, fmt.Sprintf(dropConfig, ""))
	testkit.WriteFile(t, other.path("drops/d365/1.csv"), testkit.Contacts2(guid1+",2026-11-20T10:00:00Z,false,false"))
	testkit.WriteFile(t, other.path("drops/campaign/1.csv"), testkit.Profiles2("@p1,"+guid1+",2026-11-20 09:00:00.000Z,false,false"))
	other.run(t)
	copyFile(t, other.path("optsync.db"), p.path("optsync.db"))
	r := p.cli(t, "run")
	wantLostStop(t, p, r, "is not the state of the runs whose files are in out_dir")

	// Restored from the backup, the night decides as the intact state does.
	copyFile(t, intact, p.path("optsync.db"))
	r = p.run(t)
	// (the opt-out written to Campaign's update file, not yet imported, is
	// written again: the profile moved without showing it)
	if a := p.out(t, "audit", r.runID); len(a) != 1 || a[0]["direction"] != "d365->campaign" || a[0]["new_value"] != "true" {
		t.Fatalf("the restored state: %v", a)
	}

	// Starting over deliberately: the file found is moved aside, the run
	// decides as at first sight, and the history says so.
	r = p.backfill(t, "--d365-csv", p.path("drops/d365/2.csv"), "--campaign-csv", p.path("drops/campaign/3.csv"), "--new-state")
	if r.code != 0 {
		t.Fatalf("backfill --new-state: exit %d\n%s", r.code, r.stderr)
	}
	// As at first sight: what a silent start over would have done each time.
	if a := p.out(t, "audit", r.runID); len(a) != 1 || a[0]["rule"] != "conflict-campaign-newer" || a[0]["direction"] != "campaign->d365" || a[0]["old_value"] != "true" {
		t.Fatalf("the start over: %v", a)
	}
	aside, _ := filepath.Glob(p.path("optsync.db.replaced-*"))
	if len(aside) != 1 {
		t.Fatalf("the state file found was not kept aside: %v", aside)
	}
	var hist []struct {
		ID            string   `json:"id"`
		ConfigChanges []string `json:"config_changes"`
		Config        struct {
			Options []string `json:"options"`
		} `json:"config"`
	}
	jr := p.cli(t, "runs", "--format", "json")
	if err := json.Unmarshal([]byte(jr.stdout), &hist); err != nil || len(hist) != 1 {
		t.Fatalf("runs of the new state: %v\n%s", err, jr.stdout)
	}
	if len(hist[0].ConfigChanges) != 1 || !strings.Contains(hist[0].ConfigChanges[0], "state started over deliberately (backfill --new-state): the state file found was moved aside to "+aside[0]) ||
		!strings.Contains(strings.Join(hist[0].Config.Options, " "), "--new-state") {
		t.Fatalf("the run history does not record the start over: %+v", hist[0])
	}
	// From here on the new state is the one out_dir's runs use.
	testkit.WriteFile(t, p.path("drops/d365/4.csv"), testkit.Contacts2(guid1+",2026-11-28T10:00:00Z,true,true"))
	p.run(t)
}

// Deleting out_dir's history is the other deliberate start over: a state
// file that is missing where no run left anything is a first run.
func TestMissingStateWithoutHistoryIsAFirstRun(t *testing.T) {
	p := lostStateProject(t)
	for _, f := range []string{"optsync.db", "out"} {
		if err := os.RemoveAll(p.path(f)); err != nil {
			t.Fatal(err)
		}
	}
	r := p.run(t, "--force")
	if !strings.Contains(r.stdout, "compared=2 pairs (1 contact)") {
		t.Fatalf("a first run: %s", r.stdout)
	}
}
