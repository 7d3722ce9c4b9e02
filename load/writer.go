package load

import (
	"fmt"
	"time"

	"github.com/jszwec/csvutil"

	"optsync/extract"
	"optsync/transform"
)

// Outcomes of an audit row.
const (
	Applied = "applied"
	Planned = "planned"
	Failed  = "failed"
	Skipped = "skipped"
	// RaceRestored: a write that cleared an opt-out in Campaign was undone
	// because the person unsubscribed while it was in flight; the opt-out
	// is in place and the contact is decided again next run.
	RaceRestored = "unsubscribe-race-restored"
)

// AuditRow is one line of audit-<run>.csv, columns in the SPEC's order.
type AuditRow struct {
	RunID            string `csv:"run_id" json:"run_id"`
	DecidedAt        string `csv:"decided_at" json:"decided_at"`
	ContactID        string `csv:"contact_id" json:"contact_id"`
	ProfilePKey      string `csv:"profile_pkey" json:"profile_pkey"`
	D365Field        string `csv:"d365_field" json:"d365_field"`
	CampaignField    string `csv:"campaign_field" json:"campaign_field"`
	Direction        string `csv:"direction" json:"direction"`
	OldValue         string `csv:"old_value" json:"old_value"`
	NewValue         string `csv:"new_value" json:"new_value"`
	Rule             string `csv:"rule" json:"rule"`
	D365Modified     string `csv:"d365_modified" json:"d365_modified"`
	CampaignModified string `csv:"campaign_modified" json:"campaign_modified"`
	Outcome          string `csv:"outcome" json:"outcome"`
	Error            string `csv:"error" json:"error"`
}

// RejectRow is one line of rejects-<run>.csv.
type RejectRow struct {
	Source string `csv:"source"`
	Line   int    `csv:"line"`
	ID     string `csv:"id"`
	Reason string `csv:"reason"`
}

// Change is a contact's decisions (transform.Change) as the files and API
// writes take them, with what the APIs made of its writes.
type Change struct {
	transform.Change
	// D365Error and CampaignError, when set, are why that system's API
	// refused this contact's writes: those decisions are audited as failed.
	D365Error, CampaignError string
	// CampaignRaced marks CampaignError as an unsubscribe race: audited
	// as RaceRestored.
	CampaignRaced bool
}

// WriterOptions says which files a run writes.
type WriterOptions struct {
	Dir   string
	RunID string
	Pairs []transform.Pair
	// Plan marks decisions planned and writes no update files.
	Plan bool
	// D365Updates and CampaignUpdates ask for the update file of a CSV target.
	D365Updates, CampaignUpdates bool
	// Uncommitted: Finish gives the files names that say their run has not
	// committed (<kind>-<run>-uncommitted.csv), and Commit their final
	// names once state has recorded the run's decisions: an update file
	// that looks finished is never one whose decisions state does not hold.
	Uncommitted bool

	// failCreate, in tests, makes creating the named file fail.
	failCreate func(name string) error
	// PendingSince names, for a write not yet seen, the run that first
	// wrote it (from that run's start, Unix ms), for its audit row.
	PendingSince func(since int64) string
}

// Writer writes one run's output files.
type Writer struct {
	opt       WriterOptions
	dir       *Dir
	decidedAt string
	audit     *outFile
	rejects   *outFile
	rejEnc    *csvutil.Encoder
	d365      *outFile
	campaign  *outFile
	files     []*outFile
	placed    []*outFile // finished, under their uncommitted names
	// line is the row being written (csvrow.go); lead and pairCells are
	// the cells every audit row of the run, and of a pair, starts with.
	line      []byte
	lead      []byte
	pairCells [][]byte
	// Counts of rows written, by kind.
	AuditRows, RejectRows, D365Rows, CampaignRows int
}

// NewWriter creates the run's files (0600, in a 0700 folder: see OutDir).
func NewWriter(opt WriterOptions, decidedAt time.Time) (_ *Writer, err error) {
	dir, err := OutDir(opt.Dir)
	if err != nil {
		return nil, err
	}
	dir.failCreate = opt.failCreate
	w := &Writer{opt: opt, dir: dir, decidedAt: decidedAt.UTC().Format(time.RFC3339)}
	w.lead = append(appendCells(nil, opt.RunID, w.decidedAt), ',')
	for _, p := range opt.Pairs {
		w.pairCells = append(w.pairCells, append(appendCells(nil, escapeCell(p.D365), p.Campaign), ','))
	}
	defer func() {
		if err != nil {
			w.Abort()
		}
	}()
	if w.audit, err = w.create("audit-" + opt.RunID + ".csv"); err != nil {
		return nil, err
	}
	header, err := csvutil.Header(AuditRow{}, "csv")
	if err != nil {
		return nil, err
	}
	if err = w.audit.write(appendRow(nil, header...)); err != nil {
		return nil, err
	}
	if w.rejects, err = w.create("rejects-" + opt.RunID + ".csv"); err != nil {
		return nil, err
	}
	w.rejEnc = csvutil.NewEncoder(w.rejects.csv)
	if err = w.rejEnc.EncodeHeader(RejectRow{}); err != nil {
		return nil, err
	}
	if opt.Plan {
		return w, nil
	}
	if opt.D365Updates {
		if w.d365, err = w.create("d365-updates-" + opt.RunID + ".csv"); err != nil {
			return nil, err
		}
		h := []string{"contactid"}
		for _, p := range opt.Pairs {
			h = append(h, p.D365)
		}
		if err = w.d365.write(appendRow(nil, h...)); err != nil {
			return nil, err
		}
	}
	if opt.CampaignUpdates {
		if w.campaign, err = w.create("campaign-updates-" + opt.RunID + ".csv"); err != nil {
			return nil, err
		}
		h := []string{"PKey", "externalId"}
		for _, p := range opt.Pairs {
			h = append(h, p.Campaign)
		}
		if err = w.campaign.write(appendRow(nil, h...)); err != nil {
			return nil, err
		}
	}
	return w, nil
}

func (w *Writer) create(name string) (*outFile, error) {
	f, err := createOut(w.dir, name, 0o600)
	if err != nil {
		return nil, err
	}
	w.files = append(w.files, f)
	return f, nil
}

// Reject writes a rejects row.
func (w *Writer) Reject(r extract.Reject) error {
	w.RejectRows++
	return w.rejEnc.Encode(RejectRow{
		Source: escapeCell(r.Source.String()),
		Line:   r.Line,
		ID:     escapeID(r.ID, r.IDChecked),
		Reason: escapeCell(r.Reason),
	})
}

// CSVSafe escapes the cells of an audit row that hold input text, for a
// spreadsheet; identifiers checked by shape stay as they are.
func CSVSafe(r AuditRow) AuditRow {
	r.D365Field, r.CampaignField, r.Error = escapeCell(r.D365Field), escapeCell(r.CampaignField), escapeCell(r.Error)
	return r
}

// Change writes a contact's audit rows and, for applied changes, its update
// file rows.
func (w *Writer) Change(c *Change) error {
	id := c.ID.String()
	for i := range c.Decisions {
		d := &c.Decisions[i]
		var outcome, errCell, oldV, newV string
		switch {
		case d.Skip != "":
			outcome, errCell = Skipped, d.Skip
		case d.Pending:
			outcome, errCell = transform.OutcomePendingNotSeen, PendingReason(d.Since, w.opt.PendingSince)
		case w.opt.Plan:
			outcome = Planned
		case d.Target == transform.ToD365 && c.D365Error != "":
			outcome, errCell = Failed, escapeCell(c.D365Error)
		case d.Target == transform.ToCampaign && c.CampaignError != "":
			outcome, errCell = Failed, escapeCell(c.CampaignError)
			if c.CampaignRaced {
				outcome = RaceRestored
			}
		default:
			outcome = Applied
		}
		if d.Skip == "" {
			oldV, newV = d.Old.String(), d.New.String()
		}
		w.AuditRows++
		// AuditRow's columns, in its order. A contact id (hex digits and
		// dashes), a direction, a value, a time and an outcome never need
		// quotes.
		b := append(w.line[:0], w.lead...) // run_id, decided_at
		b = append(b, id...)
		b = append(b, ',')
		b = appendCell(b, c.PKey)
		b = append(b, ',')
		b = append(b, w.pairCells[d.Pair]...) // d365_field, campaign_field
		b = append(b, d.Target.String()...)
		b = append(b, ',')
		b = append(b, oldV...)
		b = append(b, ',')
		b = append(b, newV...)
		b = append(b, ',')
		b = appendCell(b, d.Rule)
		b = append(b, ',')
		b = extract.AppendTime(b, d.DModified)
		b = append(b, ',')
		b = extract.AppendTime(b, d.CModified)
		b = append(b, ',')
		b = append(b, outcome...)
		b = append(b, ',')
		b = appendCell(b, errCell)
		w.line = append(b, '\n')
		if err := w.audit.write(w.line); err != nil {
			return fmt.Errorf("writing audit: %w", err)
		}
	}
	if w.opt.Plan {
		return nil
	}
	n := len(w.opt.Pairs)
	if w.d365 != nil && c.D365Changed {
		b := appendCell(w.line[:0], id)
		for i := 0; i < n; i++ {
			b = append(append(b, ','), c.D365After[i].String()...)
		}
		w.line = append(b, '\n')
		w.D365Rows++
		if err := w.d365.write(w.line); err != nil {
			return fmt.Errorf("writing %s: %w", w.d365.final, err)
		}
	}
	if w.campaign != nil && c.CampaignChanged {
		b := append(appendCell(w.line[:0], c.PKey), ',')
		b = appendCell(b, id)
		for i := 0; i < n; i++ {
			b = append(append(b, ','), c.CampaignAfter[i].String()...)
		}
		w.line = append(b, '\n')
		w.CampaignRows++
		if err := w.campaign.write(w.line); err != nil {
			return fmt.Errorf("writing %s: %w", w.campaign.final, err)
		}
	}
	return nil
}

// PendingReason says why a write is in an update file again: the run that
// first wrote it (by name when name knows it) has not been seen imported.
func PendingReason(since int64, name func(int64) string) string {
	by := "an earlier run (not recorded)"
	if since != 0 {
		by = "the run started " + time.UnixMilli(since).UTC().Format(time.RFC3339)
		if name != nil {
			if id := name(since); id != "" {
				by = "run " + id
			}
		}
	}
	return transform.OutcomePendingNotSeen + ": first written by " + by + "; the export does not show it yet although the record changed: written again in this run's update file"
}

// Finish completes every file: flushed and synced, then all renamed into
// place — their final names, or with Uncommitted names that say their run
// has not committed — and the folder synced. Only after it returns may
// state record the changes.
func (w *Writer) Finish() error {
	for _, f := range w.files {
		if err := f.complete(); err != nil {
			w.Abort()
			return err
		}
	}
	for i, f := range w.files {
		if w.opt.Uncommitted {
			f.name, f.final = UncommittedName(f.name), w.dir.Path(UncommittedName(f.name))
		}
		if err := f.place(false); err != nil {
			// Those placed already are removed with the rest: no file of a
			// run that could not finish its files is left.
			for _, g := range w.files[:i] {
				w.dir.root.Remove(g.name)
			}
			w.Abort()
			return err
		}
	}
	w.placed, w.files = w.files, nil
	err := w.dir.sync()
	if !w.opt.Uncommitted {
		w.dir.Close()
	}
	return err
}

// Commit gives the files of a finished Uncommitted writer their final
// names, once state has recorded the run's decisions, and syncs the folder.
func (w *Writer) Commit() error {
	if !w.opt.Uncommitted {
		return nil
	}
	defer func() {
		w.placed = nil
		w.dir.Close()
	}()
	for _, f := range w.placed {
		final := finalName(f.name)
		if err := w.dir.root.Rename(f.name, final); err != nil {
			return fmt.Errorf("naming %s %s: %w", f.final, final, err)
		}
		f.name, f.final = final, w.dir.Path(final)
	}
	return w.dir.sync()
}

// Close releases the folder of a writer that will not commit (its run
// failed after Finish): its files keep the names that say so.
func (w *Writer) Close() {
	if w.opt.Uncommitted && w.placed != nil {
		w.placed = nil
		w.dir.Close()
	}
}

// Abort removes the unfinished files.
func (w *Writer) Abort() {
	for _, f := range w.files {
		f.abort()
	}
	w.files = nil
	w.dir.Close()
}

// Paths lists the files a finished writer produced, by their names now.
func (w *Writer) Paths() []string {
	var out []string
	for _, f := range []*outFile{w.audit, w.rejects, w.d365, w.campaign} {
		if f != nil {
			out = append(out, f.final)
		}
	}
	return out
}
