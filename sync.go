package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
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
	"optsync/load/show"
	"optsync/state"
	"optsync/state/inspect"
	"optsync/transform"
	"optsync/transform/sorts"
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
	// newState: backfill --new-state, a deliberate start over.
	newState bool
	progress *progress.Progress
	hooks    hooks
	// mappingAdded: a mapping is new since the last run, so systems read
	// through an API are read in full; mappingsRemoved are dropped from
	// state after the run's commit.
	mappingAdded    bool
	mappingsRemoved []transform.Pair
	// sum and started are the run's, for the caller's metrics.
	sum     *load.Summary
	started time.Time
	// notAfter is the latest change time this run believes: its start
	// plus max_clock_skew.
	notAfter time.Time
}

func (j *job) run(ctx context.Context) (err error) {
	cfg := j.cfg
	j.started = time.Now().UTC()
	started := j.started
	j.notAfter = cfg.extract.NotAfter(started)
	runID := state.NewRunID(started)
	log := j.log.With().Str("run_id", runID).Str("command", j.command).Logger()
	j.log = log
	rules := cfg.transform.Rules
	rules.Replay = j.replay
	// A write to an update file is seen only after someone imports it.
	rules.ImportD365, rules.ImportCampaign = cfg.D365.Target == "csv", cfg.Campaign.Target == "csv"
	rules.Started = started.UnixMilli()
	s := load.NewSummary(runID, j.command)
	sum := &s
	j.sum = sum

	// A run never starts over silently from a lost state.
	st, aside, err := state.OpenRun(cfg.State, cfg.OutDir, cfg.transform.Rules.Pairs, j.stateKind(), log)
	if err != nil {
		return err
	}
	if st != nil {
		defer st.Close()
	}
	record := &state.ConfigRecord{Direction: string(rules.Direction), Policy: string(rules.Policy), Pairs: cfg.transform.Rules.Pairs}
	run := &state.Run{ID: runID, Command: j.command, Started: started, Outcome: "running",
		Direction: string(rules.Direction), Policy: string(rules.Policy),
		Version: show.ReadBuild().Short(), Config: state.NewRunConfig(&cfg.transform.Rules, cfg.transform.OptinLimit.String(),
			cfg.D365.Source+" → "+cfg.D365.Target, cfg.Campaign.Source+" → "+cfg.Campaign.Target, j.flags())}
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
		// Whatever stops the run from here is recorded in its history.
		defer func() {
			if err == nil || run.Outcome != "running" {
				return
			}
			// The history keeps no config value: a secret pasted into the
			// wrong key would otherwise end up in the state file.
			run.End(exitCode(err), sum.Counts())
			run.Error = cfg.private.Redact(err.Error())
			if rerr := st.EndRun(run); rerr != nil {
				log.Error().Err(rerr).Msg("recording the failed run")
				return
			}
			j.report(st, run)
		}()
		diff, err := st.Prepare(run, record, cfg.OutDir, j.newState, aside, log)
		if err != nil {
			return err
		}
		j.mappingAdded, j.mappingsRemoved = diff.MappingAdded, diff.Removed
	}
	var totals state.Totals // what state knows before this run
	if st != nil {
		if totals, err = st.Totals(); err != nil {
			return err
		}
	}
	conns, err := j.connect()
	if err != nil {
		return err
	}
	var queue []state.RetryItem
	if st != nil && j.incremental { // plan too: it shows what the run would do with them
		if queue, err = st.RetryQueue(); err != nil {
			return err
		}
	}
	log.Info().Str("direction", string(rules.Direction)).Str("policy", string(rules.Policy)).
		Bool("replay", rules.Replay).Bool("plan", j.plan).Bool("incremental", j.incremental).Msg("run started")
	if rules.Direction == transform.Disabled {
		log.Warn().Msg("direction is disabled: nothing will move; inputs are still checked")
	}

	d365Files, campFiles, err := j.inputs(ctx, st)
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
		debug.SetMemoryLimit(cfg.extract.MemoryBytes())
	}
	if err := os.MkdirAll(cfg.TmpDir, 0o700); err != nil {
		return fmt.Errorf("tmp_dir %s: %w", cfg.TmpDir, err)
	}
	if removed, err := spill.RemoveLeftovers(cfg.TmpDir); len(removed) > 0 || err != nil {
		log.Info().Strs("files", removed).AnErr("error", err).Msg("removed spill files left by a killed run")
	}
	reading := j.reading(conns, spool)
	if err := j.fromState(reading, st, &rules, queue); err != nil {
		return err
	}
	in, d365Files, err := reading.Read(ctx, d365Files, campFiles)
	if err != nil {
		return interrupted(ctx, err)
	}
	defer in.Close()
	sum.ContactRows, sum.ProfileRows = in.D365.Rows, in.Campaign.Rows
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
			n, err := st.BuildIndexes(ctx, b.PKeys, cfg.TmpDir)
			if err != nil {
				return interrupted(ctx, err)
			}
			log.Info().Int("records", n).Str("took", load.Took(time.Since(t0))).Msg("built the state's indexes (once: the state file is from before them)")
			indexed = true
		}
	}
	campaignComplete, d365Complete := in.CampaignRead.Complete, in.DataverseRead.Complete
	// State is read whole when the run reads a side in full (every record
	// it lacks has lost that side), or has no index to look records up by.
	walk := st != nil && (!j.incremental || d365Complete || campaignComplete || !indexed || !totals.PendingKnown)

	// transform: identity rules, then decisions.
	later := sorts.Rejects(b.Rejects, cfg.TmpDir)
	defer later.Close()
	id, err := j.identify(st, in, d365Files, campFiles, later, indexed && in.FullCampaign)
	if err != nil {
		return interrupted(ctx, err)
	}
	defer id.Close()

	// load: decisions stream into the run's files as they are made; the
	// files stay under temporary names until Finish, so a safety stop (or
	// any failure) leaves nothing behind.
	runName, err := state.RunNames(st)
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
	cItems, pItems := id.Held()
	dirty := state.NewDirty(b.Dirty, cfg.TmpDir, cItems, pItems, max(in.D365.Rows, in.Campaign.Rows))
	defer dirty.Close()
	dopts := transform.DecideOptions{Rules: &rules, Incremental: j.incremental, D365Files: d365Files, CampaignFiles: campFiles,
		Walk: walk, D365Complete: d365Complete, CampaignComplete: campaignComplete, Dirty: dirty, NotAfter: j.notAfter.UnixMilli()}
	if !walk {
		dopts.PendAlertBefore = started.Add(-cfg.state.PendingAlertAfter()).UnixMilli()
	}
	if conns.Contacts != nil {
		dopts.ETag, dopts.Deleted = conns.Contacts.API.ETag, in.DataverseRead.Deleted
	}
	for _, it := range queue {
		dopts.Queued = append(dopts.Queued, it.Contact)
	}
	// A backfill rewrites the PKey index whole when it changes most records
	// (see the commit): every record's entry, as it stands after the run.
	var pkeys *spill.Sorter[state.PKeyEntry]
	if !j.incremental && st != nil && !j.plan {
		pkeys = sorts.PKeys(b.PKeys, cfg.TmpDir, false)
		defer pkeys.Close()
		dopts.Collect = func(pkey string, id extract.ID) error { return pkeys.Add(&state.PKeyEntry{PKey: pkey, ID: id}) }
	}
	d := transform.NewDecider(dopts, id)
	api := conns.Writers(j.plan, rules.Pairs, cfg.private.Redact,
		func(name string, total int64, unit string) load.Bar { return j.progress.Stage(name, total, unit) }, log)
	var held []load.Held // changes waiting for an API's answer
	var lc load.Change   // one, reused: the writers copy what they keep
	sink := func(ch *transform.Change, blocked *extract.Reject) error {
		if blocked != nil {
			sum.Blocked++
			return later.Add(blocked)
		}
		sum.AddDecisions(ch.Decisions)
		lc = load.Change{Change: *ch}
		if api.Holds(&lc) {
			held = append(held, api.Hold(&lc))
			return nil
		}
		return w.Change(&lc)
	}
	if rules.Direction != transform.Disabled {
		bar := j.progress.Stage("deciding", int64(max(in.D365.Rows, in.Campaign.Rows)), "contacts")
		err = withPrior(st, func(p transform.Prior) error { return d.All(ctx, p, bar, sink) })
		bar.Done()
	} else {
		err = id.Drain() // nothing is decided; the rows are still checked
	}
	if err != nil {
		return interrupted(ctx, err)
	}
	sum.Superseded, sum.DuplicateProfiles, sum.Unlinked = id.Superseded, id.Duplicates, id.Unlinked
	sum.AddJoin(id.Stats, len(rules.Pairs))
	if j.hooks.afterDecide != nil {
		j.hooks.afterDecide(ctx)
	}
	tally := d.Tally()
	addTally(sum, tally, len(rules.Pairs))
	if tally.FutureN > 0 {
		// Once per record: the run's commit writes the times back unknown.
		log.Warn().Int("records", tally.FutureN).Strs("contacts", tally.Future).Time("not_after", j.notAfter).
			Msg("change times in state later than the run's start plus max_clock_skew were treated as unknown: a present-day row of these records is not taken as stale")
	}
	pending, err := j.pendingGroups(st, d, totals)
	if err != nil {
		return err
	}
	j.reportPending(pending, runName, sum)
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
	g, err := j.guard(st, d, totals, sum, d365Files, campFiles, in)
	if err != nil {
		return err
	}
	run.Config.Limit = g.OptinLimit
	stop, stopErr := g.Stop(j.allowMassOptin, j.allowMissing)
	switch {
	case (g.OptinStops() || g.MissingStops()) && j.plan:
		log.Warn().Int("opt_outs_cleared", g.Clears).Int("known_opt_outs", g.KnownOptOuts).Int("limit", g.OptinLimit).
			Bool("max_optin", g.OptinStops()).Bool("max_missing", g.MissingStops()).Msg("a run with these inputs would stop at a safety limit")
	case stopErr != nil:
		w.Abort()
		fmt.Fprintln(j.stdout, stop)
		sum.Stopped()
		run.End(exitCode(stopErr), sum.Counts())
		if err := st.EndRun(run); err != nil {
			return err
		}
		j.report(st, run)
		return stopErr
	default:
		if g.OptinStops() {
			log.Warn().Int("opt_outs_cleared", g.Clears).Int("known_opt_outs", g.KnownOptOuts).Int("limit", g.OptinLimit).Msg("safety.max_optin exceeded; going on because of --allow-mass-optin")
		}
		for _, c := range g.Sides {
			if c.Stops() {
				log.Warn().Str("system", c.System).Int("known", c.Known).Int("missing", c.Missing()).Int("limit", c.Limit).Msg("safety.max_missing exceeded; going on because of --allow-missing")
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
	sent, err := api.Apply(ctx, held, w)
	if err != nil {
		return err
	}
	failed := sent.Refused
	sum.AddRefused(sent.Writes)
	run.FailedWrites = sum.FailedWrites
	// A signal that arrived while API writes went out stopped the rest of
	// them; one that arrives from here on does not stop the run, whose
	// every write is done: it finishes its files and commit.
	var cut *signalError
	if len(held) > 0 && errors.As(context.Cause(ctx), &cut) {
		cut = &signalError{sig: cut.sig, kept: true, after: cut.after}
	} else {
		cut = nil
	}
	// What the run returns once its files and state are done; its record
	// keeps the exit code that error gets.
	var result error
	switch {
	case cut != nil:
		result = cut // what was applied is committed; the rest is queued
	case len(failed) > 0:
		result = &load.FailedWritesError{Err: fmt.Errorf("the writes of %s were refused or not sent; they are queued for the next run", plural(len(failed), "contact"))}
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
		end := state.Ending{Run: run, Config: record, MappingAdded: j.mappingAdded, Queued: queue, Failed: failed,
			Meta:      state.NextPositions(cfg.D365.tracking(), in.DataverseRead.Next, in.CampaignRead.Next),
			Deleted:   in.DataverseRead.Deleted,
			Retention: cfg.state.Retention(), Files: processed(d365Files, campFiles, runID)}
		sum.Deleted = len(end.Deleted)
		fin := end.Final()
		run.End(exitCode(result), sum.Counts())
		run.Committed = true // with the last transaction only
		// A backfill that changed more than a few records writes the PKey
		// index whole: its entries change in PKey order, not in the
		// contacts' order the commit writes them in, and a page of the
		// index rewritten per record changed costs more than all of it.
		var whole func() (string, extract.ID, bool, error)
		if pkeys != nil && int64(dirty.Len())*64 > int64(max(totals.D365, totals.Campaign)) {
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
		if err := st.CommitDecisions(context.WithoutCancel(ctx), d, dirty, state.CommitOptions{Started: started, Final: fin,
			PKeys: whole, Release: func() { id.ReleaseRows(); in.Contacts.Close(); in.Profiles.Close() }, Failed: failed, RunName: runName,
			Chunk: j.hooks.commitChunk, AfterChunk: j.hooks.afterChunk, Progress: j.progress}); err != nil {
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
		state.KeepIdentity(st, cfg.OutDir, log)
		// Config housekeeping belongs to the run's commit: a removed
		// mapping's snapshots go now that the run has committed (a run that
		// stopped kept them). Killed here, the next run drops them.
		if len(j.mappingsRemoved) > 0 {
			dropped, err := st.DropUnmapped(context.WithoutCancel(ctx), cfg.transform.Rules.Pairs)
			if err != nil {
				log.Error().Err(err).Msg("dropping the snapshots of removed mappings failed; the next run drops them")
			}
			for _, p := range dropped {
				log.Info().Str("mapping", state.PairName(p)).Msg("snapshots of a removed mapping dropped")
			}
		}
		j.report(st, run)
	}
	fmt.Fprintln(j.stdout, sum.Line(time.Since(started)))
	log.Info().Interface("counts", sum.Counts()).Str("took", load.Took(time.Since(started))).Msg("run finished")
	if cut == nil && ctx.Err() != nil {
		log.Info().Msg("a signal arrived after this run's writes were done: it finished its files and state first")
	}
	return result
}

// report writes the page of the run just recorded beside its audit file.
func (j *job) report(st *state.Store, run *state.Run) {
	inspect.WriteRunReport(st, run, j.plan, j.cfg.OutDir, show.ReadBuild().Short(), j.log)
}

// addTally counts what the decider found in the summary. Rows read again
// that told nothing new were not compared: a wide read counts what a read
// of the changes alone would. A one-sided record decided against state had
// its counterpart after all.
func addTally(sum *load.Summary, t transform.Tally, pairs int) {
	sum.ViaState, sum.Waiting, sum.Stale = t.ViaState, t.Waiting, t.Stale
	sum.Unchanged = t.UnchangedBoth + t.UnchangedContacts + t.UnchangedProfiles
	sum.Matched += t.ViaState - t.UnchangedBoth
	sum.ComparedPairs += (t.ViaState - t.UnchangedBoth) * pairs
	sum.ContactsNoMatch -= t.UnchangedContacts + t.ViaStateContacts + t.BlockedNoProfile
	sum.ProfilesNoMatch -= t.UnchangedProfiles + t.ViaState - t.ViaStateContacts + t.BlockedNoContact
}

// pendingGroups are the writes to update files that no export has shown
// yet, per run that wrote them, as state stands after this run.
func (j *job) pendingGroups(st *state.Store, d *transform.Decider, totals state.Totals) (pending map[int64]*transform.PendingGroup, err error) {
	err = withPrior(st, func(p transform.Prior) (err error) {
		pending, err = d.PendingGroups(p, totals.Pending, j.started, j.cfg.state.PendingAlertAfter())
		return err
	})
	return pending, err
}

// reportPending counts the writes to update files that no export has shown
// yet, and warns of those older than pending_alert: each run, until they
// are seen, so that a lost or forgotten update file does not go unnoticed.
func (j *job) reportPending(groups map[int64]*transform.PendingGroup, runName func(int64) string, sum *load.Summary) {
	ats := slices.Sorted(maps.Keys(groups))
	for _, at := range ats {
		g := groups[at]
		sum.PendingNotSeen += g.Writes()
		age := j.started.Sub(time.UnixMilli(g.Oldest()))
		sum.PendingOldest = max(sum.PendingOldest, age)
		if age <= j.cfg.state.PendingAlertAfter() {
			continue
		}
		ids := make([]string, len(g.Contacts()))
		for i, id := range g.Contacts() {
			ids[i] = id.String()
		}
		ev := j.log.Warn().Int("writes", g.Writes()).Str("age", age.Round(time.Minute).String()).Strs("contacts", ids)
		if name := runName(at); name != "" {
			ev = ev.Str("written_by", name)
		}
		if at != 0 {
			ev = ev.Time("written_at", time.UnixMilli(at).UTC())
		}
		ev.Dur("pending_alert", j.cfg.state.PendingAlertAfter()).Msg("writes in update files are not seen in the exports for longer than pending_alert: import the update file of the run that wrote them, or of the latest run that wrote them again")
	}
}

// budgets divides the run's memory budget between what it holds at once.
func (j *job) budgets() spill.Budgets {
	if j.hooks.memoryBudget > 0 {
		return spill.Live(j.hooks.memoryBudget)
	}
	return spill.Divide(j.cfg.extract.MemoryBytes())
}

// connect makes the API connectors the config asks for.
func (j *job) connect() (*load.Connections, error) {
	return load.Connect(load.ConnectOptions{Extract: &j.cfg.extract, Load: &j.cfg.load, Tracking: j.cfg.D365.tracking(),
		NotAfter: j.notAfter, Log: j.log,
		Secret: func(system string, cr extract.Credentials) (string, error) { return cr.Secret(system) }})
}

// inputs lists what this run reads of each system: its API, or its files.
func (j *job) inputs(ctx context.Context, st *state.Store) (d365, campaign []extract.InputFile, err error) {
	l := extract.Listing{Incremental: j.incremental, Force: j.force, Log: j.log}
	if st != nil {
		l.Processed = func(sum string) (bool, error) {
			_, seen, err := st.Processed(sum)
			return seen, err
		}
	}
	ds := extract.System{Name: "d365", Pattern: j.cfg.D365.CSV, Flag: j.d365Path}
	if j.cfg.D365.Source == "api" {
		ds.API = extract.DataverseAPI()
	}
	cs := extract.System{Name: "campaign", Pattern: j.cfg.Campaign.CSV, Flag: j.campaignPath}
	if j.cfg.Campaign.Source == "api" {
		cs.API = extract.CampaignAPI()
	}
	return l.List(ctx, ds, cs)
}

// reading is how this run reads its inputs, rows into sorters within
// the run's memory budget.
func (j *job) reading(conns *load.Connections, rejects extract.RejectSink) *extract.Reading {
	b := j.budgets()
	return &extract.Reading{Contacts: sorts.Contacts(b.Contacts, j.cfg.TmpDir), Profiles: sorts.Profiles(false, b.Profiles, j.cfg.TmpDir),
		D365Layout: j.cfg.extract.D365Layout(j.notAfter), CampaignLayout: j.cfg.extract.CampaignLayout(j.notAfter),
		APIs: conns.APIs, Incremental: j.incremental, Rejects: rejects, Log: j.log,
		Stage: func(name string, total int64, unit string) extract.Bar { return j.progress.Stage(name, total, unit) }}
}

// fromState hands the reads what state knows for them, as values: where
// the APIs' reads start (nowhere for a full read: a backfill, a mapping
// added), and the retry queue, with its contacts as state knows them when
// Dynamics is not reached through its API.
func (j *job) fromState(r *extract.Reading, st *state.Store, rules *transform.Rules, queue []state.RetryItem) error {
	if st == nil {
		return nil
	}
	var err error
	if j.incremental && !j.mappingAdded {
		r.D365From.Position, r.CampaignFrom.Position, err = st.ReadPositions(j.cfg.D365.tracking(), j.cfg.extract.CampaignConn.FilterName != "")
		if err != nil {
			return err
		}
	}
	r.D365From.Queue = state.Queued(queue)
	r.CampaignFrom.Queue = r.D365From.Queue
	if r.APIs.Contacts == nil {
		r.Known, err = st.QueuedContacts(rules, queue, j.notAfter.UnixMilli())
	}
	return err
}

// identify starts the identity rules over what was read; countPKeys: the
// shrink guard counts Campaign's records by PKey, in state's PKey index.
func (j *job) identify(st *state.Store, in *extract.Records, d365Files, campFiles []extract.InputFile, later *spill.Sorter[extract.Reject], countPKeys bool) (*transform.Identity, error) {
	o := transform.IdentifyOptions{D365Files: d365Files, CampaignFiles: campFiles,
		WithOwners: j.incremental, Later: later, Sorts: sorts.Identity{Budget: j.budgets().ByContact, Dir: j.cfg.TmpDir}}
	if countPKeys {
		r, err := st.Reader()
		if err != nil {
			return nil, err
		}
		// Identify counts, then the view is closed: one left open would
		// hold off the commit for ever once bbolt must map the grown file
		// again (it waits for every open view).
		defer r.Close()
		o.CountPKeys = func(missed func(transform.PKeyEntry) error) transform.PKeyCounter { return r.PKeyCounter(missed) }
	}
	return transform.Identify(in.Contacts, in.Profiles, o)
}

// guard works the safety limits out for a run whose decisions are made.
func (j *job) guard(st *state.Store, d *transform.Decider, tot state.Totals, sum *load.Summary, d365Files, campFiles []extract.InputFile, in *extract.Records) (g transform.Guard, err error) {
	// A disabled run decides nothing and so drops nothing: no shrink to guard.
	decides := d.Rules().Direction != transform.Disabled
	err = withPrior(st, func(p transform.Prior) (err error) {
		g, err = d.Guard(p, transform.Known{D365: tot.D365, Campaign: tot.Campaign, Profiles: tot.Profiles, OptOuts: tot.OptOutSum()},
			transform.GuardInputs{FullD365: in.FullD365 && decides, FullCampaign: in.FullCampaign && decides,
				D365Input: extract.Name(d365Files), CampaignInput: extract.Name(campFiles), D365Rows: in.D365.Rows, CampaignRows: in.Campaign.Rows,
				Clears: sum.OptoutsCleared, Optin: j.cfg.transform.OptinLimit, Missing: j.cfg.transform.MissingLimit})
		return err
	})
	sum.KnownOptOuts, sum.OptinLimit = g.KnownOptOuts, g.OptinLimit
	if c := g.Sides[0]; c.Checked {
		sum.MissingD365, sum.KnownD365 = c.Missing(), c.Known
	}
	if c := g.Sides[1]; c.Checked {
		sum.MissingCampaign, sum.KnownCampaign = c.Missing(), c.Known
	}
	return g, err
}

// withPrior hands fn a read view of state (nil when there is none), closed
// after.
func withPrior(st *state.Store, fn func(transform.Prior) error) error {
	if st == nil {
		return fn(nil)
	}
	r, err := st.Reader()
	if err != nil {
		return err
	}
	defer r.Close()
	return fn(r)
}

// stateKind is how this run uses the state file.
func (j *job) stateKind() state.RunKind {
	switch {
	case j.plan:
		return state.Plan
	case j.newState:
		return state.NewState
	case !j.incremental:
		return state.Backfill
	}
	return state.Incremental
}

// flags are the command's flags that change decisions or limits, for the
// run's record.
func (j *job) flags() []string {
	var on []string
	for _, o := range []struct {
		on   bool
		name string
	}{{j.replay, "--replay"}, {j.force, "--force"}, {j.allowMassOptin, "--allow-mass-optin"}, {j.newState, "--new-state"}} {
		if o.on {
			on = append(on, o.name)
		}
	}
	return on
}

// processed are the input files this run read that state remembers as
// processed (a run's drops: a backfill's export has no sum).
func processed(d365Files, campFiles []extract.InputFile, runID string) []state.ProcessedFile {
	var out []state.ProcessedFile
	for _, f := range slices.Concat(d365Files, campFiles) {
		if f.Sum != "" {
			system := "d365"
			if slices.Contains(campFiles, f) {
				system = "campaign"
			}
			out = append(out, state.ProcessedFile{SHA256: f.Sum, System: system, Path: f.Path, Size: f.Size, RunID: runID, Processed: time.Now().UTC()})
		}
	}
	return out
}
