package state

import (
	"context"
	"time"

	"github.com/rs/zerolog"

	"optsync/extract"
	"optsync/extract/spill"
	"optsync/load"
	"optsync/load/progress"
	"optsync/transform"
	"optsync/transform/sorts"
)

// Before is what state knows before a run reads, handed to the stages as
// values: its totals, the retry queue (a run's: a plan shows what the run
// would do with it) and where the reads start.
type Before struct {
	Totals Totals
	Queue  []RetryItem
	// D365From and CampaignFrom are where the reads through the APIs
	// start (nowhere for a full read: a backfill, a mapping added), with
	// the retry queue to read again.
	D365From, CampaignFrom extract.Cursor
	// Known are the retry queue's contacts as state knows them, for a run
	// that does not reach Dynamics through its API (QueuedContacts).
	Known []extract.Contact
	// RunName names past runs by their start (RunNames).
	RunName func(int64) string
}

// BeforeOptions says what a run asks of state before it reads.
type BeforeOptions struct {
	Incremental bool
	// FullRead: every system read through its API is read in full (a
	// mapping added since the last run).
	FullRead bool
	// Tracking: Dynamics is read by change tracking; Filtered: Campaign's
	// reads have a changed-since filter (ReadPositions).
	Tracking, Filtered bool
	// KnownContacts: the retry queue's contacts come from state, with
	// change times later than NotAfter (Unix ms) unknown.
	KnownContacts bool
	Rules         *transform.Rules
	NotAfter      int64
}

// Before reads what a run needs of state before its reads; nothing without
// a state (a plan's first run).
func (s *Store) Before(o BeforeOptions) (b Before, err error) {
	if b.RunName, err = RunNames(s); err != nil || s == nil {
		return b, err
	}
	if b.Totals, err = s.Totals(); err != nil {
		return b, err
	}
	if !o.Incremental {
		return b, nil
	}
	if b.Queue, err = s.RetryQueue(); err != nil {
		return b, err
	}
	if !o.FullRead {
		if b.D365From.Position, b.CampaignFrom.Position, err = s.ReadPositions(o.Tracking, o.Filtered); err != nil {
			return b, err
		}
	}
	b.D365From.Queue = Queued(b.Queue)
	b.CampaignFrom.Queue = b.D365From.Queue
	if o.KnownContacts {
		b.Known, err = s.QueuedContacts(o.Rules, b.Queue, o.NotAfter)
	}
	return b, err
}

// Indexes says whether state's PKey index and index of pending writes are
// ready; a file from before them gets them once, when build is set (a
// plan changes nothing), sorted within budget bytes in dir.
func (s *Store) Indexes(ctx context.Context, build bool, budget int64, dir string, log zerolog.Logger) (bool, error) {
	if s == nil {
		return false, nil
	}
	indexed, err := s.IndexesReady()
	if err != nil || indexed || !build {
		return indexed, err
	}
	t0 := time.Now()
	n, err := s.BuildIndexes(ctx, budget, dir)
	if err != nil {
		return false, err
	}
	log.Info().Int("records", n).Str("took", load.Took(time.Since(t0))).Msg("built the state's indexes (once: the state file is from before them)")
	return true, nil
}

// WithPrior hands fn a read view of state (nil without a state), closed
// after.
func (s *Store) WithPrior(fn func(transform.Prior) error) error {
	if s == nil {
		return fn(nil)
	}
	r, err := s.Reader()
	if err != nil {
		return err
	}
	defer r.Close()
	if !s.readOnly {
		r.readPages() // a run's lookups (pread.go)
	}
	return fn(r)
}

// PendingGroups are the writes to update files that no export has shown
// yet, per run that wrote them, as state stands after the run d decided
// (kept: Totals.Pending before it).
func (s *Store) PendingGroups(d *transform.Decider, kept map[int64][][2]int, started time.Time, alertAfter time.Duration) (pending map[int64]*transform.PendingGroup, err error) {
	err = s.WithPrior(func(p transform.Prior) (err error) {
		pending, err = d.PendingGroups(p, kept, started, alertAfter)
		return err
	})
	return pending, err
}

// Guard works the safety limits out for the run d decided, against the
// totals state knew before it.
func (s *Store) Guard(d *transform.Decider, before Totals, in transform.GuardInputs) (g transform.Guard, err error) {
	known := transform.Known{D365: before.D365, Campaign: before.Campaign, Profiles: before.Profiles, OptOuts: before.OptOutSum()}
	err = s.WithPrior(func(p transform.Prior) (err error) {
		g, err = d.Guard(p, known, in)
		return err
	})
	return g, err
}

// ProcessedBefore says whether a file with this hex SHA-256 was processed
// by an earlier run; nil without a state, which remembers none.
func (s *Store) ProcessedBefore() func(sum string) (bool, error) {
	if s == nil {
		return nil
	}
	return func(sum string) (bool, error) {
		_, seen, err := s.Processed(sum)
		return seen, err
	}
}

// Identify runs the identity rules over what was read, once state's
// indexes are ready (Indexes: build, unless a plan). When they are and
// Campaign was read in full, the shrink guard counts Campaign's records by
// PKey in state's PKey index.
func (s *Store) Identify(ctx context.Context, in *extract.Records, o transform.IdentifyOptions, build bool, budget int64, dir string, log zerolog.Logger) (id *transform.Identity, indexed bool, err error) {
	if indexed, err = s.Indexes(ctx, build, budget, dir, log); err != nil {
		return nil, false, err
	}
	if indexed && in.FullCampaign {
		r, err := s.Reader()
		if err != nil {
			return nil, false, err
		}
		// Identify counts, then the view is closed: one left open would
		// hold off the commit for ever once bbolt must map the grown file
		// again (it waits for every open view).
		defer r.Close()
		o.CountPKeys = func(missed func(transform.PKeyEntry) error) transform.PKeyCounter { return r.PKeyCounter(missed) }
	}
	o.Keys, o.ReadKeys = in.Keys, in.ReadKeys
	id, err = transform.Identify(in.Contacts, in.Profiles, o)
	return id, indexed, err
}

// Deciding is state's part of a run's decisions: how the decider reads
// state, the entries it keeps for the commit to decide again (Dirty) and,
// for a backfill that commits, every record's PKey entry (PKeys), from
// which the commit may write the PKey index whole (RunCommit).
type Deciding struct {
	Options transform.DecideOptions
	Dirty   *Dirty
	PKeys   *spill.Sorter[PKeyEntry]
	// collect adds to PKeys on a goroutine of its own.
	collect *pkeyCollect
}

// DecidingOptions are what a run read and how it commits.
type DecidingOptions struct {
	transform.DecideOptions
	In      *extract.Records
	Before  Before
	Indexed bool
	// Commits: a run that commits (not a plan) with a state file.
	Commits bool
	// Held holds rows in memory (Identity.Held) for the commit; Conns
	// read Dynamics through its API (its ETags, the contacts deleted).
	Held    *transform.Identity
	Conns   *load.Connections
	Budgets spill.Budgets
	TmpDir  string
	// PendingAlertBefore is the start of the run less pending_alert.
	PendingAlertBefore int64
}

// Deciding works out state's part of the decisions of a run.
func (s *Store) Deciding(o DecidingOptions) Deciding {
	in, dec := o.In, Deciding{Options: o.DecideOptions}
	do := &dec.Options
	cItems, pItems := o.Held.Held()
	dec.Dirty = NewDirty(o.Budgets.Dirty, o.TmpDir, cItems, pItems, o.Held.Keys(), max(in.D365.Rows, in.Campaign.Rows))
	do.Dirty, do.D365Files, do.CampaignFiles = dec.Dirty, in.D365Inputs, in.CampaignInputs
	do.D365Complete, do.CampaignComplete = in.DataverseRead.Complete, in.CampaignRead.Complete
	// State is read whole when the run reads a side in full (every record
	// it lacks has lost that side), or has no index to look records up by.
	do.Walk = s != nil && (!do.Incremental || do.D365Complete || do.CampaignComplete || !o.Indexed || !o.Before.Totals.PendingKnown)
	if !do.Walk {
		do.PendAlertBefore = o.PendingAlertBefore
	}
	if o.Conns.Contacts != nil {
		do.ETag, do.Deleted = o.Conns.Contacts.API.ETag, in.DataverseRead.Deleted
	}
	for _, it := range o.Before.Queue {
		do.Queued = append(do.Queued, it.Contact)
	}
	if !do.Incremental && s != nil && o.Commits {
		pkeys := sorts.PKeys(o.Budgets.PKeys, o.TmpDir, false)
		// a backfill has an entry for (almost) every contact: room for
		// them at once, where doubling copied a million of them again
		// and again
		pkeys.Reserve(max(in.D365.Rows, in.Campaign.Rows))
		half := func() *spill.Sorter[PKeyEntry] { return sorts.PKeys(o.Budgets.PKeys/2, o.TmpDir, false) }
		dec.PKeys, dec.collect = pkeys, newPKeyCollect(pkeys, half, o.Budgets.PKeys, max(in.D365.Rows, in.Campaign.Rows))
		do.Collect, do.Collected = dec.collect.add, dec.collect.finish
	}
	return dec
}

// Close lets go of what the decisions kept.
func (d *Deciding) Close() {
	_ = d.collect.finish() // an error was the decisions', or nothing reads PKeys
	d.Dirty.Close()
	d.PKeys.Close()
}

// Decide makes every decision of d over what id hands, each to sink as it
// is made, against state as it stood before the run; a disabled run
// decides nothing, but its rows are still checked.
func (s *Store) Decide(ctx context.Context, d *transform.Decider, id *transform.Identity, sink transform.Sink, prog *progress.Progress, rows int) error {
	if d.Rules().Direction == transform.Disabled {
		return id.Drain()
	}
	bar := prog.Stage("deciding", int64(rows), "contacts")
	defer bar.Done()
	if !d.Walk() {
		// the pages the lookups will read, asked for at once (warm.go)
		ids, pkeys := nightLookups(id)
		w := s.warm(func() []warmTree { return lookupTrees(ids, pkeys) })
		defer w.end()
	}
	return s.WithPrior(func(p transform.Prior) error { return d.All(ctx, p, bar, sink) })
}
