package state

import (
	"sync"

	"optsync/transform"
)

// The commit's deciding goroutine is the one the commit waits for (the
// writing one waits on bbolt's syncs), and reading the entries back was
// part of its work: 0.2 s of a 1 M backfill's commit, 3.5 s of a 10 M one,
// whose entries come from a file and are decoded whole. They are read and
// decoded ahead instead, on a goroutine of their own, in batches handed
// over in order: what the decider takes is what reader gives, and an error
// comes where reader would have returned it.

// dirtyAheadLen is how many entries a batch holds; dirtyAheadBatches are
// in flight at most (an entry is under 200 bytes: some 200 KB).
const (
	dirtyAheadLen     = 256
	dirtyAheadBatches = 4
)

// dirtyBatch is entries read ahead: es[:n], then the end (last) or the
// error reading stopped at.
type dirtyBatch struct {
	es   [dirtyAheadLen]transform.Entry
	n    int
	last bool
	err  error
}

// readerAhead is reader with its entries read on a goroutine of its own.
// stop ends that goroutine and waits for it (at once when the entries ran
// out: it no longer reads the rows held, so Close may let go of them);
// call it before Close, whatever happened.
func (s *Dirty) readerAhead() (next func(*transform.Entry) (bool, error), stop func(), err error) {
	read, err := s.reader()
	if err != nil {
		return nil, nil, err
	}
	full, empty := make(chan *dirtyBatch, dirtyAheadBatches), make(chan *dirtyBatch, dirtyAheadBatches)
	quit, done := make(chan struct{}), make(chan struct{})
	for range dirtyAheadBatches {
		empty <- new(dirtyBatch)
	}
	go func() {
		defer close(done)
		for {
			var b *dirtyBatch
			select {
			case b = <-empty:
			case <-quit:
				return
			}
			b.n, b.last, b.err = 0, false, nil
			for b.n < len(b.es) {
				more, err := read(&b.es[b.n])
				if err != nil {
					b.err = err
					break
				}
				if !more {
					b.last = true
					break
				}
				b.n++
			}
			select {
			case full <- b:
			case <-quit:
				return
			}
			if b.last || b.err != nil {
				return
			}
		}
	}()
	var cur *dirtyBatch
	i := 0
	next = func(e *transform.Entry) (bool, error) {
		for cur == nil || i == cur.n {
			if cur != nil {
				if cur.err != nil {
					return false, cur.err
				}
				if cur.last {
					<-done
					return false, nil
				}
				empty <- cur // room: at most dirtyAheadBatches exist
			}
			cur, i = <-full, 0
		}
		*e = cur.es[i]
		i++
		return true, nil
	}
	var once sync.Once
	stop = func() {
		once.Do(func() { close(quit) })
		<-done
	}
	return next, stop, nil
}
