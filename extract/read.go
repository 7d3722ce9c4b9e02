package extract

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"optsync/extract/spill"
)

// Records is what a run read of both systems: the rows, sorted as the
// identity rules read them (the sorters' order), in memory within the
// run's budget, else in runs on disk; and what each read found.
type Records struct {
	Contacts *spill.Sorter[Contact]
	Profiles *spill.Sorter[Profile]
	// Keys holds what the profiles name (their PKeys, field times);
	// ReadKeys is the writer the reading filled it with.
	Keys     *Keys
	ReadKeys *KeyWriter
	// D365 and Campaign count the rows read and rejected on each side.
	D365, Campaign Stats
	// DataverseRead and CampaignRead are what the reads through the APIs
	// found (the next cursor, whether every record was read, the contacts
	// deleted); zero for a side read from files.
	DataverseRead, CampaignRead Read
	// FullD365 and FullCampaign: the run read every record of the side (a
	// backfill, or an API read in full: a first run, a refused delta link,
	// Campaign without a changed-since filter).
	FullD365, FullCampaign bool
	// D365Inputs and CampaignInputs are the inputs read (ListAndRead):
	// the retry queue's contacts, when read, are one more of Dynamics.
	D365Inputs, CampaignInputs []InputFile
	// Restamp are drop files found processed by their content that state
	// does not know by their stamp yet (Listing.List).
	Restamp []InputFile

	// ProfilesByContact: Profiles sorts by contact (Reading's). Tally is
	// Reading's when it heard every profile row's PKey (the Profiles
	// sorter spilled), else nil.
	ProfilesByContact bool
	Tally             PKeyTally

	d365ByAPI bool
}

// Close drops the rows held.
func (r *Records) Close() {
	r.Contacts.Close()
	r.Profiles.Close()
}

// PKeyTally counts the PKeys of a read's profile rows (transform.SharedPKeys).
type PKeyTally interface{ Add(pkey string) }

// RejectSink takes rejects as the readers find them, from both systems at
// once: a run's spool on disk, validate's tally.
type RejectSink interface {
	Add(Reject)
	Err() error
}

// Bar shows how far a read has got (the progress display).
type Bar interface {
	Reader(io.Reader) io.Reader
	Done()
}

// APIs are the readers of the systems a run reaches through their APIs
// (nil: not reached); a system read from files may still be reached, to
// read its queued records again or for its writes.
type APIs struct {
	Contacts *DataverseContacts
	Profiles *CampaignProfiles
}

// Reading is how a run reads its inputs.
type Reading struct {
	// Contacts and Profiles take the rows: sorters in the identity rules'
	// order, within the run's memory budget.
	Contacts *spill.Sorter[Contact]
	Profiles *spill.Sorter[Profile]
	// Keys takes the profiles' PKeys and field times: a writer of the
	// Keys the Profiles sorter reads them from.
	Keys *KeyWriter
	// D365Layout and CampaignLayout are the exports' columns and times.
	D365Layout, CampaignLayout Layout
	// APIs read the systems whose input is their API, from D365From and
	// CampaignFrom (the cursors state keeps, handed in as values).
	APIs                   APIs
	D365From, CampaignFrom Cursor
	// Incremental: a run, whose inputs hold changes; else a backfill,
	// which reads every record.
	Incremental bool
	// Known are the retry queue's contacts as state knows them (Line: the
	// place in the queue), decided again when Dynamics is not reached
	// through its API; through it they are read again from Dataverse
	// (D365From.Queue).
	Known   []Contact
	Rejects RejectSink
	// ProfilesByContact says Profiles sorts by contact, not by PKey
	// (handed on in Records). Tally, when set, hears every profile row's
	// PKey once the Profiles sorter first spills: the rows it held then,
	// and each row after (Records.Tally says it did).
	ProfilesByContact bool
	Tally             PKeyTally
	// Stage starts a progress bar.
	Stage func(name string, total int64, unit string) Bar
	Log   zerolog.Logger
}

// Read reads both systems' inputs, at once, then the retry queue. Each row
// remembers which input it came from (Contact.File, Profile.File: its
// place in d365 or campaign), so that a later file wins over an earlier one
// for the same record. The retry queue's contacts, when there are any to
// read again, come as one more input of Dynamics: the inputs returned.
func (o *Reading) Read(ctx context.Context, d365, campaign []InputFile) (*Records, []InputFile, error) {
	in := &Records{Contacts: o.Contacts, Profiles: o.Profiles, Keys: o.Keys.Keys(), ReadKeys: o.Keys, ProfilesByContact: o.ProfilesByContact}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return o.readContacts(gctx, in, d365) })
	g.Go(func() error { return o.readProfiles(gctx, in, campaign) })
	if err := g.Wait(); err != nil {
		in.Close()
		return nil, nil, err
	}
	if err := o.Rejects.Err(); err != nil {
		return nil, nil, err
	}
	o.Log.Info().Int("files", len(d365)).Int("rows", in.D365.Rows).Int("rejected", in.D365.Rejected).
		Int("sorted_runs_on_disk", in.Contacts.Spilled).Msg("read Dynamics contacts")
	o.Log.Info().Int("files", len(campaign)).Int("rows", in.Campaign.Rows).Int("rejected", in.Campaign.Rejected).
		Int("without_externalId", in.Campaign.Unlinked).Int("sorted_runs_on_disk", in.Profiles.Spilled).Msg("read Campaign profiles")
	in.FullD365 = !o.Incremental || in.DataverseRead.Complete
	in.FullCampaign = !o.Incremental || in.CampaignRead.Complete
	d365, err := o.requeue(ctx, in, d365)
	if err != nil {
		in.Close()
		return nil, nil, err
	}
	return in, d365, nil
}

// byAPI says the side's input is its API, and reader reads it.
func byAPI[T any](inputs []InputFile, reader *T) bool {
	return len(inputs) == 1 && inputs[0].Src.Kind == APISource && reader != nil
}

func (o *Reading) readContacts(ctx context.Context, in *Records, inputs []InputFile) error {
	var aerr error // the first error adding a row (a full disk)
	add := func(c *Contact) {
		if err := in.Contacts.Add(c); err != nil && aerr == nil {
			aerr = err
		}
	}
	if byAPI(inputs, o.APIs.Contacts) {
		in.d365ByAPI = true
		res, err := o.APIs.Contacts.Read(ctx, o.D365From, func(c *Contact) {
			in.D365.Rows++
			add(c)
		}, func(r Reject) {
			in.D365.Rejected++
			o.Rejects.Add(r)
		})
		in.DataverseRead = res
		return cmp.Or(err, aerr)
	}
	for i, f := range inputs {
		err := o.readFile(ctx, f, "reading Dynamics", func(r io.Reader) error {
			c := defaultChunking()
			c.ahead = sizeHint(in.Contacts.Len(), inputs[i:], in.Contacts.Reserve)
			st, err := readContactRows(ctx, r, f.Path, o.D365Layout, c,
				func(c *Contact) {
					c.File = uint16(i)
					add(c)
				},
				o.Rejects.Add)
			in.D365.Rows, in.D365.Rejected = in.D365.Rows+st.Rows, in.D365.Rejected+st.Rejected
			return cmp.Or(err, aerr)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func (o *Reading) readProfiles(ctx context.Context, in *Records, inputs []InputFile) error {
	var aerr error // the first error adding a row (a full disk)
	// letGo lets go of what the writer holds once every row held went
	// to disk. The API's reader keeps strings of the PKeys it read
	// (which it has seen): their blocks are left to the collector. What
	// the files' readers put there no one keeps: the blocks serve the
	// rows after.
	letGo := o.Keys.Reset
	add := func(p *Profile) {
		if o.Tally != nil {
			if in.Tally == nil && !in.Profiles.Fits(p) {
				// this row's Add spills the rows held: every row from
				// here on is counted, and those held now first
				held, _ := in.Profiles.Unsorted()
				for i := range held {
					o.Tally.Add(in.Keys.Get(held[i].PKey))
				}
				in.Tally = o.Tally
			}
			if in.Tally != nil {
				o.Tally.Add(in.Keys.Get(p.PKey))
			}
		}
		spilled := in.Profiles.Spilled
		if err := in.Profiles.Add(p); err != nil && aerr == nil {
			aerr = err
		}
		if in.Profiles.Spilled != spilled {
			letGo() // nothing names what the writer holds
		}
	}
	if byAPI(inputs, o.APIs.Profiles) {
		res, err := o.APIs.Profiles.Read(ctx, o.CampaignFrom, o.Keys, add, o.Rejects.Add)
		in.CampaignRead, in.Campaign = res, res.Stats
		return cmp.Or(err, aerr)
	}
	letGo = o.Keys.Recycle
	for i, f := range inputs {
		err := o.readFile(ctx, f, "reading Campaign", func(r io.Reader) error {
			c := defaultChunking()
			c.ahead = sizeHint(in.Profiles.Len(), inputs[i:], in.Profiles.Reserve)
			st, err := readProfileRows(ctx, r, f.Path, o.CampaignLayout, o.Keys, c,
				func(p *Profile) {
					p.File = uint16(i)
					add(p)
				},
				o.Rejects.Add)
			in.Campaign.Rows, in.Campaign.Rejected = in.Campaign.Rows+st.Rows, in.Campaign.Rejected+st.Rejected
			in.Campaign.Unlinked += st.Unlinked
			return cmp.Or(err, aerr)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func (o *Reading) readFile(ctx context.Context, in InputFile, stage string, read func(io.Reader) error) error {
	f, err := os.Open(in.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return inputErrorf("input %s does not exist", in.Path)
	}
	if err != nil {
		return fmt.Errorf("input %s cannot be read: %w", in.Path, err)
	}
	defer f.Close()
	bar := o.Stage(stage+" "+filepath.Base(in.Path), in.Size, "bytes")
	defer bar.Done()
	return read(bar.Reader(f))
}

// requeue brings back the contacts whose writes were refused last time
// when Dynamics is read from files. When Dynamics is reached through its
// API, they are read from it again, in bulk, with their ETags; otherwise
// their Dynamics side is what state knows (Known). With the API as source,
// its read has already read them again; a queued profile is read again by
// the Campaign read when Campaign is read through its API.
func (o *Reading) requeue(ctx context.Context, in *Records, d365 []InputFile) ([]InputFile, error) {
	queue := o.D365From.Queue
	if len(queue) == 0 || in.d365ByAPI {
		return d365, nil
	}
	file := uint16(len(d365))
	if o.APIs.Contacts != nil {
		ids := make([]ID, len(queue))
		for i, it := range queue {
			ids[i] = it.Contact
		}
		n := int32(0)
		var aerr error
		gone, err := o.APIs.Contacts.ReadQueued(ctx, ids, func(c *Contact) {
			n++
			c.File, c.Line = file, n
			in.D365.Rows++
			if err := in.Contacts.Add(c); err != nil && aerr == nil {
				aerr = err
			}
		}, func(r Reject) {
			in.D365.Rejected++
			o.Rejects.Add(r)
		})
		if err = cmp.Or(err, aerr); err != nil {
			return nil, err
		}
		in.DataverseRead.Deleted = append(in.DataverseRead.Deleted, gone...)
		return append(d365, InputFile{Src: RetryQueue(o.APIs.Contacts.Source())}), nil
	}
	for i := range o.Known {
		c := o.Known[i]
		c.File = file
		if err := in.Contacts.Add(&c); err != nil {
			return nil, err
		}
	}
	o.Log.Info().Int("contacts", len(queue)).Msg("deciding the retry queue again")
	return append(d365, InputFile{Src: RetryQueue(Source{})}), nil
}

// sizeHint announces to a sorter holding held records the records it is
// to hold once the inputs (the one being read first) are read: those held,
// and as many more as the bytes left promise at the records per byte read
// so far, a little over. Announced before the first is added, they are
// made room for once, where an array that doubles as it grows copies the
// records at every step and holds up to twice what it needs; a short
// estimate is mended by the next (the announcement after every part).
func sizeHint(held int, inputs []InputFile, reserve func(int)) func(records int, read int64) {
	var size int64
	for _, f := range inputs {
		size += f.Size
	}
	return func(records int, read int64) {
		if read <= 0 || size <= 0 {
			return
		}
		reserve(held + int(float64(records)*float64(size)/float64(read)*hintOver) + hintSlack)
	}
}

// hintOver and hintSlack make an estimate a little over: records differ
// in length, and an estimate short by one record copies them all.
const (
	hintOver  = 1.02
	hintSlack = 1 << 10
)
