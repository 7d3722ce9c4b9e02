package load

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/rs/zerolog"

	"optsync/extract"
	"optsync/extract/spill"
	"optsync/transform"
)

// Output is a run's output: the rejects spooled while reading and those
// found later, the run's files, the API writes held until every decision
// is made and the safety limits passed, and the summary's counts of what
// was decided, rejected and written.
type Output struct {
	Sum *Summary
	// Spool takes the rejects the reads find, on disk as they come: a file
	// of millions of bad rows must not be held in memory.
	Spool *RejectSpool
	// Later takes the rejects found after reading (identity rules, blocked
	// decisions), sorted within the caller's budget.
	Later *spill.Sorter[extract.Reject]

	w *Writer
	// format writes the decisions' changes to w beside the decider;
	// every other use of w waits for it first (writer).
	format   *changeFormatter
	api      *APIWriters
	held     []Held // changes waiting for an API's answer
	lc       Change // one, reused: the writers copy what they keep
	refused  int    // contacts whose writes were refused or not sent
	finished bool
}

// NewOutput opens the run's reject spool in outDir; the files come with
// Open, once the reads are done.
func NewOutput(outDir, runID string, sum *Summary, later *spill.Sorter[extract.Reject]) (*Output, error) {
	spool, err := NewRejectSpool(outDir, runID)
	if err != nil {
		later.Close()
		return nil, err
	}
	return &Output{Sum: sum, Spool: spool, Later: later}, nil
}

// Open creates the run's files, under temporary names until Finish, so
// that a safety stop (or any failure) leaves nothing behind; changes to
// systems written through their APIs are held for api.
func (o *Output) Open(opt WriterOptions, decidedAt time.Time, api *APIWriters) (err error) {
	o.api = api
	o.w, err = NewWriter(opt, decidedAt)
	if err == nil {
		o.format = newChangeFormatter(o.w)
	}
	return err
}

// writer is w once every change handed to the formatter is in it, or the
// first error of their writes.
func (o *Output) writer() (*Writer, error) {
	return o.w, o.format.finish()
}

// Decided takes each of the decider's changes as it is made (its sink):
// counted, then held for an API or written to the files; a blocked one
// goes to the rejects.
func (o *Output) Decided(ch *transform.Change, blocked *extract.Reject) error {
	if blocked != nil {
		o.Sum.Blocked++
		return o.Later.Add(blocked)
	}
	o.Sum.AddDecisions(ch.Decisions)
	o.lc = Change{Change: *ch}
	if o.api.Holds(&o.lc) {
		o.held = append(o.held, o.api.Hold(&o.lc))
		return nil
	}
	return o.format.add(&o.lc)
}

// Rejects writes the rejects file, the spooled rejects merged with those
// found later by source and line, counts them, and returns their reasons
// for the run's history (those found before a failure too). The report keeps ids and PKeys of a checked
// shape only, never other text of a bad row: file and line find the row.
func (o *Output) Rejects() (reasons []Reasons, err error) {
	w, err := o.writer()
	if err != nil {
		return nil, err
	}
	rejected, err := o.Later.Sorted()
	if err != nil {
		return nil, err
	}
	nlater := 0
	err = o.Spool.Merge(func() *extract.Reject {
		r := rejected.Next()
		if r != nil {
			nlater++
		}
		return r
	}, func(r extract.Reject) error {
		ex := Example{Source: r.Source.String(), Line: r.Line}
		if r.IDChecked {
			ex.ID = r.ID
		}
		reasons = AddReason(reasons, r.Reason, ex)
		return w.Reject(r)
	})
	rejected.Close()
	if err == nil {
		err = rejected.Err()
	}
	if err != nil {
		return reasons, err
	}
	o.Sum.Rejected = o.Spool.Len() + nlater
	o.Spool.Close()
	return reasons, nil
}

// Stopped removes the files of a run stopped at a safety limit, which
// writes nothing, and prints why it stopped.
func (o *Output) Stopped(stdout io.Writer, message string) {
	_ = o.format.finish() // the files are removed: a write's error does not matter
	o.w.Abort()
	fmt.Fprintln(stdout, message)
	o.Sum.Stopped()
}

// Apply sends the held API writes: what a service applied is kept (and
// committed even if a signal arrives meanwhile), what it refused or what
// was not sent is audited as failed and queued for the next run.
func (o *Output) Apply(ctx context.Context) (Sent, error) {
	w, err := o.writer()
	if err != nil {
		return Sent{}, err
	}
	sent, err := o.api.Apply(ctx, o.held, w)
	if err != nil {
		return sent, err
	}
	o.Sum.AddRefused(sent.Writes)
	o.refused = len(sent.Refused)
	return sent, nil
}

// Result is what a run whose API writes went out returns once its files
// and state are done, its record keeping the exit code that error gets:
// cut, the signal that stopped the writes when there were any, else a
// FailedWritesError when some were refused or not sent, else nil.
func (o *Output) Result(cut error) error {
	switch {
	case cut != nil && len(o.held) > 0:
		return cut
	case o.refused > 0:
		return &FailedWritesError{Err: fmt.Errorf("the writes of %s were refused or not sent; they are queued for the next run", Plural(o.refused, "contact"))}
	}
	return nil
}

// Finish completes the files (see Writer.Finish); a plan's are final and
// logged.
func (o *Output) Finish(log zerolog.Logger) error {
	if _, err := o.writer(); err != nil {
		return err
	}
	if err := o.w.Finish(); err != nil {
		return err
	}
	o.finished = true
	o.Sum.D365Rows, o.Sum.CampaignRows = o.w.D365Rows, o.w.CampaignRows
	if o.w.opt.Plan {
		o.logPaths(log)
	}
	return nil
}

// Commit gives the finished files their final names once state holds the
// run's decisions, and logs them.
func (o *Output) Commit(log zerolog.Logger) error {
	if err := o.w.Commit(); err != nil {
		return err
	}
	o.logPaths(log)
	return nil
}

func (o *Output) logPaths(log zerolog.Logger) {
	for _, p := range o.w.Paths() {
		log.Info().Str("file", p).Msg("written")
	}
}

// Paths lists the run's files by their names now.
func (o *Output) Paths() []string { return o.w.Paths() }

// Close removes unfinished files; the files of a run that failed after
// Finish keep names that say so.
func (o *Output) Close() {
	_ = o.format.finish() // an error is the run's already, or nothing is kept
	switch {
	case o.w != nil && !o.finished:
		o.w.Abort()
	case o.w != nil:
		o.w.Close()
	}
	o.Spool.Close()
	o.Later.Close()
}
