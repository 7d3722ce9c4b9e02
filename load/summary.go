package load

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"optsync/transform"

	"github.com/rs/zerolog"
)

// Summary counts one run for its closing line, its metrics and its history
// record.
type Summary struct {
	runID, command    string
	ContactRows       int
	ProfileRows       int
	Matched           int
	ComparedPairs     int
	ToCampaign        int
	ToD365            int
	Rules             map[string]int
	Skipped           int
	Rejected          int
	Failed            int
	RaceRestored      int // clearing writes undone: the person unsubscribed meanwhile
	OptoutsCleared    int
	ContactsNoMatch   int
	ProfilesNoMatch   int
	Unlinked          int
	DuplicateProfiles int
	Superseded        int
	Blocked           int
	D365Rows          int
	CampaignRows      int
	ViaState          int // run: decided against the other side as state knows it
	Waiting           int // run: no counterpart known yet
	Stale             int // rows older than what state already knew
	Unchanged         int // run: contacts whose rows told nothing new, not decided
	Deleted           int // contacts deleted in Dynamics: their snapshots dropped
	// Writes to an update file that the exports do not show yet, left by
	// earlier runs, and the age of the oldest; those written again in this
	// run's update files because the record moved without showing them.
	PendingNotSeen      int
	PendingOldest       time.Duration
	PendingWrittenAgain int
	SkipReasons         map[string]int
	// The safety limits' figures: opt-outs known before the run and the
	// limit they gave; for a side read in full, the records state knew
	// there and how many of them the input lacked.
	KnownOptOuts, OptinLimit       int
	KnownD365, MissingD365         int
	KnownCampaign, MissingCampaign int
	// WouldClear is what a run stopped by a safety limit would have
	// cleared; such a run counts no writes.
	WouldClear int
	// FailedWrites keeps the first failed writes of each message, for the
	// run's record in state.
	FailedWrites []Reasons
}

// NewSummary starts the counts of run runID of command (run, backfill …).
func NewSummary(runID, command string) *Summary {
	return &Summary{runID: runID, command: command, Rules: map[string]int{}, SkipReasons: map[string]int{}}
}

// AddJoin counts what the join found.
func (s *Summary) AddJoin(js transform.JoinStats, pairs int) {
	s.Matched = js.Matched
	s.ComparedPairs = js.Matched * pairs
	s.ContactsNoMatch = js.ContactsNoMatch
	s.ProfilesNoMatch = js.ProfilesNoMatch
	s.Blocked += js.Blocked // and the entries blocked by what state knows
}

// AddDecisions counts decisions: writes by direction and rule, skips by
// reason.
func (s *Summary) AddDecisions(ds []transform.Decision) {
	for _, d := range ds {
		if d.Skip != "" {
			s.Skipped++
			s.SkipReasons[d.Skip]++
			continue
		}
		if d.Pending {
			s.PendingWrittenAgain++
			continue
		}
		switch d.Target {
		case transform.ToCampaign:
			s.ToCampaign++
		case transform.ToD365:
			s.ToD365++
		}
		s.Rules[d.Rule]++
		if d.ClearsOptOut {
			s.OptoutsCleared++
		}
	}
}

// Stopped makes the counts those of a run a safety limit stopped: it wrote
// nothing, so it counts no writes; what it would have cleared is kept.
func (s *Summary) Stopped() {
	s.WouldClear = s.OptoutsCleared
	s.ToCampaign, s.ToD365, s.OptoutsCleared = 0, 0, 0
	s.PendingWrittenAgain = 0 // its update files were not written either
	s.Rules = map[string]int{}
}

// Counts is the flat form kept in the run history.
func (s *Summary) Counts() map[string]int {
	m := map[string]int{
		"contact_rows": s.ContactRows, "profile_rows": s.ProfileRows,
		"matched_contacts": s.Matched, "compared_pairs": s.ComparedPairs,
		"d365->campaign": s.ToCampaign, "campaign->d365": s.ToD365,
		"skipped": s.Skipped, "rejected": s.Rejected, "failed": s.Failed,
		"unsubscribe_race_restored": s.RaceRestored,
		"opt_outs_cleared":          s.OptoutsCleared,
		"contacts_without_profile":  s.ContactsNoMatch, "profiles_without_contact": s.ProfilesNoMatch,
		"profiles_without_externalId": s.Unlinked, "duplicate_externalId_profiles": s.DuplicateProfiles,
		"superseded_contact_rows": s.Superseded, "blocked_contacts": s.Blocked,
		"d365_update_rows": s.D365Rows, "campaign_update_rows": s.CampaignRows,
		"decided_against_state": s.ViaState, "waiting_for_counterpart": s.Waiting, "stale_rows": s.Stale,
		"unchanged_contacts": s.Unchanged,
		"deleted_in_d365":    s.Deleted,
		"pending_not_seen":   s.PendingNotSeen, "pending_oldest_age_seconds": int(s.PendingOldest / time.Second),
		"pending_written_again": s.PendingWrittenAgain,
		"known_opt_outs":        s.KnownOptOuts, "max_optin_limit": s.OptinLimit,
	}
	if s.KnownD365 > 0 {
		m["d365_known"], m["d365_missing"] = s.KnownD365, s.MissingD365
	}
	if s.KnownCampaign > 0 {
		m["campaign_known"], m["campaign_missing"] = s.KnownCampaign, s.MissingCampaign
	}
	if s.WouldClear > 0 {
		m["would_clear"] = s.WouldClear
	}
	for r, n := range s.Rules {
		m["rule:"+r] = n
	}
	for r, n := range s.SkipReasons {
		m["skipped:"+r] = n
	}
	return m
}

// Line is the one-line summary printed at the end of every run.
func (s *Summary) Line(d time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "optsync %s %s: compared=%s (%s) d365->campaign=%d campaign->d365=%d",
		s.command, s.runID, Plural(s.ComparedPairs, "pair"), Plural(s.Matched, "contact"), s.ToCampaign, s.ToD365)
	rules := make([]string, 0, len(s.Rules))
	for r := range s.Rules {
		rules = append(rules, r)
	}
	slices.Sort(rules)
	for _, r := range rules {
		fmt.Fprintf(&b, " %s=%d", r, s.Rules[r])
	}
	fmt.Fprintf(&b, " skipped=%d rejected=%d failed=%d opt_outs_cleared=%d contacts_without_profile=%d profiles_without_contact=%d profiles_without_externalId=%d duplicate_externalId=%d superseded_rows=%d blocked=%d",
		s.Skipped, s.Rejected, s.Failed, s.OptoutsCleared, s.ContactsNoMatch, s.ProfilesNoMatch, s.Unlinked,
		s.DuplicateProfiles, s.Superseded, s.Blocked)
	if s.ViaState+s.Waiting+s.Stale > 0 {
		fmt.Fprintf(&b, " decided_against_state=%d waiting_for_counterpart=%d stale_rows=%d", s.ViaState, s.Waiting, s.Stale)
	}
	if s.Unchanged > 0 {
		fmt.Fprintf(&b, " unchanged=%d", s.Unchanged)
	}
	if s.Deleted > 0 {
		fmt.Fprintf(&b, " deleted_in_d365=%d", s.Deleted)
	}
	fmt.Fprintf(&b, " pending_not_seen=%d", s.PendingNotSeen)
	if s.PendingNotSeen > 0 {
		fmt.Fprintf(&b, " pending_oldest=%s", s.PendingOldest.Round(time.Second))
	}
	if s.PendingWrittenAgain > 0 {
		fmt.Fprintf(&b, " pending_written_again=%d", s.PendingWrittenAgain)
	}
	if s.RaceRestored > 0 {
		fmt.Fprintf(&b, " unsubscribe_race_restored=%d", s.RaceRestored)
	}
	fmt.Fprintf(&b, " took=%s", Took(d))
	return b.String()
}

// AddRefused counts the writes the APIs refused, keeping the first of
// each message for the run's record (FailedWrites): an opt-out set back
// because the person unsubscribed meanwhile is no failure.
func (s *Summary) AddRefused(writes []RefusedWrite) {
	for _, r := range writes {
		if r.RaceRestored {
			s.RaceRestored++
			continue
		}
		s.Failed++
		ex := Example{Source: r.System(), ID: r.ID.String(), PKey: r.PKey, Field: r.Field, Message: r.Message}
		s.FailedWrites = AddReason(s.FailedWrites, r.Message, ex)
	}
}

// AddIdentity counts what the identity rules set aside and joined.
func (s *Summary) AddIdentity(id *transform.Identity, pairs int) {
	s.Superseded, s.DuplicateProfiles, s.Unlinked = id.Superseded, id.Duplicates, id.Unlinked
	s.AddJoin(id.Stats, pairs)
}

// AddTally counts what the decider found. Rows read again that told
// nothing new were not compared: a wide read counts what a read of the
// changes alone would. A one-sided record decided against state had its
// counterpart after all.
func (s *Summary) AddTally(t transform.Tally, pairs int) {
	s.ViaState, s.Waiting, s.Stale = t.ViaState, t.Waiting, t.Stale
	s.Unchanged = t.UnchangedBoth + t.UnchangedContacts + t.UnchangedProfiles
	s.Matched += t.ViaState - t.UnchangedBoth
	s.ComparedPairs += (t.ViaState - t.UnchangedBoth) * pairs
	s.ContactsNoMatch -= t.UnchangedContacts + t.ViaStateContacts + t.BlockedNoProfile
	s.ProfilesNoMatch -= t.UnchangedProfiles + t.ViaState - t.ViaStateContacts + t.BlockedNoContact
}

// AddGuard counts what the safety limits found.
func (s *Summary) AddGuard(g *transform.Guard) {
	s.KnownOptOuts, s.OptinLimit = g.KnownOptOuts, g.OptinLimit
	if c := g.Sides[0]; c.Checked {
		s.MissingD365, s.KnownD365 = c.Missing(), c.Known
	}
	if c := g.Sides[1]; c.Checked {
		s.MissingCampaign, s.KnownCampaign = c.Missing(), c.Known
	}
}

// AddPending counts the writes to update files that no export has shown
// yet, and warns of those older than alertAfter: each run, until they are
// seen, so that a lost or forgotten update file does not go unnoticed.
func (s *Summary) AddPending(groups map[int64]*transform.PendingGroup, runName func(int64) string, started time.Time, alertAfter time.Duration, log zerolog.Logger) {
	for _, at := range slices.Sorted(maps.Keys(groups)) {
		g := groups[at]
		s.PendingNotSeen += g.Writes()
		age := started.Sub(time.UnixMilli(g.Oldest()))
		s.PendingOldest = max(s.PendingOldest, age)
		if age <= alertAfter {
			continue
		}
		ids := make([]string, len(g.Contacts()))
		for i, id := range g.Contacts() {
			ids[i] = id.String()
		}
		ev := log.Warn().Int("writes", g.Writes()).Str("age", age.Round(time.Minute).String()).Strs("contacts", ids)
		if name := runName(at); name != "" {
			ev = ev.Str("written_by", name)
		}
		if at != 0 {
			ev = ev.Time("written_at", time.UnixMilli(at).UTC())
		}
		ev.Dur("pending_alert", alertAfter).Msg("writes in update files are not seen in the exports for longer than pending_alert: import the update file of the run that wrote them, or of the latest run that wrote them again")
	}
}

// AddDecided counts what the identity rules set aside and joined, and what
// the decider found (AddTally).
func (s *Summary) AddDecided(id *transform.Identity, t transform.Tally, pairs int) {
	s.AddIdentity(id, pairs)
	s.AddTally(t, pairs)
}

// Finished prints the summary line of a run that started at started and
// logs its counts.
func (s *Summary) Finished(stdout io.Writer, started time.Time, log zerolog.Logger) {
	fmt.Fprintln(stdout, s.Line(time.Since(started)))
	log.Info().Interface("counts", s.Counts()).Str("took", Took(time.Since(started))).Msg("run finished")
}
