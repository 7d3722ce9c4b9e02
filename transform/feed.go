package transform

import (
	"optsync/extract"
)

// entryFeed reads the entries of the identity rules (Identity.Next) on a
// goroutine of its own and hands them to All in batches, in order. Past
// memory the join reads both sides' sorted runs back from disk and merges
// them: at 10 M contacts 4.5 s of the decisions' 16 s of CPU, spent on
// the deciding goroutine while the other core was idle.
//
// What the rules find as they read is handed over as it was found: the
// rejects (held by the Identity, added to its sorter by All just before
// the entry whose reading found them, where the sorter had them before,
// so the rejects file lists them in the same order) and the conflicts
// (the entry's kind, set before the next is read). Everything else the
// Identity counts is read once the feed is done.
type entryFeed struct {
	id         *Identity
	full, free chan *entryBatch
	stop, done chan struct{}
	b          *entryBatch // the batch All reads (nil: none yet)
	i, r       int         // its next entry, its next reject
	stopped    bool
}

// entryBatch is a run of entries, and the rejects found reading each:
// rejects[:before[k]] were found up to entries[k]; end says the entries
// ended with this batch (those after the last entry found after it).
type entryBatch struct {
	entries []Entry
	before  []int
	rejects []extract.Reject
	end     bool
}

// How many entries a batch holds (an Entry is a couple of hundred bytes),
// and how many batches there are: one filled, one read, and one ready.
const (
	feedBatch   = 512
	feedBatches = 3
)

func newEntryFeed(id *Identity) *entryFeed {
	f := &entryFeed{id: id, full: make(chan *entryBatch, feedBatches), free: make(chan *entryBatch, feedBatches),
		stop: make(chan struct{}), done: make(chan struct{})}
	for range feedBatches {
		f.free <- &entryBatch{entries: make([]Entry, 0, feedBatch), before: make([]int, 0, feedBatch)}
	}
	id.holdRejects = true
	go f.read()
	return f
}

// read fills batches until the entries end or All stops it.
func (f *entryFeed) read() {
	defer close(f.done)
	id := f.id
	for {
		var b *entryBatch
		select {
		case b = <-f.free:
		case <-f.stop:
			return
		}
		b.entries, b.before, b.end = b.entries[:0], b.before[:0], false
		id.heldRejects = b.rejects[:0]
		for len(b.entries) < cap(b.entries) {
			e := id.Next()
			if e == nil {
				b.end = true
				break
			}
			if k := len(id.conflicts); k > 0 && id.conflicts[k-1] == e.ID && e.Kind == EntryBlocked {
				e.Kind = EntryConflict
			}
			b.entries = append(b.entries, *e)
			b.before = append(b.before, len(id.heldRejects))
		}
		b.rejects, id.heldRejects = id.heldRejects, nil
		select {
		case f.full <- b:
		case <-f.stop:
			return
		}
		if b.end {
			return
		}
	}
}

// next is the next entry (nil at the end: the Identity's Err says whether
// it ended early), once the rejects found up to it are in the Identity's
// sorter.
func (f *entryFeed) next() (*Entry, error) {
	for {
		if f.b != nil && f.i < len(f.b.entries) {
			if err := f.rejectsUntil(f.b.before[f.i]); err != nil {
				return nil, err
			}
			f.i++
			return &f.b.entries[f.i-1], nil
		}
		if f.b != nil {
			if f.b.end {
				err := f.rejectsUntil(len(f.b.rejects))
				f.close()
				return nil, err
			}
			f.free <- f.b
		}
		f.b, f.i, f.r = <-f.full, 0, 0
	}
}

func (f *entryFeed) rejectsUntil(n int) error {
	for ; f.r < n; f.r++ {
		if err := f.id.later.Add(&f.b.rejects[f.r]); err != nil {
			return err
		}
	}
	return nil
}

// close stops the reading and waits for it: the Identity is All's caller's
// again, its rejects added as they are found.
func (f *entryFeed) close() {
	if f.stopped {
		return
	}
	f.stopped = true
	close(f.stop)
	<-f.done
	f.id.holdRejects, f.id.heldRejects = false, nil
}
