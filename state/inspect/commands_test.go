package inspect

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 12, 1, 2, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"2026-11-29T02:00:00Z": now.Add(-48 * time.Hour), "2026-11-01": time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC),
		"72h": now.Add(-72 * time.Hour), "30d": now.Add(-30 * 24 * time.Hour),
	} {
		if got, err := ParseSince(in, now); err != nil || !got.Equal(want) {
			t.Errorf("%s: %v, %v; want %v", in, got, err, want)
		}
	}
	var qe *QueryError
	if _, err := ParseSince("yesterday", now); !errors.As(err, &qe) ||
		err.Error() != `--since "yesterday": want RFC 3339, a date (2026-11-01) or an age (72h, 30d)` {
		t.Errorf("bad since: %v", err)
	}
}

// A read-only command's flag it cannot read is a QueryError (exit 2), said
// before any state is read; without a state file there is nothing to list.
func TestReadOnlyCommandFlags(t *testing.T) {
	src := Source{Path: filepath.Join(t.TempDir(), "none.db"), Log: zerolog.Nop()}
	var out bytes.Buffer
	for name, err := range map[string]error{
		`--format "xml": want table or json`:                 ListRuns(src, "xml", &out),
		`--format "xml": want table, csv or json`:            AuditCommand(src, AuditFlags{Run: "r", Format: "xml"}, &out),
		"audit needs --contact ID, --run ID or --since TIME": AuditCommand(src, AuditFlags{Format: "table"}, &out),
		`--contact "bob" is not a GUID`:                      Export(src, "", false, "bob", &out),
		"report takes --run ID or --since TIME, not both":    ReportCommand(src, "", "r", "1d", "", "v", &out),
	} {
		var qe *QueryError
		if !errors.As(err, &qe) || err.Error() != name {
			t.Errorf("got %v, want %q", err, name)
		}
	}
	if err := ListRuns(src, "json", &out); err != nil || out.String() != "[]\n" {
		t.Errorf("no state: %q, %v", out.String(), err)
	}
}
