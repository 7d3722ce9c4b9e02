// Package show renders for people what the read-only commands print: the
// decisions recorded and what state holds for a contact (audit), the run
// history (runs), the snapshots' CSV (state export), and what the binary
// says of itself (version, its shell completion scripts, its man page).
// It takes plain values; the queries that fill them are state/inspect's.
package show

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"optsync/load"
)

// Contact is what state holds for one contact now: the first part of
// `audit --contact`, before the history. It answers "why was this person
// emailed?" for a person in sync too, who has no decision to show.
type Contact struct {
	Contact string `json:"contact"`
	// Known says state has a record of the contact.
	Known       bool   `json:"known"`
	ProfilePKey string `json:"profile_pkey,omitempty"`
	// AsOf says what the answer reflects: the last commit, even while a run
	// holds the state.
	AsOf     string  `json:"as_of"`
	D365     Side    `json:"d365"`
	Campaign Side    `json:"campaign"`
	Changed  *RunRef `json:"last_changed,omitempty"`
	// ProfilesInConflict: Campaign has shown two or more profiles for the
	// contact; no run decides it until a backfill finds exactly one.
	ProfilesInConflict bool            `json:"profiles_in_conflict,omitempty"`
	Pairs              []Pair          `json:"pairs"`
	Retry              *Retry          `json:"queued_retry,omitempty"`
	History            []load.AuditRow `json:"history"`
}

// Side is what state has read of one system's record of the contact.
type Side struct {
	Read     bool   `json:"read"`               // state has read this side of the contact
	Modified string `json:"modified,omitempty"` // its change time as last read
}

// RunRef names a run by its id, when known, and its time.
type RunRef struct {
	RunID string `json:"run_id,omitempty"`
	At    string `json:"at"`
}

// Pair is one mapped pair: values in each field's own polarity, the
// agreement in opted-out terms.
type Pair struct {
	D365Field      string  `json:"d365_field"`
	CampaignField  string  `json:"campaign_field"`
	Invert         bool    `json:"invert,omitempty"`
	AgreedOptedOut string  `json:"agreed_opted_out"` // true, false, "" = no agreement yet
	AgreedSince    *RunRef `json:"agreed_since,omitempty"`
	D365Value      string  `json:"d365_value"`     // as last read; "" = blank or not read
	CampaignValue  string  `json:"campaign_value"` // as last read
	// Pending writes: written by optsync, not yet seen in that system, and
	// the run that first wrote each.
	D365Pending       string  `json:"d365_written_not_seen,omitempty"`
	CampaignPending   string  `json:"campaign_written_not_seen,omitempty"`
	D365WrittenBy     *RunRef `json:"d365_written_by,omitempty"`
	CampaignWrittenBy *RunRef `json:"campaign_written_by,omitempty"`
}

// Retry is the contact's queued retry, if any.
type Retry struct {
	System string `json:"system"`
	Reason string `json:"reason"`
	RunID  string `json:"run_id"`
	Since  string `json:"since"`
}

// Print writes the present part as text.
func (p *Contact) Print(out io.Writer) error {
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
	side := func(name, field string, s Side) {
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
			by           *RunRef
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

func (p *Contact) printRetry(out io.Writer) {
	if p.Retry != nil {
		fmt.Fprintf(out, "  queued for a retry since %s (run %s): %s refused: %s\n", p.Retry.Since, p.Retry.RunID, p.Retry.System, p.Retry.Reason)
	}
}

func (r *RunRef) String() string {
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
