package state

import (
	"context"
	"time"

	"github.com/rs/zerolog"

	"optsync/extract"
	"optsync/load"
	"optsync/transform"
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
	if s == nil {
		return b, nil
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
