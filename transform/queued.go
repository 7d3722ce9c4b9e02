package transform

import "optsync/extract"

// keepQueued notes a queued contact the run keeps out (a bad row, two
// profiles, a profile that another contact's bad row holds): it is not
// decided, so the write its queue entry waits for is still to do, and the
// entry stays (StillQueued) until a run decides the contact.
func (d *Decider) keepQueued(id extract.ID) {
	if !d.queued[id] {
		return
	}
	if d.stillQueued == nil {
		d.stillQueued = map[extract.ID]bool{}
	}
	d.stillQueued[id] = true
}

// StillQueued says whether the run kept a queued contact out: its entry in
// the retry queue is not settled.
func (d *Decider) StillQueued(id extract.ID) bool { return d.stillQueued[id] }
