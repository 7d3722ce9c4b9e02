package main

import (
	"context"
	"errors"
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
	// (backfill): a record without its counterpart in them is decided
	// against what state knows of the other side.
	incremental bool
	// d365Path and campaignPath: backfill's one export per system; the
	// flags of the command line (newState: backfill --new-state).
	d365Path, campaignPath                                      string
	force, replay, plan, allowMassOptin, allowMissing, newState bool
	progress                                                    *progress.Progress
	hooks                                                       hooks
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
	h, rules := j.start()
	cfg, sum, log, run := j.cfg, j.sum, j.log, h.Run

	// state: opened for the run, which its history records from here on.
	diff, err := h.Start(cfg.State, cfg.OutDir, state.Kind(j.plan, j.newState, j.incremental), rules.Pairs)
	if err != nil {
		return err
	}
	defer h.End(&err)
	conns, before, err := j.before(h.Store, &rules, diff)
	if err != nil {
		return err
	}
	rules.LogStart(j.plan, j.incremental, log)

	// extract: the inputs listed, then read into sorters within the budget.
	b := j.budgets()
	out, err := load.NewOutput(cfg.OutDir, run.ID, sum, sorts.Rejects(b.Rejects, cfg.TmpDir))
	if err != nil {
		return err
	}
	defer out.Close()
	in, err := j.read(ctx, h.Store, conns, out.Spool, before)
	if err != nil {
		return interrupted(ctx, err)
	}
	defer in.Close()
	sum.ContactRows, sum.ProfileRows = in.D365.Rows, in.Campaign.Rows

	// transform: identity rules, then decisions streamed into load's files
	// (under temporary names until Finish) and held API writes.
	shared, _ := in.Tally.(*transform.SharedPKeys)
	id, indexed, err := h.Store.Identify(ctx, in, transform.IdentifyOptions{D365Files: in.D365Inputs, CampaignFiles: in.CampaignInputs, WithOwners: j.incremental,
		ProfilesByContact: in.ProfilesByContact, Shared: shared,
		Later: out.Later, Sorts: sorts.Identity{Budget: b.ByContact, Dir: cfg.TmpDir}}, !j.plan, b.PKeys, cfg.TmpDir, log)
	if err != nil {
		return interrupted(ctx, err)
	}
	defer id.Close()
	if err := out.Open(load.WriterOptions{Dir: cfg.OutDir, RunID: run.ID, Pairs: rules.Pairs, Plan: j.plan, PendingSince: before.RunName, Uncommitted: !j.plan,
		D365Updates: rules.ImportD365, CampaignUpdates: rules.ImportCampaign}, j.started, conns.Writers(j.plan, rules.Pairs, cfg.private.Redact, j.progress, log)); err != nil {
		return err
	}
	dec := h.Store.Deciding(j.decidingOptions(&rules, in, before, indexed, id, conns))
	defer dec.Close()
	d := transform.NewDecider(dec.Options, id)
	if err := h.Store.Decide(ctx, d, id, out.Decided, j.progress, max(in.D365.Rows, in.Campaign.Rows)); err != nil {
		return interrupted(ctx, err)
	}
	if j.hooks.afterDecide != nil {
		j.hooks.afterDecide(ctx)
	}
	sum.AddDecided(id, d.Tally(), len(rules.Pairs))
	d.Tally().LogFuture(j.notAfter, log)
	if run.Rejects, err = out.Rejects(); err == nil {
		err = h.Pending(d, before, cfg.state.PendingAlertAfter(), sum)
	}
	if err != nil {
		return err
	}
	// Safety: nothing is written (or dropped) when the run would clear too
	// many of the opt-outs at stake, or when a full read lacks too many of
	// the records state knows.
	g, err := h.Guard(d, before.Totals, d.GuardInputs(in, sum.OptoutsCleared, cfg.transform.OptinLimit, cfg.transform.MissingLimit), sum)
	if err != nil {
		return err
	}
	if stop, err := g.Enforce(j.plan, j.allowMassOptin, j.allowMissing, log); err != nil {
		out.Stopped(j.stdout, stop)
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
	result := out.Result(keptCut(ctx))
	if err := out.Finish(log); err != nil {
		return err
	}
	if j.hooks.beforeCommit != nil {
		j.hooks.beforeCommit()
	}

	// state: the run's decisions and ending, then the files' final names.
	if err := h.Commit(ctx, result, j.runCommit(diff, before, in, d, dec, out, id, sent)); err != nil {
		return err
	}
	sum.Finished(j.stdout, j.started, log)
	if _, cut := result.(*signalError); !cut && ctx.Err() != nil {
		log.Info().Msg("a signal arrived after this run's writes were done: it finished its files and state first")
	}
	return result
}

// runCommit is what the run commits once its files are finished.
func (j *job) runCommit(diff state.ConfigDiff, before state.Before, in *extract.Records, d *transform.Decider, dec state.Deciding, out *load.Output, id *transform.Identity, sent load.Sent) state.RunCommit {
	return state.RunCommit{Decider: d, Deciding: dec, Output: out, Before: before, Diff: diff,
		Ending: state.Ending{Failed: sent.Refused, Meta: state.NextPositions(j.cfg.extract.DataverseConn.Tracking(), in.DataverseRead.Next, in.CampaignRead.Next),
			Deleted: in.DataverseRead.Deleted, Retention: j.cfg.state.Retention(), Files: state.ProcessedFiles(in.D365Inputs, in.CampaignInputs),
			Restamp: state.Restamps(in.Restamp)},
		Release: func() { id.ReleaseRows(); in.Contacts.Close(); in.Profiles.Close() },
		Chunk:   j.hooks.commitChunk, AfterChunk: j.hooks.afterChunk, Progress: j.progress}
}

// decidingOptions are the decisions' options for what this run read.
func (j *job) decidingOptions(rules *transform.Rules, in *extract.Records, before state.Before, indexed bool, id *transform.Identity, conns *load.Connections) state.DecidingOptions {
	return state.DecidingOptions{In: in, Before: before, Indexed: indexed, Commits: !j.plan, Budgets: j.budgets(), TmpDir: j.cfg.TmpDir, Held: id, Conns: conns,
		PendingAlertBefore: j.started.Add(-j.cfg.state.PendingAlertAfter()).UnixMilli(),
		DecideOptions:      transform.DecideOptions{Rules: rules, Incremental: j.incremental, NotAfter: j.notAfter.UnixMilli()}}
}

// start starts the run's clock, record, log and summary, and makes its
// history and its rules.
func (j *job) start() (*state.History, transform.Rules) {
	cfg, started := j.cfg, time.Now().UTC()
	j.started, j.notAfter = started, cfg.extract.NotAfter(started)
	rules := cfg.transform.RunRules(j.replay, cfg.D365.Target == "csv", cfg.Campaign.Target == "csv", j.started)
	run := state.NewRun(j.command, j.started, show.ReadBuild().Short(), state.NewRunConfig(&rules, cfg.transform.OptinLimit.String(),
		cfg.D365.Source+" → "+cfg.D365.Target, cfg.Campaign.Source+" → "+cfg.Campaign.Target, state.Flags(j.replay, j.force, j.allowMassOptin, j.newState)))
	j.log, j.sum = j.log.With().Str("run_id", run.ID).Str("command", j.command).Logger(), load.NewSummary(run.ID, j.command)
	return &state.History{Run: run, Plan: j.plan, Code: exitCode, Counts: j.sum.Counts, Redact: cfg.private.Redact,
		Report: inspect.Reporter(j.plan, cfg.OutDir, show.ReadBuild().Short(), j.log), Log: j.log}, rules
}

// budgets divides the run's memory budget between what it holds at once.
func (j *job) budgets() spill.Budgets { return j.cfg.extract.Budgets(j.hooks.memoryBudget) }

// connect makes the API connectors the config asks for.
func (j *job) connect() (*load.Connections, error) {
	return load.Connect(load.ConnectOptions{Extract: &j.cfg.extract, Load: &j.cfg.load, Tracking: j.cfg.extract.DataverseConn.Tracking(),
		NotAfter: j.notAfter, Log: j.log})
}

// before connects the APIs, and reads what the run needs of state first.
func (j *job) before(st *state.Store, rules *transform.Rules, diff state.ConfigDiff) (*load.Connections, state.Before, error) {
	conns, err := j.connect()
	if err != nil {
		return nil, state.Before{}, err
	}
	before, err := st.Before(state.BeforeOptions{Incremental: j.incremental, FullRead: diff.MappingAdded, Tracking: j.cfg.extract.DataverseConn.Tracking(),
		Filtered: j.cfg.extract.CampaignConn.ChangedFilter.Name != "", KnownContacts: conns.APIs.Contacts == nil, Rules: rules, NotAfter: j.notAfter.UnixMilli()})
	return conns, before, err
}

// read lists what this run reads of each system (its API, or its files)
// and reads it within the memory budget, from where state says.
func (j *job) read(ctx context.Context, st *state.Store, conns *load.Connections, rejects extract.RejectSink, before state.Before) (*extract.Records, error) {
	// A backfill over a state that links no profile yet (a first one)
	// has the rule by PKey hear of no PKey in order: its profiles are
	// sorted by contact as they are read, and, once that sort spills,
	// every row's PKey counted, so that the rule settles only the rows
	// that may share one by PKey (transform.SharedPKeys).
	byContact := !j.incremental && before.Totals.Profiles == 0
	cfg, r := j.cfg, j.reading(conns, rejects, byContact)
	r.D365From, r.CampaignFrom, r.Known = before.D365From, before.CampaignFrom, before.Known
	return cfg.extract.ListAndRead(ctx, extract.Listing{Incremental: j.incremental, Force: j.force, Log: j.log, Processed: st.ProcessedBefore(), Stamped: st.ProcessedStamps(), Now: j.hooks.listedAt},
		extract.InputOf("d365", cfg.D365.Source, cfg.D365.CSV, j.d365Path), extract.InputOf("campaign", cfg.Campaign.Source, cfg.Campaign.CSV, j.campaignPath), r, cfg.TmpDir)
}

// reading reads this run's rows into sorters within its memory budget.
func (j *job) reading(conns *load.Connections, rejects extract.RejectSink, byContact bool) *extract.Reading {
	keys := extract.NewKeys()
	var tally extract.PKeyTally
	if byContact {
		// half the share the rule's sort by contact had, which the
		// reading leaves unused
		tally = transform.NewSharedPKeys(j.budgets().ByContact / 2)
	}
	return &extract.Reading{Contacts: sorts.Contacts(j.budgets().Contacts, j.cfg.TmpDir), Profiles: sorts.Profiles(keys, byContact, j.budgets().Profiles, j.cfg.TmpDir), Keys: keys.Writer(), ProfilesByContact: byContact, Tally: tally,
		D365Layout: j.cfg.extract.D365Layout(j.notAfter), CampaignLayout: j.cfg.extract.CampaignLayout(j.notAfter),
		APIs: conns.APIs, Incremental: j.incremental, Rejects: rejects, Log: j.log,
		Stage: func(name string, total int64, unit string) extract.Bar { return j.progress.Stage(name, total, unit) }}
}

// keptCut is the signal that stopped the API writes going out: what was
// applied is kept and committed, the rest queued. One arriving later does
// not stop the run, whose every write is done: it finishes files and commit.
func keptCut(ctx context.Context) error {
	var cut *signalError
	if !errors.As(context.Cause(ctx), &cut) {
		return nil
	}
	return &signalError{sig: cut.sig, kept: true, after: cut.after}
}
