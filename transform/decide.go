package transform

import (
	"strings"

	"optsync/extract"
)

// PairState is what state keeps per contact and pair, in opted-out polarity.
type PairState struct {
	// S is the value both sides last agreed on (Unknown: no snapshot yet).
	S extract.Tri
	// DRaw and CRaw are the values last read from each side.
	DRaw, CRaw extract.Tri
	// DWritten and CWritten are values this tool wrote that the side has not
	// shown yet (pending writes). An export taken before the write was
	// imported still shows the old value under the old change time; the
	// written value stands in for it until the record moves, and a written
	// opt-out going through an update file until the export shows it.
	DWritten, CWritten extract.Tri
	// DWrittenAt and CWrittenAt are when (Unix ms) the run that first wrote
	// the pending value started (0: not recorded, state from before).
	DWrittenAt, CWrittenAt int64
	// CTime is the Campaign field's own change time as last read (Unix ms),
	// when CTimeKnown — a campaign_modified_column gave one — else the
	// profile's lastModified (CModified) stands for it. Kept so that the
	// Campaign side of a contact that did not change is decided with its
	// last known time, exactly as when its row is read again.
	CTime      int64
	CTimeKnown bool
}

// KnownOptOut says whether the pair counts among the opt-outs at stake, the
// base of a percentage safety.max_optin: agreed opted out, or — never agreed —
// opted out on a side as last read.
func (p PairState) KnownOptOut(dSeen, cSeen bool) bool {
	if p.S.Known() {
		return p.S == extract.True
	}
	return dSeen && p.DRaw == extract.True || cSeen && p.CRaw == extract.True
}

// Snapshot is the state of one contact.
type Snapshot struct {
	Known bool
	// DSeen and CSeen say each side has been read at least once; an
	// incremental run decides a contact that changed on one side against
	// the other side's values kept here.
	DSeen, CSeen bool
	// CConflict says a read found two or more Campaign profiles for the
	// contact (one externalId): none is touched, and an incremental run
	// does not decide the contact, until a read of every profile finds
	// exactly one (or none).
	CConflict bool
	DModified int64 // Unix ms, as last read
	CModified int64 // Unix ms, the profile's lastModified as last read
	PKey      string
	// Decided is when (Unix seconds) a run last changed this record; the
	// caller sets it, Decide leaves it as it was.
	Decided int64
	// DETag is the Dynamics ETag last read with DModified, exactly as the
	// API sent it ("": none, or stale), so that a write decided without
	// reading the contact again still refuses to overwrite an edit made
	// since. The caller keeps it: it comes from the API reader, not from
	// the contact rows Decide sees.
	DETag string
	Pairs [extract.MaxFields]PairState
}

// Decision is one field write decided (or skipped). Old and New are in the
// target field's own polarity.
type Decision struct {
	Pair         int
	Target       Side
	Old, New     extract.Tri
	Rule         string
	Skip         string // reason, when nothing was written
	DModified    int64
	CModified    int64
	ClearsOptOut bool // a true → false write in opted-out polarity
	// Pending: New is an opt-out this tool wrote earlier (by the run that
	// started at Since, Unix ms; 0 if not recorded) that the target's
	// export does not show yet, although the record moved (Old is what it
	// shows). Nothing is decided against it; it is written again.
	Pending bool
	Since   int64
}

// OutcomePendingNotSeen is the audit outcome of a Pending decision.
const OutcomePendingNotSeen = "pending-write-not-seen"

// Result is everything decided for one contact.
type Result struct {
	Next Snapshot
	// D365After and CampaignAfter hold each mapped field's value after the
	// run, in the field's own polarity.
	D365After, CampaignAfter [extract.MaxFields]extract.Tri
	D365Changed              bool
	CampaignChanged          bool
	// StaleD and StaleC say a side's row was older than what state already
	// knew of it, so the known side was used instead.
	StaleD, StaleC bool
}

// Decide settles every mapped pair of one matched contact. prev may be nil
// (never seen). Decisions are appended to buf.
func Decide(r *Rules, c *extract.Contact, p *ProfileSide, prev *Snapshot, buf []Decision) (Result, []Decision) {
	var res Result
	buf = decideInto(&res, r, c, p, prev, buf)
	return res, buf
}

// decideInto is Decide into res (the caller's, zero: a result is half a
// kilobyte, decided once per contact and twice per backfill).
func decideInto(res *Result, r *Rules, c *extract.Contact, p *ProfileSide, prev *Snapshot, buf []Decision) []Decision {
	if prev == nil {
		prev = &Snapshot{}
	}
	// What state knows of one profile never stands in for another: a
	// contact whose profile is now another PKey is decided against it as at
	// first sight for that profile.
	if prev.PKey != "" && prev.PKey != p.PKey {
		lost := LoseProfile(*prev)
		prev = &lost
	}
	// A row older than what state knows of that side (an old file processed
	// again, files out of order) must not undo newer knowledge.
	if prev.DSeen && c.Modified < prev.DModified {
		known := ContactFromState(r, c.ID, prev)
		c, res.StaleD = &known, true
	}
	if prev.CSeen && p.Modified < prev.CModified {
		known := ProfileFromState(r, p.ID, prev)
		p, res.StaleC = &known, true
	}
	res.Next = Snapshot{Known: true, DSeen: true, CSeen: true, DModified: c.Modified, CModified: p.Modified, PKey: p.PKey,
		Decided: prev.Decided, DETag: prev.DETag}
	for i := range r.Pairs {
		buf = settlePair(r, i, c, p, prev, res, buf)
	}
	return buf
}

// settlePair decides mapped pair i of one matched contact into res (its
// next state, the values after the run, which side changed) and appends its
// decisions to buf. Everything is passed by pointer: it runs per record and
// pair.
func settlePair(r *Rules, i int, c *extract.Contact, p *ProfileSide, prev *Snapshot, res *Result, buf []Decision) []Decision {
	pair := r.Pairs[i]
	old := prev.Pairs[i]
	d := c.Values[i]
	if pair.Invert {
		d = d.Not()
	}
	cv := p.Values[i]
	tC := p.Modified
	if t, ok := fieldTime(p, i); ok {
		tC = t
	}
	// A side that has not shown a value this tool wrote to it still
	// holds that value, whatever a stale export says (replay too: a
	// stale export read as the truth could clear an opt-out this tool
	// itself set and that is waiting to be imported).
	next := PairState{S: old.S, DRaw: d, CRaw: cv}
	next.CTime, next.CTimeKnown = fieldTime(p, i)
	dEff, cEff := d, cv
	dPend := pendingWrite(old.DWritten, d, old.DRaw, c.Modified == prev.DModified, r.ImportD365)
	if dPend != pendingGone {
		dEff, next.DWritten, next.DWrittenAt = old.DWritten, old.DWritten, old.DWrittenAt
	}
	cPend := pendingWrite(old.CWritten, cv, old.CRaw, p.Modified == prev.CModified, r.ImportCampaign)
	if cPend != pendingGone {
		cEff, next.CWritten, next.CWrittenAt = old.CWritten, old.CWritten, old.CWrittenAt
	}

	dec := Decision{Pair: i, DModified: c.Modified, CModified: tC}
	// Replay decides as at first sight: it ignores the agreement, but
	// not what is known of the records (writes not yet seen, newer
	// rows), and an agreement it does not replace is kept.
	agreed := old.S
	if r.Replay {
		agreed = extract.Unknown
	}
	target, value := decidePair(r, agreed, dEff, cEff, c.Modified, tC, &dec)
	switch {
	case dec.Skip != "":
		buf = append(buf, dec)
	case target == ToCampaign:
		dec.Target, dec.Old, dec.New = ToCampaign, cEff, value
		dec.ClearsOptOut = cEff == extract.True && value == extract.False
		cEff, next.CWritten, next.CWrittenAt, next.S = value, value, r.Started, value
		res.CampaignChanged = true
		cPend = pendingGone // replaced by this write
		buf = append(buf, dec)
	case target == ToD365:
		dec.Target, dec.Old, dec.New = ToD365, dEff, value
		dec.ClearsOptOut = dEff == extract.True && value == extract.False
		if pair.Invert {
			dec.Old, dec.New = dec.Old.Not(), dec.New.Not()
		}
		dEff, next.DWritten, next.DWrittenAt, next.S = value, value, r.Started, value
		res.D365Changed = true
		dPend = pendingGone
		buf = append(buf, dec)
	case value.Known():
		next.S = value
	}
	buf = appendUnseenWrites(buf, res, i, pair.Invert, c.Modified, tC, &next, d, dEff, dPend, cv, cEff, cPend)
	res.Next.Pairs[i] = next
	res.CampaignAfter[i] = cEff
	if pair.Invert {
		dEff = dEff.Not()
	}
	res.D365After[i] = dEff
	return buf
}

// appendUnseenWrites puts a written opt-out the export does not show
// although the record moved (not imported yet) into this run's update file
// again. Nothing was decided against it. d and dEff are in Campaign's
// polarity, as settlePair holds them; a D365 decision is turned back.
func appendUnseenWrites(buf []Decision, res *Result, i int, invert bool, tD, tC int64, next *PairState,
	d, dEff extract.Tri, dPend pending, cv, cEff extract.Tri, cPend pending) []Decision {
	if cPend == pendingNotSeen {
		buf = append(buf, Decision{Pair: i, Target: ToCampaign, Old: cv, New: cEff, DModified: tD, CModified: tC,
			Pending: true, Since: next.CWrittenAt})
		res.CampaignChanged = true
	}
	if dPend == pendingNotSeen {
		pd := Decision{Pair: i, Target: ToD365, Old: d, New: dEff, DModified: tD, CModified: tC,
			Pending: true, Since: next.DWrittenAt}
		if invert {
			pd.Old, pd.New = pd.Old.Not(), pd.New.Not()
		}
		buf = append(buf, pd)
		res.D365Changed = true
	}
	return buf
}

// What a pending write is after a side was read again.
type pending uint8

const (
	pendingGone    pending = iota // none, seen, or superseded by the export
	pendingStands                 // a stale export (the record has not moved): the write stands in
	pendingNotSeen                // a written opt-out the moved record does not show: not imported yet
)

// pendingWrite decides what a value written to a side (in opted-out
// polarity) is now that the side reads read, after lastRaw the time before;
// unmoved says the record's change time has not moved since. Seen, the
// write is done. An unmoved record with its old value is a stale export:
// the write stands in. A moved record that does not show it may have been
// imported and then changed by someone, or edited before the import: with
// booleans the export cannot tell. A write that clears an opt-out may then
// be superseded by the export (the safe direction); one that sets an
// opt-out through an update file is taken as not imported yet, so that a
// slow import never turns into an opt-in.
func pendingWrite(written, read, lastRaw extract.Tri, unmoved, imported bool) pending {
	switch {
	case !written.Known() || read == written:
		return pendingGone
	case unmoved && read == lastRaw:
		return pendingStands
	case imported && written == extract.True:
		return pendingNotSeen
	}
	return pendingGone
}

// decidePair applies the direction and policy to one pair in opted-out
// polarity. It returns the side to write and the value, or NoSide with the
// value both sides now agree on (Unknown when they do not). A skip is
// recorded in dec.
func decidePair(r *Rules, s, d, c extract.Tri, tD, tC int64, dec *Decision) (Side, extract.Tri) {
	switch r.Direction {
	case D365ToCampaign:
		return oneWay(ToCampaign, s, d, c, dec)
	case CampaignToD365:
		return oneWay(ToD365, s, c, d, dec)
	case Bidirectional:
	default:
		return NoSide, extract.Unknown
	}
	if !d.Known() || !c.Known() {
		dec.Skip = unknownValue(d, c)
		return NoSide, extract.Unknown
	}
	if d == c {
		return NoSide, d
	}
	dSec, cSec := floorDiv(tD, 1000), floorDiv(tC, 1000)
	optout := func(rule string) (Side, extract.Tri) {
		dec.Rule = rule
		if d == extract.True {
			return ToCampaign, d
		}
		return ToD365, c
	}
	switch r.Policy {
	case Adobe:
		if cSec > dSec {
			dec.Rule = RuleAdobeCampaignNewer
			return ToD365, c
		}
		return optout(RuleAdobeOptoutWins)
	case OptoutWins:
		return optout(RulePolicyOptoutWins)
	case D365Wins:
		dec.Rule = RulePolicyD365Wins
		return ToCampaign, d
	case CampaignWins:
		dec.Rule = RulePolicyCampaignWins
		return ToD365, c
	}
	// newest: with a snapshot, and booleans, exactly one side differs from it.
	if s.Known() {
		if d != s {
			dec.Rule = RuleOnlyD365Changed
			return ToCampaign, d
		}
		dec.Rule = RuleOnlyCampaignChanged
		return ToD365, c
	}
	switch {
	case dSec > cSec:
		dec.Rule = RuleConflictD365Newer
		return ToCampaign, d
	case cSec > dSec:
		dec.Rule = RuleConflictCampaignNewer
		return ToD365, c
	}
	return optout(RuleConflictTieOptout)
}

// oneWay moves a source value to the other side when it is known and has
// changed since the last agreement (or there is none); an unknown target
// counts as different.
func oneWay(to Side, s, src, dst extract.Tri, dec *Decision) (Side, extract.Tri) {
	if !src.Known() {
		dec.Skip = ReasonUnknownValue + ": campaign blank"
		if to == ToCampaign {
			dec.Skip = ReasonUnknownValue + ": d365 blank"
		}
		dec.Target = to
		return NoSide, extract.Unknown
	}
	if src == dst {
		return NoSide, src
	}
	if s.Known() && src == s {
		// Campaign-side (or Dynamics-side) drift is not reverted until the
		// source changes.
		return NoSide, extract.Unknown
	}
	dec.Rule = RuleSourceOfTruth
	return to, src
}

// unknownValue is the skip reason of a pair with an unknown side, naming
// the side that is blank (or missing, or null): "unknown-value: campaign
// blank". The reason code stays first, as the audit file's error column
// promises.
func unknownValue(d, c extract.Tri) string {
	switch {
	case !d.Known() && !c.Known():
		return ReasonUnknownValue + ": d365 and campaign blank"
	case !d.Known():
		return ReasonUnknownValue + ": d365 blank"
	}
	return ReasonUnknownValue + ": campaign blank"
}

// ReasonCode is the code a skip reason starts with ("unknown-value" of
// "unknown-value: campaign blank").
func ReasonCode(reason string) string {
	code, _, _ := strings.Cut(reason, ":")
	return code
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// ContactFromState rebuilds a contact's Dynamics side as state last knew it.
func ContactFromState(r *Rules, id extract.ID, s *Snapshot) extract.Contact {
	c := extract.Contact{ID: id, Modified: s.DModified}
	for i, pair := range r.Pairs {
		c.Values[i] = s.Pairs[i].DRaw
		if pair.Invert {
			c.Values[i] = c.Values[i].Not()
		}
	}
	return c
}

// fieldTime is pair i's own change time in a profile row, when it has one.
func fieldTime(p *ProfileSide, i int) (int64, bool) {
	if p.FieldModified != nil && p.FieldModified[i] != extract.NoTime {
		return p.FieldModified[i], true
	}
	return 0, false
}

// ProfileFromState rebuilds a contact's Campaign side as state last knew it:
// its values, lastModified and each field's own change time.
func ProfileFromState(r *Rules, id extract.ID, s *Snapshot) ProfileSide {
	p := ProfileSide{Profile: extract.Profile{ID: id, Modified: s.CModified}, PKey: s.PKey}
	for i := range r.Pairs {
		p.Values[i] = s.Pairs[i].CRaw
		if s.Pairs[i].CTimeKnown {
			if p.FieldModified == nil {
				p.FieldModified = extract.NewFieldTimes()
			}
			p.FieldModified[i] = s.Pairs[i].CTime
		}
	}
	return p
}

// SeeContact records a contact read with no counterpart to decide against,
// so that a later run can match it. A row older than state's knowledge
// changes nothing.
func SeeContact(r *Rules, c *extract.Contact, prev *Snapshot) Snapshot {
	var next Snapshot
	if prev != nil {
		next = *prev
		if prev.DSeen && c.Modified < prev.DModified {
			return next
		}
	}
	unmoved := next.DSeen && c.Modified == next.DModified
	next.Known, next.DSeen, next.DModified = true, true, c.Modified
	for i, pair := range r.Pairs {
		d := c.Values[i]
		if pair.Invert {
			d = d.Not()
		}
		ps := &next.Pairs[i]
		if pendingWrite(ps.DWritten, d, ps.DRaw, unmoved, r.ImportD365) == pendingGone {
			ps.DWritten, ps.DWrittenAt = extract.Unknown, 0
		}
		ps.DRaw = d
	}
	return next
}

// SeeProfile is SeeContact for the Campaign side.
func SeeProfile(r *Rules, p *ProfileSide, prev *Snapshot) Snapshot {
	var next Snapshot
	if prev != nil {
		next = *prev
		if prev.PKey != "" && prev.PKey != p.PKey {
			next = LoseProfile(next)
		}
		if next.CSeen && p.Modified < next.CModified {
			return next
		}
	}
	unmoved := next.CSeen && p.Modified == next.CModified
	next.Known, next.CSeen, next.CModified, next.PKey = true, true, p.Modified, p.PKey
	for i := range r.Pairs {
		ps := &next.Pairs[i]
		if pendingWrite(ps.CWritten, p.Values[i], ps.CRaw, unmoved, r.ImportCampaign) == pendingGone {
			ps.CWritten, ps.CWrittenAt = extract.Unknown, 0
		}
		ps.CRaw = p.Values[i]
		ps.CTime, ps.CTimeKnown = fieldTime(p, i)
	}
	return next
}

// LoseProfile forgets what a snapshot knows of its contact's profile: the
// profile left the contact (it is another contact's now, or no one's), and
// nothing known of it may stand in for the contact's next profile. What is
// known of the contact itself stays, a write to it not yet seen included.
func LoseProfile(s Snapshot) Snapshot {
	s.CSeen, s.CModified, s.PKey = false, 0, ""
	for i := range s.Pairs {
		ps := &s.Pairs[i]
		ps.S, ps.CRaw, ps.CWritten, ps.CWrittenAt = extract.Unknown, extract.Unknown, extract.Unknown, 0
		ps.CTime, ps.CTimeKnown = 0, false
	}
	return s
}

// ContactKnown says a contact row tells nothing state does not know of its
// Dynamics side: the same change time and values as last read, or a row
// older than that (which does not undo newer knowledge). Such a row is not
// a change: a run that reads it — a full read after an expired delta link,
// an overlap behind a watermark, a file processed again — decides the
// contact exactly as a run that did not read it.
func ContactKnown(r *Rules, c *extract.Contact, prev *Snapshot) bool {
	if !prev.DSeen || c.Modified < prev.DModified {
		return prev.DSeen
	}
	if c.Modified != prev.DModified {
		return false
	}
	for i, pair := range r.Pairs {
		d := c.Values[i]
		if pair.Invert {
			d = d.Not()
		}
		if d != prev.Pairs[i].DRaw {
			return false
		}
	}
	return true
}

// ProfileKnown is ContactKnown for the Campaign side: the profile state
// links to the contact, with the same lastModified, values and fields' own
// change times as last read, or an older row of it.
func ProfileKnown(r *Rules, p *ProfileSide, prev *Snapshot) bool {
	if !prev.CSeen || p.PKey != prev.PKey {
		return false
	}
	if p.Modified < prev.CModified {
		return true
	}
	if p.Modified != prev.CModified {
		return false
	}
	for i := range r.Pairs {
		ps := &prev.Pairs[i]
		t, known := fieldTime(p, i)
		if p.Values[i] != ps.CRaw || known != ps.CTimeKnown || known && t != ps.CTime {
			return false
		}
	}
	return true
}
