package state

import (
	"strings"

	"github.com/rs/zerolog"

	"optsync/extract"
	"optsync/load"
	"optsync/transform"
)

// RecoverUncommitted is a run's first step with the files earlier runs
// finished but did not commit (they carry names that say so, and must not
// be imported). A run whose last transaction committed, stopped before it
// named its files, gets them named. A run that did not commit may have
// committed part of its contacts: their writes are in its update files
// and nowhere else, state waiting to see them imported; those rows go
// into the file's final name, the others are left out — this run decides
// those contacts again, the same way unless their records moved. The
// uncommitted files stay, for whoever looks into what happened.
func RecoverUncommitted(st *Store, outDir string, pairs []transform.Pair, log zerolog.Logger) error {
	runs, err := load.FindUncommitted(outDir)
	if err != nil || len(runs) == 0 {
		return err
	}
	history, err := st.Runs()
	if err != nil {
		return err
	}
	byID := map[string]Run{}
	for _, r := range history {
		byID[r.ID] = r
	}
	d, err := load.OutDir(outDir)
	if err != nil {
		return err
	}
	defer d.Close()
	reader, err := st.Reader()
	if err != nil {
		return err
	}
	defer reader.Close()
	for _, u := range runs {
		rec, known := byID[u.RunID]
		if known && rec.Committed {
			placed, err := d.PlaceCommitted(u)
			if err != nil {
				return err
			}
			log.Warn().Str("run", u.RunID).Strs("files", placed).Msg("the files of a run that committed but was stopped before it named them now carry their final names")
			continue
		}
		for _, name := range u.Updates() {
			if _, err := d.Stat(strings.Replace(name, "-uncommitted.csv", ".csv", 1)); err == nil {
				continue // done by an earlier run
			}
			keep := writtenBy(reader, pairs, rec, known, strings.HasPrefix(name, "d365-"))
			kept, dropped, err := d.RecoverUpdates(name, keep)
			if err != nil {
				return err
			}
			log.Warn().Str("run", u.RunID).Str("file", d.Path(name)).Int("rows_committed", kept).Int("rows_not_committed", dropped).
				Str("placed_as", d.Path(strings.Replace(name, "-uncommitted.csv", ".csv", 1))).
				Msg("a run did not commit its decisions: the rows of its update file that state recorded are placed under the file's final name, to be imported; the rest are decided again by this run. The uncommitted file is not to be imported")
		}
		if len(u.Updates()) == 0 {
			log.Info().Str("run", u.RunID).Strs("files", u.Files).Msg("files of a run that did not commit its decisions (kept for inspection; no update file)")
		}
	}
	return nil
}

// writtenBy says whether a row of a run's update file holds writes state
// recorded as made by that run (pending writes stamped with its start):
// a Dynamics row by its contactid, a Campaign row by its externalId and
// PKey. Of a run state has no record of, no row is.
func writtenBy(r *Reader, pairs []transform.Pair, run Run, known, d365 bool) load.KeepRow {
	at := run.Started.UnixMilli()
	var snap transform.Snapshot
	return func(row map[string]string) (bool, error) {
		if !known {
			return false, nil
		}
		key := row["externalId"]
		if d365 {
			key = row["contactid"]
		}
		id, ok := extract.ParseID(key)
		if !ok {
			return false, nil
		}
		found, err := r.Get(id, &snap)
		if err != nil || !found {
			return false, err
		}
		if !d365 && (!snap.CSeen || snap.PKey != row["PKey"]) {
			return false, nil
		}
		for i := range pairs {
			ps := snap.Pairs[i]
			if d365 && ps.DWritten.Known() && ps.DWrittenAt == at || !d365 && ps.CWritten.Known() && ps.CWrittenAt == at {
				return true, nil
			}
		}
		return false, nil
	}
}
