package extract

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"optsync/fixtures/testkit"
)

func paths(files []InputFile) []string {
	var p []string
	for _, f := range files {
		p = append(p, filepath.Base(f.Path))
	}
	return p
}

// TestDropFiles: a folder's exports come oldest first by name; hidden and
// partial files (transfers in progress) and folders are not inputs; a glob
// lists what it matches; a name that is nothing is an InputError.
func TestDropFiles(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"b.csv", "a.csv", ".hidden.csv", "c.csv.partial"} {
		testkit.WriteFile(t, filepath.Join(dir, n), "x\n")
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	files, err := DropFiles(dir)
	if err != nil || !slices.Equal(paths(files), []string{"a.csv", "b.csv"}) {
		t.Fatalf("folder: %v %v", paths(files), err)
	}
	if files[0].Size != 2 || files[0].Mtime.IsZero() || files[0].Sum != "" || !files[0].Source().IsFile() {
		t.Errorf("a.csv: %+v", files[0])
	}
	if files, err = DropFiles(filepath.Join(dir, "b*")); err != nil || !slices.Equal(paths(files), []string{"b.csv"}) {
		t.Errorf("glob: %v %v", paths(files), err)
	}
	var ie *InputError
	if _, err = DropFiles(filepath.Join(dir, "nosuch.csv")); !errors.As(err, &ie) || err.Error() != "input "+filepath.Join(dir, "nosuch.csv")+" does not exist" {
		t.Errorf("missing: %v", err)
	}
}

// TestListing: a run reads the drop's files not processed yet (all of
// them with Force); a backfill one export per system, the flag's over the
// config's; a system read through its API has its API as its one input.
func TestListing(t *testing.T) {
	dir := t.TempDir()
	testkit.WriteFile(t, filepath.Join(dir, "d1.csv"), "one\n")
	testkit.WriteFile(t, filepath.Join(dir, "d2.csv"), "two\n")
	seen, err := HashFile(filepath.Join(dir, "d1.csv"))
	if err != nil || len(seen) != 64 {
		t.Fatalf("hash %q %v", seen, err)
	}
	processed := func(sum string) (bool, error) { return sum == seen, nil }
	ctx := context.Background()
	d365 := System{Name: "d365", Pattern: dir}
	api := System{Name: "campaign", API: CampaignAPI(), Pattern: filepath.Join(dir, "nosuch")}

	run := Listing{Incremental: true, Processed: processed}
	d, c, _, err := run.List(ctx, d365, api)
	if err != nil || !slices.Equal(paths(d), []string{"d2.csv"}) || d[0].Sum == "" || len(c) != 1 || c[0].Source() != CampaignAPI() || c[0].Path != "" {
		t.Errorf("run: %v %+v %v", paths(d), c, err)
	}
	run.Force = true
	if d, _, _, err = run.List(ctx, d365, api); err != nil || !slices.Equal(paths(d), []string{"d1.csv", "d2.csv"}) {
		t.Errorf("run --force: %v %v", paths(d), err)
	}

	backfill := Listing{Processed: processed}
	var ie *InputError
	if _, _, _, err = backfill.List(ctx, d365, api); !errors.As(err, &ie) {
		t.Errorf("backfill of a folder: %v, want an InputError", err)
	}
	d365.Flag = filepath.Join(dir, "d1.csv")
	if d, _, _, err = backfill.List(ctx, d365, api); err != nil || !slices.Equal(paths(d), []string{"d1.csv"}) || d[0].Sum != "" {
		t.Errorf("backfill --d365-csv: %+v %v", d, err)
	}
	// A flag wins over the API too: a backfill from an export.
	api.Flag = d365.Flag
	if _, c, _, err = backfill.List(ctx, d365, api); err != nil || !slices.Equal(paths(c), []string{"d1.csv"}) {
		t.Errorf("backfill --campaign-csv over the API: %+v %v", c, err)
	}
	for _, s := range []System{{Name: "d365"}, {Name: "d365", Pattern: filepath.Join(dir, "nosuch.csv")}} {
		if _, _, err := run.system(ctx, s); !errors.As(err, &ie) {
			t.Errorf("run of %+v: %v, want an InputError", s, err)
		}
		if _, _, err := backfill.system(ctx, s); !errors.As(err, &ie) {
			t.Errorf("backfill of %+v: %v, want an InputError", s, err)
		}
	}
}

// TestNameAndWhere: how messages name a side's inputs and a row in another
// input than its own.
func TestNameAndWhere(t *testing.T) {
	files := []InputFile{{Path: "/drop/a.csv", Mtime: time.Now()}, {Src: RetryQueue(Source{})}}
	for _, tc := range []struct {
		in   []InputFile
		want string
	}{{nil, "no file"}, {files[:1], "/drop/a.csv"}, {files[1:], "retry queue"}, {files, "2 files"}} {
		if got := Name(tc.in); got != tc.want {
			t.Errorf("Name(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got := Where(files, 0, 0, 7); got != "line 7" {
		t.Errorf("same file: %q", got)
	}
	if got := Where(files, 1, 0, 7); got != "a.csv line 7" {
		t.Errorf("other file: %q", got)
	}
}

// A system's input is its API when its source says so, else its files.
func TestInputOf(t *testing.T) {
	for _, tc := range []struct {
		name, source string
		want         Source
	}{
		{"d365", "api", DataverseAPI()},
		{"campaign", "api", CampaignAPI()},
		{"d365", "csv", Source{}},
	} {
		s := InputOf(tc.name, tc.source, "drop/*.csv", "x.csv")
		if s.API != tc.want || s.Name != tc.name || s.Pattern != "drop/*.csv" || s.Flag != "x.csv" {
			t.Errorf("InputOf(%s, %s) = %+v", tc.name, tc.source, s)
		}
	}
}

// TestStampOf: a file's stamp stays while nothing touches it, changes
// when it is written (even to the same size) or only touched, and is
// empty while the file changed too recently to vouch for its bytes.
func TestStampOf(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.csv")
	testkit.WriteFile(t, path, "one\n")
	stamp := func(now time.Time) string {
		t.Helper()
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return stampOf(fi, now)
	}
	later := time.Now().Add(time.Hour)
	first := stamp(later)
	if first == "" {
		t.Skip("no stamps on this system")
	}
	if again := stamp(later); again != first {
		t.Fatalf("the stamp of an untouched file moved: %q, then %q", first, again)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := stamp(fi.ModTime().Add(time.Second)); got != "" {
		t.Errorf("a file listed a second after it was written has the stamp %q: it cannot vouch for its bytes yet", got)
	}
	testkit.WriteFile(t, path, "two\n") // same size
	second := stamp(later)
	if second == "" || second == first {
		t.Errorf("a file written again kept its stamp: %q, then %q", first, second)
	}
	old := time.Now().Add(-48 * time.Hour)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
	if third := stamp(later); third == "" || third == second {
		t.Errorf("a file touched kept its stamp: %q, then %q", second, third)
	}
}

// TestNewFilesKnowsAFileByItsStamp: a file state saw at the same path with
// the same stamp is skipped unread (its sum is the one state remembers,
// not read again); one known by its content alone is skipped and marked
// for a restamp when it has a stamp; Force reads every file again.
func TestNewFilesKnowsAFileByItsStamp(t *testing.T) {
	dir := t.TempDir()
	a, b, c := filepath.Join(dir, "a.csv"), filepath.Join(dir, "b.csv"), filepath.Join(dir, "c.csv")
	testkit.WriteFile(t, a, "one\n")
	testkit.WriteFile(t, b, "two\n")
	testkit.WriteFile(t, c, "three\n")
	later := func() time.Time { return time.Now().Add(time.Hour) }
	files, err := dropFilesAt(dir, later())
	if err != nil {
		t.Fatal(err)
	}
	if files[0].Stamp == "" {
		t.Skip("no stamps on this system")
	}
	sumB, err := HashFile(b)
	if err != nil {
		t.Fatal(err)
	}
	const remembered = "f00d" // what state says a.csv held: it is not read again to check
	known := Known{
		Processed: func(sum string) (bool, error) { return sum == sumB, nil },
		Stamped: func(path, stamp string) (string, bool, error) {
			if path == a && stamp == files[0].Stamp {
				return remembered, true, nil
			}
			return "", false, nil
		},
	}
	fresh, skipped, err := NewFiles(context.Background(), files, known)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(paths(fresh), []string{"c.csv"}) || !slices.Equal(paths(skipped), []string{"a.csv", "b.csv"}) {
		t.Fatalf("fresh %v, skipped %v", paths(fresh), paths(skipped))
	}
	if skipped[0].Sum != remembered || skipped[0].Restamp {
		t.Errorf("a.csv, known by its stamp: %+v, want the remembered sum and no restamp", skipped[0])
	}
	if skipped[1].Sum != sumB || !skipped[1].Restamp {
		t.Errorf("b.csv, known by its content: %+v, want its sum and a restamp", skipped[1])
	}
	// no stamp (too new): known by content, nothing to restamp
	files[1].Stamp = ""
	if _, skipped, err = NewFiles(context.Background(), files[1:2], known); err != nil || len(skipped) != 1 || skipped[0].Restamp {
		t.Errorf("b.csv without a stamp: %+v %v", skipped, err)
	}
	// The listing hands the restamps on, and Force reads everything.
	l := Listing{Incremental: true, Processed: known.Processed, Stamped: known.Stamped, Now: later}
	d, _, restamp, err := l.List(context.Background(), System{Name: "d365", Pattern: dir}, System{Name: "campaign", API: CampaignAPI()})
	if err != nil || !slices.Equal(paths(d), []string{"c.csv"}) || !slices.Equal(paths(restamp), []string{"b.csv"}) {
		t.Errorf("listing: fresh %v, restamp %v, %v", paths(d), paths(restamp), err)
	}
	l.Force = true
	d, _, restamp, err = l.List(context.Background(), System{Name: "d365", Pattern: dir}, System{Name: "campaign", API: CampaignAPI()})
	if err != nil || len(d) != 3 || d[0].Sum == remembered || len(restamp) != 0 {
		t.Errorf("listing with Force: %+v, restamp %v, %v", d, paths(restamp), err)
	}
}
