package state

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"slices"

	bolt "go.etcd.io/bbolt"

	"optsync/extract"
)

// A packed bucket holds its sorted entries several to a bbolt key: bbolt's
// cost is per key (a put descends from the root, a key takes a leaf element
// and its header), so a million small index entries cost far more as a
// million keys than as some thousands of blocks of them.
//
// A block is one bbolt key, the key of its first entry, whose value is its
// entries in key order, sealed as one value (seal.go: a flipped bit in any
// of them, or in the block's key, is found when the block is read):
//
//	entry: uvarint(shared) uvarint(len(suffix)) suffix uvarint(len(value)) value
//
// an entry's key being the first shared bytes of the key before it (the
// block's key, for its first entry) followed by suffix. Blocks never
// overlap: every entry of a block lies below the next block's key, so the
// block that may hold a key is the last one whose key is not above it
// (the floor block).
//
// A write changes one block at a time, read, changed and written back
// (split when it grows past blockCap, dropped when emptied, moved when its
// first entry goes). A whole write (a backfill's, a rebuild's) cuts the
// entries into blocks where the content says (blockPacker), so a rewrite of
// what the bucket holds already makes the same blocks and writes none.

// blockCap bounds a block's entries, in bytes. A night rewrites the block of
// every entry it changes: small enough that this stays cheap, big enough
// that a block holds tens of index entries (a few hundred bytes to a few
// KB, well inside a 4 KB bbolt page so that no block spills to an overflow
// page). Chosen by measurement: see README (state layout).
const blockCap = 1024

// blockEntry is one entry of a block being rewritten; k and v may point
// into the transaction's memory.
type blockEntry struct{ k, v []byte }

// appendEntry appends the entry (k, v) after prev (the entry before it, or
// the block's key for its first entry).
func appendEntry(dst, prev, k, v []byte) []byte {
	shared := 0
	for shared < len(prev) && shared < len(k) && prev[shared] == k[shared] {
		shared++
	}
	dst = binary.AppendUvarint(dst, uint64(shared))
	dst = binary.AppendUvarint(dst, uint64(len(k)-shared))
	dst = append(dst, k[shared:]...)
	dst = binary.AppendUvarint(dst, uint64(len(v)))
	return append(dst, v...)
}

// blockReader walks the entries of one block, checking its shape as it
// goes: any block the file holds was written whole by this code and sealed,
// so a shape that does not decode is damage the seal did not see (or a
// key written by an older layout), reported as such.
type blockReader struct {
	name   string
	bk, p  []byte // block key, its entries
	off    int
	n      int    // entries read
	k      []byte // the current entry's key (own buffer)
	v      []byte
	failed string
	// page is the leaf page of the block lookup read (leaf.go).
	page uint64
}

func (r *blockReader) reset(name string, bk, p []byte) {
	r.name, r.bk, r.p, r.off, r.n, r.failed = name, bk, p, 0, 0, ""
	r.k = append(r.k[:0], bk...)
	r.v = nil
}

// next moves to the block's next entry (false: none left, or the block is
// malformed: failed says how).
func (r *blockReader) next() bool {
	if r.off == len(r.p) {
		if r.n == 0 {
			r.failed = "holds no entry"
		}
		return false
	}
	shared, n := binary.Uvarint(r.p[r.off:])
	if n <= 0 || shared > uint64(len(r.k)) {
		r.failed = fmt.Sprintf("entry %d does not decode", r.n)
		return false
	}
	r.off += n
	sl, n := binary.Uvarint(r.p[r.off:])
	if n <= 0 || sl > uint64(len(r.p)-r.off-n) {
		r.failed = fmt.Sprintf("entry %d does not decode", r.n)
		return false
	}
	r.off += n
	// keys increase: the suffix is not empty, and after a shorter shared
	// part it begins above the byte of the key before it
	if r.n > 0 && (sl == 0 || int(shared) < len(r.k) && r.p[r.off] <= r.k[shared]) {
		r.failed = fmt.Sprintf("entry %d is not above the entry before it", r.n)
		return false
	}
	r.k = append(r.k[:shared], r.p[r.off:r.off+int(sl)]...)
	r.off += int(sl)
	vl, n := binary.Uvarint(r.p[r.off:])
	if n <= 0 || vl > uint64(len(r.p)-r.off-n) {
		r.failed = fmt.Sprintf("entry %d does not decode", r.n)
		return false
	}
	r.off += n
	r.v = r.p[r.off : r.off+int(vl) : r.off+int(vl)]
	r.off += int(vl)
	if r.n == 0 && !bytes.Equal(r.k, r.bk) {
		r.failed = "does not begin with the entry it is keyed by"
		return false
	}
	r.n++
	return true
}

// must is next for a block read to be used: a malformed block is damage.
func (r *blockReader) must() bool {
	if r.next() {
		return true
	}
	if r.failed != "" {
		panic(damage{fmt.Sprintf("block %q of %s %s", printable(r.bk), r.name, r.failed)})
	}
	return false
}

// entries decodes the whole block: keys copied into *arena (nil: each
// its own copy), values pointing into the block.
func (r *blockReader) entries(dst []blockEntry, arena *[]byte) []blockEntry {
	for r.must() {
		if arena == nil {
			dst = append(dst, blockEntry{bytes.Clone(r.k), r.v})
			continue
		}
		if cap(*arena)-len(*arena) < len(r.k) {
			// a new arena: the keys taken keep the old one
			*arena = make([]byte, 0, max(16<<10, len(r.k)))
		}
		from := len(*arena)
		*arena = append(*arena, r.k...)
		dst = append(dst, blockEntry{(*arena)[from:len(*arena):len(*arena)], r.v})
	}
	return dst
}

// packed is a bucket of blocks, read and written through its seals and page
// checks (vbucket). sc, when set, is the memory its writes use (nil: their
// own).
type packed struct {
	x  vbucket
	sc *packScratch
	// fresh says no write to the bucket came before apply in this
	// transaction (floorInLeaf).
	fresh bool
}

func (s *Store) packed(b *bolt.Bucket, name string) packed { return packed{x: s.vb(b, name)} }

// packScratch is the memory a packed bucket's writes use, kept from one
// transaction to the next (a batch's: Batch.scratch) rather than allocated
// per block and per chunk: a backfill writes a million records, some 70K
// blocks, sixty-odd transactions of them.
type packScratch struct {
	es, out    []blockEntry
	arena, buf []byte
	seals      sealArena
	// ops and order are the index and log writes' lists of changes.
	ops   []blockOp
	order []int
	// floors counts the blocks apply found on their committed leaf
	// (floorInLeaf; tests).
	floors int
}

// sealArena holds sealed copies of the values a transaction puts, which
// bbolt keeps (not copies) until the transaction commits: reset only once
// it has.
type sealArena struct {
	chunks [][]byte
	cur    int
}

const sealArenaChunk = 256 << 10

// seal is a copy of payload sealed under k, in the arena.
func (a *sealArena) seal(k, payload []byte) []byte {
	n := len(payload) + sealSize
	if n > sealArenaChunk/4 {
		return sealed(k, payload)
	}
	for ; a.cur < len(a.chunks); a.cur++ {
		if c := a.chunks[a.cur]; cap(c)-len(c) >= n {
			break
		}
	}
	if a.cur == len(a.chunks) {
		a.chunks = append(a.chunks, make([]byte, 0, sealArenaChunk))
	}
	c := a.chunks[a.cur]
	from := len(c)
	c = appendSeal(append(c, payload...), from, k)
	a.chunks[a.cur] = c
	return c[from:len(c):len(c)]
}

// reset makes the arena's memory free for the next transaction: call it
// once the one that used it has ended.
func (a *sealArena) reset() {
	for i := range a.chunks {
		a.chunks[i] = a.chunks[i][:0]
	}
	a.cur = 0
}

// put stores (k, v) sealed: a copy in the scratch's arena, else its own.
// leaf is the range of a leaf checked in this view (putSealedIn; none: the
// zero range).
func (p packed) put(leaf leafRange, k, v []byte) error {
	if p.sc == nil || !p.x.sealed {
		// Put seals a copy (or refuses: a file from before the seals)
		return p.x.Put(k, v)
	}
	return p.x.putSealedIn(leaf, k, p.sc.seals.seal(k, v))
}

// Cursor walks the entries in key order.
func (p packed) Cursor() *pcursor { return &pcursor{c: p.x.Cursor(), r: blockReader{name: p.x.name}} }

// pcursor is a cursor over a packed bucket's entries. The key it returns is
// its own, valid until it moves; a value points into the transaction's
// memory.
type pcursor struct {
	c *vcursor
	r blockReader
}

// enter starts block (bk, v) (nil: none left) and returns its first entry.
func (c *pcursor) enter(bk, v []byte) ([]byte, []byte) {
	if bk == nil {
		c.r.bk = nil
		return nil, nil
	}
	if c.r.bk != nil {
		c.r.below(bk)
	}
	c.r.reset(c.r.name, bk, v)
	return c.entry()
}

// below checks that the block read so far lies below the next block's key
// bk, as a block's entries do.
func (r *blockReader) below(bk []byte) {
	if bytes.Compare(r.k, bk) >= 0 {
		panic(damage{fmt.Sprintf("block %q of %s holds %q, not below the next block's key %q", printable(r.bk), r.name, printable(r.k), printable(bk))})
	}
}

func (c *pcursor) entry() ([]byte, []byte) {
	if !c.r.must() {
		return c.enter(c.c.Next())
	}
	return c.r.k, c.r.v
}

// First is the first entry (nil: none).
func (c *pcursor) First() ([]byte, []byte) {
	c.r.bk = nil
	return c.enter(c.c.First())
}

// Next is the entry after the one returned last.
func (c *pcursor) Next() ([]byte, []byte) {
	if c.r.bk == nil {
		return nil, nil
	}
	return c.entry()
}

// Seek is the first entry at or after k.
func (c *pcursor) Seek(k []byte) ([]byte, []byte) {
	c.r.bk = nil
	bk, v := c.c.Seek(k)
	if bk == nil || !bytes.Equal(bk, k) {
		// the floor block, when there is one, may hold k
		if fk, fv := c.c.Prev(); fk != nil {
			bk, v = fk, fv
		} else {
			bk, v = c.c.First()
		}
	}
	ek, ev := c.enter(bk, v)
	for ek != nil && bytes.Compare(ek, k) < 0 {
		ek, ev = c.Next()
	}
	return ek, ev
}

// blockOp is one change of a packed bucket: put (k, v), or delete k.
type blockOp struct {
	k, v []byte
	put  bool
}

// apply makes the changes ops (in key order, each key once) in a write
// transaction, one read-modify-write per block they touch.
func (p packed) apply(ops []blockOp) error {
	var r blockReader
	sc := p.sc
	if sc == nil {
		sc = &packScratch{}
	}
	es, out, arena, buf := sc.es[:0], sc.out[:0], sc.arena[:0], sc.buf[:0]
	defer func() {
		// (the arena's keys are bbolt's own copies once put)
		sc.es, sc.out, sc.arena, sc.buf = es[:0], out[:0], arena[:0], buf[:0]
	}()
	for i := 0; i < len(ops); {
		// The block that may hold ops[i]: its floor block, else the first
		// (whose key then moves down to ops[i]'s), else none (empty); and
		// the block after it (next: ops from its key on go there), which
		// a seek that does not land on a block's key has found already.
		c := p.x.Cursor()
		k := ops[i].k
		bk, v, next, leaf, found := p.floorInLeaf(c, k)
		if found {
			sc.floors++
		} else {
			next = nil
			switch sk, sv := c.Seek(k); {
			case sk != nil && bytes.Equal(sk, k):
				bk, v = sk, sv
			case sk != nil:
				next = bytes.Clone(sk)
				if bk, v = c.Prev(); bk == nil {
					bk, v = c.First() // no floor: the first block, sk
					next = nil
				}
			default:
				bk, v = c.Prev() // past the last block's key
			}
			bk = bytes.Clone(bk)
			// the checked leaf that holds bk, before a step on to next
			// moves the cursor (perhaps onto the next leaf): bk's block
			// is put back there
			leaf = c.leaf
			if bk != nil && next == nil {
				if nk, _ := c.Next(); nk != nil {
					next = bytes.Clone(nk)
				}
			}
		}
		es = es[:0]
		if bk != nil {
			r.reset(p.x.name, bk, v)
			es = r.entries(es, &arena)
		}
		j := i
		for j < len(ops) && (next == nil || bytes.Compare(ops[j].k, next) < 0) {
			j++
		}
		out = mergeOps(slices.Grow(out[:0], len(es)+j-i), es, ops[i:j])
		if err := p.rewrite(leaf, bk, out, next == nil, &buf); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// floorInLeaf finds k's floor block (bk, its value v, the checked leaf
// holding it) and the key after it (next; nil: none) on the committed leaf
// k falls in, without a step onto the leaf after it. Past the last block
// of its leaf, the slow way's seek landed on the next leaf's first block
// and stepped back: at 10 M contacts a fault on a page the night did not
// otherwise touch, for a third of the blocks a night rewrites. found is
// false when it cannot tell (the slow way then).
//
// Only for a fresh apply: no write to the bucket came before it in the
// transaction, and its groups go in key order, each taking the ops below
// its next. Then the only keys the bucket's nodes hold that the committed
// leaf does not are those the groups before put, all below the key after
// their own floor block (their next), which is at most k's floor on the
// committed leaf: so that floor is there still, a seek to it lands on it,
// the keys after it up to the leaf's end are the committed ones but for
// any those groups put between it and k (the steps below take them), and
// when it is the leaf's last, the bucket's next key is at least the
// leaf's upper bound (hi), which the ops up to it take as next.
func (p packed) floorInLeaf(c *vcursor, k []byte) (bk, v, next []byte, leaf leafRange, found bool) {
	if !p.fresh || p.x.pv == nil {
		return nil, nil, nil, leafRange{}, false
	}
	page, r := p.x.pv.leafOf(p.x.root, k, p.x.name)
	if !r.ok || page.count == 0 {
		return nil, nil, nil, leafRange{}, false
	}
	i := page.search(k)
	hint := page.key(i)
	if bytes.Compare(hint, k) > 0 {
		return nil, nil, nil, leafRange{}, false // below the leaf's first block
	}
	// (a copy: hint points into the page, which the reader's buffer or
	// the seek's check may reuse)
	hint = bytes.Clone(hint)
	sk, sv := c.Seek(hint)
	if sk == nil || !bytes.Equal(sk, hint) {
		return nil, nil, nil, leafRange{}, false
	}
	bk, v, leaf = hint, sv, c.leaf
	if i == page.count-1 {
		return bk, v, bytes.Clone(r.hi), leaf, true
	}
	for {
		nk, nv := c.Next()
		if nk == nil || bytes.Compare(nk, k) > 0 {
			return bk, v, bytes.Clone(nk), leaf, true
		}
		bk, v, leaf = bytes.Clone(nk), nv, c.leaf
	}
}

// mergeOps is es (sorted) with ops (sorted) made.
func mergeOps(dst, es []blockEntry, ops []blockOp) []blockEntry {
	i := 0
	for _, op := range ops {
		for i < len(es) && bytes.Compare(es[i].k, op.k) < 0 {
			dst = append(dst, es[i])
			i++
		}
		if i < len(es) && bytes.Equal(es[i].k, op.k) {
			i++ // replaced or deleted
		}
		if op.put {
			dst = append(dst, blockEntry{op.k, op.v})
		}
	}
	return append(dst, es[i:]...)
}

// rewrite replaces block bk (nil: none) by blocks holding es (leaf: the
// range of a leaf checked in this view, as put takes it): none when es
// is empty, one when they fit in blockCap, else as many of about equal size
// as keep each within it — or, for the last block (last), as full as each
// takes: what is appended at the end (a backfill's records) stays
// there.
func (p packed) rewrite(leaf leafRange, bk []byte, es []blockEntry, last bool, scratch *[]byte) error {
	if bk != nil && (len(es) == 0 || !bytes.Equal(es[0].k, bk)) {
		if err := p.x.Delete(bk); err != nil {
			return err
		}
	}
	if len(es) == 0 {
		return nil
	}
	// Most often (a night's change) the entries fit in one block: encoded
	// once. Encoding stops once they do not: a backfill's chunk of
	// appended records (thousands of them) would otherwise be encoded
	// whole into a buffer of megabytes only to be cut again below.
	buf := (*scratch)[:0]
	prev := es[0].k
	fit := 0
	for _, e := range es {
		if len(buf) > blockCap {
			break
		}
		buf = appendEntry(buf, prev, e.k, e.v)
		prev = e.k
		fit++
	}
	*scratch = buf
	if fit == len(es) && (len(buf) <= blockCap || len(es) == 1) {
		return p.put(leaf, es[0].k, buf)
	}
	target := blockCap
	if !last {
		size := len(buf)
		for i := fit; i < len(es); i++ {
			size += entrySize(es[i-1].k, es[i].k, es[i].v)
		}
		parts := (size + blockCap - 1) / blockCap
		if parts > 1 {
			// cut into blocks three quarters full: room for the next inserts
			parts = (size*4 + blockCap*3 - 1) / (blockCap * 3)
		}
		target = (size + parts - 1) / parts
	}
	for from := 0; from < len(es); {
		first := es[from].k
		buf = buf[:0]
		prev = first
		to := from
		for to < len(es) {
			n := len(buf)
			buf = appendEntry(buf, prev, es[to].k, es[to].v)
			if to > from && (len(buf) > blockCap || n >= target) {
				buf = buf[:n]
				break
			}
			prev = es[to].k
			to++
		}
		if err := p.put(leaf, first, buf); err != nil {
			return err
		}
		from = to
	}
	return nil
}

// entrySize is the encoded size of entry (k, v) after prev.
func entrySize(prev, k, v []byte) int {
	var tmp [3 * binary.MaxVarintLen64]byte
	shared := 0
	for shared < len(prev) && shared < len(k) && prev[shared] == k[shared] {
		shared++
	}
	n := len(binary.AppendUvarint(tmp[:0], uint64(shared)))
	n += len(binary.AppendUvarint(tmp[:0], uint64(len(k)-shared)))
	n += len(binary.AppendUvarint(tmp[:0], uint64(len(v))))
	return n + len(k) - shared + len(v)
}

// blockPacker cuts a stream of entries in key order into blocks for a whole
// write. Where a block ends depends only on the entries since the block
// began: after an entry whose key's hash says so, once the block holds a
// quarter of blockCap, or before an entry that would take it past
// blockCap. So a stream that matches what a bucket holds, from a block's
// start on, cuts the same blocks again, whatever came before it.
type blockPacker struct {
	first, prev []byte
	buf         []byte
	// emit takes a finished block: key and entries, valid until emit
	// returns.
	emit func(bk, entries []byte) error
}

// add appends entry (k, v); keys must increase (one seen twice is kept
// once, as a put of the same key would).
func (b *blockPacker) add(k, v []byte) error {
	if len(b.buf) > 0 {
		switch c := bytes.Compare(k, b.prev); {
		case c == 0:
			return nil
		case c < 0:
			return fmt.Errorf("packing blocks: key %q comes after %q", printable(k), printable(b.prev))
		}
	}
	n := len(b.buf)
	if n > 0 && n+entrySize(b.prev, k, v) > blockCap {
		if err := b.flush(); err != nil {
			return err
		}
		n = 0
	}
	if n == 0 {
		b.first = append(b.first[:0], k...)
		b.prev = append(b.prev[:0], k...)
	}
	b.buf = appendEntry(b.buf, b.prev, k, v)
	b.prev = append(b.prev[:0], k...)
	if e := len(b.buf) - n; len(b.buf) >= blockCap/4 && int(crc32.Checksum(k, castagnoli)%(blockCap/2)) < e {
		return b.flush()
	}
	return nil
}

// flush ends the block being filled (none: nothing).
func (b *blockPacker) flush() error {
	if len(b.buf) == 0 {
		return nil
	}
	err := b.emit(b.first, b.buf)
	b.buf = b.buf[:0]
	return err
}

// ForEach calls fn with every entry, in key order.
func (p packed) ForEach(fn func(k, v []byte) error) error {
	c := p.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if err := fn(k, v); err != nil {
			return err
		}
	}
	return nil
}

// Get is the value of entry k (nil: none), pointing into the
// transaction's memory.
func (p packed) Get(k []byte) []byte {
	ek, v := p.Cursor().Seek(k)
	if ek == nil || !bytes.Equal(ek, k) {
		return nil
	}
	if v == nil {
		v = []byte{}
	}
	return v
}

// forget drops the records of ids (some perhaps not stored), counting and
// indexing the change.
func (s *Store) forget(tx *bolt.Tx, ids []extract.ID, c *counts, ops *indexOps) error {
	vc := s.records(tx.Bucket(bucketContacts))
	ids = slices.Clone(ids)
	slices.SortFunc(ids, extract.ID.Compare)
	ids = slices.Compact(ids)
	dels := make([]blockOp, 0, len(ids))
	for _, id := range ids {
		old := vc.Get(id[:])
		if old == nil {
			continue
		}
		if err := c.change(old, nil); err != nil {
			return fmt.Errorf("contact %s: %w", id, err)
		}
		if err := ops.changeValues(id, old, nil); err != nil {
			return fmt.Errorf("contact %s: %w", id, err)
		}
		dels = append(dels, blockOp{k: id[:]})
	}
	return vc.apply(dels)
}

// entryCursor walks a bucket's entries in key order, values opened.
type entryCursor interface {
	First() ([]byte, []byte)
	Next() ([]byte, []byte)
	Seek(k []byte) ([]byte, []byte)
}

// recordBucket is the contacts bucket in the file's layout: packed (schema
// 9 on), or one key per record (before, read as it is by readers; a run
// rewrites such a file whole first). Every reader of the records goes
// through it.
type recordBucket struct {
	p    packed
	flat bool
}

func (s *Store) records(b *bolt.Bucket) recordBucket {
	return recordBucket{p: s.packed(b, "contacts"), flat: s.flatRecords}
}

// Cursor walks the records in id order.
func (r recordBucket) Cursor() entryCursor {
	if r.flat {
		return r.p.x.Cursor()
	}
	return r.p.Cursor()
}

// ForEach calls fn with every record, in id order.
func (r recordBucket) ForEach(fn func(k, v []byte) error) error {
	if r.flat {
		return r.p.x.ForEach(fn)
	}
	return r.p.ForEach(fn)
}

// Get is the record of id k (nil: none).
func (r recordBucket) Get(k []byte) []byte {
	if r.flat {
		return r.p.x.Get(k)
	}
	return r.p.Get(k)
}

// apply writes the changes (in key order, each key once).
func (r recordBucket) apply(ops []blockOp) error {
	if r.flat {
		return fmt.Errorf("state: writing records into a file of one key per record (schema %d or before)", packedSchema-1)
	}
	return r.p.apply(ops)
}
