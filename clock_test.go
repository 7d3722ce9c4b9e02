package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"optsync/fixtures/d365sim"
	"optsync/fixtures/testkit"
)

// clockConfig maps donotemail ↔ blackListEmail, the Campaign field with a
// change-time column of its own; %s is the inputs, %s more settings.
const clockConfig = `direction: bidirectional
mappings:
  - d365: donotemail
    campaign: blackListEmail
    campaign_modified_column: emailOptOutDate
state: optsync.db
out_dir: out
safety:
  max_optin: "100%%"
%s
%s`

// clockMode is how the nights are fed: full exports to backfill (with or
// without --replay), or drop folders to run.
type clockMode struct {
	name string
	args []string
	run  bool
}

var clockModes = []clockMode{
	{"backfill", []string{"backfill"}, false},
	{"backfill --replay", []string{"backfill", "--replay"}, false},
	{"run", []string{"run"}, true},
}

// clockProject plays nights against one contact X (contact guid1, profile
// @p1), one side of which moves each night.
type clockProject struct {
	*project
	mode   clockMode
	nights int
	d, c   string // X's current rows: the full export's content
	extra  string // more config settings
	inputs string
}

func newClockProject(t *testing.T, mode clockMode) *clockProject {
	p := &clockProject{mode: mode, inputs: "d365: {csv: d365.csv}\ncampaign: {csv: campaign.csv}"}
	if mode.run {
		p.inputs = "d365: {csv: drops/d365}\ncampaign: {csv: drops/campaign}"
	}
	p.project = newProject(t, fmt.Sprintf(clockConfig, p.inputs, ""))
	return p
}

func d365Row(mod time.Time, optedOut bool) string {
	return fmt.Sprintf("%s,%s,%v", guid1, mod.UTC().Format(time.RFC3339), optedOut)
}

func campaignRow(mod, fieldMod time.Time, optedOut bool) string {
	f := ""
	if !fieldMod.IsZero() {
		f = fieldMod.UTC().Format("2006-01-02 15:04:05.000Z")
	}
	return fmt.Sprintf("@p1,%s,%s,%v,%s", guid1, mod.UTC().Format("2006-01-02 15:04:05.000Z"), optedOut, f)
}

// night writes the rows that changed (a backfill's exports hold every
// row; a run's drop gets a file for each side that moved) and runs.
func (p *clockProject) night(t *testing.T, d, c string) cliResult {
	t.Helper()
	return p.nightRows(t, d, c)
}

// rows lets night take a side's pair of rows as they come.
func rows(d, c string) [2]string { return [2]string{d, c} }

func (p *clockProject) nightOf(t *testing.T, dc [2]string) cliResult {
	t.Helper()
	return p.nightRows(t, dc[0], dc[1])
}

func (p *clockProject) nightRows(t *testing.T, d, c string) cliResult {
	t.Helper()
	p.nights++
	testkit.WriteFile(t, p.config, fmt.Sprintf(clockConfig, p.inputs, p.extra))
	if d != "" {
		p.d = d
	}
	if c != "" {
		p.c = c
	}
	dFile, cFile := "d365.csv", "campaign.csv"
	if p.mode.run {
		dFile, cFile = fmt.Sprintf("drops/d365/%d.csv", p.nights), fmt.Sprintf("drops/campaign/%d.csv", p.nights)
	}
	if d != "" || !p.mode.run {
		testkit.WriteFile(t, p.path(dFile), testkit.Contacts(p.d))
	}
	if c != "" || !p.mode.run {
		testkit.WriteFile(t, p.path(cFile), "PKey,externalId,lastModified,blackListEmail,emailOptOutDate\n"+p.c+"\n")
	}
	r := p.cli(t, p.mode.args...)
	if r.code != 0 {
		t.Fatalf("night %d: exit %d\n%s%s", p.nights, r.code, r.stdout, r.stderr)
	}
	return r
}

// carried says whether the night's update file for system sets X's
// mapped field to true.
func (p *clockProject) carried(t *testing.T, r cliResult, system string) bool {
	t.Helper()
	path := p.path(filepath.Join("out", system+"-updates-"+r.runID+".csv"))
	if _, err := os.Stat(path); err != nil {
		return false
	}
	_, rows := testkit.ReadCSV(t, path)
	for _, row := range rows {
		if (row["contactid"] == guid1 && row["donotemail"] == "true") || (row["externalId"] == guid1 && row["blackListEmail"] == "true") {
			return true
		}
	}
	return false
}

// clockSides are the change times that can be dated in the future.
var clockSides = []struct {
	name string
	// future is X's rows with that side dated at when (other side as
	// on night 1: empty); real is the side's real opt-out at when.
	future func(base, when time.Time) (d, c string)
	real   func(when time.Time) (d, c string)
	// target is the system the opt-out is carried to.
	target string
}{
	{"d365 modifiedon",
		func(base, when time.Time) (string, string) { return d365Row(when, false), "" },
		func(when time.Time) (string, string) { return d365Row(when, true), "" }, "campaign"},
	{"campaign lastModified",
		func(base, when time.Time) (string, string) { return "", campaignRow(when, time.Time{}, false) },
		func(when time.Time) (string, string) { return "", campaignRow(when, when, true) }, "d365"},
	{"campaign per-field time",
		func(base, when time.Time) (string, string) { return "", campaignRow(base.Add(time.Hour), when, false) },
		func(when time.Time) (string, string) { return "", campaignRow(when, when, true) }, "d365"},
}

// A row dated in the future is rejected with its file, line, id and reason,
// and a later real opt-out on that record is carried to the other system:
// both sides, backfill (with and without --replay) and run.
func TestFutureDatedRowIsRejectedAndALaterOptOutCarried(t *testing.T) {
	for _, side := range clockSides {
		for _, mode := range clockModes {
			t.Run(side.name+"/"+mode.name, func(t *testing.T) {
				now := time.Now().UTC().Truncate(time.Second)
				base := now.Add(-72 * time.Hour)
				p := newClockProject(t, mode)
				p.night(t, d365Row(base, false), campaignRow(base, time.Time{}, false))

				r := p.nightOf(t, rows(side.future(base, time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC))))
				rejects := p.out(t, "rejects", r.runID)
				if len(rejects) != 1 || !strings.Contains(rejects[0]["reason"], "9999-12-31T00:00:00Z is in the future") ||
					rejects[0]["line"] != "2" || !strings.HasSuffix(rejects[0]["source"], ".csv") ||
					(rejects[0]["id"] != guid1 && rejects[0]["id"] != "@p1") {
					t.Fatalf("night 2 rejects: %v", rejects)
				}
				if audit := p.out(t, "audit", r.runID); len(audit) != 0 {
					t.Fatalf("night 2 decided %v", audit)
				}

				r = p.nightOf(t, rows(side.real(now.Add(-time.Minute))))
				if !p.carried(t, r, side.target) {
					t.Fatalf("the real opt-out was not carried to %s: %v\n%s", side.target, p.out(t, "audit", r.runID), r.stderr)
				}
			})
		}
	}
}

// A change time already in state later than the run believes (stored when
// max_clock_skew allowed it, or by a version that did not check) does not
// make a present-day row stale: it is treated as unknown, logged once, and
// the real opt-out is carried.
func TestFutureTimeInStateIsForgotten(t *testing.T) {
	for _, side := range clockSides[:2] { // per-field times are not kept in state
		for _, mode := range clockModes {
			t.Run(side.name+"/"+mode.name, func(t *testing.T) {
				now := time.Now().UTC().Truncate(time.Second)
				base := now.Add(-72 * time.Hour)
				p := newClockProject(t, mode)
				p.night(t, d365Row(base, false), campaignRow(base, time.Time{}, false))

				// A clock two days ahead, believed on a night that allowed it.
				p.extra = "max_clock_skew: 72h\n"
				r := p.nightOf(t, rows(side.future(base, now.Add(48*time.Hour))))
				if rejects := p.out(t, "rejects", r.runID); len(rejects) != 0 {
					t.Fatalf("night 2 rejected %v", rejects)
				}

				p.extra = ""
				r = p.nightOf(t, rows(side.real(now.Add(-time.Minute))))
				if !p.carried(t, r, side.target) {
					t.Fatalf("the real opt-out was not carried to %s: %v\n%s", side.target, p.out(t, "audit", r.runID), r.stderr)
				}
				const logged = "treated as unknown"
				if n := strings.Count(r.stderr, logged); n != 1 || !strings.Contains(r.stderr, guid1) {
					t.Errorf("night 3 logged %q %d times:\n%s", logged, n, r.stderr)
				}
				r = p.night(t, "", "")
				if strings.Contains(r.stderr, logged) {
					t.Errorf("night 4 logged it again:\n%s", r.stderr)
				}
			})
		}
	}
}

func TestMaxClockSkewConfig(t *testing.T) {
	p := newProject(t, fmt.Sprintf(clockConfig, "d365: {csv: d365.csv}\ncampaign: {csv: campaign.csv}", "max_clock_skew: soon\n"))
	if r := p.cli(t, "validate"); r.code != exitUsage || !strings.Contains(r.stderr, `max_clock_skew: \"soon\" is not a duration`) {
		t.Errorf("exit %d: %s", r.code, r.stderr)
	}
}

// Through both APIs: a contact and a profile dated in the future are
// rejected (their reader's source, row number, id and reason), they do not
// carry the read watermarks past every real change, and the real opt-outs
// made on them afterwards reach the other system.
func TestFutureDatedRecordsThroughTheAPIs(t *testing.T) {
	for _, tracking := range []bool{true, false} {
		t.Run(fmt.Sprintf("change_tracking=%v", tracking), func(t *testing.T) { futureThroughAPIs(t, tracking) })
	}
}

func futureThroughAPIs(t *testing.T, tracking bool) {
	p := newCampaignProject(t, 3, true, "  source: api\n  target: api\n  changed_filter: {name: Changed, param: since}\n")
	if !tracking { // modifiedon gt the watermark
		cfg, _ := os.ReadFile(p.config)
		testkit.WriteFile(t, p.config, strings.Replace(string(cfg), "OPTSYNC_TEST_D365_SECRET\n", "OPTSYNC_TEST_D365_SECRET\n  change_tracking: false\n", 1))
	}
	if r := p.cli(t, "run"); r.code != 0 {
		t.Fatalf("night 1: exit %d\n%s", r.code, r.stderr)
	}
	// Contacts 1 and 2 and their profiles agree on false (3 opted out on
	// both). A clock in the year 9999 dates contact 1 and profile @p2.
	y9999 := time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)
	c1, _ := p.dsim.Contact(testkit.GUID(1))
	p.dsim.Seed([]d365sim.Contact{{ID: testkit.GUID(1), ModifiedOn: y9999, Fields: c1.Fields}})
	p2, _ := p.csim.Profile("@p2")
	p2.LastModified = y9999
	p.csim.Add(p2)
	r := p.cli(t, "run")
	if r.code != 0 {
		t.Fatalf("night 2: exit %d\n%s", r.code, r.stderr)
	}
	rejects := p.out(t, "rejects", r.runID)
	got := map[string]string{}
	for _, rj := range rejects {
		if !strings.Contains(rj["reason"], "9999-12-31T00:00:00Z is in the future") || rj["line"] == "" {
			t.Errorf("reject %v", rj)
		}
		got[rj["source"]] = rj["id"]
	}
	if len(rejects) != 2 || got["dataverse"] != testkit.GUID(1) || got["campaign api"] != "@p2" {
		t.Fatalf("night 2 rejects: %v", rejects)
	}

	// Both opt out for real.
	p.dsim.SetField(testkit.GUID(1), "donotemail", testkit.Bool(true))
	p.csim.SetField("@p2", "blackListEmail", testkit.Bool(true))
	if r := p.cli(t, "run"); r.code != 0 {
		t.Fatalf("night 3: exit %d\n%s", r.code, r.stderr)
	}
	if v := p.blackListEmail(t, 1); v == nil || !*v {
		t.Errorf("contact 1's opt-out did not reach Campaign: %v", v)
	}
	if c2, _ := p.dsim.Contact(testkit.GUID(2)); c2.Fields["donotemail"] == nil || !*c2.Fields["donotemail"] {
		t.Errorf("profile @p2's opt-out did not reach Dynamics: %v", c2.Fields["donotemail"])
	}
}
