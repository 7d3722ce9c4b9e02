package spill

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"os"
	"slices"
	"sync"
)

// Packed sorts as a Sorter does, but writes its runs on a goroutine of
// their own while the records after them are added, and holds them
// encoded. Its budget is held in two halves, one filling while the other
// is sorted and written: a Sorter stops adding while it writes a run, and
// the caller (the merge by PKey and its rule, feeding the sort by contact)
// waited on it with the second core idle. A half holds its records encoded
// as a run holds them (Codec.Append), one after another, with a sort entry
// each, not as records. The sort by contact of a spilling backfill's
// profiles was half of its identify phase's CPU, most of it on the writing
// goroutine: records written in sorted order were each read at random,
// and so was the PKey each pointed to (copied in PKey order, as the rule
// kept it), then encoded. Encoded as they come (where the PKey was just
// read), a run is written by copying each record's bytes, read once, in
// order; and a record encoded is smaller than the record and its PKey, so
// a half holds more.
type Packed[T any] struct {
	codec  Codec[T]
	budget int64 // a half's
	dir    string
	// tie makes the comparison of two records whose keys are equal (one
	// for each goroutine that sorts): as the codec's Compare would order
	// them decoded.
	tie    func() func(a, b []byte) int
	halves [2]*packedHalf
	cur    int
	// runs are the runs written, in the order written (earlier runs hold
	// earlier additions).
	runs    []*os.File
	writing chan packedRun
	buf     []byte // a record encoded, before it is placed
	hdr     [binary.MaxVarintLen64]byte
	// Handed counts the halves handed to be written, Written those whose
	// runs are on disk; Spilled the runs, Bytes their size, Added the
	// records added.
	Handed, Written int
	Spilled         int
	Bytes           int64
	Added           int
}

// packedHalf holds records encoded: recs holds each as a run does (its
// length, then its bytes), ents their keys and where each starts.
type packedHalf struct {
	recs []byte
	ents []ent
}

// PackedOf makes a Packed of s, an empty sorter: its codec, whose Key is
// required, folder and budget, halved; tie orders two encoded records
// whose keys are equal.
func PackedOf[T any](s *Sorter[T], tie func() func(a, b []byte) int) *Packed[T] {
	half := s.budget / 2
	if s.budget > 0 {
		half = max(half, 1)
	}
	return &Packed[T]{codec: s.codec, budget: half, dir: s.dir, tie: tie, halves: [2]*packedHalf{{}, {}}}
}

// entSize is what a record's sort entry holds in memory.
const entSize = 16

// Add encodes t and keeps it. When it does not fit beside the records the
// filling half holds, that half is handed to be written (once the other
// half's write is done) and t starts the other.
func (p *Packed[T]) Add(t *T) error {
	p.buf = p.codec.Append(p.buf[:0], t)
	k := binary.PutUvarint(p.hdr[:], uint64(len(p.buf)))
	h := p.halves[p.cur]
	if h.recs == nil {
		p.room(h)
	}
	if p.budget > 0 && len(h.ents) > 0 && (len(h.recs)+k+len(p.buf) > cap(h.recs) || len(h.ents) == cap(h.ents)) {
		if err := p.hand(); err != nil {
			return err
		}
		if h = p.halves[p.cur]; h.recs == nil {
			p.room(h)
		}
	}
	start := len(h.recs)
	h.recs = append(append(h.recs, p.hdr[:k]...), p.buf...) // grows only for a record alone past a half
	h.ents = append(h.ents, ent{key: p.codec.Key(t), at: start})
	p.Added++
	return nil
}

// room makes h's arrays, once, so that neither is copied to grow, and a
// half is full when either is: together nine tenths of a half's budget,
// the records seven tenths, their entries two (a profile's encoding is
// some three and a half times its entry). Made at once, a large array
// the heap had used before is cleared whole, every page taken: the sorter
// of records this replaced held three quarters of a half so, and the
// PKeys only as they came.
func (p *Packed[T]) room(h *packedHalf) {
	if p.budget <= 0 {
		h.recs = []byte{}
		return
	}
	h.recs = make([]byte, 0, max(p.budget*7/10, 1))
	h.ents = make([]ent, 0, max(p.budget/5/entSize, 1))
}

// hand starts the write of the filling half, once the other's is done,
// and turns to the other.
func (p *Packed[T]) hand() error {
	if err := p.wait(); err != nil {
		return err
	}
	full := p.halves[p.cur]
	done := make(chan packedRun, 1)
	go func() {
		var r packedRun
		r.f, r.n, r.err = p.writeRun(full.recs, full.ents)
		full.recs, full.ents = full.recs[:0], full.ents[:0] // kept for the next fill
		done <- r
	}()
	p.writing = done
	p.cur ^= 1
	p.Handed++
	return nil
}

// packedRun is a run written (f, n bytes), or why not.
type packedRun struct {
	f   *os.File
	n   int64
	err error
}

// wait waits for the write of the half handed last, if any, and takes its
// run.
func (p *Packed[T]) wait() error {
	if p.writing == nil {
		return nil
	}
	r := <-p.writing
	p.writing = nil
	if r.err != nil {
		return r.err
	}
	p.addRun(r.f, r.n)
	p.Written++
	return nil
}

func (p *Packed[T]) addRun(f *os.File, n int64) {
	p.runs = append(p.runs, f)
	p.Spilled++
	p.Bytes += n
}

// writeRun sorts ents (records in recs) and writes them to a new run
// file, in order.
func (p *Packed[T]) writeRun(recs []byte, ents []ent) (*os.File, int64, error) {
	tie := p.tie()
	order := func(a, b ent) int {
		if a.key != b.key {
			if a.key < b.key {
				return -1
			}
			return 1
		}
		if c := tie(packedRec(recs, a.at), packedRec(recs, b.at)); c != 0 {
			return c
		}
		return a.at - b.at // stable: the order added
	}
	bucketByKey(ents, func(part []ent) {
		if len(part) > smallBucket { // records of one key
			slices.SortFunc(part, order)
			return
		}
		// A bucket of a few, by insertion, comparing keys in place: most
		// differ, and a comparison through order was most of the sort.
		for i := 1; i < len(part); i++ {
			e := part[i]
			j := i
			for ; j > 0 && (e.key < part[j-1].key || e.key == part[j-1].key && order(e, part[j-1]) < 0); j-- {
				part[j] = part[j-1]
			}
			part[j] = e
		}
	})
	f, err := TempFile(p.dir)
	if err != nil {
		return nil, 0, err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	var n int64
	for k := range ents {
		at := ents[k].at
		if k+runBatch < len(ents) {
			// ask for a record a batch ahead: its read overlaps the
			// copies before it
			_ = recs[ents[k+runBatch].at]
		}
		l, m := binary.Uvarint(recs[at:])
		if _, err := w.Write(recs[at : at+m+int(l)]); err != nil {
			f.Close()
			return nil, 0, fmt.Errorf("writing a sorted run to %s: %w", p.dir, err)
		}
		n += int64(m) + int64(l)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("writing a sorted run to %s: %w", p.dir, err)
	}
	return f, n, nil
}

// packedRec is the encoding of the record whose length starts at at.
func packedRec(recs []byte, at int) []byte {
	l, m := binary.Uvarint(recs[at:])
	return recs[at+m : at+m+int(l)]
}

// Finish ends adding: once the write under way is done, a Sorter holds
// every run written. The records of the filling half are written as runs
// too (two at once, the first half of them and the second, as spillRest
// does), unless no run was written: then they are decoded (decode, into
// records a caller may keep) and the Sorter holds them in memory, as a
// Sorter within the budget would.
func (p *Packed[T]) Finish(decode func(b []byte, t *T) error) (*Sorter[T], error) {
	if err := p.wait(); err != nil {
		p.Close()
		return nil, err
	}
	h := p.halves[p.cur]
	s := &Sorter[T]{codec: p.codec, budget: 2 * p.budget, dir: p.dir}
	if p.Handed == 0 {
		items := make([]T, len(h.ents))
		for i, e := range h.ents {
			if err := decode(packedRec(h.recs, e.at), &items[i]); err != nil {
				p.Close()
				return nil, fmt.Errorf("reading back a record held: %w", err)
			}
		}
		p.halves = [2]*packedHalf{}
		s.items, s.Added = items, p.Added
		return s, nil
	}
	if err := p.writeRest(h); err != nil {
		p.Close()
		return nil, err
	}
	s.runs, s.Spilled, s.Bytes, s.Added = p.runs, p.Spilled, p.Bytes, p.Added
	p.runs, p.halves = nil, [2]*packedHalf{}
	return s, nil
}

// writeRest writes what h holds as the last runs: two at once when there
// are enough (the first half of the records added, then the second: the
// merge takes equal records from the earlier run first), in that order.
func (p *Packed[T]) writeRest(h *packedHalf) error {
	if len(h.ents) == 0 {
		return nil
	}
	if len(h.ents) < restParts {
		f, n, err := p.writeRun(h.recs, h.ents)
		if err == nil {
			p.addRun(f, n)
		}
		h.recs, h.ents = nil, nil
		return err
	}
	m := len(h.ents) / 2
	var files [2]*os.File
	var sizes [2]int64
	var errs [2]error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		files[1], sizes[1], errs[1] = p.writeRun(h.recs, h.ents[m:])
	}()
	files[0], sizes[0], errs[0] = p.writeRun(h.recs, h.ents[:m])
	wg.Wait()
	for i, f := range files {
		if errs[i] == nil {
			p.addRun(f, sizes[i])
		}
	}
	h.recs, h.ents = nil, nil
	if errs[0] != nil {
		return errs[0]
	}
	return errs[1]
}

// Close lets go of whatever the halves and the runs hold, waiting for a
// write under way.
func (p *Packed[T]) Close() {
	if p.writing != nil {
		if r := <-p.writing; r.f != nil {
			r.f.Close()
		}
		p.writing = nil
	}
	for _, f := range p.runs {
		f.Close()
	}
	p.runs, p.halves = nil, [2]*packedHalf{}
}
