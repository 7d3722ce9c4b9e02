package main

import (
	"context"
	"errors"
	"slices"

	"optsync/extract"
	"optsync/load"
	"optsync/state"
	"optsync/transform"
)

// failure says why each system refused a contact's writes ("" = it did not).
// raced: Campaign's was an unsubscribe race, its opt-out set back.
type failure struct {
	d365, campaign, pkey string
	raced                bool
}

// outcome is the audit outcome of a decision for a target that refused it.
func (f failure) outcome(target transform.Side) string {
	if target == transform.ToCampaign && f.raced {
		return load.RaceRestored
	}
	return load.Failed
}

func (f failure) of(target transform.Side) string {
	if target == transform.ToD365 {
		return f.d365
	}
	return f.campaign
}

// heldChange is a change waiting for an API's answer before its audit rows
// can say whether it was applied.
type heldChange struct {
	change   load.Change
	d365     *load.DataverseWrite
	campaign *load.CampaignWrite
}

// holds reports whether a change goes to an API (not only to files).
func (j *job) holds(ch *load.Change) bool {
	if j.plan {
		return false
	}
	return (j.dv != nil && j.dv.writer != nil && ch.D365Changed) || (j.cv != nil && j.cv.writer != nil && ch.CampaignChanged)
}

// hold copies a change (the decider reuses its buffers) and works out each
// API's request: only the fields decided, in the target field's polarity.
func (j *job) hold(ch *load.Change, pairs []transform.Pair) heldChange {
	h := heldChange{change: *ch}
	h.change.Decisions = slices.Clone(ch.Decisions)
	for _, d := range ch.Decisions {
		if d.Skip != "" || d.Pending { // a pending write goes to an update file
			continue
		}
		p := pairs[d.Pair]
		switch {
		case d.Target == transform.ToD365 && j.dv != nil && j.dv.writer != nil:
			if h.d365 == nil {
				h.d365 = &load.DataverseWrite{ID: ch.ID, ETag: ch.ETag, Modified: ch.ContactModified}
			}
			h.d365.Fields = append(h.d365.Fields, p.D365)
			h.d365.Values = append(h.d365.Values, d.New == extract.True)
			h.d365.Was = append(h.d365.Was, ch.D365Read[d.Pair])
		case d.Target == transform.ToCampaign && j.cv != nil && j.cv.writer != nil:
			if h.campaign == nil {
				h.campaign = &load.CampaignWrite{ID: ch.ID, PKey: ch.PKey, Modified: ch.ProfileModified}
			}
			h.campaign.Fields = append(h.campaign.Fields, p.Campaign)
			h.campaign.Values = append(h.campaign.Values, d.New == extract.True)
			h.campaign.Was = append(h.campaign.Was, ch.CampaignRead[d.Pair])
			h.campaign.ClearsOptOut = h.campaign.ClearsOptOut || d.ClearsOptOut
		}
	}
	return h
}

// apply sends the held writes to their APIs, then audits every held change
// with how it went. It returns the contacts whose writes were refused.
func (j *job) apply(ctx context.Context, held []heldChange, w *load.Writer, sum *summary) (map[extract.ID]failure, error) {
	failed := map[extract.ID]failure{}
	if len(held) == 0 {
		return failed, nil
	}
	var dw []load.DataverseWrite
	var cw []load.CampaignWrite
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
		bar := j.progress.stage("writing to Dynamics", int64(len(dw)), "contacts")
		for k, r := range j.dv.writer.Apply(ctx, dw) {
			if !r.OK() {
				// kept in state (retry queue, decision log, history):
				// no config value in it
				held[di[k]].change.D365Error = j.cfg.redact(r.Error())
			}
		}
		bar.Add(int64(len(dw)))
		bar.Done()
	}
	if len(cw) > 0 {
		bar := j.progress.stage("writing to Campaign", int64(len(cw)), "profiles")
		for k, r := range j.cv.writer.Apply(ctx, cw) {
			if !r.OK() {
				held[ci[k]].change.CampaignError = j.cfg.redact(r.Error())
				held[ci[k]].change.CampaignRaced = errors.Is(r.Err, load.ErrRaced)
				if errors.Is(r.Err, load.ErrNotRestored) {
					j.log.Error().Str("pkey", held[ci[k]].change.PKey).Str("error", r.Error()).Msg("a person unsubscribed while an opt-out was being cleared, and it could not be set back")
				}
			}
		}
		if j.cv.writer.NoHistory.Load() {
			j.log.Warn().Msg("Campaign answered 404 for a profile's marketing history: an unsubscribe landing between the re-read and a PATCH clearing that opt-out can only be seen by lastModified moving after the PATCH")
		}
		bar.Add(int64(len(cw)))
		bar.Done()
	}
	for i := range held {
		ch := &held[i].change
		if ch.D365Error != "" || ch.CampaignError != "" {
			failed[ch.ID] = failure{d365: ch.D365Error, campaign: ch.CampaignError, pkey: ch.PKey, raced: ch.CampaignRaced}
			for _, d := range ch.Decisions {
				if msg := failed[ch.ID].of(d.Target); d.Skip == "" && !d.Pending && msg != "" {
					if failed[ch.ID].outcome(d.Target) == load.RaceRestored {
						sum.RaceRestored++
						continue
					}
					sum.Failed++
					p := j.cfg.rules.Pairs[d.Pair]
					ex := state.Example{Source: "Campaign", ID: ch.ID.String(), PKey: ch.PKey, Field: p.Campaign, Message: msg}
					if d.Target == transform.ToD365 {
						ex.Source, ex.Field = "Dynamics 365", p.D365
					}
					sum.failedWrites = state.AddReason(sum.failedWrites, msg, ex)
				}
			}
		}
		if err := w.Change(ch); err != nil {
			return nil, err
		}
	}
	j.log.Info().Int("contacts", len(held)).Int("to_dynamics", len(dw)).Int("to_campaign", len(cw)).Int("refused", len(failed)).Msg("wrote through the APIs")
	return failed, nil
}
