package load

import (
	"sync/atomic"

	"optsync/transform"
)

// changeFormatter writes the decisions' changes to the run's files
// (Writer.Change) on a goroutine of its own, in the order they come, in
// batches. Formatting a change's audit and update rows was a fifth of the
// deciding goroutine's time (1 M contacts: 0.14 s of 0.58 s), the one
// the decisions' phase waits for, while the other core had time.
//
// A change is copied whole into its batch, its decisions into the batch's
// own array: the decider reuses both. The strings it holds are never
// written again (the decider's rules and reasons, the rows' PKeys).
type changeFormatter struct {
	w          *Writer
	b          *changeBatch // the batch filling
	full, free chan *changeBatch
	done       chan struct{}
	// err is the first write's error, read once done is closed; failed
	// says there is one, for add to stop early.
	err      error
	failed   atomic.Bool
	finished bool
}

// changeBatch is changes to write; the ith's decisions are
// decisions[ends[i-1]:ends[i]].
type changeBatch struct {
	changes   []Change
	ends      []int
	decisions []transform.Decision
}

// How many changes a batch holds, and how many batches there are: one
// filling, one written, one ready.
const (
	formatBatch   = 256
	formatBatches = 3
)

func newChangeFormatter(w *Writer) *changeFormatter {
	f := &changeFormatter{w: w, full: make(chan *changeBatch, formatBatches), free: make(chan *changeBatch, formatBatches),
		done: make(chan struct{})}
	for range formatBatches - 1 {
		f.free <- newChangeBatch()
	}
	f.b = newChangeBatch()
	go f.run()
	return f
}

func newChangeBatch() *changeBatch {
	return &changeBatch{changes: make([]Change, 0, formatBatch), ends: make([]int, 0, formatBatch),
		decisions: make([]transform.Decision, 0, formatBatch*2)}
}

// run writes the batches in the order handed; after an error it only
// hands them back.
func (f *changeFormatter) run() {
	defer close(f.done)
	for b := range f.full {
		start := 0
		for i := range b.changes {
			c := &b.changes[i]
			c.Decisions = b.decisions[start:b.ends[i]:b.ends[i]]
			start = b.ends[i]
			if f.err == nil {
				if err := f.w.Change(c); err != nil {
					f.err = err
					f.failed.Store(true)
				}
			}
		}
		clear(b.changes) // what they point to is not kept by a spare batch
		b.changes, b.ends, b.decisions = b.changes[:0], b.ends[:0], b.decisions[:0]
		f.free <- b
	}
}

// add hands the writer a copy of c; an error is an earlier write's.
func (f *changeFormatter) add(c *Change) error {
	if f.finished {
		return f.err
	}
	b := f.b
	b.decisions = append(b.decisions, c.Decisions...)
	b.changes = append(b.changes, *c)
	b.changes[len(b.changes)-1].Decisions = nil
	b.ends = append(b.ends, len(b.decisions))
	if len(b.changes) < cap(b.changes) {
		return nil
	}
	if f.failed.Load() {
		return f.finish()
	}
	f.full <- b
	f.b = <-f.free
	return nil
}

// finish hands the writer the last batch and waits for it: every change
// added is in the files' buffers then, or the first error is returned.
// Once finished it only returns that error again.
func (f *changeFormatter) finish() error {
	if f == nil {
		return nil
	}
	if !f.finished {
		f.finished = true
		if len(f.b.changes) > 0 {
			f.full <- f.b
		}
		f.b = nil
		close(f.full)
		<-f.done
	}
	return f.err
}
