package main

import (
	"context"
	"errors"
	"fmt"
	"io"
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
	// sum and started are the run's, for the caller's metrics.
	sum     *load.Summary
	started time.Time
	// notAfter is the latest change time this run believes: its start
	// plus max_clock_skew.
	notAfter time.Time
}

// run is a run's order: open state → extract → transform → load → state
// commit, each stage's result handed to the next.
func (j *job) run(ctx context.Context) (err error) {
	cfg := j.cfg
	j.started = time.Now().UTC()
	j.notAfter = cfg.extract.NotAfter(j.started)
	run, record, rules := j.newRun()
	log := j.log.With().Str("run_id", run.ID).Str("command", j.command).Logger()
	s := load.NewSummary(run.ID, j.command)
	sum := &s
	j.log, j.sum = log, sum

	// state: opened for the run, which its history records from here on.
	h := &state.History{Run: run, Plan: j.plan, Code: exitCode, Counts: sum.Counts, Redact: cfg.private.Redact, Report: j.report, Log: log}
	diff, err := h.Start(cfg.State, cfg.OutDir, j.stateKind(), record)
	if err != nil {
		return err
	}
	defer h.End(&err)
	st := h.Store
	conns, err := j.connect()
	if err != nil {
		return err
	}
	before, err := st.Before(j.beforeOptions(&rules, diff, conns))
	if err != nil {
		return err
	}
	j.logStart(&rules)

	// extract: the inputs listed, then read into sorters within the budget.
	b := j.budgets()
	out, err := load.NewOutput(cfg.OutDir, run.ID, sum, sorts.Rejects(b.Rejects, cfg.TmpDir))
	if err != nil {
		return err
	}
	defer out.Close()
	in, d365Files, campFiles, err := j.read(ctx, st, conns, out.Spool, before)
	if err != nil {
		return interrupted(ctx, err)
	}
	defer in.Close()
	sum.ContactRows, sum.ProfileRows = in.D365.Rows, in.Campaign.Rows
	indexed, err := st.Indexes(ctx, !j.plan, b.PKeys, cfg.TmpDir, log)
	if err != nil {
		return interrupted(ctx, err)
	}

	// transform: identity rules, then decisions streamed into load's files
	// (under temporary names until Finish) and held API writes.
	id, err := j.identify(st, in, d365Files, campFiles, out.Later, indexed && in.FullCampaign)
	if err != nil {
		return interrupted(ctx, err)
	}
	defer id.Close()
	runName, err := state.RunNames(st)
	if err == nil {
		err = out.Open(j.writerOptions(&rules, run.ID, runName), j.started, conns.Writers(j.plan, rules.Pairs, cfg.private.Redact, j.loadStage, log))
	}
	if err != nil {
		return err
	}
	opts, dirty, pkeys := j.decideOptions(&rules, st, in, d365Files, campFiles, before, indexed, id, conns)
	defer dirty.Close()
	defer pkeys.Close()
	d := transform.NewDecider(opts, id)
	if err := j.decide(ctx, st, d, id, out, in); err != nil {
		return interrupted(ctx, err)
	}
	if j.hooks.afterDecide != nil {
		j.hooks.afterDecide(ctx)
	}
	tally := d.Tally()
	sum.AddDecided(id, tally, len(rules.Pairs))
	tally.LogFuture(j.notAfter, log)
	pending, err := st.PendingGroups(d, before.Totals.Pending, j.started, cfg.state.PendingAlertAfter())
	if err == nil {
		sum.AddPending(pending, runName, j.started, cfg.state.PendingAlertAfter(), log)
		run.Rejects, err = out.Rejects()
	}
	if err != nil {
		return err
	}
	// Safety: nothing is written (or dropped) when the run would clear too
	// many of the opt-outs at stake, or when a full read lacks too many of
	// the records state knows.
	g, err := st.Guard(d, before.Totals, j.guardInputs(d, in, d365Files, campFiles))
	if err != nil {
		return err
	}
	sum.AddGuard(&g)
	run.Config.Limit = g.OptinLimit
	if stop, err := g.Enforce(j.plan, j.allowMassOptin, j.allowMissing, log); err != nil {
		out.Stopped()
		fmt.Fprintln(j.stdout, stop)
		return h.Stopped(err)
	}
	// A signal before anything was written abandons the run: nothing of it
	// is kept, and the next run does all of it.
	if err := ctx.Err(); err != nil {
		return interrupted(ctx, err)
	}

	// load: the API writes, then the files complete.
	sent, err := out.Apply(ctx)
	if err != nil {
		return err
	}
	run.FailedWrites = sum.FailedWrites
	result := afterWrites(ctx, out.Held(), len(sent.Refused))
	if err := out.Finish(log); err != nil {
		return err
	}
	if j.hooks.beforeCommit != nil {
		j.hooks.beforeCommit()
	}

	// state: the run's decisions and ending, then the files' final names.
	if !j.plan {
		if err := h.Commit(ctx, result, state.RunCommit{Decider: d, Dirty: dirty, Output: out,
			Ending: state.Ending{Config: record, MappingAdded: diff.MappingAdded, Queued: before.Queue, Failed: sent.Refused,
				Meta:    state.NextPositions(cfg.D365.tracking(), in.DataverseRead.Next, in.CampaignRead.Next),
				Deleted: in.DataverseRead.Deleted, Retention: cfg.state.Retention(), Files: state.ProcessedFiles(d365Files, campFiles, run.ID)},
			PKeys: pkeys, Known: max(before.Totals.D365, before.Totals.Campaign), RunName: runName,
			Release: func() { id.ReleaseRows(); in.Contacts.Close(); in.Profiles.Close() },
			Pairs:   rules.Pairs, DropUnmapped: len(diff.Removed) > 0, OutDir: cfg.OutDir,
			Chunk: j.hooks.commitChunk, AfterChunk: j.hooks.afterChunk, Progress: j.progress}); err != nil {
			return err
		}
	}
	fmt.Fprintln(j.stdout, sum.Line(time.Since(j.started)))
	log.Info().Interface("counts", sum.Counts()).Str("took", load.Took(time.Since(j.started))).Msg("run finished")
	if _, cut := result.(*signalError); !cut && ctx.Err() != nil {
		log.Info().Msg("a signal arrived after this run's writes were done: it finished its files and state first")
	}
	return result
}

// newRun is the run's record, the config it records, and its rules: the
// config's, with this command's.
func (j *job) newRun() (*state.Run, *state.ConfigRecord, transform.Rules) {
	cfg, rules := j.cfg, j.cfg.transform.Rules
	rules.Replay = j.replay
	// A write to an update file is seen only after someone imports it.
	rules.ImportD365, rules.ImportCampaign = cfg.D365.Target == "csv", cfg.Campaign.Target == "csv"
	rules.Started = j.started.UnixMilli()
	direction, policy := string(rules.Direction), string(rules.Policy)
	return &state.Run{ID: state.NewRunID(j.started), Command: j.command, Started: j.started, Outcome: "running",
			Direction: direction, Policy: policy, Version: show.ReadBuild().Short(),
			Config: state.NewRunConfig(&cfg.transform.Rules, cfg.transform.OptinLimit.String(),
				cfg.D365.Source+" → "+cfg.D365.Target, cfg.Campaign.Source+" → "+cfg.Campaign.Target, j.flags())},
		&state.ConfigRecord{Direction: direction, Policy: policy, Pairs: rules.Pairs}, rules
}

func (j *job) logStart(rules *transform.Rules) {
	j.log.Info().Str("direction", string(rules.Direction)).Str("policy", string(rules.Policy)).
		Bool("replay", rules.Replay).Bool("plan", j.plan).Bool("incremental", j.incremental).Msg("run started")
	if rules.Direction == transform.Disabled {
		j.log.Warn().Msg("direction is disabled: nothing will move; inputs are still checked")
	}
}

// report writes the page of the run just recorded beside its audit file.
func (j *job) report(st *state.Store, run *state.Run) {
	inspect.WriteRunReport(st, run, j.plan, j.cfg.OutDir, show.ReadBuild().Short(), j.log)
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

// beforeOptions is what the run asks of state before it reads.
func (j *job) beforeOptions(rules *transform.Rules, diff state.ConfigDiff, conns *load.Connections) state.BeforeOptions {
	return state.BeforeOptions{Incremental: j.incremental, FullRead: diff.MappingAdded, Tracking: j.cfg.D365.tracking(),
		Filtered: j.cfg.extract.CampaignConn.FilterName != "", KnownContacts: conns.APIs.Contacts == nil, Rules: rules, NotAfter: j.notAfter.UnixMilli()}
}

// read lists what this run reads of each system (its API, or its files)
// and reads it within the memory budget, from where state says.
func (j *job) read(ctx context.Context, st *state.Store, conns *load.Connections, rejects extract.RejectSink, before state.Before) (in *extract.Records, d365, campaign []extract.InputFile, err error) {
	l := extract.Listing{Incremental: j.incremental, Force: j.force, Log: j.log, Processed: st.ProcessedBefore()}
	ds := extract.System{Name: "d365", Pattern: j.cfg.D365.CSV, Flag: j.d365Path}
	if j.cfg.D365.Source == "api" {
		ds.API = extract.DataverseAPI()
	}
	cs := extract.System{Name: "campaign", Pattern: j.cfg.Campaign.CSV, Flag: j.campaignPath}
	if j.cfg.Campaign.Source == "api" {
		cs.API = extract.CampaignAPI()
	}
	if d365, campaign, err = l.List(ctx, ds, cs); err != nil {
		return nil, nil, nil, err
	}
	if err := j.cfg.extract.WithinBudget(j.cfg.TmpDir, j.log); err != nil {
		return nil, nil, nil, err
	}
	r := j.reading(conns, rejects)
	r.D365From, r.CampaignFrom, r.Known = before.D365From, before.CampaignFrom, before.Known
	in, d365, err = r.Read(ctx, d365, campaign)
	return in, d365, campaign, err
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

func (j *job) writerOptions(rules *transform.Rules, runID string, runName func(int64) string) load.WriterOptions {
	return load.WriterOptions{Dir: j.cfg.OutDir, RunID: runID, Pairs: rules.Pairs, Plan: j.plan, PendingSince: runName, Uncommitted: !j.plan,
		D365Updates: j.cfg.D365.Target == "csv", CampaignUpdates: j.cfg.Campaign.Target == "csv"}
}

func (j *job) loadStage(name string, total int64, unit string) load.Bar {
	return j.progress.Stage(name, total, unit)
}

// decideOptions are the decisions' options for what this run read; a
// backfill that commits collects every record's PKey entry (pkeys) for
// the commit to write the PKey index whole (state.RunCommit).
func (j *job) decideOptions(rules *transform.Rules, st *state.Store, in *extract.Records, d365Files, campFiles []extract.InputFile, before state.Before, indexed bool, id *transform.Identity, conns *load.Connections) (o transform.DecideOptions, dirty *state.Dirty, pkeys *spill.Sorter[state.PKeyEntry]) {
	b := j.budgets()
	cItems, pItems := id.Held()
	dirty = state.NewDirty(b.Dirty, j.cfg.TmpDir, cItems, pItems, max(in.D365.Rows, in.Campaign.Rows))
	d365Complete, campaignComplete := in.DataverseRead.Complete, in.CampaignRead.Complete
	// State is read whole when the run reads a side in full (every record
	// it lacks has lost that side), or has no index to look records up by.
	walk := st != nil && (!j.incremental || d365Complete || campaignComplete || !indexed || !before.Totals.PendingKnown)
	o = transform.DecideOptions{Rules: rules, Incremental: j.incremental, D365Files: d365Files, CampaignFiles: campFiles, Walk: walk,
		D365Complete: d365Complete, CampaignComplete: campaignComplete, Dirty: dirty, NotAfter: j.notAfter.UnixMilli()}
	if !walk {
		o.PendAlertBefore = j.started.Add(-j.cfg.state.PendingAlertAfter()).UnixMilli()
	}
	if conns.Contacts != nil {
		o.ETag, o.Deleted = conns.Contacts.API.ETag, in.DataverseRead.Deleted
	}
	for _, it := range before.Queue {
		o.Queued = append(o.Queued, it.Contact)
	}
	if !j.incremental && st != nil && !j.plan {
		pkeys = sorts.PKeys(b.PKeys, j.cfg.TmpDir, false)
		o.Collect = func(pkey string, id extract.ID) error { return pkeys.Add(&state.PKeyEntry{PKey: pkey, ID: id}) }
	}
	return o, dirty, pkeys
}

// decide makes the run's decisions into out; a disabled run decides
// nothing, but its rows are still checked.
func (j *job) decide(ctx context.Context, st *state.Store, d *transform.Decider, id *transform.Identity, out *load.Output, in *extract.Records) error {
	if d.Rules().Direction == transform.Disabled {
		return id.Drain()
	}
	bar := j.progress.Stage("deciding", int64(max(in.D365.Rows, in.Campaign.Rows)), "contacts")
	defer bar.Done()
	return st.WithPrior(func(p transform.Prior) error { return d.All(ctx, p, bar, out.Decided) })
}

// guardInputs are what the safety limits weigh of what the run read. A
// disabled run decides nothing and so drops nothing: no shrink to guard.
func (j *job) guardInputs(d *transform.Decider, in *extract.Records, d365Files, campFiles []extract.InputFile) transform.GuardInputs {
	decides := d.Rules().Direction != transform.Disabled
	return transform.GuardInputs{FullD365: in.FullD365 && decides, FullCampaign: in.FullCampaign && decides,
		D365Input: extract.Name(d365Files), CampaignInput: extract.Name(campFiles), D365Rows: in.D365.Rows, CampaignRows: in.Campaign.Rows,
		Clears: j.sum.OptoutsCleared, Optin: j.cfg.transform.OptinLimit, Missing: j.cfg.transform.MissingLimit}
}

// afterWrites is what a run whose writes are done returns once its files
// and state are done; its record keeps the exit code that error gets. A
// signal that arrived while API writes went out (held: some did) stopped
// the rest of them: what was applied is committed, the rest queued. One
// that arrives from here on does not stop the run, whose every write is
// done: it finishes its files and commit.
func afterWrites(ctx context.Context, held bool, refused int) error {
	var cut *signalError
	if held && errors.As(context.Cause(ctx), &cut) {
		return &signalError{sig: cut.sig, kept: true, after: cut.after}
	}
	if refused > 0 {
		return &load.FailedWritesError{Err: fmt.Errorf("the writes of %s were refused or not sent; they are queued for the next run", plural(refused, "contact"))}
	}
	return nil
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
