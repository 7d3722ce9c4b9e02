package load

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"regexp"
	"slices"
	"strings"
)

// uncommittedMark ends the name (before .csv) of a file whose run has
// finished its files but not recorded its decisions in state.
const uncommittedMark = "-uncommitted"

// UncommittedName is the name a run's file carries until its run commits:
// audit-<run>.csv → audit-<run>-uncommitted.csv.
func UncommittedName(name string) string {
	base, ext := strings.TrimSuffix(name, ".csv"), ".csv"
	return base + uncommittedMark + ext
}

func finalName(name string) string {
	return strings.TrimSuffix(strings.TrimSuffix(name, ".csv"), uncommittedMark) + ".csv"
}

var uncommittedFile = regexp.MustCompile(`^(audit|rejects|d365-updates|campaign-updates)-(\d{8}T\d{6}Z-[0-9a-f]+)-uncommitted\.csv$`)

// UncommittedRun is the files a run finished but did not commit, by name.
type UncommittedRun struct {
	RunID string
	Files []string // sorted
}

// Updates lists the run's update files among them.
func (u UncommittedRun) Updates() []string {
	var out []string
	for _, f := range u.Files {
		if strings.Contains(f, "-updates-") {
			out = append(out, f)
		}
	}
	return out
}

// FindUncommitted lists the runs that left files under uncommitted names
// in out_dir, oldest first.
func FindUncommitted(outDir string) ([]UncommittedRun, error) {
	entries, err := os.ReadDir(outDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("out_dir %s: %w", outDir, err)
	}
	byRun := map[string][]string{}
	for _, e := range entries {
		if m := uncommittedFile.FindStringSubmatch(e.Name()); m != nil && e.Type().IsRegular() {
			byRun[m[2]] = append(byRun[m[2]], e.Name())
		}
	}
	var runs []UncommittedRun
	for id, files := range byRun {
		slices.Sort(files)
		runs = append(runs, UncommittedRun{RunID: id, Files: files})
	}
	slices.SortFunc(runs, func(a, b UncommittedRun) int { return strings.Compare(a.RunID, b.RunID) })
	return runs, nil
}

// PlaceCommitted gives the files of a run that did commit (and was stopped
// before it named them) their final names.
func (d *Dir) PlaceCommitted(u UncommittedRun) ([]string, error) {
	var placed []string
	for _, name := range u.Files {
		final := finalName(name)
		if err := d.root.Rename(name, final); err != nil {
			return placed, fmt.Errorf("naming %s %s: %w", d.Path(name), final, err)
		}
		placed = append(placed, final)
	}
	return placed, d.sync()
}

// KeepRow says whether a row of an update file holds writes state
// recorded: the row by its header's columns.
type KeepRow func(row map[string]string) (bool, error)

// RecoverUpdates makes the update file of a run that did not commit safe to
// import: the rows whose writes state recorded (the run committed part of
// its contacts before it failed) go into the file's final name, header
// and all, however few; the others are not written — the next run decides
// those contacts again. The uncommitted file stays as it was, its name
// saying it must not be imported. It returns how many rows were kept and
// dropped.
func (d *Dir) RecoverUpdates(name string, keep KeepRow) (kept, dropped int, err error) {
	f, err := d.root.Open(name)
	if err != nil {
		return 0, 0, fmt.Errorf("reading %s: %w", d.Path(name), err)
	}
	defer f.Close()
	r := csv.NewReader(f)
	header, err := r.Read()
	if err != nil {
		return 0, 0, fmt.Errorf("reading %s: %w", d.Path(name), err)
	}
	var rows [][]string
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, 0, fmt.Errorf("reading %s: %w", d.Path(name), err)
		}
		m := make(map[string]string, len(header))
		for i, h := range header {
			if i < len(rec) {
				m[h] = rec[i]
			}
		}
		ok, err := keep(m)
		if err != nil {
			return 0, 0, err
		}
		if !ok {
			dropped++
			continue
		}
		rows = append(rows, rec)
	}
	err = d.WriteFile(finalName(name), FileOptions{NoReplace: true}, func(w io.Writer) error {
		cw := csv.NewWriter(w)
		if err := cw.Write(header); err != nil {
			return err
		}
		if err := cw.WriteAll(rows); err != nil {
			return err
		}
		return cw.Error()
	})
	return len(rows), dropped, err
}

// Stat describes a file of the folder.
func (d *Dir) Stat(name string) (fs.FileInfo, error) { return d.root.Lstat(name) }
