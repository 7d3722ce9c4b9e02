package transform

import (
	"sync"

	"optsync/extract"
	"optsync/extract/spill"
)

// pkeyRows reads a spilled sort's profile rows, merged by PKey, on a
// goroutine of its own, and hands them to the rule by PKey in batches. The
// rule's goroutine was a spilling backfill's identify phase end to end:
// the merge (each run's records decoded, the tournament played) was a
// third of it, with the second core mostly idle beside it (the sort by
// contact writes a run now and then). A batch's rows name what they name
// in a writer of the batch's own, as they are valid until the batch is
// handed back: the run's record each came from is written over by the
// next read.
type pkeyRows struct {
	ks    *extract.Keys
	full  chan *rowBatch // batches filled, in order (closed at the end)
	spare chan *rowBatch // batches to fill again
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once
	all   []*rowBatch
	// cur is the batch Next reads; prev the one before, whose last row
	// the caller may still hold until the call after it.
	cur, prev *rowBatch
	i         int
	// err is the stream's, once done is closed.
	err error
}

// rowBatch is a batch of rows and the writer of what they name.
type rowBatch struct {
	rows []extract.Profile
	w    *extract.KeyWriter
}

// Batches: rowBatchRows rows each (some 56 KB, within a core's cache),
// rowBatches of them at once (two filling while the rule reads one and
// holds the last row of the one before).
const (
	rowBatchRows = 1024
	rowBatches   = 4
)

// readPKeyRows starts reading s, whose rows name what they name in ks.
func readPKeyRows(s spill.Stream[extract.Profile], ks *extract.Keys) *pkeyRows {
	r := &pkeyRows{ks: ks, full: make(chan *rowBatch, rowBatches), spare: make(chan *rowBatch, rowBatches),
		stop: make(chan struct{}), done: make(chan struct{})}
	for range rowBatches {
		b := &rowBatch{rows: make([]extract.Profile, 0, rowBatchRows), w: ks.Writer()}
		r.all = append(r.all, b)
		r.spare <- b
	}
	go r.run(s)
	return r
}

// run fills batches from s until it ends or the reader stops.
func (r *pkeyRows) run(s spill.Stream[extract.Profile]) {
	defer close(r.done)
	defer close(r.full)
	for {
		var b *rowBatch
		select {
		case b = <-r.spare:
		case <-r.stop:
			return
		}
		// no string of what the batch's rows named is kept: the rule
		// copies what it keeps into a writer of its own (rowKeys.hold)
		b.w.Recycle()
		b.rows = b.rows[:0]
		for len(b.rows) < cap(b.rows) {
			p := s.Next()
			if p == nil {
				break
			}
			b.rows = append(b.rows, *p)
			q := &b.rows[len(b.rows)-1]
			q.PKey, q.FieldModified = b.w.Copy(r.ks, p.PKey), b.w.CopyTimes(r.ks, p.FieldModified)
		}
		ended := len(b.rows) < cap(b.rows)
		if ended {
			r.err = s.Err()
		}
		if len(b.rows) > 0 {
			select {
			case r.full <- b:
			case <-r.stop:
				return
			}
		}
		if ended {
			return
		}
	}
}

// Next returns the next row (valid until the call after the following
// one), nil at the end.
func (r *pkeyRows) Next() *extract.Profile {
	for r.cur == nil || r.i == len(r.cur.rows) {
		if r.prev != nil {
			r.spare <- r.prev // never waits: there are only so many batches
		}
		r.prev, r.cur, r.i = r.cur, nil, 0
		b, ok := <-r.full
		if !ok {
			return nil
		}
		r.cur = b
	}
	r.i++
	return &r.cur.rows[r.i-1]
}

// Err is the stream's error, once Next returned nil.
func (r *pkeyRows) Err() error {
	<-r.done
	return r.err
}

// Close stops the reading, waits for it (the stream may be closed then)
// and lets go of the batches' writers.
func (r *pkeyRows) Close() {
	r.once.Do(func() {
		close(r.stop)
		<-r.done
		for _, b := range r.all {
			b.w.Reset()
		}
	})
}
