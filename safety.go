package main

import (
	"errors"
	"fmt"
	"slices"
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

// presence counts, for the shrink guard, the input's records that the
// decider did not visit (bad rows, and the good side of a blocked pair):
// they are in the export, so they are not missing.
func presence(st *state.Store, contacts []extract.Contact, profiles []extract.Profile, joinedC, joinedP []bool) (d, c int, err error) {
	r, err := st.Reader()
	if err != nil {
		return 0, 0, err
	}
	defer r.Close()
	var snap transform.Snapshot
	for i := range contacts {
		if joinedC[i] {
			continue
		}
		found, err := r.Get(contacts[i].ID, &snap)
		if err != nil {
			return 0, 0, err
		}
		d += b2i(found && snap.DSeen)
	}
	r2, err := st.Reader() // a second walk from the start
	if err != nil {
		return 0, 0, err
	}
	defer r2.Close()
	for i := range profiles {
		if joinedP[i] {
			continue
		}
		found, err := r2.Get(profiles[i].ID, &snap)
		if err != nil {
			return 0, 0, err
		}
		c += b2i(found && snap.CSeen)
	}
	return d, c, nil
}

var errEnough = errors.New("enough examples")

// missingExamples finds the first records state knows on each stopping
// side that the input lacks. It walks state from the start and stops at
// ten: only a stopped run pays for it.
func missingExamples(st *state.Store, g *guard, contacts []extract.Contact, profiles []extract.Profile) error {
	hasContact := func(id extract.ID) bool {
		_, ok := slices.BinarySearchFunc(contacts, id, func(c extract.Contact, id extract.ID) int { return c.ID.Compare(id) })
		return ok
	}
	hasProfile := func(id extract.ID) bool {
		_, ok := slices.BinarySearchFunc(profiles, id, func(p extract.Profile, id extract.ID) int { return p.ID.Compare(id) })
		return ok
	}
	d, c := &g.sides[0], &g.sides[1]
	err := st.Each(func(id extract.ID, s *transform.Snapshot) error {
		if d.stops() && len(d.examples) < 10 && s.DSeen && !hasContact(id) {
			d.examples = append(d.examples, fmt.Sprintf("contact %s (Dynamics record last read with modifiedon %s)", id, extract.FormatTime(s.DModified)))
		}
		if c.stops() && len(c.examples) < 10 && s.CSeen && !hasProfile(id) {
			c.examples = append(c.examples, fmt.Sprintf("contact %s profile %s (last read with lastModified %s)", id, s.PKey, extract.FormatTime(s.CModified)))
		}
		if (!d.stops() || len(d.examples) == 10) && (!c.stops() || len(c.examples) == 10) {
			return errEnough
		}
		return nil
	})
	if errors.Is(err, errEnough) {
		return nil
	}
	return err
}

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
	return withCode(exitSafety, fmt.Errorf("stopped by %s; nothing was written", strings.Join(why, "; ")))
}

// checkSafety works the limits out for a run whose decisions are made.
func (j *job) checkSafety(st *state.Store, tot state.Totals, d *decider, sum *summary, in *safetyInputs) (*guard, error) {
	g := &guard{clears: sum.OptoutsCleared, optinExamples: in.examples}
	g.knownOptOuts = tot.OptOutSum() + d.optOutDelta
	g.optinLimit = j.cfg.transform.OptinLimit.Allowed(g.knownOptOuts)
	sum.KnownOptOuts, sum.OptinLimit = g.knownOptOuts, g.optinLimit
	if st == nil {
		return g, nil
	}
	g.sides[0] = sideCheck{checked: in.fullD365, system: "Dynamics", record: "contact", input: in.d365Input, rows: in.d365Rows,
		known: tot.D365, present: d.presentD}
	g.sides[1] = sideCheck{checked: in.fullCampaign, system: "Campaign", record: "profile", input: in.campaignInput, rows: in.campaignRows,
		known: tot.Campaign, present: d.presentC}
	if !in.fullD365 && !in.fullCampaign {
		return g, nil
	}
	dx, cx, err := presence(st, in.contacts, in.profiles, in.joinedC, in.joinedP)
	if err != nil {
		return nil, err
	}
	g.sides[0].present += dx
	g.sides[1].present += cx
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
	if g.missingStops() {
		if err := missingExamples(st, g, in.contacts, in.profiles); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// safetyInputs is what the limits need to know of the run's inputs.
type safetyInputs struct {
	fullD365, fullCampaign   bool
	d365Input, campaignInput string
	d365Rows, campaignRows   int
	contacts                 []extract.Contact
	profiles                 []extract.Profile
	joinedC, joinedP         []bool
	examples                 []string
}
