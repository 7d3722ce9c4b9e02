package load

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// partialsDir is an out_dir for a test, closed when it ends.
func partialsDir(t *testing.T) (string, *Dir) {
	t.Helper()
	out := t.TempDir()
	d, err := OutDir(out)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return out, d
}

// TestRemovePartialsLeavesOneBeingWritten: of a run's temporary files, the
// one a live writer holds (created by createTemp, still open) is left;
// one nobody holds (its writer killed) goes.
func TestRemovePartialsLeavesOneBeingWritten(t *testing.T) {
	out, d := partialsDir(t)
	const run = "20261202T020000Z-abcdef"
	open, held, err := d.createTemp("report-"+run+".html", 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	left, closed, err := d.createTemp("audit-"+run+".csv", 0o600)
	if err != nil {
		t.Fatal(err)
	}
	left.Close() // as a kill closes it
	removed, err := RemovePartials(out, []string{run})
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || removed[0] != closed {
		t.Fatalf("removed %v, want only %s", removed, closed)
	}
	if _, err := os.Stat(filepath.Join(out, held)); err != nil {
		t.Fatalf("the file being written was removed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(out, closed)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the file nobody holds is left: %v", err)
	}
}

// TestCompleteFileStaysLockedUntilPlaced: a file written, synced and not
// yet renamed (an `optsync report` between its last write and its rename)
// is still held, so a run starting then leaves it, and the rename finds it.
func TestCompleteFileStaysLockedUntilPlaced(t *testing.T) {
	out, d := partialsDir(t)
	const run = "20261202T020000Z-abcdef"
	o, err := createOut(d, "report-"+run+".html", 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.write([]byte("<html></html>\n")); err != nil {
		t.Fatal(err)
	}
	if err := o.complete(); err != nil {
		t.Fatal(err)
	}
	if removed, err := RemovePartials(out, []string{run}); err != nil || len(removed) != 0 {
		t.Fatalf("a run starting between a file's completion and its rename removed %v (%v)", removed, err)
	}
	if err := o.place(false); err != nil {
		t.Fatalf("placing the file: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(out, "report-"+run+".html")); err != nil || string(b) != "<html></html>\n" {
		t.Fatalf("the placed file: %q %v", b, err)
	}
}
