package state

import (
	"sync/atomic"

	"optsync/transform"
)

// A backfill too large for memory keeps every entry whole (its rows are
// not held), and encoding them cost the deciding goroutine, the one the
// decide phase waits for, 0.87 s of its 4.5 s at 10 M contacts. The
// entries are copied into batches instead (an entry holds nothing that is
// written again: its PKey is a string of the rows' blocks, its field
// times its own) and encoded, then written, on a goroutine of their own,
// in the order they came.

// dirtyEncodeBatch is how many entries a batch holds (160 bytes each);
// dirtyEncodeBatches are in flight at most.
const (
	dirtyEncodeBatch   = 512
	dirtyEncodeBatches = 4
)

// dirtyEncoder encodes the entries handed to it into the Dirty's buffer,
// which only it touches until stop returns.
type dirtyEncoder struct {
	batch      []transform.Entry
	work, free chan []transform.Entry
	done       chan struct{}
	// err is the first error encoding or writing met, read once done is
	// closed; failed says there is one, for add to stop early.
	err     error
	failed  atomic.Bool
	stopped bool
}

// encodesApart says whether the entries are kept whole (the rows are not
// held) within a budget, so encoded on a goroutine of their own.
func (s *Dirty) encodesApart() bool {
	return s.budget > 0 && (s.cItems == nil || s.pItems == nil)
}

func (s *Dirty) startEncoder() *dirtyEncoder {
	c := &dirtyEncoder{batch: make([]transform.Entry, 0, dirtyEncodeBatch), work: make(chan []transform.Entry, dirtyEncodeBatches),
		free: make(chan []transform.Entry, dirtyEncodeBatches), done: make(chan struct{})}
	for range dirtyEncodeBatches - 1 {
		c.free <- make([]transform.Entry, 0, dirtyEncodeBatch)
	}
	go func() {
		defer close(c.done)
		for b := range c.work {
			for i := range b {
				if c.err != nil {
					break
				}
				if err := s.encode(&b[i]); err != nil {
					c.err = err
					c.failed.Store(true)
				}
			}
			clear(b) // what the entries point to is not kept by a spare batch
			c.free <- b[:0]
		}
	}()
	return c
}

// add hands the encoder a copy of e; an error is one an earlier entry
// met.
func (c *dirtyEncoder) add(e *transform.Entry) error {
	if c.failed.Load() {
		return c.stop()
	}
	c.batch = append(c.batch, *e)
	if len(c.batch) == cap(c.batch) {
		c.work <- c.batch
		c.batch = <-c.free
	}
	return nil
}

// stop hands the encoder the last batch and waits for it: every entry
// added is in the Dirty's buffer (or written) then, or the first error is
// returned. Once stopped, it only returns that error again.
func (c *dirtyEncoder) stop() error {
	if c == nil {
		return nil
	}
	if !c.stopped {
		c.stopped = true
		if len(c.batch) > 0 && !c.failed.Load() {
			c.work <- c.batch
		}
		c.batch = nil
		close(c.work)
		<-c.done
	}
	return c.err
}
