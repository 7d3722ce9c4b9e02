package transform

import (
	"optsync/extract"
	"time"

	"github.com/rs/zerolog"
)

// Enforce is the safety limits' outcome for a run whose decisions are
// made, before anything of it is written or dropped: what stops it (see
// Stop; nil when it goes on). A plan stops at nothing but warns that a run
// would; a run that goes on past a limit, because a flag lets it once,
// warns of it.
func (g Guard) Enforce(plan, allowOptin, allowMissing bool, log zerolog.Logger) (message string, err error) {
	if plan {
		if g.OptinStops() || g.MissingStops() {
			log.Warn().Int("opt_outs_cleared", g.Clears).Int("known_opt_outs", g.KnownOptOuts).Int("limit", g.OptinLimit).
				Bool("max_optin", g.OptinStops()).Bool("max_missing", g.MissingStops()).Msg("a run with these inputs would stop at a safety limit")
		}
		return "", nil
	}
	if message, err = g.Stop(allowOptin, allowMissing); err != nil {
		return message, err
	}
	if g.OptinStops() {
		log.Warn().Int("opt_outs_cleared", g.Clears).Int("known_opt_outs", g.KnownOptOuts).Int("limit", g.OptinLimit).Msg("safety.max_optin exceeded; going on because of --allow-mass-optin")
	}
	for _, c := range g.Sides {
		if c.Stops() {
			log.Warn().Str("system", c.System).Int("known", c.Known).Int("missing", c.Missing()).Int("limit", c.Limit).Msg("safety.max_missing exceeded; going on because of --allow-missing")
		}
	}
	return "", nil
}

// LogFuture warns, once per record, of change times in state later than
// notAfter, which the decider treated as unknown (the run's commit writes
// them back unknown).
func (t Tally) LogFuture(notAfter time.Time, log zerolog.Logger) {
	if t.FutureN > 0 {
		log.Warn().Int("records", t.FutureN).Strs("contacts", t.Future).Time("not_after", notAfter).
			Msg("change times in state later than the run's start plus max_clock_skew were treated as unknown: a present-day row of these records is not taken as stale")
	}
}

// LogStart says how a run decides, as it starts.
func (r *Rules) LogStart(plan, incremental bool, log zerolog.Logger) {
	log.Info().Str("direction", string(r.Direction)).Str("policy", string(r.Policy)).
		Bool("replay", r.Replay).Bool("plan", plan).Bool("incremental", incremental).Msg("run started")
	if r.Direction == Disabled {
		log.Warn().Msg("direction is disabled: nothing will move; inputs are still checked")
	}
}

// GuardInputs are what the safety limits weigh of what a run read and of
// its decisions, which clear clears opt-outs. A run that decides nothing
// drops nothing: no shrink to guard.
func (d *Decider) GuardInputs(in *extract.Records, clears int, optin OptinLimit, missing MissingLimit) GuardInputs {
	decides := d.rules.Direction != Disabled
	return GuardInputs{FullD365: in.FullD365 && decides, FullCampaign: in.FullCampaign && decides,
		D365Input: extract.Name(in.D365Inputs), CampaignInput: extract.Name(in.CampaignInputs), D365Rows: in.D365.Rows, CampaignRows: in.Campaign.Rows,
		Clears: clears, Optin: optin, Missing: missing}
}
