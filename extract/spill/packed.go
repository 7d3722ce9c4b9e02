package spill

import (
	"bufio"
	"cmp"
	"encoding/binary"
	"fmt"
	"math/bits"
	"os"
	"slices"
)

// Packed sorts as a Sorter does, but writes its runs on a goroutine of
// their own while the records after them are added, and holds them
// encoded. Its budget is held in two halves, one filling while the other
// is sorted and written: a Sorter stops adding while it writes a run, and
// the caller (the merge by PKey and its rule, feeding the sort by contact)
// waited on it with the second core idle. A half holds its records encoded
// as a run holds them (Codec.Append), each after its key, not as records.
// The sort by contact of a spilling backfill's profiles was half of its
// identify phase's CPU, most of it on the writing goroutine: records
// written in sorted order were each read at random, and so was the PKey
// each pointed to (copied in PKey order, as the rule kept it), then
// encoded. Encoded as they come (where the PKey was just read), a run is
// written by copying each record's bytes; and a record encoded is smaller
// than the record and its PKey, so a half holds more.
//
// A half's records lie in buckets by their key's highest byte (packedHalf),
// each bucket in chunks of its own: a run is written a bucket at a time,
// its records sorted and copied where a cache holds them. Held in the
// order added, one after another, a half of a 10 M backfill (some 100 MB)
// was read in sorted order at random, each record a cache and TLB miss
// that reading ahead did not hide, and its entries sorted in one array as
// large: the sort and its writing grew faster than the records (9 x the
// time for 5 x the rows).
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
	// Handed counts the halves handed to be written, Written those whose
	// runs are on disk; Spilled the runs, Bytes their size, Added the
	// records added.
	Handed, Written int
	Spilled         int
	Bytes           int64
	Added           int
}

// packedHalf holds records encoded, each as its key (8 bytes, little
// endian) then as a run holds it (its length, then its bytes), in 256
// buckets by the key's highest byte: a bucket holds chunks (chunks[i] for
// i in buckets[d]), each filled in the order the records came, so that
// the records of one bucket that compare equal lie in the order added.
// The chunks are cut from one array made once (arena); a record too long
// for a chunk has one of its own, counted in used as the chunks are.
type packedHalf struct {
	arena   []byte
	chunk   int // a chunk's size
	next    int // the arena's first chunk not yet taken
	used    int64
	chunks  [][]byte
	buckets [256][]int32
	open    [256]int32 // the chunk a bucket fills, +1 (0: none)
	n       int        // records held
	counts  [256]int   // records held by bucket
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

// keySize is what a record's key takes of a half, before the record.
const keySize = 8

// Chunk sizes: a half is cut into chunks of maxChunk bytes at most (a
// bucket's last chunk is left part empty when the half is handed: 256 of
// them, some 4 MB of a 10 M backfill's 100 MB), into some thousands of
// chunks when the half is smaller (halfChunks), and never below minChunk
// (a chunk holds a few dozen records at least: of 64 bytes, one profile
// each, a small half held half as many as its arena had room for), nor
// past the arena.
const (
	maxChunk   = 32 << 10
	minChunk   = 1 << 10
	halfChunks = 2048
)

// Add encodes t and keeps it. When it does not fit beside the records the
// filling half holds, that half is handed to be written (once the other
// half's write is done) and t starts the other.
func (p *Packed[T]) Add(t *T) error {
	var hdr [keySize + binary.MaxVarintLen64]byte
	p.buf = p.codec.Append(p.buf[:0], t)
	key := p.codec.Key(t)
	binary.LittleEndian.PutUint64(hdr[:], key)
	k := keySize + binary.PutUvarint(hdr[keySize:], uint64(len(p.buf)))
	h := p.halves[p.cur]
	if h.chunk == 0 {
		p.room(h)
	}
	c := h.place(byte(key>>56), k+len(p.buf), p.budget > 0)
	if c == nil {
		if err := p.hand(); err != nil {
			return err
		}
		if h = p.halves[p.cur]; h.chunk == 0 {
			p.room(h)
		}
		c = h.place(byte(key>>56), k+len(p.buf), false) // a record alone past a half goes in still
	}
	*c = append(append(*c, hdr[:k]...), p.buf...)
	p.Added++
	return nil
}

// place returns the chunk of bucket d that a record of size bytes is to
// be appended to, taking a new one as needed; nil when bounded and the
// half, not empty, has no room left for it.
func (h *packedHalf) place(d byte, size int, bounded bool) *[]byte {
	if o := h.open[d]; o > 0 {
		if c := &h.chunks[o-1]; len(*c)+size <= cap(*c) {
			h.n++
			h.counts[d]++
			return c
		}
	}
	take := int64(h.chunk)
	if size > h.chunk {
		take = int64(size)
	}
	if bounded && h.n > 0 && h.used+take > int64(len(h.arena)) {
		return nil
	}
	var c []byte
	switch {
	case size > h.chunk:
		c = make([]byte, 0, size)
	case (h.next+1)*h.chunk <= len(h.arena):
		c = h.arena[h.next*h.chunk : h.next*h.chunk : (h.next+1)*h.chunk]
		h.next++
	default: // no budget, or a record alone past a half
		c = make([]byte, 0, h.chunk)
	}
	h.used += take
	h.chunks = append(h.chunks, c)
	i := int32(len(h.chunks))
	h.buckets[d] = append(h.buckets[d], i-1)
	// a chunk of one record's own closes the bucket's open chunk: what
	// comes after it goes in chunks after it, as added
	h.open[d] = 0
	if size <= h.chunk {
		h.open[d] = i
	}
	h.n++
	h.counts[d]++
	return &h.chunks[i-1]
}

// reset empties h for the next fill, its arena kept.
func (h *packedHalf) reset() {
	h.next, h.used, h.n = 0, 0, 0
	clear(h.chunks)
	h.chunks = h.chunks[:0]
	for d := range h.buckets {
		h.buckets[d] = h.buckets[d][:0]
	}
	h.open, h.counts = [256]int32{}, [256]int{}
}

// room makes h's arena, once, so that it is never copied to grow: seven
// tenths of a half's budget (what a record's key, length and bytes take;
// the chunks' list and the entries a bucket is sorted by are small). The
// records' array and their entries this replaced held nine tenths, but
// the entries filled first: some seven tenths were ever touched, and
// a half now holds more records in as much memory (no entry each).
// Made at once, a large array the heap had used before is cleared whole,
// every page taken: the sorter of records this replaced held three
// quarters of a half so, and the PKeys only as they came.
func (p *Packed[T]) room(h *packedHalf) {
	if p.budget <= 0 {
		h.chunk = maxChunk
		return
	}
	size := max(p.budget*7/10, 1)
	h.chunk = int(min(max(size/halfChunks, minChunk), maxChunk, size))
	h.chunk = 1 << (bits.Len(uint(h.chunk)) - 1) // a power of two
	h.arena = make([]byte, size)
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
		r.f, r.n, r.err = p.writeRun(full, packedAll)
		full.reset() // kept for the next fill
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

// at is where a record lies in a half: its chunk, and where in it.
func packedAt(chunk int32, off int) int64 { return int64(chunk)<<32 | int64(off) }

// rec is the record at at (its length, then its bytes: as a run holds it)
// and its key.
func (h *packedHalf) rec(at int64) (rec []byte, key uint64) {
	c := h.chunks[at>>32][at&(1<<32-1):]
	l, m := binary.Uvarint(c[keySize:])
	return c[keySize : keySize+m+int(l)], binary.LittleEndian.Uint64(c)
}

// packedPos is a place in a half's chunks, in the order a run is written
// in: bucket d's j-th chunk.
type packedPos struct{ d, j int }

// packedAll are the places of every chunk of a half.
var packedAll = [2]packedPos{{0, 0}, {256, 0}}

// writeRun writes the records of h's chunks from span[0] up to span[1] to a
// new run file, in order: a bucket at a time, its records sorted by their
// entries (key, place), each record then copied where it lies.
func (p *Packed[T]) writeRun(h *packedHalf, span [2]packedPos) (*os.File, int64, error) {
	tie := p.tie()
	order := func(a, b ent) int {
		if a.key != b.key {
			if a.key < b.key {
				return -1
			}
			return 1
		}
		ra, _ := h.rec(a.at)
		rb, _ := h.rec(b.at)
		if c := tie(unframeRec(ra), unframeRec(rb)); c != 0 {
			return c
		}
		return cmp.Compare(a.at, b.at) // stable: the order added (chunks are taken in order)
	}
	sort := func(part []ent) {
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
	}
	f, err := TempFile(p.dir)
	if err != nil {
		return nil, 0, err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	var n int64
	var ents []ent
	for d := span[0].d; d < 256 && d <= span[1].d; d++ {
		ents = ents[:0]
		chunks := h.buckets[d]
		if d == span[1].d {
			chunks = chunks[:span[1].j]
		}
		if d == span[0].d {
			chunks = chunks[span[0].j:]
		}
		for _, ci := range chunks {
			c := h.chunks[ci]
			for off := 0; off < len(c); {
				l, m := binary.Uvarint(c[off+keySize:])
				ents = append(ents, ent{key: binary.LittleEndian.Uint64(c[off:]), at: packedAt(ci, off)})
				off += keySize + m + int(l)
			}
		}
		bucketByKey(ents, sort)
		for _, e := range ents {
			r, _ := h.rec(e.at)
			if _, err := w.Write(r); err != nil {
				f.Close()
				return nil, 0, fmt.Errorf("writing a sorted run to %s: %w", p.dir, err)
			}
			n += int64(len(r))
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("writing a sorted run to %s: %w", p.dir, err)
	}
	return f, n, nil
}

// Finish ends adding: once the write under way is done, a Sorter holds
// every run written. The records of the filling half are written as runs
// too (two at once, the buckets of the first half of them and those of
// the second), unless no run was written: then they are decoded (decode,
// into records a caller may keep) and the Sorter holds them in memory, as
// a Sorter within the budget would.
func (p *Packed[T]) Finish(decode func(b []byte, t *T) error) (*Sorter[T], error) {
	if err := p.wait(); err != nil {
		p.Close()
		return nil, err
	}
	h := p.halves[p.cur]
	s := &Sorter[T]{codec: p.codec, budget: 2 * p.budget, dir: p.dir}
	if p.Handed == 0 {
		// a bucket at a time: records that compare equal are in one
		// bucket, in the order added, and the Sorter's sort is stable
		items := make([]T, 0, h.n)
		for d := range h.buckets {
			for _, ci := range h.buckets[d] {
				c := h.chunks[ci]
				for off := 0; off < len(c); {
					r, _ := h.rec(packedAt(ci, off))
					items = append(items, *new(T))
					if err := decode(unframeRec(r), &items[len(items)-1]); err != nil {
						p.Close()
						return nil, fmt.Errorf("reading back a record held: %w", err)
					}
					off += keySize + len(r)
				}
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

// unframeRec is the encoding of a record as a run holds it (its length,
// then its bytes).
func unframeRec(r []byte) []byte {
	_, m := binary.Uvarint(r)
	return r[m:]
}

// writeRest writes what h holds as the last runs: two at once when there
// are enough, the chunks that hold the first half of the records and
// those after. Records that compare equal have one key, so lie in one
// bucket, whose chunks hold them in the order added: those in the first
// run were added first, as the merge takes them.
func (p *Packed[T]) writeRest(h *packedHalf) error {
	if h.n == 0 {
		return nil
	}
	m := h.middle()
	if h.n < restParts || m == packedAll[0] || m == packedAll[1] {
		f, n, err := p.writeRun(h, packedAll)
		if err == nil {
			p.addRun(f, n)
		}
		return err
	}
	var files [2]*os.File
	var sizes [2]int64
	var errs [2]error
	spans := [2][2]packedPos{{packedAll[0], m}, {m, packedAll[1]}}
	inParallel(2, func(w int) { files[w], sizes[w], errs[w] = p.writeRun(h, spans[w]) })
	for i, f := range files {
		if errs[i] == nil {
			p.addRun(f, sizes[i])
		}
	}
	if errs[0] != nil {
		return errs[0]
	}
	return errs[1]
}

// middle is the place of the chunk about half of h's records lie before.
func (h *packedHalf) middle() packedPos {
	held := 0
	for d := range h.buckets {
		if held+h.counts[d] >= h.n/2 {
			// the bucket's chunks hold about as many records each
			j := len(h.buckets[d]) * (h.n/2 - held) / max(h.counts[d], 1)
			if j == len(h.buckets[d]) {
				return packedPos{d + 1, 0}
			}
			return packedPos{d, j}
		}
		held += h.counts[d]
	}
	return packedAll[1]
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
