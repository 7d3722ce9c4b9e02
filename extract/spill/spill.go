// Package spill sorts more records than memory holds: records are kept in
// memory up to a budget, and beyond it sorted in runs written to disk and
// merged (an external merge sort). The files have no name: they are
// created unlinked (O_TMPFILE, or removed at once), so a process killed at
// any moment leaves none behind, and no other process can open them.
package spill

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/bits"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
)

// TempFile creates a file in dir that has no name (mode 0600), for a
// process's scratch data: it is gone when the process closes it or dies.
func TempFile(dir string) (*os.File, error) {
	if f, err := unnamedFile(dir); f != nil || err != nil {
		return f, err
	}
	// A file system without O_TMPFILE: a name for an instant, one that
	// RemoveLeftovers knows (a kill in that instant leaves it behind).
	f, err := os.CreateTemp(dir, leftoverPrefix+"*")
	if err != nil {
		return nil, fmt.Errorf("spill file in %s: %w", dir, err)
	}
	if err := os.Remove(f.Name()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		f.Close()
		return nil, fmt.Errorf("spill file in %s: %w", dir, err)
	}
	return f, nil
}

// leftoverPrefix starts the name a spill file has for an instant where
// the file system cannot create one without a name.
const leftoverPrefix = ".optsync-spill-"

// RemoveLeftovers removes from dir the spill files a process killed in
// the instant they had a name left behind, and returns their names. No
// run reads them: a spill file is read only through the descriptor that
// wrote it.
func RemoveLeftovers(dir string) ([]string, error) {
	found, err := filepath.Glob(filepath.Join(dir, leftoverPrefix+"*"))
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, name := range found {
		if err := os.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return removed, fmt.Errorf("removing a spill file left by a killed run: %w", err)
		}
		removed = append(removed, filepath.Base(name))
	}
	return removed, nil
}

// Codec says how a sorter keeps records of type T: their order, their
// encoding on disk, and what one costs in memory.
type Codec[T any] struct {
	// Compare orders records; records that compare equal keep the order
	// in which they were added.
	Compare func(a, b *T) int
	// Append encodes a record; Decode reads one back from what Append
	// wrote (b is exactly one record, and may be reused after).
	Append func(dst []byte, t *T) []byte
	Decode func(b []byte, t *T) error
	// Size is what a record holds in memory beyond the slice element
	// itself (strings it points to, say); nil: nothing.
	Size func(t *T) int
	// Stable keeps records that compare equal in the order added. (Every
	// sort is stable now; kept for what callers say they rely on.)
	Stable bool
	// Key, when set, is a key whose order agrees with Compare (Key(a) <
	// Key(b) only when a sorts before b): the sort compares keys held in
	// a compact array of its own and calls Compare only on ties, so most
	// comparisons touch neither the records nor what they point to.
	Key func(t *T) uint64
	// Touch, when set, reads what a record points to that Append reads
	// (any byte of it will do) and returns it: a run is written in sorted
	// order, the records and what they point to read in no order, and a
	// batch's reads asked for at once wait for memory once, not once each.
	Touch func(t *T) uint64
}

// PrefixKey is a Key for records ordered by a string first: its first 8
// bytes, big-endian, padded with zero bytes.
func PrefixKey(s string) uint64 {
	var b [8]byte
	copy(b[:], s)
	return binary.BigEndian.Uint64(b[:])
}

// Sorter collects records and hands them back in order. Records are held
// in memory while they fit in Budget bytes; past it, each Budget's worth is
// sorted and written to a run file in Dir, and the runs are merged. The
// zero Budget keeps everything in memory.
type Sorter[T any] struct {
	codec  Codec[T]
	budget int64
	dir    string
	elem   int64

	items  []T
	sorted bool
	held   int64
	runs   []*os.File
	// buf is the buffer a run is encoded into (writeRun), kept for the
	// next run.
	buf []byte
	// shared are the buffers a run's chunks are encoded into when two
	// goroutines share its encoding (writeRunShared), kept for the next.
	shared [][]byte
	// flat says a T holds no pointers: the records a spill wrote are
	// written over by the next, not cleared for the collector first (a
	// pass over the whole budget's memory).
	flat bool
	// want is how many records Reserve announced.
	want int
	// touched keeps what writeRun's reads ahead read, so that they are
	// not left out as unused.
	touched atomic.Uint64
	// Spilled counts the runs written, and Bytes their size; Added the
	// records added; Grew the times the records held were copied to a
	// larger array, for want of room.
	Spilled int
	Bytes   int64
	Added   int
	Grew    int
}

// NewSorter makes a sorter that spills into dir beyond budget bytes.
func NewSorter[T any](codec Codec[T], budget int64, dir string, elemSize int) *Sorter[T] {
	return &Sorter[T]{codec: codec, budget: budget, dir: dir, elem: int64(elemSize), flat: !hasPointers(reflect.TypeFor[T]())}
}

// Codec is the sorter's codec.
func (s *Sorter[T]) Codec() Codec[T] { return s.codec }

// Add keeps a copy of t.
func (s *Sorter[T]) Add(t *T) error {
	if s.items == nil {
		s.items = make([]T, 0, s.first(t))
	}
	if len(s.items) == cap(s.items) && s.budget > 0 {
		s.grow()
	}
	s.items = append(s.items, *t)
	s.Added++
	s.sorted = false
	s.held += s.elem
	if s.codec.Size != nil {
		// the copy's size, not t's: t handed to a func value would
		// escape, and every caller's record would be allocated on the
		// heap (one allocation a record)
		s.held += int64(s.codec.Size(&s.items[len(s.items)-1]))
	}
	if s.budget > 0 && (s.held >= s.budget || len(s.items) >= maxRun) {
		return s.spill()
	}
	return nil
}

// first is the room the first record, t, is added to: the records Reserve
// announced, as many as the budget holds of records like t (what it points
// to counted), so that the records are never copied to a larger array;
// unannounced, a few.
func (s *Sorter[T]) first(t *T) int {
	fits := math.MaxInt
	if s.budget > 0 {
		per := s.elem
		if s.codec.Size != nil {
			per += int64(s.codec.Size(t))
		}
		fits = int(s.budget/max(per, 1)) + 1
		fits += fits / 64 // the records after may point to more
	}
	if s.want > 0 {
		return min(s.want, fits)
	}
	if s.budget > 0 {
		return min(int(s.budget/max(s.elem, 1)), 1<<16)
	}
	return 0
}

// grow makes room for more records, within what the budget holds: twice
// the room, or as many as the records so far say the budget holds (what
// each points to counted) if fewer, or all those Reserve announced at
// once. Twice the room from a million records up held a quarter more than
// the budget (the room beyond the spill's record), and every step of the
// doubling is memory new to the process, and copied.
func (s *Sorter[T]) grow() {
	n := min(2*cap(s.items)+1, int(s.budget/max(s.elem, 1))+1)
	if len(s.items) >= estimateAfter {
		per := max(s.held/int64(len(s.items)), 1)
		fits := len(s.items) + int((s.budget-s.held)/per) + 1
		fits += fits / 64 // the records after may point to more
		if s.want > len(s.items) {
			n = s.want
		}
		n = min(n, fits)
	}
	if n > cap(s.items) {
		s.Grew++
		// exactly n (slices.Grow rounds up by as much as a quarter)
		items := make([]T, len(s.items), n)
		copy(items, s.items)
		s.items = items
	}
}

// estimateAfter is how many records a sorter holds before it reckons from
// them how many its budget holds.
const estimateAfter = 1 << 12

// Reserve announces n records to come (those held included): room is made
// for as many of them as the budget holds at once, where a slice that
// doubles as it grows allocates (and copies) the same records again at
// every step. Announced before the first record, they are made room for
// with it; later, once a few more are in. A reader announces again as it
// learns more of its input: the last announcement counts.
func (s *Sorter[T]) Reserve(n int) { s.want = n }

// InMemory returns the records, sorted, when none was spilled: a caller
// may then work on them in place (and hand the result to FromSlice), where
// a stream would hold a second copy.
func (s *Sorter[T]) InMemory() ([]T, bool) {
	if len(s.runs) > 0 {
		return nil, false
	}
	s.sortItems()
	return s.items, true
}

// FromSlice makes a sorter that holds items (in memory, not copied),
// spilling as any other would once they pass the budget.
func FromSlice[T any](codec Codec[T], budget int64, dir string, elemSize int, items []T) *Sorter[T] {
	s := NewSorter(codec, budget, dir, elemSize)
	s.items = items
	for i := range items {
		s.held += s.elem
		if codec.Size != nil {
			s.held += int64(codec.Size(&items[i]))
		}
	}
	return s
}

// Len is the number of records held in memory (not those spilled).
func (s *Sorter[T]) Len() int { return len(s.items) }

// spill sorts what memory holds and writes it as a run.
func (s *Sorter[T]) spill() error {
	f, err := TempFile(s.dir)
	if err != nil {
		return err
	}
	ents := newRunEnts(len(s.items))
	ways := 1
	if len(s.items) >= parallelFrom {
		ways = 2
	}
	s.order(ents.ents, ways)
	n, err := s.writeRun(f, ents.places(), ways)
	ents.free()
	if err != nil {
		f.Close()
		return fmt.Errorf("writing a sorted run to %s: %w", s.dir, err)
	}
	s.runs = append(s.runs, f)
	s.Spilled++
	s.Bytes += n
	if !s.flat {
		clear(s.items) // let go of what the records point to
	}
	s.items = s.items[:0]
	s.sorted = false
	s.held = 0
	return nil
}

// sortItems sorts the records held, stably. The records are large and
// point elsewhere (strings): a sort that moved them at every swap and
// compared them through pointers (which escape to the heap, two
// allocations a comparison) took most of a backfill. What is sorted is a
// compact array of (key, place); the records then move to their places.
func (s *Sorter[T]) sortItems() {
	if s.sorted {
		return
	}
	s.sorted = true
	items := s.items
	if len(items) < 2 {
		return
	}
	ents := make([]ent, len(items))
	s.order(ents, 1)
	// items[k] is to hold what items[ents[k].at] holds now. The keys are
	// done with: ents[p].key becomes where the record at p goes.
	for k := range ents {
		ents[ents[k].at].key = uint64(k)
	}
	// Each place in turn takes its record by a swap, and the record it
	// held goes where that one was. Following the permutation's cycles
	// moved each record once, but each move waited for the one before
	// (where to read next was what had just been read): a cache miss at a
	// time, over half of the sort. The swaps' reads are known ahead, so
	// the processor fetches several at once.
	for k := range ents {
		a := ents[k].at
		if a == int64(k) {
			continue
		}
		items[k], items[a] = items[a], items[k]
		d := ents[k].key // where the record now at a goes
		ents[d].at = a
		ents[a].key = d
	}
}

// order puts the records held in sorted order into ents (one for each
// record), as their places (ents[k].at is the k-th record's), the records
// themselves not moved; stable. ways goroutines share the work of a
// large sort (scatterByKey).
func (s *Sorter[T]) order(ents []ent, ways int) []ent {
	items := s.items
	compare := s.codec.Compare
	order := func(a, b ent) int {
		if a.key != b.key {
			if a.key < b.key {
				return -1
			}
			return 1
		}
		if c := compare(&items[a.at], &items[b.at]); c != 0 {
			return c
		}
		return cmp.Compare(a.at, b.at) // stable: the order added
	}
	sort := func(part []ent) { slices.SortFunc(part, order) }
	if s.codec.Key == nil {
		for i := range items {
			ents[i] = ent{at: int64(i)}
		}
		sort(ents)
		return ents
	}
	if len(items) <= smallBucket {
		for i := range items {
			ents[i] = ent{key: s.codec.Key(&items[i]), at: int64(i)}
		}
		bucketByKey(ents, sort)
		return ents
	}
	scatterByKey(items, s.codec.Key, ents, sort, ways)
	return ents
}

// scatterByKey does bucketByKey's first pass as the entries are made:
// the keys are counted in one pass over the records, then each entry is
// written straight to its bucket in a second (the records read in order
// twice, the entries written to 256 places that each move on in order).
// bucketByKey's first pass over all the entries swapped each into its
// bucket at random, one miss after another, most of a large run's sort.
// The buckets are then sorted as bucketByKey sorts them. With ways 2, two
// goroutines each count and place half the records (the first half's
// entries first in each bucket, as one pass would place them) and sort
// half the buckets: the order is the same.
func scatterByKey[T any](items []T, key func(*T) uint64, ents []ent, sort func([]ent), ways int) {
	ways = max(min(ways, 2), 1)
	// the bytes of every key, counted at each of the eight places: which
	// place the first pass sorts by is known only once every key is seen
	var counts [2][8][256]uint32
	var ors, ands [2]uint64
	half := func(w int) []T { return items[len(items)*w/ways : len(items)*(w+1)/ways] }
	inParallel(ways, func(w int) {
		ors[w], ands[w] = countKeys(half(w), key, &counts[w])
	})
	or, and := ors[0]|ors[ways-1], ands[0]&ands[ways-1]
	if or == and {
		for i := range items {
			ents[i] = ent{key: or, at: int64(i)}
		}
		sort(ents) // one key: Compare decides
		return
	}
	shift := uint(63-bits.LeadingZeros64(or^and)) / 8 * 8
	var start [257]int
	var next [2][256]int
	for d := range 256 {
		n := int(counts[0][shift/8][d])
		if ways == 2 {
			n += int(counts[1][shift/8][d])
		}
		start[d+1] = start[d] + n
		next[0][d] = start[d]
		next[1][d] = start[d] + int(counts[0][shift/8][d])
	}
	inParallel(ways, func(w int) {
		at := len(items) * w / ways
		part, next := half(w), &next[w]
		for i := range part {
			k := key(&part[i])
			d := byte(k >> shift)
			ents[next[d]] = ent{key: k, at: int64(at + i)}
			next[d]++
		}
	})
	// the buckets in two groups of about as many entries
	split := 256
	if ways == 2 {
		split = 0
		for split < 256 && start[split+1] <= len(ents)/2 {
			split++
		}
	}
	inParallel(ways, func(w int) {
		from, to := 0, split
		if w == 1 {
			from, to = split, 256
		}
		for d := from; d < to; d++ {
			bucketByKey(ents[start[d]:start[d+1]], sort)
		}
	})
}

// countKeys counts the bytes of the keys of items at each of the eight
// places into counts, and returns the keys' or and and.
func countKeys[T any](items []T, key func(*T) uint64, counts *[8][256]uint32) (or, and uint64) {
	or, and = 0, ^uint64(0)
	for i := range items {
		k := key(&items[i])
		or |= k
		and &= k
		counts[0][byte(k)]++
		counts[1][byte(k>>8)]++
		counts[2][byte(k>>16)]++
		counts[3][byte(k>>24)]++
		counts[4][byte(k>>32)]++
		counts[5][byte(k>>40)]++
		counts[6][byte(k>>48)]++
		counts[7][byte(k>>56)]++
	}
	return or, and
}

// ent is a record's sort key and its place among the records.
type ent struct {
	key uint64
	at  int64 // a place: packed ones need 64 bits on every platform
}

// bucketByKey orders ents, in place, by their keys (an American flag
// sort: by the highest byte in which the keys differ, one pass to count
// and one to move, then each bucket again by its next byte), and hands
// each run of entries it cannot tell apart to sort (a run of a few,
// or of one key: Compare decides). Sorting a million entries by
// comparisons spent most of its time in them; after two or three passes a
// bucket holds a handful. In place: a sort holds no more memory than
// before (a run on disk is as large as memory_budget allows).
func bucketByKey(ents []ent, sort func([]ent)) {
	if len(ents) <= smallBucket {
		if len(ents) > 1 {
			sort(ents)
		}
		return
	}
	or, and := uint64(0), ^uint64(0)
	for i := range ents {
		or |= ents[i].key
		and &= ents[i].key
	}
	if or == and {
		sort(ents) // one key: Compare decides
		return
	}
	shift := uint(63-bits.LeadingZeros64(or^and)) / 8 * 8
	var start, next [257]int
	for i := range ents {
		start[int(byte(ents[i].key>>shift))+1]++
	}
	for d := 1; d <= 256; d++ {
		start[d] += start[d-1]
	}
	next = start
	for d := range 256 {
		for next[d] < start[d+1] {
			e := ents[next[d]]
			for {
				to := byte(e.key >> shift)
				if int(to) == d {
					break
				}
				ents[next[to]], e = e, ents[next[to]]
				next[to]++
			}
			ents[next[d]] = e
			next[d]++
		}
	}
	for d := range 256 {
		bucketByKey(ents[start[d]:start[d+1]], sort)
	}
}

// smallBucket is the most entries a bucket has that is sorted by
// comparisons rather than bucketed again.
const smallBucket = 48

// ReadOnce reads f, a spill file read once from where it stands to its
// end, and gives the file system the pages behind the read as it goes
// (every few megabytes): what was read is never read again. A spill file's
// pages are otherwise held, dirty, until it is closed at the end of its
// merge, and a backfill past memory_budget writes gigabytes of them
// (sorted runs, the commit's entries) besides the state file; past the
// kernel's dirty limits every write waits for the disk. Given back, they
// are not written out at all, and their memory serves the spills after.
func ReadOnce(f *os.File) io.Reader {
	off, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return f // nothing given back
	}
	return &readOnce{f: f, fd: int(f.Fd()), read: off, freed: off}
}

type readOnce struct {
	f           *os.File
	fd          int
	read, freed int64
	cannot      bool // the file system does not punch holes
}

// freeEvery is how much is read before it is given back.
const freeEvery = 8 << 20

func (r *readOnce) Read(p []byte) (int, error) {
	n, err := r.f.Read(p)
	r.read += int64(n)
	if r.read-r.freed >= freeEvery && !r.cannot {
		// The caller holds what was read (in its buffer): the file's
		// pages up to here are not needed again. A file system that
		// cannot punch holes keeps them until the file is closed.
		if punchHole(r.fd, r.freed, r.read-r.freed) != nil {
			r.cannot = true
		}
		r.freed = r.read
	}
	return n, err
}

// Stream hands records back one at a time, in order.
type Stream[T any] interface {
	// Next returns the next record (valid until the following call), or
	// nil at the end or on an error (then Err says which).
	Next() *T
	Err() error
	Close()
}

// Sorted ends adding and returns the records in order. In memory when
// nothing was spilled; otherwise what memory holds is spilled too and
// every run is merged.
func (s *Sorter[T]) Sorted() (Stream[T], error) {
	if len(s.runs) == 0 {
		s.sortItems()
		return &memStream[T]{items: s.items}, nil
	}
	if len(s.items) > 0 {
		if err := s.spillRest(); err != nil {
			return nil, err
		}
	}
	s.items = nil
	m := &mergeStream[T]{codec: s.codec}
	buffer := runBufferOf(s.budget, len(s.runs))
	for _, f := range s.runs {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return nil, fmt.Errorf("reading a sorted run back: %w", err)
		}
		r := &runReader[T]{f: f, src: ReadOnce(f), buf: make([]byte, buffer), codec: s.codec}
		if r.live = r.advance(); !r.live {
			if r.err != nil {
				return nil, r.err
			}
			f.Close()
		}
		m.runs = append(m.runs, r)
	}
	s.runs = nil
	m.tree = make([]int, len(m.runs))
	if len(m.runs) > 0 {
		m.tree[0] = m.play(1)
	}
	return m, nil
}

// Close lets go of whatever the sorter still holds (its runs included).
func (s *Sorter[T]) Close() {
	if s == nil { // none was needed
		return
	}
	for _, f := range s.runs {
		f.Close()
	}
	s.runs, s.items = nil, nil
}

// Held streams items held in memory, already in order, as they are.
func Held[T any](items []T) Stream[T] { return &memStream[T]{items: items} }

type memStream[T any] struct {
	items []T
	i     int
}

func (m *memStream[T]) Next() *T {
	if m.i >= len(m.items) {
		return nil
	}
	m.i++
	return &m.items[m.i-1]
}

func (m *memStream[T]) Err() error { return nil }
func (m *memStream[T]) Close()     { m.items = nil }

// runReader reads a run's records back in place, out of a buffer of its
// own: a record is decoded where it lies. Read through a bufio.Reader,
// every record was copied out of its buffer into another first, and its
// length read a byte at a time through an interface call each, a fifth of
// the merge.
type runReader[T any] struct {
	f     *os.File
	src   io.Reader
	codec Codec[T]
	cur   T
	key   uint64 // cur's Key, when the codec has one
	live  bool   // cur is a record: the run is not exhausted
	// buf[pos:end] is read and not yet decoded; eof: src has no more.
	buf      []byte
	pos, end int
	eof      bool
	err      error
}

// runBuffer is how much of a run a reader holds at once, at most; at
// least minRunBuffer.
const (
	runBuffer    = 256 << 10
	minRunBuffer = 16 << 10
)

// runBufferOf is a run reader's buffer when a sort of the given budget
// merges n runs: the readers hold a quarter of the budget at most, down to
// minRunBuffer each. A small budget past which much is sorted makes many
// runs, and their buffers at the most held several times the budget.
func runBufferOf(budget int64, n int) int {
	if budget <= 0 || n == 0 {
		return runBuffer
	}
	return int(min(max(budget/4/int64(n), minRunBuffer), runBuffer))
}

// need makes n bytes at least stand unread in the buffer, reading on as
// needed; false when the run ends first or a read fails (then r.err says
// so).
func (r *runReader[T]) need(n int) bool {
	for r.end-r.pos < n {
		if r.eof {
			return false
		}
		if r.pos > 0 {
			r.end = copy(r.buf, r.buf[r.pos:r.end])
			r.pos = 0
		}
		if n > len(r.buf) {
			r.buf = append(r.buf[:r.end], make([]byte, n-r.end)...)
		}
		m, err := r.src.Read(r.buf[r.end:])
		r.end += m
		if errors.Is(err, io.EOF) {
			r.eof = true
		} else if err != nil {
			r.err = fmt.Errorf("reading a sorted run back: %w", err)
			return false
		}
	}
	return true
}

func (r *runReader[T]) advance() bool {
	if !r.need(binary.MaxVarintLen64) && (r.err != nil || r.pos == r.end) {
		return false // a read failed, or the run ended after its last record
	}
	l, n := binary.Uvarint(r.buf[r.pos:r.end])
	var err error
	switch {
	case n == 0:
		err = io.ErrUnexpectedEOF
	case n < 0 || l > math.MaxInt32:
		err = errors.New("record length out of range")
	default:
		r.pos += n
		if !r.need(int(l)) {
			if r.err != nil {
				return false
			}
			err = io.ErrUnexpectedEOF
			break
		}
		var t T
		r.cur = t
		err = r.codec.Decode(r.buf[r.pos:r.pos+int(l)], &r.cur)
		r.pos += int(l)
	}
	if err != nil {
		r.err = fmt.Errorf("reading a sorted run back: %w", err)
		return false
	}
	if r.codec.Key != nil {
		r.key = r.codec.Key(&r.cur)
	}
	return true
}

// mergeStream merges the runs through a tournament's tree of losers: the
// record that comes next is the last winner's successor played up its
// path alone, one comparison a level (a heap's sift-down makes two, each
// through an interface), and runs compare by their keys first, calling
// Compare on ties only. The merge was most of a spilling backfill's sort.
type mergeStream[T any] struct {
	codec Codec[T]
	runs  []*runReader[T] // in the order written: earlier runs hold earlier additions
	// tree[0] is the run whose record comes next; tree[1:] are the
	// losers at the inner nodes of a binary tree whose leaves, at
	// len(runs)+i, are the runs.
	tree []int
	out  T
	err  error
	once sync.Once
}

// before says run a's record comes before run b's; an exhausted run comes
// after every other, records that compare equal in the runs' order.
func (m *mergeStream[T]) before(a, b int) bool {
	ra, rb := m.runs[a], m.runs[b]
	if !ra.live || !rb.live {
		return ra.live
	}
	if m.codec.Key != nil && ra.key != rb.key {
		return ra.key < rb.key
	}
	if c := m.codec.Compare(&ra.cur, &rb.cur); c != 0 {
		return c < 0
	}
	return a < b
}

// play fills the losers below node and returns its winner.
func (m *mergeStream[T]) play(node int) int {
	if node >= len(m.runs) {
		return node - len(m.runs)
	}
	a, b := m.play(2*node), m.play(2*node+1)
	if m.before(b, a) {
		a, b = b, a
	}
	m.tree[node] = b
	return a
}

func (m *mergeStream[T]) Next() *T {
	if m.err != nil || len(m.runs) == 0 {
		return nil
	}
	w := m.tree[0]
	top := m.runs[w]
	if !top.live {
		return nil // every run is exhausted
	}
	m.out = top.cur
	if top.live = top.advance(); !top.live {
		if top.err != nil {
			m.err = top.err
		}
		top.f.Close()
	}
	for t := (w + len(m.runs)) / 2; t > 0; t /= 2 {
		if m.before(m.tree[t], w) {
			m.tree[t], w = w, m.tree[t]
		}
	}
	m.tree[0] = w
	return &m.out
}

func (m *mergeStream[T]) Err() error { return m.err }

func (m *mergeStream[T]) Close() {
	m.once.Do(func() {
		for _, r := range m.runs {
			if r.live {
				r.f.Close()
			}
		}
		m.runs = nil
	})
}
