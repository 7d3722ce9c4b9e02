package load

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"optsync/extract"
	"optsync/extract/spill"
	"optsync/transform"
)

// formatChanges makes n changes of 0 to 2 decisions each, reusing one
// Change and one decisions array as the decider does.
func formatChanges(n int, each func(*transform.Change) error) error {
	var ch transform.Change
	buf := make([]transform.Decision, 0, 2)
	for i := range n {
		buf = buf[:0]
		for k := range i % 3 {
			buf = append(buf, transform.Decision{Pair: k, Target: transform.ToCampaign, Old: extract.False, New: extract.True,
				Rule: transform.RuleConflictD365Newer, DModified: int64(i) * 1000, CModified: int64(k)})
		}
		var id extract.ID
		id[0], id[1], id[15] = byte(i>>8), byte(i), byte(i%3)
		ch = transform.Change{ID: id, PKey: "@pk" + strings.Repeat("x", i%5), Decisions: buf, CampaignChanged: len(buf) > 0}
		ch.CampaignAfter[0] = extract.True
		if err := each(&ch); err != nil {
			return err
		}
	}
	return nil
}

// Changes handed to the decisions' sink are written beside it, in the
// order handed, exactly as written in turn: the same files, byte for
// byte, over many batches; every use of the files after waits for them.
func TestOutputFormatsChangesAsWritten(t *testing.T) {
	const n = 3*formatBatch*formatBatches + 17
	files := func(dir string) map[string]string {
		m := map[string]string{}
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			m[e.Name()] = string(b)
		}
		return m
	}
	opt := func(dir string) WriterOptions {
		return WriterOptions{Dir: dir, RunID: "R", Pairs: pairs, D365Updates: true, CampaignUpdates: true}
	}
	inTurn := filepath.Join(t.TempDir(), "out")
	w, err := NewWriter(opt(inTurn), decided)
	if err != nil {
		t.Fatal(err)
	}
	if err := formatChanges(n, func(c *transform.Change) error { return w.Change(&Change{Change: *c}) }); err != nil {
		t.Fatal(err)
	}
	if err := w.Finish(); err != nil {
		t.Fatal(err)
	}

	beside := filepath.Join(t.TempDir(), "out")
	o := newTestOutput(t, beside)
	if err := o.Open(opt(beside), decided, &APIWriters{}); err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if err := formatChanges(n, func(c *transform.Change) error { return o.Decided(c, nil) }); err != nil {
		t.Fatal(err)
	}
	if err := o.Finish(zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	if o.w.AuditRows != w.AuditRows || o.Sum.CampaignRows != w.CampaignRows || w.AuditRows == 0 {
		t.Fatalf("beside the sink: %d audit rows, %d Campaign rows; in turn %d, %d", o.w.AuditRows, o.Sum.CampaignRows, w.AuditRows, w.CampaignRows)
	}
	want, got := files(inTurn), files(beside)
	if len(got) != len(want) {
		t.Fatalf("files %v, want %v", got, want)
	}
	for name, b := range want {
		if got[name] != b {
			t.Errorf("%s: %d bytes written beside the sink, %d in turn, not the same", name, len(got[name]), len(b))
		}
	}
}

// A write that fails beside the sink is returned by a later change handed
// to it, and by what uses the files next, never dropped.
func TestOutputFormatterReturnsAFailedWrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	o := newTestOutput(t, dir)
	if err := o.Open(WriterOptions{Dir: dir, RunID: "R", Pairs: pairs, CampaignUpdates: true}, decided, &APIWriters{}); err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	o.w.audit.f.Close() // every write of the audit fails from here
	err := formatChanges(20000, func(c *transform.Change) error { return o.Decided(c, nil) })
	if err == nil || !strings.Contains(err.Error(), "writing audit") {
		t.Fatalf("changes whose audit rows could not be written: %v, want the write's error", err)
	}
	if err2 := o.Finish(zerolog.Nop()); !errors.Is(err2, os.ErrClosed) {
		t.Fatalf("Finish after a failed write: %v, want it", err2)
	}
}

func newTestOutput(t *testing.T, dir string) *Output {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	o, err := NewOutput(dir, "R", NewSummary("R", "backfill"), spill.NewSorter(transform.RejectCodec(), 0, "", transform.RejectSize))
	if err != nil {
		t.Fatal(err)
	}
	return o
}
