package main

import (
	"fmt"
	"strings"

	"optsync/extract"
	"optsync/state"
	"optsync/transform"
)

// guard is what the safety limits make of one run, before anything of it
// is written or dropped.
type guard struct {
	// safety.max_optin
	clears, knownOptOuts, optinLimit int
	optinExamples                    []string
	// safety.max_missing, per side: [0] Dynamics, [1] Campaign
	sides [2]sideCheck
}

// sideCheck is the shrink guard of one side: a full read of it must not
// lack too many of the records state knows there.
type sideCheck struct {
	checked        bool // this run read the side in full, and state knows it
	system, record string
	input          string // what was read, for the message
	rows           int    // rows (or records) read
	known, present int    // records state knows on the side; of them, in the input
	limit          int
	examples       []string
}

func (c *sideCheck) missing() int { return c.known - c.present }

// stops says whether the side's input lacks too much: more than the limit,
// or everything (an export with its header only).
func (c *sideCheck) stops() bool {
	return c.checked && c.known > 0 && (c.missing() > c.limit || c.rows == 0)
}

func (g *guard) optinStops() bool { return g.clears > g.optinLimit }

func (g *guard) missingStops() bool { return g.sides[0].stops() || g.sides[1].stops() }

// message is what a stopped run prints: each limit it hit, its figures and
// first examples, and what to do.
func (g *guard) message(cfg *Config) string {
	var b strings.Builder
	for i := range g.sides {
		c := &g.sides[i]
		if !c.stops() {
			continue
		}
		if c.rows == 0 {
			fmt.Fprintf(&b, "safety stop: the %s input (%s) has no rows, and state knows %s from %s. An empty export never goes through on its own. Nothing was written or dropped.\n",
				c.system, c.input, plural(c.known, c.record), c.system)
		} else {
			fmt.Fprintf(&b, "safety stop: the %s input (%s) lacks %d of the %s state knows from %s (%s); safety.max_missing %s allows %d. Nothing was written or dropped.\n",
				c.system, c.input, c.missing(), plural(c.known, c.record), c.system, percent(c.missing(), c.known), cfg.transform.MissingLimit, c.limit)
		}
		b.WriteString("first examples (in state, not in the input):\n")
		for _, e := range c.examples {
			b.WriteString("  " + e + "\n")
		}
	}
	if g.optinStops() {
		fmt.Fprintf(&b, "safety stop: this run would clear %d of %s (%s), limit %d (%s). Nothing was written.\n",
			g.clears, plural(g.knownOptOuts, "known opt-out"), percent(g.clears, g.knownOptOuts), g.optinLimit, cfg.transform.OptinLimit.Explain(g.knownOptOuts, g.optinLimit))
		b.WriteString("first examples:\n")
		for _, e := range g.optinExamples {
			b.WriteString("  " + e + "\n")
		}
	}
	var then []string
	if g.missingStops() {
		then = append(then, "check that the export is complete; rerun with --allow-missing if those records are really gone")
	}
	if g.optinStops() {
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
func (g *guard) err() error {
	var why []string
	for i := range g.sides {
		if c := &g.sides[i]; c.stops() {
			why = append(why, fmt.Sprintf("safety.max_missing: the %s input lacks %d of the %s state knows", c.system, c.missing(), plural(c.known, c.record)))
		}
	}
	if g.optinStops() {
		why = append(why, fmt.Sprintf("safety.max_optin: %d of %s would be cleared, limit %d", g.clears, plural(g.knownOptOuts, "known opt-out"), g.optinLimit))
	}
	return &transform.SafetyStopError{Err: fmt.Errorf("stopped by %s; nothing was written", strings.Join(why, "; "))}
}

// checkSafety works the limits out for a run whose decisions are made.
// The Dynamics side counts contacts; the Campaign side counts profiles by
// PKey (through the PKey index, identify): a profile relinked to another
// contact is in the export, not missing. A reader of a file from before the
// index counts Campaign's records by contact.
func (j *job) checkSafety(st *state.Store, tot state.Totals, d *decider, id *identity, sum *summary, in *safetyInputs) (*guard, error) {
	g := &guard{clears: sum.OptoutsCleared, optinExamples: in.examples}
	g.knownOptOuts = tot.OptOutSum() + d.optOutDelta
	g.optinLimit = j.cfg.transform.OptinLimit.Allowed(g.knownOptOuts)
	sum.KnownOptOuts, sum.OptinLimit = g.knownOptOuts, g.optinLimit
	if st == nil {
		return g, nil
	}
	g.sides[0] = sideCheck{checked: in.fullD365, system: "Dynamics", record: "contact", input: in.d365Input, rows: in.d365Rows,
		known: tot.D365, present: d.presentD, examples: d.missingD}
	g.sides[1] = sideCheck{checked: in.fullCampaign, system: "Campaign", record: "profile", input: in.campaignInput, rows: in.campaignRows,
		known: tot.Campaign, present: d.presentC, examples: d.missingC}
	if id.pkeyCounted {
		// By PKey: a profile the input holds, anywhere, is present; one it
		// lacks is present still when its contact has a profile in the
		// input (Campaign replaced it: a merge).
		c := &g.sides[1]
		c.known, c.present, c.examples = tot.Profiles, id.presentC+d.presentC, nil
		if in.fullCampaign && c.known-c.present > 0 {
			r, err := st.Reader()
			if err != nil {
				return nil, err
			}
			defer r.Close()
			var snap transform.Snapshot
			for _, e := range d.missedC {
				found, err := r.Get(e.ID, &snap)
				if err != nil {
					return nil, err
				}
				last := ""
				if found {
					last = extract.FormatTime(snap.CModified)
				}
				c.examples = append(c.examples, fmt.Sprintf("contact %s profile %s (last read with lastModified %s)", e.ID, e.PKey, last))
			}
		}
	}
	for i := range g.sides {
		c := &g.sides[i]
		c.limit = j.cfg.transform.MissingLimit.Allowed(c.known)
		if c.checked {
			if i == 0 {
				sum.MissingD365, sum.KnownD365 = c.missing(), c.known
			} else {
				sum.MissingCampaign, sum.KnownCampaign = c.missing(), c.known
			}
		}
	}
	return g, nil
}

// safetyInputs is what the limits need to know of the run's inputs.
type safetyInputs struct {
	fullD365, fullCampaign   bool
	d365Input, campaignInput string
	d365Rows, campaignRows   int
	examples                 []string
}
