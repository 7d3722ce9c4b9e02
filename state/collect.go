package state

import (
	"sync/atomic"

	"optsync/extract"
	"optsync/extract/spill"
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
	batch  []PKeyEntry
	// collectBatches batches exist, each in one place at a time (batch,
	// work, the sort, spare): neither side waits on the other for ever.
	work, spare chan []PKeyEntry
	done        chan struct{}
	// err is the sort's first error, read once done is closed; failed
	// says there is one, for add to stop early.
	err      error
	failed   atomic.Bool
	finished bool
}

// collectBatch is how many entries a batch hands the sort.
const (
	collectBatch   = 4096
	collectBatches = 4
)

func newPKeyCollect(sorter *spill.Sorter[PKeyEntry]) *pkeyCollect {
	c := &pkeyCollect{sorter: sorter, work: make(chan []PKeyEntry, collectBatches), spare: make(chan []PKeyEntry, collectBatches),
		done: make(chan struct{}), batch: make([]PKeyEntry, 0, collectBatch)}
	for range collectBatches - 1 {
		c.spare <- make([]PKeyEntry, 0, collectBatch)
	}
	go c.run()
	return c
}

// run adds the batches to the sort in the order handed; after an error it
// only hands them back.
func (c *pkeyCollect) run() {
	defer close(c.done)
	for b := range c.work {
		for i := range b {
			if c.err != nil {
				break
			}
			if err := c.sorter.Add(&b[i]); err != nil {
				c.err = err
				c.failed.Store(true)
			}
		}
		clear(b) // the strings' blocks are not kept by a spare batch
		c.spare <- b[:0]
	}
}

// add hands the sort an entry; an error is the sort's (it failed on an
// earlier entry).
func (c *pkeyCollect) add(pkey string, id extract.ID) error {
	if c.finished {
		return c.err
	}
	c.batch = append(c.batch, PKeyEntry{PKey: pkey, ID: id})
	if len(c.batch) < cap(c.batch) {
		return nil
	}
	if c.failed.Load() {
		return c.finish()
	}
	c.work <- c.batch
	c.batch = <-c.spare
	return nil
}

// finish hands the sort the last batch and waits for it: every entry
// added is in the sorter then, or the first error is returned. Once
// finished, it only returns that error again.
func (c *pkeyCollect) finish() error {
	if c == nil {
		return nil
	}
	if !c.finished {
		c.finished = true
		if len(c.batch) > 0 {
			c.work <- c.batch
		}
		c.batch = nil
		close(c.work)
		<-c.done
	}
	return c.err
}
