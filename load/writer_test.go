package load

import (
	"encoding/csv"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jszwec/csvutil"

	"optsync/extract"
	"optsync/fixtures/testkit"
	"optsync/transform"
)

const auditHeader = "run_id,decided_at,contact_id,profile_pkey,d365_field,campaign_field,direction,old_value,new_value,rule,d365_modified,campaign_modified,outcome,error"

var (
	// 03:00 at UTC+1 must come out as 02:00Z.
	decided = time.Date(2026, 11, 29, 3, 0, 0, 0, time.FixedZone("CET", 3600))
	dMod    = time.Date(2026, 11, 28, 10, 0, 0, 123e6, time.UTC).UnixMilli()
	cMod    = time.Date(2026, 11, 28, 9, 30, 0, 0, time.UTC).UnixMilli()
	pairs   = []transform.Pair{{D365: "donotemail", Campaign: "email"}, {D365: "donotbulkemail", Campaign: "postal", Invert: true}}
)

func mustID(t *testing.T, s string) extract.ID {
	t.Helper()
	id, ok := extract.ParseID(s)
	if !ok {
		t.Fatalf("bad id %q", s)
	}
	return id
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := []string{}
	for _, e := range es {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

func TestWriterRun(t *testing.T) {
	id1 := mustID(t, "0A1B2C3D-0000-0000-0000-00000000000A")
	id2 := mustID(t, "{ffffffff-1111-2222-3333-444444444444}")
	s1, s2 := id1.String(), id2.String()
	changes := []*Change{{Change: transform.Change{
		ID: id1, PKey: "@Abc_1-x",
		Decisions: []transform.Decision{
			{Pair: 0, Target: transform.ToCampaign, Old: extract.False, New: extract.True, Rule: "only-d365-changed", DModified: dMod, CModified: cMod},
			// Old/New set on a skip must not reach the audit.
			{Pair: 1, Old: extract.True, New: extract.False, Skip: "unknown-value", DModified: dMod, CModified: cMod},
		},
		D365After: [extract.MaxFields]extract.Tri{extract.False, extract.True}, CampaignAfter: [extract.MaxFields]extract.Tri{extract.True, extract.Unknown},
		CampaignChanged: true,
	}}, {Change: transform.Change{
		ID: id2, PKey: "@p2",
		Decisions: []transform.Decision{
			{Pair: 1, Target: transform.ToD365, Old: extract.True, New: extract.False, Rule: "conflict-campaign-newer", DModified: dMod, CModified: cMod},
		},
		D365After: [extract.MaxFields]extract.Tri{extract.True, extract.False}, CampaignAfter: [extract.MaxFields]extract.Tri{extract.False, extract.True},
		D365Changed: true,
	}}, {Change: transform.Change{
		ID: id2, PKey: "@p3", // nothing changed: no update rows
		D365After: [extract.MaxFields]extract.Tri{extract.True}, CampaignAfter: [extract.MaxFields]extract.Tri{extract.True},
	}}}
	rejects := []extract.Reject{
		{Source: extract.File("d365"), Line: 7, ID: "=HYPERLINK(x)", Reason: "=bad guid"},
		{Source: extract.File("campaign"), Line: 3, ID: "@SUM(A1)", Reason: "bad pkey"},
		{Source: extract.File("campaign"), Line: 4, ID: "@Good_1", Reason: "+bad flag", IDChecked: true},
	}
	const dm, cm = "2026-11-28T10:00:00.123Z", "2026-11-28T09:30:00Z"
	tests := []struct {
		name               string
		plan, d, c         bool
		outcome            string
		wantD, wantC       int
		files              []string
		wantD365, wantCamp [][]string
	}{
		{name: "apply both", d: true, c: true, outcome: Applied, wantD: 1, wantC: 1,
			files:    []string{"audit-R.csv", "campaign-updates-R.csv", "d365-updates-R.csv", "rejects-R.csv"},
			wantD365: [][]string{{"contactid", "donotemail", "donotbulkemail"}, {s2, "true", "false"}},
			wantCamp: [][]string{{"PKey", "externalId", "email", "postal"}, {"@Abc_1-x", s1, "true", ""}}},
		{name: "apply campaign only", c: true, outcome: Applied, wantC: 1,
			files:    []string{"audit-R.csv", "campaign-updates-R.csv", "rejects-R.csv"},
			wantCamp: [][]string{{"PKey", "externalId", "email", "postal"}, {"@Abc_1-x", s1, "true", ""}}},
		{name: "apply api targets", outcome: Applied, files: []string{"audit-R.csv", "rejects-R.csv"}},
		{name: "plan", plan: true, d: true, c: true, outcome: Planned, files: []string{"audit-R.csv", "rejects-R.csv"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "out")
			w, err := NewWriter(WriterOptions{Dir: dir, RunID: "R", Pairs: pairs, Plan: tt.plan, D365Updates: tt.d, CampaignUpdates: tt.c}, decided)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rejects {
				if err := w.Reject(r); err != nil {
					t.Fatal(err)
				}
			}
			for _, c := range changes {
				if err := w.Change(c); err != nil {
					t.Fatal(err)
				}
			}
			// Until Finish, each file has a temporary name of its own.
			got := names(t, dir)
			if len(got) != len(tt.files) {
				t.Errorf("before Finish: %v, want temporary names for %v", got, tt.files)
			}
			for i, f := range tt.files {
				if i < len(got) && !regexp.MustCompile(`^`+regexp.QuoteMeta(f)+`\.[0-9a-f]{8}\.partial$`).MatchString(got[i]) {
					t.Errorf("before Finish: %s, want a temporary name for %s", got[i], f)
				}
			}
			if err := w.Finish(); err != nil {
				t.Fatal(err)
			}
			if got := names(t, dir); !reflect.DeepEqual(got, tt.files) {
				t.Errorf("after Finish: %v, want %v", got, tt.files)
			}
			if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
				t.Errorf("dir mode: %v %v, want 0700", fi.Mode(), err)
			}
			for _, f := range tt.files {
				if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || fi.Mode().Perm() != 0o600 {
					t.Errorf("%s mode: %v %v, want 0600", f, fi.Mode(), err)
				}
			}
			wantPaths := []string{filepath.Join(dir, "audit-R.csv"), filepath.Join(dir, "rejects-R.csv")}
			if tt.d && !tt.plan {
				wantPaths = append(wantPaths, filepath.Join(dir, "d365-updates-R.csv"))
			}
			if tt.c && !tt.plan {
				wantPaths = append(wantPaths, filepath.Join(dir, "campaign-updates-R.csv"))
			}
			if got := w.Paths(); !reflect.DeepEqual(got, wantPaths) {
				t.Errorf("Paths = %v, want %v", got, wantPaths)
			}

			wantAudit := [][]string{
				strings.Split(auditHeader, ","),
				{"R", "2026-11-29T02:00:00Z", s1, "@Abc_1-x", "donotemail", "email", "d365->campaign", "false", "true", "only-d365-changed", dm, cm, tt.outcome, ""},
				{"R", "2026-11-29T02:00:00Z", s1, "@Abc_1-x", "donotbulkemail", "postal", "", "", "", "", dm, cm, Skipped, "unknown-value"},
				{"R", "2026-11-29T02:00:00Z", s2, "@p2", "donotbulkemail", "postal", "campaign->d365", "true", "false", "conflict-campaign-newer", dm, cm, tt.outcome, ""},
			}
			if got := testkit.ReadRaggedRecords(t, filepath.Join(dir, "audit-R.csv")); !reflect.DeepEqual(got, wantAudit) {
				t.Errorf("audit:\n got %q\nwant %q", got, wantAudit)
			}
			wantRej := [][]string{
				{"source", "line", "id", "reason"},
				{"d365", "7", "'=HYPERLINK(x)", "'=bad guid"},
				{"campaign", "3", "'@SUM(A1)", "bad pkey"},
				{"campaign", "4", "@Good_1", "'+bad flag"},
			}
			if got := testkit.ReadRaggedRecords(t, filepath.Join(dir, "rejects-R.csv")); !reflect.DeepEqual(got, wantRej) {
				t.Errorf("rejects:\n got %q\nwant %q", got, wantRej)
			}
			if tt.wantD365 != nil {
				if got := testkit.ReadRaggedRecords(t, filepath.Join(dir, "d365-updates-R.csv")); !reflect.DeepEqual(got, tt.wantD365) {
					t.Errorf("d365 updates:\n got %q\nwant %q", got, tt.wantD365)
				}
			}
			if tt.wantCamp != nil {
				if got := testkit.ReadRaggedRecords(t, filepath.Join(dir, "campaign-updates-R.csv")); !reflect.DeepEqual(got, tt.wantCamp) {
					t.Errorf("campaign updates:\n got %q\nwant %q", got, tt.wantCamp)
				}
			}
			if w.AuditRows != 3 || w.RejectRows != 3 || w.D365Rows != tt.wantD || w.CampaignRows != tt.wantC {
				t.Errorf("counts audit=%d rejects=%d d365=%d campaign=%d, want 3 3 %d %d",
					w.AuditRows, w.RejectRows, w.D365Rows, w.CampaignRows, tt.wantD, tt.wantC)
			}
		})
	}
}

func TestAuditEscapesD365Field(t *testing.T) {
	dir := t.TempDir()
	p := []transform.Pair{{D365: "=cmd|'/c calc'!A1", Campaign: "email"}}
	w, err := NewWriter(WriterOptions{Dir: dir, RunID: "R", Pairs: p, Plan: true}, decided)
	if err != nil {
		t.Fatal(err)
	}
	id := mustID(t, "0a1b2c3d-0000-0000-0000-00000000000a")
	err = w.Change(&Change{Change: transform.Change{ID: id, PKey: "@-x", Decisions: []transform.Decision{{Target: transform.ToCampaign, Old: extract.False, New: extract.True}}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Finish(); err != nil {
		t.Fatal(err)
	}
	got := testkit.ReadRaggedRecords(t, filepath.Join(dir, "audit-R.csv"))
	if len(got) != 2 || got[1][2] != id.String() || got[1][3] != "@-x" || got[1][4] != "'=cmd|'/c calc'!A1" {
		t.Errorf("audit = %q", got)
	}
}

func TestAbortRemovesPartials(t *testing.T) {
	for _, plan := range []bool{false, true} {
		dir := t.TempDir()
		w, err := NewWriter(WriterOptions{Dir: dir, RunID: "R", Pairs: pairs, Plan: plan, D365Updates: true, CampaignUpdates: true}, decided)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Reject(extract.Reject{Source: extract.File("d365"), Line: 2, Reason: "x"}); err != nil {
			t.Fatal(err)
		}
		w.Abort()
		if got := names(t, dir); len(got) != 0 {
			t.Errorf("plan=%v: after Abort: %v, want none", plan, got)
		}
	}
}

// A file that cannot be created must make NewWriter return an error and
// remove the files it already created.
func TestNewWriterCreateFailure(t *testing.T) {
	for _, blocked := range []string{"audit-R.csv", "rejects-R.csv", "campaign-updates-R.csv"} {
		t.Run(blocked, func(t *testing.T) {
			dir := t.TempDir()
			boom := errors.New("no space left")
			fail := func(name string) error {
				if name == blocked {
					return boom
				}
				return nil
			}
			var err error
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Errorf("NewWriter panicked: %v", r)
					}
				}()
				_, err = NewWriter(WriterOptions{Dir: dir, RunID: "R", Pairs: pairs, D365Updates: true, CampaignUpdates: true, failCreate: fail}, decided)
				if !errors.Is(err, boom) {
					t.Errorf("NewWriter: %v, want %v", err, boom)
				}
			}()
			if got := names(t, dir); len(got) != 0 {
				t.Errorf("left behind: %v, want nothing", got)
			}
		})
	}
}

// An Uncommitted writer's files carry names that say so once finished, and
// their final names only when Commit says state holds the run's decisions;
// a writer closed without Commit leaves them under the names that say so.
func TestUncommittedFilesTakeTheirNamesOnCommit(t *testing.T) {
	names := func(dir string) []string {
		es, _ := os.ReadDir(dir)
		var out []string
		for _, e := range es {
			out = append(out, e.Name())
		}
		return out
	}
	for _, commit := range []bool{true, false} {
		dir := t.TempDir()
		w, err := NewWriter(WriterOptions{Dir: dir, RunID: "R", Pairs: pairs, D365Updates: true, CampaignUpdates: true, Uncommitted: true}, decided)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Finish(); err != nil {
			t.Fatal(err)
		}
		want := []string{"audit-R-uncommitted.csv", "campaign-updates-R-uncommitted.csv", "d365-updates-R-uncommitted.csv", "rejects-R-uncommitted.csv"}
		if got := names(dir); !slices.Equal(got, want) {
			t.Fatalf("finished: %v, want %v", got, want)
		}
		if commit {
			if err := w.Commit(); err != nil {
				t.Fatal(err)
			}
			want = []string{"audit-R.csv", "campaign-updates-R.csv", "d365-updates-R.csv", "rejects-R.csv"}
		}
		w.Close()
		if got := names(dir); !slices.Equal(got, want) {
			t.Fatalf("commit %v: %v, want %v", commit, got, want)
		}
		if got := w.Paths(); len(got) != 4 || filepath.Base(got[0]) != want[0] {
			t.Fatalf("paths %v", got)
		}
	}
}

// appendRow writes every cell as encoding/csv's Writer does: the fields
// it quotes (commas, quotes, line breaks, a leading space of any kind,
// `\.`) and those it leaves.
func TestAppendRowAsEncodingCSV(t *testing.T) {
	rows := [][]string{
		{"a", "b"}, {""}, {"", ""}, {`a,"b"`, "line\nbreak", "cr\r", " lead", "\tlead", "\u00a0nbsp", "\u0085nel", "\u2003em"},
		{`\.`, `\..`, `.\`, "trail ", "in side", "=x", "@p", "é", "\xff"},
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	alphabet := []string{"a", ",", `"`, "\r", "\n", " ", "\t", "\u00a0", `\`, ".", "é", "\xff"}
	for range 2000 {
		row := make([]string, 1+rnd.IntN(4))
		for k := range row {
			for range rnd.IntN(5) {
				row[k] += alphabet[rnd.IntN(len(alphabet))]
			}
		}
		rows = append(rows, row)
	}
	for _, row := range rows {
		var want strings.Builder
		w := csv.NewWriter(&want)
		if err := w.Write(row); err != nil {
			t.Fatal(err)
		}
		w.Flush()
		if got := string(appendRow(nil, row...)); got != want.String() {
			t.Errorf("appendRow(%q) = %q, encoding/csv writes %q", row, got, want.String())
		}
	}
}

// The audit and update files hold, byte for byte, what csvutil and
// encoding/csv wrote for the same rows before they were written cell by
// cell: AuditRow's columns in its order, quoted where encoding/csv quotes.
func TestWriterRowsAsCsvutil(t *testing.T) {
	dir := t.TempDir()
	p := []transform.Pair{{D365: "=donotemail", Campaign: "a,b"}, {D365: "donotphone", Campaign: " lead"}}
	w, err := NewWriter(WriterOptions{Dir: dir, RunID: "R", Pairs: p, D365Updates: true, CampaignUpdates: true,
		PendingSince: func(int64) string { return `run "x", earlier` }}, decided)
	if err != nil {
		t.Fatal(err)
	}
	id := mustID(t, "0a1b2c3d-0000-0000-0000-00000000000a")
	changes := []Change{{Change: transform.Change{ID: id, PKey: `@a,"b"`, Decisions: []transform.Decision{
		{Pair: 0, Target: transform.ToCampaign, Old: extract.False, New: extract.True, Rule: "only-d365-changed", DModified: dMod, CModified: cMod},
		{Pair: 1, Skip: "unknown-value: d365, campaign blank", DModified: extract.NoTime, CModified: 1010},
		{Pair: 1, Target: transform.ToD365, Old: extract.False, New: extract.True, Pending: true, Since: 5, DModified: -1, CModified: 0},
	}, D365After: [extract.MaxFields]extract.Tri{extract.True, extract.Unknown}, CampaignAfter: [extract.MaxFields]extract.Tri{extract.False, extract.True},
		D365Changed: true, CampaignChanged: true}, CampaignError: "=refused, \"really\"\nyes"}}
	rows := []AuditRow{
		{RunID: "R", DecidedAt: "2026-11-29T02:00:00Z", ContactID: id.String(), ProfilePKey: `@a,"b"`, D365Field: "'=donotemail", CampaignField: "a,b",
			Direction: "d365->campaign", OldValue: "false", NewValue: "true", Rule: "only-d365-changed", D365Modified: extract.FormatTime(dMod),
			CampaignModified: extract.FormatTime(cMod), Outcome: Failed, Error: "'=refused, \"really\"\nyes"},
		{RunID: "R", DecidedAt: "2026-11-29T02:00:00Z", ContactID: id.String(), ProfilePKey: `@a,"b"`, D365Field: "donotphone", CampaignField: " lead",
			CampaignModified: extract.FormatTime(1010), Outcome: Skipped, Error: "unknown-value: d365, campaign blank"},
		{RunID: "R", DecidedAt: "2026-11-29T02:00:00Z", ContactID: id.String(), ProfilePKey: `@a,"b"`, D365Field: "donotphone", CampaignField: " lead",
			Direction: "campaign->d365", OldValue: "false", NewValue: "true", D365Modified: extract.FormatTime(-1), CampaignModified: extract.FormatTime(0),
			Outcome: transform.OutcomePendingNotSeen, Error: PendingReason(5, func(int64) string { return `run "x", earlier` })},
	}
	for i := range changes {
		if err := w.Change(&changes[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Finish(); err != nil {
		t.Fatal(err)
	}
	var audit strings.Builder
	cw := csv.NewWriter(&audit)
	if err := csvutil.NewEncoder(cw).Encode(rows); err != nil {
		t.Fatal(err)
	}
	cw.Flush()
	var d365, camp strings.Builder
	dw, campW := csv.NewWriter(&d365), csv.NewWriter(&camp)
	_ = dw.WriteAll([][]string{{"contactid", "=donotemail", "donotphone"}, {id.String(), "true", ""}})
	_ = campW.WriteAll([][]string{{"PKey", "externalId", "a,b", " lead"}, {`@a,"b"`, id.String(), "false", "true"}})
	for name, want := range map[string]string{"audit-R.csv": audit.String(), "d365-updates-R.csv": d365.String(), "campaign-updates-R.csv": camp.String()} {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Errorf("%s:\n got %q\nwant %q", name, got, want)
		}
	}
}
