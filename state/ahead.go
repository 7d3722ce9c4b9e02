package state

import (
	"bytes"
	"fmt"
	"runtime/debug"

	"optsync/extract"
	"optsync/transform"
)

// A walk of the records (Reader.Until: a backfill decides every contact
// against its record) decodes each record as the decider asks for it:
// over a million records, that decoding was 0.3 – 0.4 s of the deciding
// goroutine's time while the other core waited. The records are read and
// decoded ahead instead, on a goroutine of their own, in batches handed
// over in key order; the decider takes them as it goes. What it is handed
// is what the walk would have decoded, and a damaged record or page stops
// it at the same place: the error comes with the first call that needs
// what lies at or past the damage, as when the walk itself met it.

// aheadBatchLen is how many records a batch holds; aheadBatches are in
// flight at most (a snapshot is about half a kilobyte: a few hundred KB).
const (
	aheadBatchLen = 256
	aheadBatches  = 4
)

// aheadBatch is records read ahead, in key order: ids[i] and snaps[i] for
// i < n. After them the walk ended (last), or stopped at damage (err),
// found at errAt when that is a record's key (nil: a page or block, met
// stepping on from the last record handed).
type aheadBatch struct {
	ids   [aheadBatchLen]extract.ID
	snaps [aheadBatchLen]transform.Snapshot
	n     int
	last  bool
	err   error
	errAt *extract.ID
}

// readAhead is a walk's reading ahead: batches come in full, go back
// empty; stop ends it early (a Reader closed before the walk's end).
type readAhead struct {
	full, empty chan *aheadBatch
	stop, done  chan struct{}
	cur         *aheadBatch // the batch being taken (nil: none yet)
	i           int         // its next record
}

// startAhead starts reading the records ahead, from the first.
func (r *Reader) startAhead() *readAhead {
	a := &readAhead{full: make(chan *aheadBatch, aheadBatches), empty: make(chan *aheadBatch, aheadBatches),
		stop: make(chan struct{}), done: make(chan struct{})}
	for range aheadBatches {
		a.empty <- new(aheadBatch)
	}
	r.ahead = a
	go r.readAhead(a)
	return a
}

// readAhead fills batches until the walk ends, is damaged, or is stopped.
// It alone uses the view's cursor (and mapping) until done is closed.
func (r *Reader) readAhead(a *readAhead) {
	defer close(a.done)
	var b *aheadBatch
	take := func() bool {
		select {
		case b = <-a.empty:
			b.n, b.last, b.err, b.errAt = 0, false, nil, nil
			return true
		case <-a.stop:
			return false
		}
	}
	hand := func() bool {
		select {
		case a.full <- b:
			return true
		case <-a.stop:
			return false
		}
	}
	if !take() {
		return
	}
	err := r.fillAhead(a, &b, take, hand)
	if err == nil {
		return // handed or stopped
	}
	b.err = err
	hand()
}

// fillAhead is readAhead's walk; a damaged page or block met (a panic of
// the page checks, or a fault) is returned as the error of the batch
// being filled.
func (r *Reader) fillAhead(a *readAhead, b **aheadBatch, take, hand func() bool) (err error) {
	defer r.s.recoverDamage(&err, debug.SetPanicOnFault(true))
	k, v := r.c.First()
	for {
		for k != nil && (*b).n < aheadBatchLen {
			x := *b
			id := &x.ids[x.n]
			copy(id[:], k)
			if err := r.s.decode(v, &x.snaps[x.n], r.slot); err != nil {
				x.errAt = id
				return &CorruptError{Path: r.s.path, Problem: fmt.Sprintf("contact %s: %v", *id, err)}
			}
			x.n++
			r.stepped()
			k, v = r.c.Next()
		}
		(*b).last = k == nil
		if !hand() || (*b).last || !take() {
			return nil
		}
	}
}

// next is the walk's next record, read ahead (nil at the end). A record
// that is damaged, or damage met stepping on to the next record, is its
// error: with the key of the record (at), when the damage is in one.
func (a *readAhead) next() (rec *extract.ID, snap *transform.Snapshot, at *extract.ID, err error) {
	for a.cur == nil || a.i == a.cur.n {
		if b := a.cur; b != nil {
			if b.err != nil {
				return nil, nil, b.errAt, b.err
			}
			if b.last {
				return nil, nil, nil, nil
			}
			a.empty <- b
		}
		a.cur, a.i = <-a.full, 0
	}
	return &a.cur.ids[a.i], &a.cur.snaps[a.i], nil, nil
}

// halt stops the reading ahead and waits for it to let go of the view.
func (a *readAhead) halt() {
	if a == nil {
		return
	}
	select {
	case <-a.stop:
	default:
		close(a.stop)
	}
	<-a.done
}

// Until walks the stored contacts in key order: it calls absent for every
// contact after the one the previous call asked for and before id (for the
// first call, from the start), then fills snap with id's snapshot and says
// whether there was one. Calls must ask for ids in increasing order; a
// Reader walked this way is not used for Get (nor for the other lookups
// while the walk lasts). absent's snapshot is valid only until it returns.
// The records are read ahead (readAhead) from the first call on.
func (r *Reader) Until(id *extract.ID, snap *transform.Snapshot, absent func(extract.ID, *transform.Snapshot) error) (found bool, err error) {
	if r.c == nil {
		return false, nil
	}
	a := r.ahead
	if a == nil {
		a = r.startAhead()
	}
	for {
		k, s, at, err := a.next()
		if err != nil {
			// damage in a record after id is not reached by this call
			if id != nil && at != nil && bytes.Compare(at[:], id[:]) > 0 {
				return false, nil
			}
			return false, err
		}
		if k == nil {
			return false, nil
		}
		if id != nil {
			switch c := bytes.Compare(k[:], id[:]); {
			case c == 0:
				*snap = *s
				a.i++
				return true, nil
			case c > 0:
				return false, nil
			}
		}
		if err := absent(*k, s); err != nil {
			return false, err
		}
		a.i++
	}
}
