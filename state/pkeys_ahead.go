package state

import (
	"sync"

	"optsync/extract"
	"optsync/extract/spill"
)

// The keys of a PKey index written whole were taken from their sorted
// stream by the commit's deciding goroutine, the one the commit waits for:
// in memory, each PKey sorted lies anywhere in the strings the run read (a
// cache miss per key, 0.17 s of a 1 M commit); spilled, each is merged
// from the runs on disk and decoded (1.9 s of a 10 M one). They are sorted
// and then read ahead on a goroutine of their own instead, in batches whose
// PKeys are copied into one string each, which the decider reads in order.

// pkeysAheadLen is how many keys a batch holds; pkeysAheadBatches are in
// flight at most.
const (
	pkeysAheadLen     = 1024
	pkeysAheadBatches = 4
)

// pkeysBatch is entries of the index read ahead: the ith's PKey is
// keys[ends[i-1]:ends[i]], its contact ids[i], for i < n. After them the
// stream ended (last), or failed (err).
type pkeysBatch struct {
	buf  []byte
	keys string
	ends [pkeysAheadLen]uint32
	ids  [pkeysAheadLen]extract.ID
	n    int
	last bool
	err  error
}

// pkeysAhead is the PKey index's entries, sorted and read ahead beside
// the commit.
type pkeysAhead struct {
	sorted      chan struct{} // closed once sorted
	full, empty chan *pkeysBatch
	quit, done  chan struct{}
	stopOnce    sync.Once
	cur         *pkeysBatch
	i           int
}

// startPKeysAhead sorts the entries and reads them ahead on a goroutine of
// its own; stop ends it.
func startPKeysAhead(sort func() (spill.Stream[PKeyEntry], error)) *pkeysAhead {
	a := &pkeysAhead{sorted: make(chan struct{}), full: make(chan *pkeysBatch, pkeysAheadBatches),
		empty: make(chan *pkeysBatch, pkeysAheadBatches), quit: make(chan struct{}), done: make(chan struct{})}
	for range pkeysAheadBatches {
		a.empty <- new(pkeysBatch)
	}
	go a.read(sort)
	return a
}

func (a *pkeysAhead) read(sort func() (spill.Stream[PKeyEntry], error)) {
	defer close(a.done)
	stream, err := sort()
	close(a.sorted)
	if stream != nil {
		defer stream.Close()
	}
	for {
		var b *pkeysBatch
		select {
		case b = <-a.empty:
		case <-a.quit:
			return
		}
		b.buf, b.n, b.last, b.err = b.buf[:0], 0, false, err
		for b.err == nil && b.n < pkeysAheadLen {
			e := stream.Next()
			if e == nil {
				b.last, b.err = true, stream.Err()
				break
			}
			b.buf = append(b.buf, e.PKey...)
			b.ends[b.n], b.ids[b.n] = uint32(len(b.buf)), e.ID
			b.n++
		}
		// One string a batch: the decider keeps none of them.
		b.keys = string(b.buf)
		select {
		case a.full <- b:
		case <-a.quit:
			return
		}
		if b.last || b.err != nil {
			return
		}
	}
}

// ready says whether the entries are sorted: next no longer waits for the
// sort.
func (a *pkeysAhead) ready() bool {
	select {
	case <-a.sorted:
		return true
	default:
		return false
	}
}

// next is the next entry of the index (ok false: none left, or err).
func (a *pkeysAhead) next() (pkey string, id extract.ID, ok bool, err error) {
	for a.cur == nil || a.i == a.cur.n {
		if b := a.cur; b != nil {
			if b.err != nil || b.last {
				return "", extract.ID{}, false, b.err
			}
			a.empty <- b // room: at most pkeysAheadBatches exist
		}
		a.cur, a.i = <-a.full, 0
	}
	b, i := a.cur, a.i
	a.i++
	from := uint32(0)
	if i > 0 {
		from = b.ends[i-1]
	}
	return b.keys[from:b.ends[i]], b.ids[i], true, nil
}

// stop ends the reading ahead, and waits for it to close its stream.
func (a *pkeysAhead) stop() {
	a.stopOnce.Do(func() { close(a.quit) })
	<-a.done
}
