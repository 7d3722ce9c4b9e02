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
	d, c, err := run.List(ctx, d365, api)
	if err != nil || !slices.Equal(paths(d), []string{"d2.csv"}) || d[0].Sum == "" || len(c) != 1 || c[0].Source() != CampaignAPI() || c[0].Path != "" {
		t.Errorf("run: %v %+v %v", paths(d), c, err)
	}
	run.Force = true
	if d, _, err = run.List(ctx, d365, api); err != nil || !slices.Equal(paths(d), []string{"d1.csv", "d2.csv"}) {
		t.Errorf("run --force: %v %v", paths(d), err)
	}

	backfill := Listing{Processed: processed}
	var ie *InputError
	if _, _, err = backfill.List(ctx, d365, api); !errors.As(err, &ie) {
		t.Errorf("backfill of a folder: %v, want an InputError", err)
	}
	d365.Flag = filepath.Join(dir, "d1.csv")
	if d, _, err = backfill.List(ctx, d365, api); err != nil || !slices.Equal(paths(d), []string{"d1.csv"}) || d[0].Sum != "" {
		t.Errorf("backfill --d365-csv: %+v %v", d, err)
	}
	// A flag wins over the API too: a backfill from an export.
	api.Flag = d365.Flag
	if _, c, err = backfill.List(ctx, d365, api); err != nil || !slices.Equal(paths(c), []string{"d1.csv"}) {
		t.Errorf("backfill --campaign-csv over the API: %+v %v", c, err)
	}
	for _, s := range []System{{Name: "d365"}, {Name: "d365", Pattern: filepath.Join(dir, "nosuch.csv")}} {
		if _, err := run.system(ctx, s); !errors.As(err, &ie) {
			t.Errorf("run of %+v: %v, want an InputError", s, err)
		}
		if _, err := backfill.system(ctx, s); !errors.As(err, &ie) {
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
