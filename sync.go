package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"optsync/extract"
	"optsync/extract/spill"
	"optsync/load"
	"optsync/load/progress"
	"optsync/state"
	"optsync/transform"
)

// job is one backfill, run or plan: extract → transform → load, then state.
type job struct {
	cfg     *Config
	log     zerolog.Logger
	stdout  io.Writer
	command string
	// incremental: the inputs hold changes (run), not full exports
	// (backfill); a record whose counterpart is not in them is decided
	// against what state knows of the other side.
	incremental    bool
	d365Path       string // backfill: one export per system
	campaignPath   string
	force          bool // run: process files already processed
	replay         bool
	plan           bool
	allowMassOptin bool
	allowMissing   bool
	// newState: backfill --new-state, a deliberate start over; stateAside
	// is where the state file found was moved ("" when there was none).
	newState   bool
	stateAside string
	progress   *progress.Progress
	hooks      hooks
	dv         *d365Conn     // the Dataverse connector, when d365 uses the API
	cv         *campaignConn // the Campaign connector, when campaign uses the API
	queue      []state.RetryItem
	// mappingAdded: a mapping is new since the last run, so systems read
	// through an API are read in full; mappingsRemoved are dropped from
	// state after the run's commit.
	mappingAdded    bool
	mappingsRemoved []transform.Pair
	// sum and started are the run's, for the caller's metrics.
	sum     *summary
	started time.Time
	// notAfter is the latest change time this run believes: its start
	// plus max_clock_skew.
	notAfter time.Time
}

func newRunID(t time.Time) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return t.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
}

// sources works out what this run reads: for a system read through its
// API a stand-in file, else one full export (backfill) or the drop's files
// not processed yet (run).
func (j *job) sources(ctx context.Context, st *state.Store) (d365, campaign []inputFile, err error) {
	if j.dv != nil && j.dv.source && j.d365Path == "" {
		d365 = []inputFile{{src: j.dv.contacts.Source()}}
	} else if d365, err = j.systemFiles(ctx, st, "d365", j.cfg.D365.CSV, j.d365Path); err != nil {
		return nil, nil, err
	}
	if j.cv != nil && j.cv.source && j.campaignPath == "" {
		campaign = []inputFile{{src: j.cv.profiles.Source()}}
	} else if campaign, err = j.systemFiles(ctx, st, "campaign", j.cfg.Campaign.CSV, j.campaignPath); err != nil {
		return nil, nil, err
	}
	return d365, campaign, nil
}

// systemFiles lists one system's files: the export named by the flag or the
// config for a backfill, the new files of the configured drop for a run.
func (j *job) systemFiles(ctx context.Context, st *state.Store, system, pattern, flag string) ([]inputFile, error) {
	if !j.incremental {
		if flag != "" {
			pattern = flag
		}
		if pattern == "" {
			return nil, usagef("no %s export to read: set %s.csv in the config or pass --%s-csv", system, system, system)
		}
		fi, err := os.Stat(pattern)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, usagef("input %s does not exist", pattern)
		}
		if err != nil {
			return nil, fmt.Errorf("input %s: %w", pattern, err)
		}
		if !fi.Mode().IsRegular() {
			return nil, usagef("%s input %s is not a file: a backfill reads one full export per system (--%s-csv FILE)", system, pattern, system)
		}
		return []inputFile{{path: pattern, size: fi.Size(), mtime: fi.ModTime()}}, nil
	}
	if pattern == "" {
		return nil, usagef("%s.csv is not set: run reads the files it names (a file, a glob or a folder)", system)
	}
	all, err := dropFiles(pattern)
	if err != nil {
		return nil, err
	}
	fresh, skipped, err := newFiles(ctx, st, all, j.force)
	if err != nil {
		return nil, err
	}
	for _, f := range skipped {
		j.log.Debug().Str("file", f.path).Msg("already processed")
	}
	j.log.Info().Str("system", system).Str("source", pattern).Int("new_files", len(fresh)).Int("already_processed", len(skipped)).Msg("file drop")
	return fresh, nil
}

func (j *job) run(ctx context.Context) (err error) {
	cfg := j.cfg
	j.started = time.Now().UTC()
	started := j.started
	j.notAfter = cfg.extract.NotAfter(started)
	runID := newRunID(started)
	log := j.log.With().Str("run_id", runID).Str("command", j.command).Logger()
	j.log = log
	rules := cfg.transform.Rules
	rules.Replay = j.replay
	// A write to an update file is seen only after someone imports it.
	rules.ImportD365, rules.ImportCampaign = cfg.D365.Target == "csv", cfg.Campaign.Target == "csv"
	rules.Started = started.UnixMilli()
	sum := newSummary(runID, j.command)
	j.sum = sum

	// A run never starts over silently from a lost state.
	if err := checkStateKept(cfg, j.newState); err != nil {
		return err
	}
	st, err := j.openState()
	if err != nil {
		return err
	}
	if st != nil {
		defer st.Close()
	}
	if err := checkIdentity(cfg, st, j.newState); err != nil {
		return err
	}
	if j.newState {
		// The start over is deliberate: from here on the new file is the
		// state of this folder's runs, even if this run stops.
		keepIdentity(cfg, st, log)
	}
	run := &state.Run{ID: runID, Command: j.command, Started: started, Outcome: "running",
		Direction: string(rules.Direction), Policy: string(rules.Policy),
		Version: readBuildInfo().short(), Config: j.runConfig()}
	if j.plan {
		// A plan is not in the history; its report previews the run.
		defer func() {
			if err == nil {
				run.Ended, run.Outcome, run.Counts = time.Now().UTC(), "planned", sum.Counts()
				j.report(st, run)
			}
		}()
	} else {
		if err := st.BeginRun(run); err != nil {
			return err
		}
		j.removePartials(st)
		// Whatever stops the run from here is recorded in its history.
		defer func() {
			if err == nil || run.Outcome != "running" {
				return
			}
			// The history keeps no config value: a secret pasted into the
			// wrong key would otherwise end up in the state file.
			run.Ended, run.ExitCode, run.Error, run.Counts = time.Now().UTC(), exitCode(err), cfg.redact(err.Error()), sum.Counts()
			run.Outcome = "error"
			var se *signalError
			if errors.As(err, &se) {
				run.Outcome = state.OutcomeInterrupted
			}
			if rerr := st.EndRun(run); rerr != nil {
				log.Error().Err(rerr).Msg("recording the failed run")
				return
			}
			j.report(st, run)
		}()
		if run.ConfigChanges, err = j.configChanges(st); err != nil {
			return err
		}
		if j.newState {
			what := "there was no state file"
			if j.stateAside != "" {
				what = "the state file found was moved aside to " + j.stateAside
			}
			change := "state started over deliberately (backfill --new-state): " + what + "; every contact is decided as at first sight"
			log.Warn().Str("change", change).Msg("starting over")
			run.ConfigChanges = append(run.ConfigChanges, change)
		}
		// Until the commit, readers (runs, audit, state export) may read
		// the last committed state beside this run.
		if err := st.Share(); err != nil {
			return err
		}
		// The files of runs that finished them but did not commit.
		if err := recoverUncommitted(cfg, st, log); err != nil {
			return err
		}
	}
	var totals state.Totals // what state knows before this run
	if st != nil {
		if totals, err = st.Totals(); err != nil {
			return err
		}
	}
	if err := j.connect(&rules); err != nil {
		return err
	}
	if st != nil && j.incremental { // plan too: it shows what the run would do with them
		if j.queue, err = st.RetryQueue(); err != nil {
			return err
		}
	}
	log.Info().Str("direction", string(rules.Direction)).Str("policy", string(rules.Policy)).
		Bool("replay", rules.Replay).Bool("plan", j.plan).Bool("incremental", j.incremental).Msg("run started")
	if rules.Direction == transform.Disabled {
		log.Warn().Msg("direction is disabled: nothing will move; inputs are still checked")
	}

	d365Files, campFiles, err := j.sources(ctx, st)
	if err != nil {
		return err
	}
	// Rejects go to disk as they are found: a file of millions of bad rows
	// must not be held in memory.
	spool, err := load.NewRejectSpool(cfg.OutDir, runID)
	if err != nil {
		return err
	}
	defer spool.Close()
	if os.Getenv("GOMEMLIMIT") == "" {
		// The collector works harder as the heap nears the budget (a soft
		// limit: the budget's shares keep what is live well below it).
		debug.SetMemoryLimit(cfg.memoryBudget)
	}
	if err := os.MkdirAll(cfg.TmpDir, 0o700); err != nil {
		return fmt.Errorf("tmp_dir %s: %w", cfg.TmpDir, err)
	}
	if removed, err := spill.RemoveLeftovers(cfg.TmpDir); len(removed) > 0 || err != nil {
		log.Info().Strs("files", removed).AnErr("error", err).Msg("removed spill files left by a killed run")
	}
	in, err := j.extract(ctx, st, d365Files, campFiles, spool)
	if err != nil {
		return interrupted(ctx, err)
	}
	defer in.contacts.Close()
	defer in.profiles.Close()
	if d365Files, err = j.requeue(ctx, st, &rules, in, d365Files); err != nil {
		return interrupted(ctx, err)
	}
	sum.ContactRows, sum.ProfileRows = in.d365.Rows, in.campaign.Rows
	b := j.budgets()

	// The PKey index and the index of pending writes let a night touch what
	// changed; a file from before them gets them once, here.
	indexed := false
	if st != nil {
		if indexed, err = st.IndexesReady(); err != nil {
			return err
		}
		if !indexed && !j.plan {
			t0 := time.Now()
			n, err := st.BuildIndexes(ctx, b.pkeys, cfg.TmpDir)
			if err != nil {
				return interrupted(ctx, err)
			}
			log.Info().Int("records", n).Str("took", took(time.Since(t0))).Msg("built the state's indexes (once: the state file is from before them)")
			indexed = true
		}
	}
	campaignComplete := j.cv != nil && j.cv.source && j.campaignPath == "" && j.cv.complete
	d365Complete := j.dv != nil && j.dv.source && j.d365Path == "" && j.dv.complete
	// State is read whole when the run reads a side in full (every record
	// it lacks has lost that side), or has no index to look records up by.
	walk := st != nil && (!j.incremental || d365Complete || campaignComplete || !indexed || !totals.PendingKnown)

	// transform: identity rules, then decisions.
	later := newRejectSorter(b.rejects, cfg.TmpDir)
	defer later.Close()
	opts := identifyOptions{d365Files: d365Files, campFiles: campFiles, withOwners: j.incremental,
		budget: b.byContact, dir: cfg.TmpDir, later: later}
	if indexed && j.fullRead("campaign") {
		// The shrink guard counts Campaign's records by PKey.
		if opts.pkeys, err = st.Reader(); err != nil {
			return err
		}
	}
	id, err := identify(in, opts)
	if opts.pkeys != nil {
		// identify has counted: a read view left open would hold off the
		// commit for ever once bbolt must map the grown file again (it
		// waits for every open view).
		opts.pkeys.Close()
	}
	if err != nil {
		return interrupted(ctx, err)
	}
	defer id.Close()

	// load: decisions stream into the run's files as they are made; the
	// files stay under temporary names until Finish, so a safety stop (or
	// any failure) leaves nothing behind.
	runName, err := runNames(st)
	if err != nil {
		return err
	}
	w, err := load.NewWriter(load.WriterOptions{
		Dir: cfg.OutDir, RunID: runID, Pairs: rules.Pairs, Plan: j.plan,
		D365Updates: cfg.D365.Target == "csv", CampaignUpdates: cfg.Campaign.Target == "csv",
		PendingSince: runName, Uncommitted: !j.plan,
	}, started)
	if err != nil {
		return err
	}
	finished := false
	defer func() {
		if !finished {
			w.Abort()
		} else {
			w.Close() // a run that failed after its files: they keep names that say so
		}
	}()
	var examples []string
	d := &decider{rules: &rules, incremental: j.incremental, d365Files: d365Files, campFiles: campFiles, walk: walk,
		owners: id.owners, runName: runName, failed: map[extract.ID]load.Refused{}, notAfter: j.notAfter.UnixMilli(),
		chunk: j.hooks.commitChunk, afterChunk: j.hooks.afterChunk, pkeyCounted: id.pkeyCounted,
		d365Complete: d365Complete, campaignComplete: campaignComplete,
		pendPrev: map[int64]int{}, pendGone: map[int64]map[extract.ID]bool{},
		dirty: &dirtyStore{budget: b.dirty, dir: cfg.TmpDir, cItems: id.cItems, pItems: id.pItems, rows: max(in.d365.Rows, in.campaign.Rows)}, missed: id.missed}
	defer d.dirty.Close()
	if !walk {
		d.pendAlertBefore = started.Add(-cfg.state.PendingAlertAfter()).UnixMilli()
	}
	if j.dv != nil {
		d.etag = j.dv.reader.ETag
		if len(j.dv.deleted) > 0 {
			d.deleted = map[extract.ID]bool{}
			for _, id := range j.dv.deleted {
				d.deleted[id] = true
			}
		}
	}
	if len(j.queue) > 0 {
		d.queued = map[extract.ID]bool{}
		for _, it := range j.queue {
			d.queued[it.Contact] = true
		}
	}
	// A backfill rewrites the PKey index whole when it changes most records
	// (see commit): every record's entry, as it stands after the run.
	var pkeys *spill.Sorter[state.PKeyEntry]
	if !j.incremental && st != nil && !j.plan {
		pkeys = newPKeySorter(b.pkeys, cfg.TmpDir, false)
		defer pkeys.Close()
		d.collect = func(pkey string, id extract.ID) error { return pkeys.Add(&state.PKeyEntry{PKey: pkey, ID: id}) }
		d.release = func() {
			id.releaseRows()
			in.contacts.Close()
			in.profiles.Close()
		}
	}
	api := j.apiWriters()
	var held []load.Held // changes waiting for an API's answer
	sink := func(ch *load.Change, blocked *extract.Reject) error {
		if blocked != nil {
			sum.Blocked++
			return later.Add(blocked)
		}
		sum.AddDecisions(ch.Decisions)
		examples = j.addExamples(examples, ch)
		if api.Holds(ch) {
			held = append(held, api.Hold(ch))
			return nil
		}
		return w.Change(ch)
	}
	if rules.Direction != transform.Disabled {
		err = d.all(ctx, st, id, j.progress, int64(max(in.d365.Rows, in.campaign.Rows)), sink)
	} else {
		err = id.drain() // nothing is decided; the rows are still checked
	}
	if err != nil {
		return interrupted(ctx, err)
	}
	sum.Superseded, sum.DuplicateProfiles, sum.Unlinked = id.superseded, id.duplicates, id.unlinked
	sum.AddJoin(id.stats, len(rules.Pairs))
	if j.hooks.afterDecide != nil {
		j.hooks.afterDecide(ctx)
	}
	sum.ViaState, sum.Waiting, sum.Stale = d.viaState, d.waiting, d.stale
	// Rows read again that told nothing new were not compared: a wide read
	// counts what a read of the changes alone would.
	sum.Unchanged = d.unchangedBoth + d.unchangedContacts + d.unchangedProfiles
	sum.Matched -= d.unchangedBoth
	sum.ComparedPairs -= d.unchangedBoth * len(rules.Pairs)
	sum.ContactsNoMatch -= d.unchangedContacts
	sum.ProfilesNoMatch -= d.unchangedProfiles
	if d.futureN > 0 {
		// Once per record: the run's commit writes the times back unknown.
		log.Warn().Int("records", d.futureN).Strs("contacts", d.future).Time("not_after", j.notAfter).
			Msg("change times in state later than the run's start plus max_clock_skew were treated as unknown: a present-day row of these records is not taken as stale")
	}
	pending, err := j.pendingGroups(st, d, totals)
	if err != nil {
		return err
	}
	j.reportPending(pending, runName, sum)
	// A one-sided record decided against state had its counterpart after all.
	sum.ComparedPairs += d.viaState * len(rules.Pairs)
	sum.Matched += d.viaState
	sum.ContactsNoMatch -= d.viaStateContacts + d.blockedNoProfile
	sum.ProfilesNoMatch -= d.viaState - d.viaStateContacts + d.blockedNoContact
	rejected, err := later.Sorted()
	if err != nil {
		return err
	}
	nlater := 0
	err = spool.Merge(func() *extract.Reject {
		r := rejected.Next()
		if r != nil {
			nlater++
		}
		return r
	}, func(r extract.Reject) error {
		// The report keeps ids and PKeys of a checked shape only, never
		// other text of a bad row: file and line find the row.
		ex := state.Example{Source: r.Source.String(), Line: r.Line}
		if r.IDChecked {
			ex.ID = r.ID
		}
		run.Rejects = state.AddReason(run.Rejects, r.Reason, ex)
		return w.Reject(r)
	})
	rejected.Close()
	if err == nil {
		err = rejected.Err()
	}
	if err != nil {
		return err
	}
	sum.Rejected = spool.Len() + nlater
	spool.Close()

	// Safety: nothing is written (or dropped) when the run would clear too
	// many of the opt-outs at stake, or when a full read lacks too many of
	// the records state knows.
	g, err := j.checkSafety(st, totals, d, id, sum, &safetyInputs{
		// A disabled run decides nothing and so drops nothing: no shrink to guard.
		fullD365:     j.fullRead("d365") && rules.Direction != transform.Disabled,
		fullCampaign: j.fullRead("campaign") && rules.Direction != transform.Disabled,
		d365Input:    inputName(d365Files), campaignInput: inputName(campFiles),
		d365Rows: in.d365.Rows, campaignRows: in.campaign.Rows, examples: examples,
	})
	if err != nil {
		return err
	}
	run.Config.Limit = g.optinLimit
	optin, missing := g.optinStops() && !j.allowMassOptin, g.missingStops() && !j.allowMissing
	switch {
	case (g.optinStops() || g.missingStops()) && j.plan:
		log.Warn().Int("opt_outs_cleared", g.clears).Int("known_opt_outs", g.knownOptOuts).Int("limit", g.optinLimit).
			Bool("max_optin", g.optinStops()).Bool("max_missing", g.missingStops()).Msg("a run with these inputs would stop at a safety limit")
	case optin || missing:
		if !optin {
			g.clears = 0 // --allow-mass-optin: only the shrink is reported
		}
		if !missing {
			g.sides[0].checked, g.sides[1].checked = false, false
		}
		w.Abort()
		fmt.Fprintln(j.stdout, g.message(cfg))
		sum.Stopped()
		run.Ended, run.Outcome, run.ExitCode, run.Counts = time.Now().UTC(), "safety-stop", exitSafety, sum.Counts()
		if err := st.EndRun(run); err != nil {
			return err
		}
		j.report(st, run)
		return g.err()
	default:
		if g.optinStops() {
			log.Warn().Int("opt_outs_cleared", g.clears).Int("known_opt_outs", g.knownOptOuts).Int("limit", g.optinLimit).Msg("safety.max_optin exceeded; going on because of --allow-mass-optin")
		}
		for _, c := range g.sides {
			if c.stops() {
				log.Warn().Str("system", c.system).Int("known", c.known).Int("missing", c.missing()).Int("limit", c.limit).Msg("safety.max_missing exceeded; going on because of --allow-missing")
			}
		}
	}
	// A signal before anything was written abandons the run: nothing of it
	// is kept, and the next run does all of it.
	if err := ctx.Err(); err != nil {
		return interrupted(ctx, err)
	}
	// API writes go out now; what a service applied is kept (and committed
	// even if a signal arrives meanwhile), what it refused or what was not
	// sent is audited as failed and queued for the next run.
	if d.failed, err = j.apply(ctx, api, held, w, sum); err != nil {
		return err
	}
	run.FailedWrites = sum.failedWrites
	// A signal that arrived while API writes went out stopped the rest of
	// them; one that arrives from here on does not stop the run, whose
	// every write is done: it finishes its files and commit.
	var cut *signalError
	if len(held) > 0 && errors.As(context.Cause(ctx), &cut) {
		cut = &signalError{sig: cut.sig, kept: true, after: cut.after}
	} else {
		cut = nil
	}
	if err := w.Finish(); err != nil {
		return err
	}
	finished = true
	sum.D365Rows, sum.CampaignRows = w.D365Rows, w.CampaignRows
	if j.plan {
		for _, p := range w.Paths() {
			log.Info().Str("file", p).Msg("written")
		}
	}
	if j.hooks.beforeCommit != nil {
		j.hooks.beforeCommit()
	}
	if !j.plan {
		// The files are complete: their writes are applied, and state must
		// now say so even if a signal arrives meanwhile.
		fin := &state.Final{Run: run, Config: j.configRecord(), ForgetReadPositions: j.mappingAdded}
		fin.Meta = map[string]string{}
		if j.dv != nil {
			maps.Copy(fin.Meta, j.dv.meta)
			fin.Forget = j.dv.deleted
			sum.Deleted = len(j.dv.deleted)
		}
		if j.cv != nil && j.cv.source {
			maps.Copy(fin.Meta, j.cv.meta)
		}
		for _, it := range j.queue {
			fin.RetryDone = append(fin.RetryDone, it.Contact)
		}
		for id, f := range d.failed {
			it := state.RetryItem{Contact: id, PKey: f.PKey, RunID: runID, Since: started}
			switch {
			case f.D365 != "" && f.Campaign != "":
				it.System, it.Reason = "d365+campaign", f.D365+"; "+f.Campaign
			case f.D365 != "":
				it.System, it.Reason = "d365", f.D365
			default:
				it.System, it.Reason = "campaign", f.Campaign
			}
			fin.Retry = append(fin.Retry, it)
		}
		if cfg.state.Retention() > 0 {
			fin.PruneBefore = started.Add(-cfg.state.Retention())
		}
		for _, f := range slices.Concat(d365Files, campFiles) {
			if f.sum != "" {
				system := "d365"
				if slices.Contains(campFiles, f) {
					system = "campaign"
				}
				fin.Files = append(fin.Files, state.ProcessedFile{SHA256: f.sum, System: system, Path: f.path, Size: f.size, RunID: runID, Processed: time.Now().UTC()})
			}
		}
		run.Ended, run.Outcome, run.ExitCode, run.Counts = time.Now().UTC(), "ok", exitOK, sum.Counts()
		if len(d.failed) > 0 {
			run.Outcome, run.ExitCode = "failed-writes", exitWriteFailed
		}
		if cut != nil {
			run.Outcome, run.ExitCode = state.OutcomeInterrupted, 128+int(cut.sig)
		}
		run.Committed = true // with the last transaction only
		// A backfill that changed more than a few records writes the PKey
		// index whole: its entries change in PKey order, not in the
		// contacts' order the commit writes them in, and a page of the
		// index rewritten per record changed costs more than all of it.
		var whole func() (string, extract.ID, bool, error)
		if pkeys != nil && int64(d.dirty.Len())*64 > int64(max(totals.D365, totals.Campaign)) {
			stream, err := pkeys.Sorted()
			if err != nil {
				return err
			}
			defer stream.Close()
			whole = func() (string, extract.ID, bool, error) {
				e := stream.Next()
				if e == nil {
					return "", extract.ID{}, false, stream.Err()
				}
				return e.PKey, e.ID, true, nil
			}
		}
		if err := d.commit(context.WithoutCancel(ctx), st, j.progress, started, fin, whole); err != nil {
			run.Outcome, run.Committed = "running", false // let the deferred recorder mark it failed
			return fmt.Errorf("committing state (the files of this run keep names that say so, %s: not to be imported; the next run places the rows of the contacts committed and decides the others again, the same way): %w",
				strings.Join(w.Paths(), ", "), err)
		}
		// State holds the run's decisions: its files take their final names.
		if err := w.Commit(); err != nil {
			run.Outcome = "running"
			return fmt.Errorf("state holds the decisions of this run, but its files could not take their final names (the next run names them): %w", err)
		}
		for _, p := range w.Paths() {
			log.Info().Str("file", p).Msg("written")
		}
		// out_dir now holds files of a run that used this state file.
		keepIdentity(cfg, st, log)
		// Config housekeeping belongs to the run's commit: a removed
		// mapping's snapshots go now that the run has committed (a run that
		// stopped kept them). Killed here, the next run drops them.
		if len(j.mappingsRemoved) > 0 {
			dropped, err := st.DropUnmapped(context.WithoutCancel(ctx), cfg.transform.Rules.Pairs)
			if err != nil {
				log.Error().Err(err).Msg("dropping the snapshots of removed mappings failed; the next run drops them")
			}
			for _, p := range dropped {
				log.Info().Str("mapping", pairName(p)).Msg("snapshots of a removed mapping dropped")
			}
		}
		j.report(st, run)
	}
	fmt.Fprintln(j.stdout, sum.Line(time.Since(started)))
	log.Info().Interface("counts", sum.Counts()).Str("took", took(time.Since(started))).Msg("run finished")
	if cut != nil {
		return cut // what was applied is committed; the rest is queued
	}
	if ctx.Err() != nil {
		log.Info().Msg("a signal arrived after this run's writes were done: it finished its files and state first")
	}
	if len(d.failed) > 0 {
		return &load.FailedWritesError{Err: fmt.Errorf("the writes of %s were refused or not sent; they are queued for the next run", plural(len(d.failed), "contact"))}
	}
	return nil
}

// runNames names past runs by their start (Unix ms): a write not yet
// seen remembers only when the run that wrote it started.
func runNames(st *state.Store) (func(int64) string, error) {
	byStart := map[int64]string{}
	if st != nil {
		runs, err := st.Runs()
		if err != nil {
			return nil, err
		}
		for _, r := range runs {
			byStart[r.Started.UnixMilli()] = r.ID
		}
	}
	return func(at int64) string { return byStart[at] }, nil
}

// pendingGroups are the writes to update files that no export has shown
// yet, left by earlier runs, per run that wrote them, as state stands after
// this run. In a walk the decider counted them over every record; without
// one, they are the kept totals, less what the contacts the run visited
// held before it, plus what they hold now; the contacts a warning names
// come from the index of pending writes (without those whose write this
// run saw).
func (j *job) pendingGroups(st *state.Store, d *decider, tot state.Totals) (map[int64]*pendingGroup, error) {
	if d.walk || st == nil {
		return d.pending, nil
	}
	groups := map[int64]*pendingGroup{}
	group := func(at int64) *pendingGroup {
		g := groups[at]
		if g == nil {
			g = &pendingGroup{oldest: at}
			if at == 0 {
				g.oldest = math.MaxInt64
			}
			groups[at] = g
		}
		return g
	}
	for at, g := range tot.Pending {
		if at == d.rules.Started {
			continue
		}
		for i := range g {
			if d.rules.ImportD365 {
				group(at).writes += g[i][0]
			}
			if d.rules.ImportCampaign {
				group(at).writes += g[i][1]
			}
		}
	}
	for at, n := range d.pendPrev {
		group(at).writes -= n
	}
	for at, v := range d.pending {
		g := group(at)
		g.writes += v.writes
		g.oldest = min(g.oldest, v.oldest)
		g.contacts = append(g.contacts, v.contacts...)
	}
	r, err := st.Reader()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var snap transform.Snapshot
	for at, g := range groups {
		if g.writes <= 0 {
			delete(groups, at)
			continue
		}
		if at != 0 && j.started.Sub(time.UnixMilli(at)) <= j.cfg.state.PendingAlertAfter() {
			continue // no warning: no contacts to name
		}
		var ferr error
		err := r.PendingContacts(at, func(id extract.ID) bool {
			if d.pendGone[at][id] {
				return true
			}
			if !slices.Contains(g.contacts, id) {
				g.contacts = append(g.contacts, id)
			}
			if at != 0 {
				return len(g.contacts) < 10
			}
			// written at a time not recorded: when at the latest is when
			// its record last changed
			found, err := r.Get(id, &snap)
			if err != nil {
				ferr = err
				return false
			}
			if found {
				g.oldest = min(g.oldest, snap.Decided*1000)
			}
			return true
		})
		if err = cmp.Or(err, ferr); err != nil {
			return nil, err
		}
		slices.SortFunc(g.contacts, extract.ID.Compare)
		g.contacts = g.contacts[:min(len(g.contacts), 5)]
	}
	return groups, nil
}

// reportPending counts the writes to update files that no export has shown
// yet, and warns of those older than pending_alert: each run, until they
// are seen, so that a lost or forgotten update file does not go unnoticed.
func (j *job) reportPending(groups map[int64]*pendingGroup, runName func(int64) string, sum *summary) {
	ats := slices.Sorted(maps.Keys(groups))
	for _, at := range ats {
		g := groups[at]
		sum.PendingNotSeen += g.writes
		age := j.started.Sub(time.UnixMilli(g.oldest))
		sum.PendingOldest = max(sum.PendingOldest, age)
		if age <= j.cfg.state.PendingAlertAfter() {
			continue
		}
		ids := make([]string, len(g.contacts))
		for i, id := range g.contacts {
			ids[i] = id.String()
		}
		ev := j.log.Warn().Int("writes", g.writes).Str("age", age.Round(time.Minute).String()).Strs("contacts", ids)
		if name := runName(at); name != "" {
			ev = ev.Str("written_by", name)
		}
		if at != 0 {
			ev = ev.Time("written_at", time.UnixMilli(at).UTC())
		}
		ev.Dur("pending_alert", j.cfg.state.PendingAlertAfter()).Msg("writes in update files are not seen in the exports for longer than pending_alert: import the update file of the run that wrote them, or of the latest run that wrote them again")
	}
}

// fullRead says whether this run read a system's records in full: a
// backfill always does; a run does when the system's API was read in full
// (its first run, a refused delta link, or Campaign without a changed-since
// filter).
func (j *job) fullRead(system string) bool {
	if !j.incremental {
		return true
	}
	if system == "d365" {
		return j.dv != nil && j.dv.source && j.d365Path == "" && j.dv.complete
	}
	return j.cv != nil && j.cv.source && j.campaignPath == "" && j.cv.complete
}

// inputName names a side's input for a message.
func inputName(files []inputFile) string {
	switch len(files) {
	case 0:
		return "no file"
	case 1:
		return files[0].source().String()
	}
	return plural(len(files), "file")
}

// where names a row for a reject reason: the line, and the file when it is
// another one.
func where(files []inputFile, file, byFile uint16, line int32) string {
	if file == byFile {
		return fmt.Sprintf("line %d", line)
	}
	return fmt.Sprintf("%s line %d", files[byFile].source().Short(), line)
}

// removePartials removes the temporary files that runs killed before
// they could clean up (recorded as interrupted) left in out_dir. A failure
// is logged: it stops nothing.
func (j *job) removePartials(st *state.Store) {
	runs, err := st.Runs()
	if err != nil {
		j.log.Warn().Err(err).Msg("reading the run history for files of interrupted runs")
		return
	}
	var ids []string
	for _, r := range runs {
		if r.Outcome == state.OutcomeInterrupted {
			ids = append(ids, r.ID)
		}
	}
	removed, err := load.RemovePartials(j.cfg.OutDir, ids)
	if len(removed) > 0 {
		j.log.Info().Int("files", len(removed)).Strs("names", removed[:min(len(removed), 10)]).Msg("removed the temporary files of interrupted runs")
	}
	if err != nil {
		j.log.Warn().Err(err).Msg("removing the temporary files of interrupted runs")
	}
}

// interrupted turns a cancellation by a signal into the signal's error.
func interrupted(ctx context.Context, err error) error {
	var se *signalError
	if errors.As(context.Cause(ctx), &se) && ctx.Err() != nil {
		return se
	}
	return err
}

func (j *job) openState() (*state.Store, error) {
	if j.plan {
		// plan changes nothing, not even a first empty state file; while a
		// run holds the state, it plans against the run's last commit.
		return openReadOnly(j.cfg, j.log)
	}
	if j.newState {
		st, aside, err := state.OpenNew(j.cfg.State, j.cfg.transform.Rules.Pairs)
		j.stateAside = aside
		return st, err
	}
	if !j.incremental {
		// A backfill reads every record: the whole file is checked first.
		return state.OpenFull(j.cfg.State, j.cfg.transform.Rules.Pairs)
	}
	return state.Open(j.cfg.State, j.cfg.transform.Rules.Pairs)
}

// runConfig is the config in effect, kept with the run for its report.
func (j *job) runConfig() *state.RunConfig {
	cfg := j.cfg
	rc := &state.RunConfig{Direction: string(cfg.transform.Rules.Direction), Policy: string(cfg.transform.Rules.Policy),
		MaxOptin: cfg.transform.OptinLimit.String(),
		D365:     cfg.D365.Source + " → " + cfg.D365.Target, Campaign: cfg.Campaign.Source + " → " + cfg.Campaign.Target}
	for _, p := range cfg.transform.Rules.Pairs {
		rc.Mappings = append(rc.Mappings, state.Mapping{D365: p.D365, Campaign: p.Campaign, Invert: p.Invert})
	}
	for _, o := range []struct {
		on   bool
		name string
	}{{j.replay, "--replay"}, {j.force, "--force"}, {j.allowMassOptin, "--allow-mass-optin"}, {j.newState, "--new-state"}} {
		if o.on {
			rc.Options = append(rc.Options, o.name)
		}
	}
	return rc
}

func (j *job) configRecord() *state.ConfigRecord {
	return &state.ConfigRecord{Direction: string(j.cfg.transform.Rules.Direction), Policy: string(j.cfg.transform.Rules.Policy), Pairs: j.cfg.transform.Rules.Pairs}
}

// configChanges compares the config with the one the last run used: changes
// are logged and recorded with the run. Nothing is changed in state here:
// a mapping added makes every system read through its API read in full
// (its read positions are dropped with the run's commit), and a mapping
// removed loses its snapshots once the run has committed, so a run that
// stops (safety limit, missing column, …) leaves state as it was.
func (j *job) configChanges(st *state.Store) ([]string, error) {
	removed, err := st.Unmapped(j.cfg.transform.Rules.Pairs)
	if err != nil {
		return nil, err
	}
	j.mappingsRemoved = removed
	last, err := st.LastConfig()
	if err != nil {
		return nil, err
	}
	now := j.configRecord()
	var changes []string
	if last != nil {
		if last.Direction != now.Direction {
			changes = append(changes, fmt.Sprintf("direction %s → %s", last.Direction, now.Direction))
		}
		if last.Policy != now.Policy {
			changes = append(changes, fmt.Sprintf("policy %s → %s", last.Policy, now.Policy))
		}
		for _, p := range now.Pairs {
			if !slices.Contains(last.Pairs, p) {
				j.mappingAdded = true
				changes = append(changes, "mapping added: "+pairName(p)+" (systems read through an API are read in full this run; for file drops, run a backfill)")
			}
		}
	}
	for _, p := range removed {
		if last == nil || slices.Contains(last.Pairs, p) {
			changes = append(changes, "mapping removed, its snapshots dropped with the run's commit: "+pairName(p))
		} else {
			// A run that committed but was killed before dropping them.
			j.log.Info().Str("mapping", pairName(p)).Msg("the snapshots of a mapping removed earlier are dropped with this run's commit")
		}
	}
	for _, c := range changes {
		j.log.Warn().Str("change", c).Msg("config changed since the last run")
	}
	return changes, nil
}

func pairName(p transform.Pair) string {
	s := p.D365 + " ↔ " + p.Campaign
	if p.Invert {
		s += " (invert)"
	}
	return s
}

// addExamples keeps the first opt-out clearings for a safety stop's message.
func (j *job) addExamples(examples []string, ch *load.Change) []string {
	for _, d := range ch.Decisions {
		if len(examples) == 10 {
			break
		}
		if !d.ClearsOptOut || d.Skip != "" {
			continue
		}
		p := j.cfg.transform.Rules.Pairs[d.Pair]
		field := p.Campaign
		if d.Target == transform.ToD365 {
			field = p.D365
		}
		examples = append(examples, fmt.Sprintf("contact %s profile %s: %s %s %s → %s (rule %s)",
			ch.ID, ch.PKey, d.Target, field, d.Old, d.New, d.Rule))
	}
	return examples
}

// requeue brings back the contacts whose writes were refused last time when
// Dynamics is read from files. When Dynamics is written through its API,
// they are read from it again, in bulk, with their ETags; otherwise their
// Dynamics side comes from what state knows. With the API as source, the
// connector's read has already read them again; a queued profile is read
// again by the Campaign connector when Campaign is read through its API.
func (j *job) requeue(ctx context.Context, st *state.Store, rules *transform.Rules, in *inputs, d365Files []inputFile) ([]inputFile, error) {
	queue := j.queue
	if len(queue) == 0 || (j.dv != nil && j.dv.source) {
		return d365Files, nil
	}
	file := uint16(len(d365Files))
	if j.dv != nil {
		ids := make([]extract.ID, len(queue))
		for i, it := range queue {
			ids[i] = it.Contact
		}
		n := int32(0)
		var aerr error
		gone, err := j.dv.readQueued(ctx, ids, func(c *extract.Contact) {
			n++
			c.File, c.Line = file, n
			in.d365.Rows++
			if err := in.contacts.Add(c); err != nil && aerr == nil {
				aerr = err
			}
		}, func(r extract.Reject) {
			in.d365.Rejected++
			in.rejects.Add(r)
		})
		if err = cmp.Or(err, aerr); err != nil {
			return nil, err
		}
		j.dv.deleted = append(j.dv.deleted, gone...)
		return append(d365Files, inputFile{src: extract.RetryQueue(j.dv.contacts.Source())}), nil
	}
	r, err := st.Reader()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var snap transform.Snapshot
	for i, it := range queue {
		found, err := r.Get(it.Contact, &snap)
		if err != nil {
			return nil, err
		}
		if found && snap.DSeen {
			transform.ForgetFutureTimes(&snap, j.notAfter.UnixMilli())
			c := transform.ContactFromState(rules, it.Contact, &snap)
			c.File, c.Line = file, int32(i+1)
			if err := in.contacts.Add(&c); err != nil {
				return nil, err
			}
		}
	}
	j.log.Info().Int("contacts", len(queue)).Msg("deciding the retry queue again")
	return append(d365Files, inputFile{src: extract.RetryQueue(extract.Source{})}), nil
}

// connect makes the API connectors the config asks for.
func (j *job) connect(rules *transform.Rules) error {
	cfg := j.cfg
	if cfg.D365.api() {
		fields := make([]string, len(rules.Pairs))
		for i, p := range rules.Pairs {
			fields[i] = p.D365
		}
		var err error
		if j.dv, err = newD365Conn(cfg, fields, j.log); err != nil {
			return err
		}
		j.dv.reader.NotAfter = j.notAfter
	}
	if cfg.Campaign.api() {
		l := cfg.extract.CampaignLayout(j.notAfter)
		var err error
		if j.cv, err = newCampaignConn(cfg, l.Fields, l.FieldTimes, j.log); err != nil {
			return err
		}
		j.cv.reader.NotAfter = j.notAfter
	}
	return nil
}
