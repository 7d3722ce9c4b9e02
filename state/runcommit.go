package state

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"optsync/extract"
	"optsync/load"
	"optsync/load/progress"
	"optsync/transform"
)

// RunCommit is what a run whose files are finished commits: its decisions,
// its ending, then its files' final names and the config's housekeeping.
type RunCommit struct {
	Ending
	// Code is the exit code the run returns, which its history keeps.
	Code     int
	Decider  *transform.Decider
	Deciding Deciding
	Output   *load.Output
	// Before and Diff are what state said at the run's start: its retry
	// queue is settled, its totals say whether the PKey index is written
	// whole, a mapping removed since has its snapshots dropped.
	Before Before
	Diff   ConfigDiff
	// Release lets go of the rows read, before the PKey index is written.
	Release func()
	// Pairs are the configured mappings.
	Pairs      []transform.Pair
	OutDir     string
	Chunk      int
	AfterChunk func(n int)
	Progress   *progress.Progress
	Log        zerolog.Logger
}

// CommitRun records a finished run: its files are complete and their
// writes applied, so state must now say so even if a signal arrives
// meanwhile (ctx only carries values). Then the files take their final
// names. A failure leaves the run's record running, for its caller's
// failure recorder.
func (s *Store) CommitRun(ctx context.Context, c RunCommit) error {
	ctx = context.WithoutCancel(ctx)
	run, sum := c.Run, c.Output.Sum
	c.MappingAdded = c.Diff.MappingAdded
	// The queue the run read is settled, but for the contacts it kept out
	// (a bad row, two profiles): not decided, they stay queued.
	c.Queued = nil
	for _, it := range c.Before.Queue {
		if !c.Decider.StillQueued(it.Contact) {
			c.Queued = append(c.Queued, it)
		}
	}
	sum.Deleted = len(c.Deleted)
	for i := range c.Files {
		c.Files[i].RunID = run.ID
	}
	fin := c.Final()
	run.End(c.Code, sum.Counts())
	run.Committed = true // with the last transaction only
	// A backfill that changed more than a few records writes the PKey
	// index whole: its entries change in PKey order, not in the contacts'
	// order the commit writes them in, and a page of the index rewritten
	// per record changed costs more than all of it.
	//
	// Sorting its entries (a million PKeys: a tenth of a second) runs
	// beside the first chunks, which go without keys of the index until
	// it is done (PKeysReady), rather than before the commit's first
	// transaction: the commit waits for its writes, and the other core
	// has time meanwhile.
	//
	// Once sorted, the entries are read ahead on that goroutine too
	// (pkeys_ahead.go).
	var whole func() (string, extract.ID, bool, error)
	var ready func() bool
	if pkeys, dirty := c.Deciding.PKeys, c.Deciding.Dirty; pkeys != nil && int64(dirty.Len())*64 > int64(max(c.Before.Totals.D365, c.Before.Totals.Campaign)) {
		ahead := startPKeysAhead(pkeys.Sorted)
		defer ahead.stop()
		whole, ready = ahead.next, ahead.ready
	}
	// One spare P and one releaser for all the run's transactions, not one
	// each (releaseDuring).
	stop := s.releaseDuring()
	err := s.CommitDecisions(ctx, c.Decider, c.Deciding.Dirty, CommitOptions{Started: run.Started, Final: fin,
		PKeys: whole, PKeysReady: ready, Release: c.Release, Failed: c.Failed, RunName: c.Before.RunName,
		Chunk: c.Chunk, AfterChunk: c.AfterChunk, Progress: c.Progress, Log: c.Log})
	stop()
	if err != nil {
		run.Outcome, run.Committed = "running", false
		return fmt.Errorf("committing state (the files of this run keep names that say so, %s: not to be imported; the next run places the rows of the contacts committed and decides the others again, the same way): %w",
			strings.Join(c.Output.Paths(), ", "), err)
	}
	// State holds the run's decisions: its files take their final names.
	if err := c.Output.Commit(c.Log); err != nil {
		run.Outcome = "running"
		return fmt.Errorf("state holds the decisions of this run, but its files could not take their final names (the next run names them): %w", err)
	}
	// out_dir now holds files of a run that used this state file.
	KeepIdentity(s, c.OutDir, c.Log)
	// Config housekeeping belongs to the run's commit: a removed mapping's
	// snapshots go now that the run has committed (a run that stopped kept
	// them). Killed here, the next run drops them.
	if len(c.Diff.Removed) > 0 {
		dropped, err := s.DropUnmapped(ctx, c.Pairs)
		if err != nil {
			c.Log.Error().Err(err).Msg("dropping the snapshots of removed mappings failed; the next run drops them")
		}
		for _, p := range dropped {
			c.Log.Info().Str("mapping", PairName(p)).Msg("snapshots of a removed mapping dropped")
		}
	}
	return nil
}

// ProcessedFiles are the input files a run read that state remembers as
// processed (a run's drops: a backfill's export has no sum); CommitRun
// names the run.
func ProcessedFiles(d365, campaign []extract.InputFile) []ProcessedFile {
	var out []ProcessedFile
	for _, f := range slices.Concat(d365, campaign) {
		if f.Sum != "" {
			system := "d365"
			if slices.Contains(campaign, f) {
				system = "campaign"
			}
			out = append(out, ProcessedFile{SHA256: f.Sum, System: system, Path: f.Path, Size: f.Size, Processed: time.Now().UTC(), Seen: seenAs(f.Stamp, f.Path)})
		}
	}
	return out
}

// Restamps are the records of processed files found again by their
// content (extract.Records.Restamp), with the stamp they were seen with.
func Restamps(files []extract.InputFile) []ProcessedFile {
	var out []ProcessedFile
	for _, f := range files {
		if f.Sum != "" && f.Stamp != "" {
			out = append(out, ProcessedFile{SHA256: f.Sum, Seen: seenAs(f.Stamp, f.Path)})
		}
	}
	return out
}
