package state

import (
	"sync"

	"optsync/extract"
)

// A night's commit decides every contact it writes again from its record
// (decideChunk), which the run's first pass read a moment before: looking
// each up again cost a walk down the tree and the faults of pages released
// since, 10 k lookups a night. A run that writes keeps what its lookups by
// id (Reader.Get) found, a copy of each record (or that there was none),
// tagged with the commits made before the read; the commit takes a
// contact's copy instead of a lookup when no commit came between the read
// and the commit's start (its own chunks write other contacts), else looks
// it up. The copies are bounded: past keptReadsMax bytes none is kept, and
// those contacts are looked up again.
type keptReads struct {
	mu    sync.Mutex
	m     map[extract.ID]keptRead
	bytes int
	off   bool // full, or the commit has begun taking
}

type keptRead struct {
	v     []byte // the record without its seal (nil: none found)
	found bool
	tag   int64  // the commits made before the read
	page  uint64 // the leaf page the lookup read (0: not known)
}

// keptReadsMax bounds the copies: a night of 10 k contacts keeps about 1 MB.
const keptReadsMax = 16 << 20

// keep keeps a copy of what a lookup of id found (v: the record, valid
// with the view; nil when none) and the leaf page it read (0: not known).
func (k *keptReads) keep(id extract.ID, v []byte, found bool, tag int64, page uint64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.off {
		return
	}
	if k.bytes += len(v) + 48; k.bytes > keptReadsMax {
		k.off, k.m = true, nil
		return
	}
	if k.m == nil {
		k.m = map[extract.ID]keptRead{}
	}
	k.m[id] = keptRead{v: append([]byte(nil), v...), found: found, tag: tag, page: page}
}

// take hands the copy of id's record kept with tag (ok false: none such)
// and forgets it; page is the leaf page its lookup read (0: not known),
// whatever the tag: where the record was then, and likely still is.
func (k *keptReads) take(id extract.ID, tag int64) (v []byte, found, ok bool, page uint64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	r, ok := k.m[id]
	if !ok {
		return nil, false, false, 0
	}
	delete(k.m, id)
	if r.tag != tag {
		return nil, false, false, r.page
	}
	return r.v, r.found, true, r.page
}

// keptRecord is a record a lookup found, as kept.
type keptRecord struct {
	id extract.ID
	v  []byte
}

// records are the records kept (found), in no order; their bytes are the
// copies kept, which nothing writes.
func (k *keptReads) records() []keptRecord {
	k.mu.Lock()
	defer k.mu.Unlock()
	rs := make([]keptRecord, 0, len(k.m))
	for id, r := range k.m {
		if r.found {
			rs = append(rs, keptRecord{id, r.v})
		}
	}
	return rs
}

// pause keeps nothing more (what was kept stays to be taken).
func (k *keptReads) pause() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.off = true
}

// stop keeps nothing more and lets go of what was kept.
func (k *keptReads) stop() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.off, k.m = true, nil
}
