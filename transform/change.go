package transform

import "optsync/extract"

// Change is everything decided for one contact that has something to say:
// what the decider hands forward to the files and API writes.
type Change struct {
	ID        extract.ID
	PKey      string
	Decisions []Decision
	// Each system's mapped fields after the run, in their own polarity,
	// and whether the system gets a write.
	D365After, CampaignAfter     [extract.MaxFields]extract.Tri
	D365Changed, CampaignChanged bool
	// ETag is the Dynamics ETag the decision's contact was read with,
	// exactly as sent ("": none; a write then reads the contact first).
	ETag string
	// ContactModified and D365Read are the contact's modifiedon and mapped
	// values the decision was based on (the basis a write without an ETag
	// is checked against).
	ContactModified int64
	D365Read        [extract.MaxFields]extract.Tri
	// ProfileModified and CampaignRead are the profile's lastModified and
	// mapped values as read: a write that clears an opt-out in Campaign is
	// made only if they still hold.
	ProfileModified int64
	CampaignRead    [extract.MaxFields]extract.Tri
}
