package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"optsync/extract"
	"optsync/load"
	"optsync/state"
	"optsync/transform"
)

// presentState is what state holds for one contact now: the first part of
// `audit --contact`, before the history. It answers "why was this person
// emailed?" for a person in sync too, who has no decision to show.
type presentState struct {
	Contact string `json:"contact"`
	// Known says state has a record of the contact.
	Known       bool   `json:"known"`
	ProfilePKey string `json:"profile_pkey,omitempty"`
	// AsOf says what the answer reflects: the last commit, even while a run
	// holds the state.
	AsOf     string  `json:"as_of"`
	D365     sideNow `json:"d365"`
	Campaign sideNow `json:"campaign"`
	Changed  *runRef `json:"last_changed,omitempty"`
	// ProfilesInConflict: Campaign has shown two or more profiles for the
	// contact; no run decides it until a backfill finds exactly one.
	ProfilesInConflict bool            `json:"profiles_in_conflict,omitempty"`
	Pairs              []pairNow       `json:"pairs"`
	Retry              *retryNow       `json:"queued_retry,omitempty"`
	History            []load.AuditRow `json:"history"`
}

type sideNow struct {
	Read     bool   `json:"read"`               // state has read this side of the contact
	Modified string `json:"modified,omitempty"` // its change time as last read
}

type runRef struct {
	RunID string `json:"run_id,omitempty"`
	At    string `json:"at"`
}

// pairNow is one mapped pair: values in each field's own polarity, the
// agreement in opted-out terms.
type pairNow struct {
	D365Field      string  `json:"d365_field"`
	CampaignField  string  `json:"campaign_field"`
	Invert         bool    `json:"invert,omitempty"`
	AgreedOptedOut string  `json:"agreed_opted_out"` // true, false, "" = no agreement yet
	AgreedSince    *runRef `json:"agreed_since,omitempty"`
	D365Value      string  `json:"d365_value"`     // as last read; "" = blank or not read
	CampaignValue  string  `json:"campaign_value"` // as last read
	// Pending writes: written by optsync, not yet seen in that system, and
	// the run that first wrote each.
	D365Pending       string  `json:"d365_written_not_seen,omitempty"`
	CampaignPending   string  `json:"campaign_written_not_seen,omitempty"`
	D365WrittenBy     *runRef `json:"d365_written_by,omitempty"`
	CampaignWrittenBy *runRef `json:"campaign_written_by,omitempty"`
}

type retryNow struct {
	System string `json:"system"`
	Reason string `json:"reason"`
	RunID  string `json:"run_id"`
	Since  string `json:"since"`
}

// present reads what state holds for the contact (field, when set, keeps
// only that mapping's pair).
func present(cfg *Config, st *state.Store, id extract.ID, field string) (*presentState, error) {
	p := &presentState{Contact: id.String(), AsOf: "the last commit", Pairs: []pairNow{}}
	if st == nil {
		return p, nil
	}
	if st.Holder != nil {
		p.AsOf = fmt.Sprintf("the last commit; a run (pid %d on %s) has held the state since %s",
			st.Holder.PID, st.Holder.Host, st.Holder.Started.UTC().Format(time.RFC3339))
	}
	r, err := st.Reader()
	if err != nil {
		return nil, err
	}
	var snap transform.Snapshot
	found, err := r.Get(id, &snap)
	agreed := r.Agreed()
	r.Close()
	if err != nil {
		return nil, err
	}
	if it, queued, err := st.Queued(id); err != nil {
		return nil, err
	} else if queued {
		p.Retry = &retryNow{System: it.System, Reason: it.Reason, RunID: it.RunID, Since: it.Since.UTC().Format(time.RFC3339)}
	}
	if !found {
		return p, nil
	}
	runs, err := st.Runs()
	if err != nil {
		return nil, err
	}
	// A run's records carry its start second. Two runs started in one
	// second (never two nights) cannot be told apart by it: an agreement
	// is taken to date from the first of them, a last change from the last.
	ref := func(sec int64, last bool) *runRef {
		if sec == 0 {
			return nil
		}
		r := &runRef{At: time.Unix(sec, 0).UTC().Format(time.RFC3339)}
		for n := range runs {
			i := n // runs are newest first
			if !last {
				i = len(runs) - 1 - n
			}
			if runs[i].Started.Unix() == sec && runs[i].Command != "state reset" {
				r.RunID = runs[i].ID
				break
			}
		}
		return r
	}
	// A pending write keeps the start (Unix ms) of the run that wrote it.
	writtenBy := func(ms int64) *runRef {
		if ms == 0 {
			return &runRef{At: "not recorded (written before this optsync kept the run of a write)"}
		}
		r := &runRef{At: time.UnixMilli(ms).UTC().Format(time.RFC3339)}
		for _, run := range runs {
			if run.Started.UnixMilli() == ms {
				r.RunID = run.ID
				break
			}
		}
		return r
	}
	p.Known, p.Changed, p.ProfilesInConflict = true, ref(snap.Decided, true), snap.CConflict
	if snap.CSeen {
		p.ProfilePKey = snap.PKey
	}
	p.D365 = sideNow{Read: snap.DSeen}
	if snap.DSeen {
		p.D365.Modified = extract.FormatTime(snap.DModified)
	}
	p.Campaign = sideNow{Read: snap.CSeen}
	if snap.CSeen {
		p.Campaign.Modified = extract.FormatTime(snap.CModified)
	}
	for i, pair := range cfg.transform.Rules.Pairs {
		if field != "" && pair.D365 != field && pair.Campaign != field {
			continue
		}
		ps := snap.Pairs[i]
		dRaw, dPending := ps.DRaw, ps.DWritten
		if pair.Invert { // the Dynamics field in its own polarity
			dRaw, dPending = dRaw.Not(), dPending.Not()
		}
		pn := pairNow{D365Field: pair.D365, CampaignField: pair.Campaign, Invert: pair.Invert,
			AgreedOptedOut: ps.S.String(), D365Value: dRaw.String(), CampaignValue: ps.CRaw.String(),
			D365Pending: dPending.String(), CampaignPending: ps.CWritten.String()}
		if ps.DWritten.Known() {
			pn.D365WrittenBy = writtenBy(ps.DWrittenAt)
		}
		if ps.CWritten.Known() {
			pn.CampaignWrittenBy = writtenBy(ps.CWrittenAt)
		}
		if !snap.DSeen {
			pn.D365Value = ""
		}
		if !snap.CSeen {
			pn.CampaignValue = ""
		}
		if ps.S.Known() {
			pn.AgreedSince = ref(agreed[i], false)
			if pn.AgreedSince == nil {
				pn.AgreedSince = &runRef{At: "not recorded (agreed before this optsync kept agreement times)"}
			}
		}
		p.Pairs = append(p.Pairs, pn)
	}
	return p, nil
}

// print writes the present part as text.
func (p *presentState) print(out io.Writer) error {
	if !p.Known {
		if p.Retry == nil {
			fmt.Fprintf(out, "contact %s: state has never seen this contact (no record of it on either side)\n", p.Contact)
		} else {
			fmt.Fprintf(out, "contact %s: state holds no record of this contact now\n", p.Contact)
		}
		p.printRetry(out)
		return nil
	}
	fmt.Fprintf(out, "contact %s", p.Contact)
	if p.ProfilePKey != "" {
		fmt.Fprintf(out, ", profile %s", p.ProfilePKey)
	}
	fmt.Fprintf(out, ": what state holds now (as of %s)\n", p.AsOf)
	side := func(name, field string, s sideNow) {
		if s.Read {
			fmt.Fprintf(out, "  %s: last read with %s %s\n", name, field, s.Modified)
		} else {
			fmt.Fprintf(out, "  %s: not read (no record there, or not yet)\n", name)
		}
	}
	side("Dynamics", "modifiedon", p.D365)
	side("Campaign", "lastModified", p.Campaign)
	if p.ProfilesInConflict {
		fmt.Fprintln(out, "  Campaign has shown two or more profiles with this contact's externalId: no run touches it until a backfill finds exactly one (duplicate-externalId)")
	}
	if p.Changed != nil {
		fmt.Fprintf(out, "  last changed by %s\n", p.Changed)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  PAIR\tAGREED\tSINCE\tDYNAMICS READS\tCAMPAIGN READS\tWRITTEN, NOT YET SEEN")
	for _, pn := range p.Pairs {
		agreed, since := "no agreement yet", "-"
		switch pn.AgreedOptedOut {
		case "true":
			agreed = "opted out"
		case "false":
			agreed = "not opted out"
		}
		if pn.AgreedSince != nil {
			since = pn.AgreedSince.String()
		}
		var written []string
		for _, w := range []struct {
			field, value string
			by           *runRef
		}{{pn.D365Field, pn.D365Pending, pn.D365WrittenBy}, {pn.CampaignField, pn.CampaignPending, pn.CampaignWrittenBy}} {
			if w.value != "" {
				s := w.field + "=" + w.value
				if w.by != nil {
					s += " by " + w.by.String()
				}
				written = append(written, s)
			}
		}
		pending := "-"
		if written != nil {
			pending = strings.Join(written, ", ")
		}
		name := pn.D365Field + " ↔ " + pn.CampaignField
		if pn.Invert {
			name += " (invert)"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", name, agreed, since,
			pn.D365Field+"="+blank(pn.D365Value), pn.CampaignField+"="+blank(pn.CampaignValue), pending)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	p.printRetry(out)
	return nil
}

func (p *presentState) printRetry(out io.Writer) {
	if p.Retry != nil {
		fmt.Fprintf(out, "  queued for a retry since %s (run %s): %s refused: %s\n", p.Retry.Since, p.Retry.RunID, p.Retry.System, p.Retry.Reason)
	}
}

func (r *runRef) String() string {
	if r.RunID == "" {
		return r.At
	}
	return "run " + r.RunID + " (" + r.At + ")"
}

func blank(v string) string {
	if v == "" {
		return "(blank)"
	}
	return v
}
