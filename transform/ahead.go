package transform

import (
	"optsync/extract/spill"
)

// A spilling backfill's entries are joined from both sides' sorted runs,
// merged on the entry feed's goroutine (feed.go): at 10 M contacts 3.4 s
// of the decide phase's CPU, on the goroutine the decisions wait for,
// 0.7 s of it the contacts' merge. The contacts are merged ahead on a
// goroutine of their own instead, in batches. Their records point to
// nothing (a profile's PKey lies in key blocks the join recycles, so the
// profiles are merged where they are read).

// aheadLen is how many records a batch holds; aheadBatches are in flight
// at most.
const (
	aheadLen     = 1024
	aheadBatches = 4
)

// aheadStream reads src ahead, from the first Next on. T must hold no
// pointer to memory src writes again.
type aheadStream[T any] struct {
	src        spill.Stream[T]
	full, free chan *aheadBatch[T]
	quit, done chan struct{}
	cur        *aheadBatch[T]
	i          int
	err        error
	started    bool
	closed     bool
}

// aheadBatch is records read ahead; after them src ended (end), with err.
type aheadBatch[T any] struct {
	items []T
	end   bool
	err   error
}

func readAhead[T any](src spill.Stream[T]) *aheadStream[T] {
	return &aheadStream[T]{src: src}
}

func (a *aheadStream[T]) start() {
	a.started = true
	a.full, a.free = make(chan *aheadBatch[T], aheadBatches), make(chan *aheadBatch[T], aheadBatches)
	a.quit, a.done = make(chan struct{}), make(chan struct{})
	for range aheadBatches {
		a.free <- &aheadBatch[T]{items: make([]T, 0, aheadLen)}
	}
	go a.read()
}

func (a *aheadStream[T]) read() {
	defer close(a.done)
	for {
		var b *aheadBatch[T]
		select {
		case b = <-a.free:
		case <-a.quit:
			return
		}
		b.items = b.items[:0]
		for len(b.items) < cap(b.items) {
			t := a.src.Next()
			if t == nil {
				b.end, b.err = true, a.src.Err()
				break
			}
			b.items = append(b.items, *t)
		}
		select {
		case a.full <- b:
		case <-a.quit:
			return
		}
		if b.end {
			return
		}
	}
}

// Next returns the next record (valid until the following call), nil at
// the end or on an error (Err says which).
func (a *aheadStream[T]) Next() *T {
	if a.closed {
		return nil
	}
	if !a.started {
		a.start()
	}
	for {
		if a.cur != nil && a.i < len(a.cur.items) {
			a.i++
			return &a.cur.items[a.i-1]
		}
		if a.cur != nil {
			if a.cur.end {
				a.err = a.cur.err
				return nil
			}
			a.free <- a.cur
		}
		a.cur, a.i = <-a.full, 0
	}
}

func (a *aheadStream[T]) Err() error { return a.err }

// Close stops the reading ahead, waits for it, and closes src; again, it
// does nothing.
func (a *aheadStream[T]) Close() {
	if a.closed {
		return
	}
	a.closed = true
	if a.started {
		close(a.quit)
		<-a.done
	}
	a.src.Close()
}
