package state

import (
	"sync"

	"optsync/extract"
	"optsync/extract/spill"
	"optsync/transform"
)

// pkeyCollect hands the (PKey, contact) entries a backfill's decisions
// collect for the PKey index written whole to its sort on a goroutine of
// its own, in batches, in the order they come. The sort cost the deciding
// goroutine a fifth of its time past memory (10 M contacts: 3.7 s of
// 16 s, its runs sorted and written while the decisions waited), and the
// other core is idle while the decisions are made.
//
// The PKeys are strings the rows' blocks hold, never written again
// (extract.Keys): the goroutine reads them as they are.
type pkeyCollect struct {
	sorter *spill.Sorter[PKeyEntry]
	// twin, when the entries will not fit in the sorter's budget, makes
	// its runs on a goroutine of its own (pkeyTwin); rows is how many
	// entries may come, budget the sorter's.
	twin   func() *spill.Sorter[PKeyEntry]
	rows   int
	budget int64
	h      *handoff[PKeyEntry]
}

// collectBatch is how many entries a batch hands the sort.
const (
	collectBatch   = 4096
	collectBatches = 4
)

// newPKeyCollect collects into sorter, whose budget is budget, up to rows
// entries; half makes a sorter of half that budget (nil: none, the
// entries always go to sorter as they come).
func newPKeyCollect(sorter *spill.Sorter[PKeyEntry], half func() *spill.Sorter[PKeyEntry], budget int64, rows int) *pkeyCollect {
	c := &pkeyCollect{sorter: sorter, twin: half, budget: budget, rows: rows}
	// the batches go to the sort in the order handed: to the twin once
	// the first says the entries will outgrow the budget
	var tw *pkeyTwin
	first := true
	c.h = startHandoff(collectBatch, collectBatches, func(b []PKeyEntry) error {
		if first {
			first = false
			if c.outgrows(b) {
				tw = newPKeyTwin(c.sorter, c.twin, c.rows)
			}
		}
		for i := range b {
			var err error
			if tw != nil {
				err = tw.add(&b[i])
			} else {
				err = c.sorter.Add(&b[i])
			}
			if err != nil {
				return err
			}
		}
		return nil
	}, func(err error) error {
		if tw == nil {
			return nil
		}
		return tw.finish(err == nil)
	})
	return c
}

// outgrows says, from the first batch, whether the rows announced will
// pass the sorter's budget (each as large as those of the batch are on
// average): the sort then spills, and its runs are better made beside
// the entries that keep coming (pkeyTwin). Rows not announced: as they
// come, into the one sorter.
func (c *pkeyCollect) outgrows(b []PKeyEntry) bool {
	if c.twin == nil || c.budget <= 0 || c.rows <= 0 || len(b) == 0 {
		return false
	}
	var size int64
	for i := range b {
		size += int64(len(b[i].PKey))
	}
	per := float64(transform.PKeySize) + float64(size)/float64(len(b))
	return float64(c.rows)*per > float64(c.budget)
}

// add hands the sort an entry; an error is the sort's (it failed on an
// earlier entry).
func (c *pkeyCollect) add(pkey string, id extract.ID) error {
	return c.h.add(&PKeyEntry{PKey: pkey, ID: id})
}

// finish hands the sort the last batch and waits for it: every entry
// added is in the sorter then, or the first error is returned. Once
// finished, it only returns that error again.
func (c *pkeyCollect) finish() error {
	if c == nil {
		return nil
	}
	return c.h.finish()
}

// pkeyTwin sorts entries that will not fit in memory in two sorters of
// half the budget each: one takes the entries while the other's run is
// sorted and written on a goroutine of its own, then adopted by the
// sorter the commit reads (into). With one sorter, the entries waited for
// every run (10 M contacts: nine runs, 1.7 s in which the decisions
// waited, and with them the entries read for them), and the other core
// had only the run's work to do.
type pkeyTwin struct {
	into       *spill.Sorter[PKeyEntry]
	cur        *spill.Sorter[PKeyEntry]
	both       [2]*spill.Sorter[PKeyEntry]
	full, free chan *spill.Sorter[PKeyEntry]
	done       chan struct{}
	mu         sync.Mutex
	err        error // the runs' first error
}

func newPKeyTwin(into *spill.Sorter[PKeyEntry], half func() *spill.Sorter[PKeyEntry], rows int) *pkeyTwin {
	t := &pkeyTwin{into: into, full: make(chan *spill.Sorter[PKeyEntry], 1), free: make(chan *spill.Sorter[PKeyEntry], 2), done: make(chan struct{})}
	for i := range t.both {
		t.both[i] = half()
		t.both[i].Reserve(rows)
	}
	t.cur = t.both[0]
	t.free <- t.both[1]
	go t.spill()
	return t
}

// spill writes the runs of the sorters handed, in order, and adopts them
// into into; after an error it only hands the sorters back.
func (t *pkeyTwin) spill() {
	defer close(t.done)
	for s := range t.full {
		if t.failed() == nil {
			err := s.SpillHeld()
			if err == nil {
				t.into.Adopt(s)
			}
			t.mu.Lock()
			if t.err == nil {
				t.err = err
			}
			t.mu.Unlock()
		}
		t.free <- s
	}
}

func (t *pkeyTwin) failed() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}

// add keeps e, first handing the records held to be spilled if e does not
// fit beside them.
func (t *pkeyTwin) add(e *PKeyEntry) error {
	if t.cur.Len() > 0 && !t.cur.Fits(e) {
		t.full <- t.cur
		t.cur = <-t.free
		if err := t.failed(); err != nil {
			return err
		}
	}
	return t.cur.Add(e)
}

// finish spills what is held (when ok: no entry was lost before it) and
// waits for the runs: into then holds every entry added, in its runs.
func (t *pkeyTwin) finish(ok bool) error {
	if ok && t.cur.Len() > 0 {
		t.full <- t.cur
	}
	close(t.full)
	<-t.done
	for _, s := range t.both {
		s.Close()
	}
	return t.failed()
}
