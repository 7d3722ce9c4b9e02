package state

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"optsync/load"
)

// CheckKept stops a command that would start from nothing when runs
// before it kept a state: a state file that is missing while out_dir holds
// what earlier runs left (their update files, the state identity file).
// Such a run would decide every contact as at first sight. (An empty state
// file is refused when it is opened.)
// newState (backfill --new-state) is the deliberate start over.
func CheckKept(path, outDir string, newState bool) error {
	if newState {
		return nil
	}
	_, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		found, err := load.RunHistory(outDir)
		if err != nil {
			return err
		}
		if len(found) == 0 {
			return nil // a first run
		}
		return &LostError{Path: path, Problem: fmt.Sprintf("does not exist, but out_dir %s holds what earlier runs left (%s)", outDir, listSome(found, 3))}
	}
	return nil // the open says what else is wrong (an empty file among it)
}

// CheckIdentity compares the state file with the one out_dir's runs used
// (its state identity file): another state file is refused as a missing
// one is.
func CheckIdentity(st *Store, outDir string, newState bool) error {
	if st == nil || st.ID() == "" || newState {
		return nil
	}
	kept, found, err := load.ReadStateIdentity(outDir)
	if err != nil {
		return err
	}
	if found && kept.ID != st.ID() {
		return &LostError{Path: st.path, Problem: fmt.Sprintf("is not the state of the runs whose files are in out_dir %s: its identity is %s, and %s there names %s (state %s, since %s)",
			outDir, st.ID(), load.StateIdentityFile, kept.ID, kept.State, kept.Since.Format(time.RFC3339))}
	}
	return nil
}

// KeepIdentity writes out_dir's state identity file once a command has
// committed to the state file, when out_dir has none yet, or another one
// after a deliberate start over. Failing is logged: the next run writes
// it, and the update files in out_dir say meanwhile that runs were made.
func KeepIdentity(st *Store, outDir string, log zerolog.Logger) {
	kept, found, err := load.ReadStateIdentity(outDir)
	if err == nil && found && kept.ID == st.ID() {
		return
	}
	d, err := load.OutDir(outDir)
	if err == nil {
		err = d.WriteStateIdentity(load.StateIdentity{ID: st.ID(), State: st.path, Since: time.Now().UTC()})
		d.Close()
	}
	if err != nil {
		log.Error().Err(err).Msg("writing out_dir's state identity file; the next run writes it")
		return
	}
	log.Info().Str("file", filepath.Join(outDir, load.StateIdentityFile)).Str("state_id", st.ID()).Msg("written: the identity of the state file this folder's runs use")
}

// listSome names the first n items of a list and how many more there are.
func listSome(items []string, n int) string {
	if len(items) <= n {
		return strings.Join(items, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(items[:n], ", "), len(items)-n)
}
