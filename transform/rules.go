// Package transform decides, per contact and mapped pair, which value each
// system should hold. It owns a run's rules from the rows read to the
// decisions:
//
//   - the identity rules (Identify): the dedup of rows by contactid and by
//     PKey, the grouping of profiles by contact, the join of both sides
//     into entries, and the reject rows these rules produce
//     (IdentityRejects: those alone, for validate);
//   - the decisions (Decider.All, Decide): each entry against what state
//     knew of it, handed forward as Change values, and the entries whose
//     record changes kept for the commit, which decides them again
//     (Decider.Again);
//   - the bookkeeping of writes to update files not seen yet in an export
//     (Decider.PendingGroups);
//   - the safety limits (Decider.Guard): what they allow, and the stop's
//     message and error (Guard.Stop, SafetyStopError).
//
// It is pure: it opens no file and imports no later stage. What it reads
// of state comes through Prior (state.Reader), the entries it keeps go to
// Dirty (state.Dirty), its sorts are made by the caller (Sorts, with the
// codecs here).
//
// Options is the rules' part of the config (direction, policy, mappings,
// the safety limits max_optin, min_optin and max_missing), with the checks
// that name its keys and the limits' arithmetic (OptinLimit, MissingLimit).
package transform

import "fmt"

// Direction is the configured flow of opt-out values.
type Direction string

const (
	Disabled       Direction = "disabled"
	D365ToCampaign Direction = "d365-to-campaign"
	CampaignToD365 Direction = "campaign-to-d365"
	Bidirectional  Direction = "bidirectional"
)

// Policy settles a bidirectional difference.
type Policy string

const (
	Newest       Policy = "newest"
	Adobe        Policy = "adobe"
	OptoutWins   Policy = "optout-wins"
	D365Wins     Policy = "d365-wins"
	CampaignWins Policy = "campaign-wins"
)

// ParseDirection accepts the configured spelling.
func ParseDirection(s string) (Direction, error) {
	switch d := Direction(s); d {
	case Disabled, D365ToCampaign, CampaignToD365, Bidirectional:
		return d, nil
	}
	return "", fmt.Errorf("unknown direction %q (want disabled, d365-to-campaign, campaign-to-d365 or bidirectional)", s)
}

// ParsePolicy accepts the configured spelling.
func ParsePolicy(s string) (Policy, error) {
	switch p := Policy(s); p {
	case Newest, Adobe, OptoutWins, D365Wins, CampaignWins:
		return p, nil
	}
	return "", fmt.Errorf("unknown policy %q (want newest, adobe, optout-wins, d365-wins or campaign-wins)", s)
}

// Pair maps one Dynamics field to one Campaign field. Invert marks a
// Dynamics opt-in flag (true = may contact).
type Pair struct {
	D365     string
	Campaign string
	Invert   bool
}

// Rules is what a run decides with.
type Rules struct {
	Direction Direction
	Policy    Policy
	Pairs     []Pair
	// Replay ignores the agreed snapshots: every difference is decided as
	// at first sight. What is known of the records still counts (writes
	// not yet seen, rows newer than the export's).
	Replay bool
	// ImportD365 and ImportCampaign say writes to that system go into an
	// update file that someone imports (a CSV target), so a write is seen
	// in an export only after the import: a written opt-out stands in for
	// the export until the export shows it. (An API write is applied at
	// once: the next read is the system's answer.)
	ImportD365, ImportCampaign bool
	// Started is when (Unix ms) this run started: kept with every write it
	// leaves pending, to name the run and age the write.
	Started int64
}

// Side names the system a write goes to.
type Side uint8

const (
	NoSide Side = iota
	ToCampaign
	ToD365
)

// String is the audit spelling of the write's direction.
func (s Side) String() string {
	switch s {
	case ToCampaign:
		return "d365->campaign"
	case ToD365:
		return "campaign->d365"
	}
	return ""
}

// Rule names, as they appear in audit rows.
const (
	RuleOnlyD365Changed       = "only-d365-changed"
	RuleOnlyCampaignChanged   = "only-campaign-changed"
	RuleConflictD365Newer     = "conflict-d365-newer"
	RuleConflictCampaignNewer = "conflict-campaign-newer"
	RuleConflictTieOptout     = "conflict-tie-optout"
	RuleAdobeCampaignNewer    = "adobe-campaign-newer"
	RuleAdobeOptoutWins       = "adobe-optout-wins"
	RulePolicyOptoutWins      = "policy-optout-wins"
	RulePolicyD365Wins        = "policy-d365-wins"
	RulePolicyCampaignWins    = "policy-campaign-wins"
	RuleSourceOfTruth         = "source-of-truth"

	ReasonUnknownValue = "unknown-value"
)
