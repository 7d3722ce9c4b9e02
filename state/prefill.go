package state

import (
	"io"
	"os"

	bolt "go.etcd.io/bbolt"
)

// A backfill's commit writes the state file at its end: bbolt extends the
// file ahead of the pages it is about to write (a hole, AllocSize long,
// 16 MB) and fills it at the next commits. Each page of page cache those
// writes take is new, and on a virtual machine whose balloon hands free
// memory back to its host, a new page costs a fault of the host's when
// first written: the copy of bbolt's pwrite paid it, on the goroutine
// every commit waits for (a 10 M backfill's 1.6 GB: 3.7 s of its 13 s of
// commit under perf were copy_folio_from_iter_atomic). Reading a hole
// puts zeroed pages of cache there, clean (nothing to write back), and a
// write into them then only copies: 1.6 GB written into a new file took
// 1.9 – 3.7 s, 0.23 s after the holes were read (2.1 – 2.3 s, which the
// other core pays while the commit goes on).

// prefillChunk is what one read of a hole takes: small beside the 16 MB
// bbolt extends the file by, large beside a syscall's cost.
const prefillChunk = 256 << 10

// prefill reads the file's part past what was there when it began, as the
// file grows, on a goroutine of its own: grown tells it the file may have
// grown (after a commit); stop ends it and waits for it.
type prefill struct {
	grew chan struct{}
	done chan struct{}
}

// startPrefill begins reading f from offset from (the end of the pages in
// use) to its end, and again whenever grown is called; nil (whose methods
// do nothing) when there is no f.
func startPrefill(f *os.File, from int64) *prefill {
	if f == nil {
		return nil
	}
	p := &prefill{grew: make(chan struct{}, 1), done: make(chan struct{})}
	p.grew <- struct{}{} // the hole already there
	go p.run(f, from)
	return p
}

func (p *prefill) run(f *os.File, from int64) {
	defer close(p.done)
	buf := make([]byte, prefillChunk)
	for range p.grew {
		fi, err := f.Stat()
		if err != nil {
			return
		}
		for from < fi.Size() {
			n, err := f.ReadAt(buf[:min(int64(len(buf)), fi.Size()-from)], from)
			from += int64(n)
			if err == io.EOF {
				break // cut short meanwhile: read on when it grows again
			}
			if err != nil {
				return // advice only: the commit's own writes need none of it
			}
		}
	}
}

// grown says the file may have grown: what is new is read when the
// goroutine gets to it (a signal already waiting covers this one).
func (p *prefill) grown() {
	if p == nil {
		return
	}
	select {
	case p.grew <- struct{}{}:
	default:
	}
}

// stop ends the reading and waits for it.
func (p *prefill) stop() {
	if p == nil {
		return
	}
	close(p.grew)
	<-p.done
}

// inUse is where the pages in use end: bbolt's next new page goes there
// (0 when the file cannot be read; the prefill then reads what is there).
func (s *Store) inUse() int64 {
	var n int64
	_ = s.view(func(tx *bolt.Tx) error {
		n = tx.Size()
		return nil
	})
	return n
}
