package load

import (
	"context"
	"errors"
	"slices"

	"github.com/rs/zerolog"

	"optsync/extract"
	"optsync/transform"
)

// Refused says why each system refused a contact's writes ("" = it did
// not). Raced: Campaign's was an unsubscribe race, its opt-out set back.
type Refused struct {
	D365, Campaign, PKey string
	Raced                bool
}

// Outcome is the audit outcome of a decision for a target that refused it.
func (f Refused) Outcome(target transform.Side) string {
	if target == transform.ToCampaign && f.Raced {
		return RaceRestored
	}
	return Failed
}

// Of is why target refused the contact's write ("" = it did not).
func (f Refused) Of(target transform.Side) string {
	if target == transform.ToD365 {
		return f.D365
	}
	return f.Campaign
}

// RefusedWrite is one decided write an API refused or was not sent, for
// the run's summary and report.
type RefusedWrite struct {
	ID     extract.ID
	PKey   string
	Target transform.Side
	Field  string // the target's field
	// Message says why, with no config value in it.
	Message string
	// RaceRestored: an opt-out cleared while the person unsubscribed,
	// set back; not a failure.
	RaceRestored bool
}

// Held is a change waiting for an API's answer before its audit rows can
// say whether it was applied.
type Held struct {
	change   Change
	d365     *DataverseWrite
	campaign *CampaignWrite
}

// Bar shows how far a stage has got (the progress display).
type Bar interface {
	Add(n int64)
	Done()
}

// APIWriters holds a run's writes to the systems written through their
// APIs, sends them once every decision is made, and audits each held
// change with how it went.
type APIWriters struct {
	// Dataverse and Campaign are the writers of the API targets: nil for
	// a system written to update files (or by a plan, which writes none).
	Dataverse *DataverseWriter
	Campaign  *CampaignWriter
	Pairs     []transform.Pair
	// Redact takes config values out of an error text before it is kept
	// (in state: retry queue, decision log, history).
	Redact func(string) string
	// Stage starts a progress bar.
	Stage func(name string, total int64, unit string) Bar
	Log   zerolog.Logger
}

// Holds reports whether a change goes to an API (not only to files).
func (a *APIWriters) Holds(ch *Change) bool {
	return (a.Dataverse != nil && ch.D365Changed) || (a.Campaign != nil && ch.CampaignChanged)
}

// Hold copies a change (the decider reuses its buffers) and works out each
// API's request: only the fields decided, in the target field's polarity.
func (a *APIWriters) Hold(ch *Change) Held {
	h := Held{change: *ch}
	h.change.Decisions = slices.Clone(ch.Decisions)
	for _, d := range ch.Decisions {
		if d.Skip != "" || d.Pending { // a pending write goes to an update file
			continue
		}
		p := a.Pairs[d.Pair]
		switch {
		case d.Target == transform.ToD365 && a.Dataverse != nil:
			if h.d365 == nil {
				h.d365 = &DataverseWrite{ID: ch.ID, ETag: ch.ETag, Modified: ch.ContactModified}
			}
			h.d365.Fields = append(h.d365.Fields, p.D365)
			h.d365.Values = append(h.d365.Values, d.New == extract.True)
			h.d365.Was = append(h.d365.Was, ch.D365Read[d.Pair])
		case d.Target == transform.ToCampaign && a.Campaign != nil:
			if h.campaign == nil {
				h.campaign = &CampaignWrite{ID: ch.ID, PKey: ch.PKey, Modified: ch.ProfileModified}
			}
			h.campaign.Fields = append(h.campaign.Fields, p.Campaign)
			h.campaign.Values = append(h.campaign.Values, d.New == extract.True)
			h.campaign.Was = append(h.campaign.Was, ch.CampaignRead[d.Pair])
			h.campaign.ClearsOptOut = h.campaign.ClearsOptOut || d.ClearsOptOut
		}
	}
	return h
}

// Sent is what the APIs made of the held writes.
type Sent struct {
	// Refused are the contacts whose writes were refused or not sent.
	Refused map[extract.ID]Refused
	// Writes are the refused decisions, one by one.
	Writes []RefusedWrite
}

// Apply sends the held writes to their APIs, then audits every held change
// with how it went.
func (a *APIWriters) Apply(ctx context.Context, held []Held, w *Writer) (Sent, error) {
	out := Sent{Refused: map[extract.ID]Refused{}}
	if len(held) == 0 {
		return out, nil
	}
	var dw []DataverseWrite
	var cw []CampaignWrite
	var di, ci []int
	for i := range held {
		if held[i].d365 != nil {
			dw, di = append(dw, *held[i].d365), append(di, i)
		}
		if held[i].campaign != nil {
			cw, ci = append(cw, *held[i].campaign), append(ci, i)
		}
	}
	if len(dw) > 0 {
		bar := a.Stage("writing to Dynamics", int64(len(dw)), "contacts")
		for k, r := range a.Dataverse.Apply(ctx, dw) {
			if !r.OK() {
				held[di[k]].change.D365Error = a.Redact(r.Error())
			}
		}
		bar.Add(int64(len(dw)))
		bar.Done()
	}
	if len(cw) > 0 {
		bar := a.Stage("writing to Campaign", int64(len(cw)), "profiles")
		for k, r := range a.Campaign.Apply(ctx, cw) {
			if !r.OK() {
				held[ci[k]].change.CampaignError = a.Redact(r.Error())
				held[ci[k]].change.CampaignRaced = errors.Is(r.Err, ErrRaced)
				if errors.Is(r.Err, ErrNotRestored) {
					a.Log.Error().Str("pkey", held[ci[k]].change.PKey).Str("error", r.Error()).Msg("a person unsubscribed while an opt-out was being cleared, and it could not be set back")
				}
			}
		}
		if a.Campaign.NoHistory.Load() {
			a.Log.Warn().Msg("Campaign answered 404 for a profile's marketing history: an unsubscribe landing between the re-read and a PATCH clearing that opt-out can only be seen by lastModified moving after the PATCH")
		}
		bar.Add(int64(len(cw)))
		bar.Done()
	}
	for i := range held {
		ch := &held[i].change
		if ch.D365Error != "" || ch.CampaignError != "" {
			f := Refused{D365: ch.D365Error, Campaign: ch.CampaignError, PKey: ch.PKey, Raced: ch.CampaignRaced}
			out.Refused[ch.ID] = f
			for _, d := range ch.Decisions {
				if msg := f.Of(d.Target); d.Skip == "" && !d.Pending && msg != "" {
					p := a.Pairs[d.Pair]
					rw := RefusedWrite{ID: ch.ID, PKey: ch.PKey, Target: d.Target, Field: p.Campaign, Message: msg,
						RaceRestored: f.Outcome(d.Target) == RaceRestored}
					if d.Target == transform.ToD365 {
						rw.Field = p.D365
					}
					out.Writes = append(out.Writes, rw)
				}
			}
		}
		if err := w.Change(ch); err != nil {
			return Sent{}, err
		}
	}
	a.Log.Info().Int("contacts", len(held)).Int("to_dynamics", len(dw)).Int("to_campaign", len(cw)).Int("refused", len(out.Refused)).Msg("wrote through the APIs")
	return out, nil
}

// System names the system that refused the write, as the run's record
// names it.
func (r RefusedWrite) System() string {
	if r.Target == transform.ToD365 {
		return "Dynamics 365"
	}
	return "Campaign"
}
