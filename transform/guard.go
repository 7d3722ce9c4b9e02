package transform

import (
	"fmt"
	"strings"

	"optsync/extract"
)

// count adds one entry to the safety limits' figures.
func (d *Decider) count(e *Entry, prev, next *Snapshot) {
	d.present(e, prev)
	d.optOutDelta += knownOptOutCount(len(d.rules.Pairs), prev, next) - knownOptOutCount(len(d.rules.Pairs), prev, prev)
}

// missedUntil passes the records of state whose PKey the input lacks up to
// contact id (nil: all): one whose contact has a profile in the input
// (hasP, for id) is present; the others are missing.
//
// Once the records end, the stream is not asked again: asked at every
// entry (a backfill's state has none), it was 0.2 s of the deciding
// goroutine at 10 M contacts.
func (d *Decider) missedUntil(id *extract.ID, hasP bool) {
	if d.missed == nil || d.missedEnded {
		return
	}
	if d.missedHead == nil {
		d.missedHead = d.missed.Next()
	}
	for d.missedHead != nil && (id == nil || d.missedHead.ID.Compare(*id) <= 0) {
		switch {
		case id != nil && d.missedHead.ID == *id && hasP:
			d.presentC++
		case len(d.missedC) < 10:
			d.missedC = append(d.missedC, *d.missedHead)
		}
		d.missedHead = d.missed.Next()
	}
	d.missedEnded = d.missedHead == nil
}

// present counts an entry of the input among the records state knows on
// each side (the shrink guard), and keeps the first records state knows
// that the input lacks, for its message. Campaign's records are counted by
// PKey through the PKey index when it is there (Identify); without it
// (a reader of a file from before it), by contact.
func (d *Decider) present(e *Entry, prev *Snapshot) {
	if prev == nil {
		return
	}
	if e.HasC && prev.DSeen {
		d.presentD++
	}
	if !d.pkeyCounted && e.HasP && prev.CSeen {
		d.presentC++
	}
	d.missingExample(e.ID, prev, e.HasC, e.HasP)
}

// missingExample keeps a record of state the input lacks on a side (the
// first ten of each), for a shrink guard's message.
func (d *Decider) missingExample(id extract.ID, s *Snapshot, hasC, hasP bool) {
	if s.DSeen && !hasC && len(d.missingD) < 10 {
		d.missingD = append(d.missingD, fmt.Sprintf("contact %s (Dynamics record last read with modifiedon %s)", id, extract.FormatTime(s.DModified)))
	}
	if !d.pkeyCounted && s.CSeen && !hasP && len(d.missingC) < 10 {
		d.missingC = append(d.missingC, fmt.Sprintf("contact %s profile %s (last read with lastModified %s)", id, s.PKey, extract.FormatTime(s.CModified)))
	}
}

// knownOptOuts counts a contact's known opt-outs: agreements as in agreed
// (the record before the run; nil: none), values as last read in read.
func knownOptOutCount(pairs int, agreed, read *Snapshot) int {
	if read == nil {
		return 0
	}
	n := 0
	for i := range pairs {
		// PairState.KnownOptOut with the agreement of agreed, without
		// copying the pair: it runs twice per contact.
		s, ps := extract.Unknown, &read.Pairs[i]
		if agreed != nil {
			s = agreed.Pairs[i].S
		}
		if s.Known() {
			n += b2i(s == extract.True)
		} else {
			n += b2i(read.DSeen && ps.DRaw == extract.True || read.CSeen && ps.CRaw == extract.True)
		}
	}
	return n
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// addExamples keeps the first opt-out clearings for a safety stop's
// message.
func (d *Decider) addExamples(ch *Change) {
	for _, dec := range ch.Decisions {
		if len(d.examples) == 10 {
			break
		}
		if !dec.ClearsOptOut || dec.Skip != "" {
			continue
		}
		p := d.rules.Pairs[dec.Pair]
		field := p.Campaign
		if dec.Target == ToD365 {
			field = p.D365
		}
		d.examples = append(d.examples, fmt.Sprintf("contact %s profile %s: %s %s %s → %s (rule %s)",
			ch.ID, ch.PKey, dec.Target, field, dec.Old, dec.New, dec.Rule))
	}
}

// Guard is what the safety limits make of one run, before anything of it
// is written or dropped.
type Guard struct {
	// safety.max_optin: this run's opt-out clearings, of the opt-outs
	// known (before the run, with what its reads change), and the limit.
	Clears, KnownOptOuts, OptinLimit int
	optinExamples                    []string
	// safety.max_missing, per side: [0] Dynamics, [1] Campaign
	Sides [2]SideCheck
	// the limits as configured, for the message
	optin   OptinLimit
	missing MissingLimit
}

// SideCheck is the shrink guard of one side: a full read of it must not
// lack too many of the records state knows there.
type SideCheck struct {
	Checked        bool // this run read the side in full, and state knows it
	System, record string
	input          string // what was read, for the message
	rows           int    // rows (or records) read
	Known, present int    // records state knows on the side; of them, in the input
	Limit          int
	examples       []string
}

// Missing is how many of the records state knows the input lacks.
func (c *SideCheck) Missing() int { return c.Known - c.present }

// Stops says whether the side's input lacks too much: more than the limit,
// or everything (an export with its header only).
func (c *SideCheck) Stops() bool {
	return c.Checked && c.Known > 0 && (c.Missing() > c.Limit || c.rows == 0)
}

// OptinStops says whether the run clears more opt-outs than allowed.
func (g *Guard) OptinStops() bool { return g.Clears > g.OptinLimit }

// MissingStops says whether a side's full read lacks too many records.
func (g *Guard) MissingStops() bool { return g.Sides[0].Stops() || g.Sides[1].Stops() }

// Stop is what stops the run, if anything does: the limits it exceeds that
// are not allowed once (--allow-mass-optin, --allow-missing), as the
// message the run prints and its error (a SafetyStopError); nil when the
// run goes on.
func (g Guard) Stop(allowOptin, allowMissing bool) (message string, err error) {
	optin, missing := g.OptinStops() && !allowOptin, g.MissingStops() && !allowMissing
	if !optin && !missing {
		return "", nil
	}
	if !optin {
		g.Clears = 0 // --allow-mass-optin: only the shrink is reported
	}
	if !missing {
		g.Sides[0].Checked, g.Sides[1].Checked = false, false
	}
	return g.message(), g.err()
}

// message is what a stopped run prints: each limit it hit, its figures and
// first examples, and what to do.
func (g *Guard) message() string {
	var b strings.Builder
	for i := range g.Sides {
		c := &g.Sides[i]
		if !c.Stops() {
			continue
		}
		if c.rows == 0 {
			fmt.Fprintf(&b, "safety stop: the %s input (%s) has no rows, and state knows %s from %s. An empty export never goes through on its own. Nothing was written or dropped.\n",
				c.System, c.input, Plural(c.Known, c.record), c.System)
		} else {
			fmt.Fprintf(&b, "safety stop: the %s input (%s) lacks %d of the %s state knows from %s (%s); safety.max_missing %s allows %d. Nothing was written or dropped.\n",
				c.System, c.input, c.Missing(), Plural(c.Known, c.record), c.System, Percent(c.Missing(), c.Known), g.missing, c.Limit)
		}
		b.WriteString("first examples (in state, not in the input):\n")
		for _, e := range c.examples {
			b.WriteString("  " + e + "\n")
		}
	}
	if g.OptinStops() {
		fmt.Fprintf(&b, "safety stop: this run would clear %d of %s (%s), limit %d (%s). Nothing was written.\n",
			g.Clears, Plural(g.KnownOptOuts, "known opt-out"), Percent(g.Clears, g.KnownOptOuts), g.OptinLimit, g.optin.Explain(g.KnownOptOuts, g.OptinLimit))
		b.WriteString("first examples:\n")
		for _, e := range g.optinExamples {
			b.WriteString("  " + e + "\n")
		}
	}
	var then []string
	if g.MissingStops() {
		then = append(then, "check that the export is complete; rerun with --allow-missing if those records are really gone")
	}
	if g.OptinStops() {
		then = append(then, "check the inputs with `optsync plan`; rerun with --allow-mass-optin to accept these opt-ins once")
	}
	b.WriteString(strings.ToUpper(then[0][:1]) + then[0][1:])
	for _, t := range then[1:] {
		b.WriteString("; " + t)
	}
	b.WriteString(".")
	return b.String()
}

// err is the run's error for a safety stop.
func (g *Guard) err() error {
	var why []string
	for i := range g.Sides {
		if c := &g.Sides[i]; c.Stops() {
			why = append(why, fmt.Sprintf("safety.max_missing: the %s input lacks %d of the %s state knows", c.System, c.Missing(), Plural(c.Known, c.record)))
		}
	}
	if g.OptinStops() {
		why = append(why, fmt.Sprintf("safety.max_optin: %d of %s would be cleared, limit %d", g.Clears, Plural(g.KnownOptOuts, "known opt-out"), g.OptinLimit))
	}
	return &SafetyStopError{Err: fmt.Errorf("stopped by %s; nothing was written", strings.Join(why, "; "))}
}

// Known is what state knows before the run, for the safety limits
// (state.Totals): contacts with a Dynamics side, with a Campaign side,
// profiles (records linking a contact to a PKey), and known opt-outs.
type Known struct {
	D365, Campaign, Profiles, OptOuts int
}

// GuardInputs is what the limits need to know of the run's inputs.
type GuardInputs struct {
	// FullD365 and FullCampaign: the side was read in full (a side that
	// is not, or a run that decides nothing, has no shrink to guard).
	FullD365, FullCampaign   bool
	D365Input, CampaignInput string // what was read, for the message
	D365Rows, CampaignRows   int
	// Clears are the opt-outs this run clears.
	Clears int
	// Optin and Missing are safety.max_optin and safety.max_missing.
	Optin   OptinLimit
	Missing MissingLimit
}

// Guard works the limits out for a run whose decisions are made (All),
// against what state knew (known; prior nil: there is no state). The
// Dynamics side counts contacts; the Campaign side counts profiles by PKey
// (through the PKey index, Identify): a profile relinked to another contact
// is in the export, not missing. Without the index, Campaign's records are
// counted by contact.
func (d *Decider) Guard(prior Prior, known Known, in GuardInputs) (Guard, error) {
	g := Guard{Clears: in.Clears, optinExamples: d.examples, optin: in.Optin, missing: in.Missing}
	g.KnownOptOuts = known.OptOuts + d.optOutDelta
	g.OptinLimit = in.Optin.Allowed(g.KnownOptOuts)
	if prior == nil {
		return g, nil
	}
	g.Sides[0] = SideCheck{Checked: in.FullD365, System: "Dynamics", record: "contact", input: in.D365Input, rows: in.D365Rows,
		Known: known.D365, present: d.presentD, examples: d.missingD}
	g.Sides[1] = SideCheck{Checked: in.FullCampaign, System: "Campaign", record: "profile", input: in.CampaignInput, rows: in.CampaignRows,
		Known: known.Campaign, present: d.presentC, examples: d.missingC}
	if d.pkeyCounted {
		// By PKey: a profile the input holds, anywhere, is present; one it
		// lacks is present still when its contact has a profile in the
		// input (Campaign replaced it: a merge).
		c := &g.Sides[1]
		c.Known, c.present, c.examples = known.Profiles, d.src.presentC+d.presentC, nil
		if in.FullCampaign && c.Missing() > 0 {
			var err error
			if c.examples, err = d.missedExamples(prior); err != nil {
				return g, err
			}
		}
	}
	for i := range g.Sides {
		g.Sides[i].Limit = in.Missing.Allowed(g.Sides[i].Known)
	}
	return g, nil
}

// missedExamples names the first profiles of state the input lacks.
func (d *Decider) missedExamples(prior Prior) ([]string, error) {
	var examples []string
	var snap Snapshot
	for _, e := range d.missedC {
		found, err := prior.Get(e.ID, &snap)
		if err != nil {
			return nil, err
		}
		last := ""
		if found {
			last = extract.FormatTime(snap.CModified)
		}
		examples = append(examples, fmt.Sprintf("contact %s profile %s (last read with lastModified %s)", e.ID, e.PKey, last))
	}
	return examples, nil
}
