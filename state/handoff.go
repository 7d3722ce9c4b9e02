package state

import "sync/atomic"

// handoff hands items, in batches and in the order they come, to a
// goroutine of its own that works through each batch (each): the work
// leaves the goroutine that adds, the one its phase waits for, for the
// other core. batches batches exist, each in one place at a time (being
// filled, handed, worked through, spare), so neither side waits on the
// other for ever. The first error stops the work: the batches after it
// are handed back untouched, and add and finish return it.
type handoff[T any] struct {
	batch       []T
	work, spare chan []T
	done        chan struct{}
	// err is the work's first error, read once done is closed; failed
	// says there is one, for add to stop early.
	err      error
	failed   atomic.Bool
	finished bool
}

// startHandoff starts the goroutine: each works through a batch (and
// returns the first error it meets); end, when set, is called once every
// batch is handed back, with the work's error so far, and returns its own.
func startHandoff[T any](size, batches int, each func([]T) error, end func(error) error) *handoff[T] {
	h := &handoff[T]{batch: make([]T, 0, size), work: make(chan []T, batches), spare: make(chan []T, batches), done: make(chan struct{})}
	for range batches - 1 {
		h.spare <- make([]T, 0, size)
	}
	go func() {
		defer close(h.done)
		for b := range h.work {
			if h.err == nil {
				if err := each(b); err != nil {
					h.err = err
					h.failed.Store(true)
				}
			}
			clear(b) // what the items point to is not kept by a spare batch
			h.spare <- b[:0]
		}
		if end != nil {
			if err := end(h.err); h.err == nil && err != nil {
				h.err = err
				h.failed.Store(true)
			}
		}
	}()
	return h
}

// add hands t on (a copy); an error is the work's, met on an earlier
// item.
func (h *handoff[T]) add(t *T) error {
	if h.finished || h.failed.Load() {
		return h.finish()
	}
	h.batch = append(h.batch, *t)
	if len(h.batch) == cap(h.batch) {
		h.work <- h.batch
		h.batch = <-h.spare
	}
	return nil
}

// finish hands on the last batch and waits for the work: every item added
// is worked through then, or the first error is returned. Once finished,
// it only returns that error again.
func (h *handoff[T]) finish() error {
	if h == nil {
		return nil
	}
	if !h.finished {
		h.finished = true
		if len(h.batch) > 0 && !h.failed.Load() {
			h.work <- h.batch
		}
		h.batch = nil
		close(h.work)
		<-h.done
	}
	return h.err
}
