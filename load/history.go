package load

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"
)

// StateIdentityFile is the file in out_dir that names the state file of
// the runs whose files are there: written when a run first uses a state
// file, so that a later run can tell that state is missing, or is another
// one, instead of starting over silently.
const StateIdentityFile = "state-identity"

// updateFile matches the names of the update files runs leave in out_dir,
// finished or uncommitted: only a run writes them (a plan writes an audit
// file, a rejects file and a report, as a run does, but never an update
// file, and may well come before the first run).
var updateFile = regexp.MustCompile(`^(d365|campaign)-updates-\d{8}T\d{6}Z-[0-9a-f]+(-uncommitted)?\.csv$`)

// RunHistory lists what earlier runs left in out_dir that says a state
// file was used: the state identity file (written by every run that
// commits) and update files, sorted (none when the folder does not exist).
func RunHistory(outDir string) ([]string, error) {
	entries, err := os.ReadDir(outDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("out_dir %s: %w", outDir, err)
	}
	var found []string
	for _, e := range entries {
		if e.Name() == StateIdentityFile || updateFile.MatchString(e.Name()) {
			found = append(found, e.Name())
		}
	}
	slices.Sort(found)
	return found, nil
}

// StateIdentity is what out_dir's state identity file says.
type StateIdentity struct {
	ID    string    // the state file's identity (state.Store.ID)
	State string    // its path, as configured when written
	Since time.Time // when it was written
}

// ReadStateIdentity reads out_dir's state identity file; found is false
// when there is none.
func ReadStateIdentity(outDir string) (id StateIdentity, found bool, err error) {
	root, err := os.OpenRoot(outDir)
	if errors.Is(err, fs.ErrNotExist) {
		return id, false, nil
	}
	if err != nil {
		return id, false, fmt.Errorf("out_dir %s: %w", outDir, err)
	}
	defer root.Close()
	f, err := root.Open(StateIdentityFile)
	if errors.Is(err, fs.ErrNotExist) {
		return id, false, nil
	}
	if err != nil {
		return id, false, fmt.Errorf("reading %s: %w", StateIdentityFile, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, 64<<10))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ": ")
		switch {
		case !ok || strings.HasPrefix(k, "#"):
		case k == "id":
			id.ID = v
		case k == "state":
			id.State = v
		case k == "since":
			id.Since, _ = time.Parse(time.RFC3339, v)
		}
	}
	if err := sc.Err(); err != nil {
		return id, false, fmt.Errorf("reading %s: %w", StateIdentityFile, err)
	}
	if id.ID == "" {
		return id, false, fmt.Errorf("%s in out_dir %s names no state (no id line); restore it, or remove it if this folder's runs are really over", StateIdentityFile, outDir)
	}
	return id, true, nil
}

// WriteStateIdentity writes out_dir's state identity file (0600, as every
// file there, replaced whole).
func (d *Dir) WriteStateIdentity(id StateIdentity) error {
	return d.WriteFile(StateIdentityFile, FileOptions{}, func(w io.Writer) error {
		_, err := fmt.Fprintf(w, "# optsync: the state file of the runs whose files are in this folder. A run\n"+
			"# refuses to start without it; to start over on purpose: optsync backfill --new-state\n"+
			"id: %s\nstate: %s\nsince: %s\n", id.ID, id.State, id.Since.UTC().Format(time.RFC3339))
		return err
	})
}
