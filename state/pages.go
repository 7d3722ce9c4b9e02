package state

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"sort"
	"sync"
	"sync/atomic"
	"unsafe"

	bolt "go.etcd.io/bbolt"
)

// A command checks the pages it reaches, not the whole file: opening a
// state file of ten million contacts must not cost a walk of every page
// (seconds) when a night touches ten thousand of them. Each branch and leaf
// page is checked the first time a read or a write reaches it in a view of
// the file, before anything it holds is used or bbolt rewrites it: that it
// is the page it should be (its header names it, of a known type, inside the
// pages the view uses), that its elements lie inside it one after the other
// exactly as bbolt writes them (so a damaged element count or offset, which
// would hide records or show garbage, is found), and that its keys are in
// order, within the page and between its parent's keys. A backfill, which
// reads every record anyway, and any open that finds something amiss, walk
// every page first (walkPages) and check every seal.

// rawPage is a branch or leaf page as bbolt writes it: a 16-byte header
// (id, flags, count, overflow), then 16-byte elements — a branch's (pos,
// ksize, child page), a leaf's (flags, pos, ksize, vsize) — then the keys
// (and values) of the elements, one after the other, in element order.
type rawPage struct {
	b      []byte // the page and its overflow
	branch bool
	count  int
}

// readRawPage takes page id out of the view's bytes, checking its header.
func readRawPage(data []byte, id, hwm, ps uint64) (rawPage, string) {
	if id < 2 || id >= hwm {
		return rawPage{}, fmt.Sprintf("page %d is outside the %d pages the last transaction uses", id, hwm)
	}
	return rawPageAt(data[id*ps:], id, hwm, ps)
}

// rawPageAt is page id, whose bytes b begins with, its header checked: b
// holds the page and its overflow whenever the header says they lie
// inside the pages in use.
func rawPageAt(b []byte, id, hwm, ps uint64) (rawPage, string) {
	hdr := b[:pageHeaderSize]
	le := binary.LittleEndian
	overflow := uint64(le.Uint32(hdr[12:]))
	flags := le.Uint16(hdr[8:])
	switch {
	case le.Uint64(hdr) != id:
		return rawPage{}, fmt.Sprintf("page %d names itself page %d", id, le.Uint64(hdr))
	case flags != branchPage && flags != leafPage:
		return rawPage{}, fmt.Sprintf("page %d has unexpected type/flags %#x", id, flags)
	case id+overflow >= hwm:
		return rawPage{}, fmt.Sprintf("page %d runs past the %d pages the last transaction uses", id, hwm)
	case (overflow+1)*ps > uint64(len(b)):
		return rawPage{}, fmt.Sprintf("page %d runs past the %d bytes read of it", id, len(b))
	}
	p := rawPage{b: b[:(overflow+1)*ps], branch: flags == branchPage, count: int(le.Uint16(hdr[10:]))}
	return p, ""
}

// check checks the page's elements: inside it, one after the other from
// the end of the element array, keys in increasing order and within [lo, hi)
// (nil: no bound), a branch's children inside the pages in use; in a sealed
// file, every value of a leaf with its seal (so that a flipped bit in a key
// next to the one looked up is found, not read past), and a bucket held
// inline in a leaf the same way. bucket names the page's bucket for a
// message.
func (p rawPage) check(id, hwm uint64, lo, hi []byte, sealed bool, bucket string) string {
	le := binary.LittleEndian
	end := uint64(pageHeaderSize) + uint64(p.count)*elemSize
	if end > uint64(len(p.b)) {
		return fmt.Sprintf("page %d holds %d elements, more than fit in it", id, p.count)
	}
	next := end
	var prev []byte
	for i := range p.count {
		at := uint64(pageHeaderSize) + uint64(i)*elemSize
		e := p.b[at : at+elemSize]
		var from, to uint64
		if p.branch {
			from = at + uint64(le.Uint32(e))
			to = from + uint64(le.Uint32(e[4:]))
			if c := le.Uint64(e[8:]); c < 2 || c >= hwm {
				return fmt.Sprintf("page %d: element %d names child page %d, outside the %d pages in use", id, i, c, hwm)
			}
		} else {
			from = at + uint64(le.Uint32(e[4:]))
			to = from + uint64(le.Uint32(e[8:])) + uint64(le.Uint32(e[12:]))
		}
		if from != next || to > uint64(len(p.b)) || to < from {
			return fmt.Sprintf("page %d: element %d does not lie where bbolt writes it (a damaged element or element count)", id, i)
		}
		next = to
		key := p.key(i)
		switch {
		case i == 0 && lo != nil && bytes.Compare(key, lo) < 0, i > 0 && bytes.Compare(prev, key) >= 0:
			return fmt.Sprintf("page %d: key %d is out of order", id, i)
		case hi != nil && bytes.Compare(key, hi) >= 0:
			return fmt.Sprintf("page %d: key %d is not below its parent's next key", id, i)
		}
		if !p.branch {
			v, flags := p.value(i)
			switch {
			case flags&bucketLeaf != 0 && len(v) < 16:
				return fmt.Sprintf("page %d: bucket %q is cut short", id, printable(key))
			case flags&bucketLeaf != 0 && le.Uint64(v) == 0:
				// an inline bucket: a page of its own inside the value
				in := rawPage{b: v[16:]}
				if len(in.b) < pageHeaderSize || le.Uint16(in.b[8:]) != leafPage {
					return fmt.Sprintf("page %d: the bucket %q held in it is damaged", id, printable(key))
				}
				in.count = int(le.Uint16(in.b[10:]))
				if problem := in.check(id, hwm, nil, nil, sealed, string(key)); problem != "" {
					return problem
				}
			case flags&bucketLeaf == 0 && sealed:
				// A leaf element's key and value lie one after the other:
				// their seal is one checksum over both (unseal, two calls
				// and the same sum, says what is wrong).
				if n := len(v); n < sealSize || v[n-sealSize] != sealMarker ||
					le.Uint32(v[n-4:]) != crc32.Checksum(p.b[from:to-sealSize], castagnoli) {
					if _, err := unseal(bucket, key, v); err != nil {
						return err.Error()
					}
				}
			}
		}
		prev = key
	}
	return ""
}

// mappedAt is the n bytes of the mapping at addr (bbolt's Info gives its
// address as a uintptr; reading it back as a pointer keeps vet's
// unsafe-pointer rule).
func mappedAt[N int64 | uint64 | uintptr](addr uintptr, n N) []byte {
	return unsafe.Slice(*(**byte)(unsafe.Pointer(&addr)), n)
}

// id is the page's id, from its header (checked: readRawPage).
func (p rawPage) id() uint64 { return binary.LittleEndian.Uint64(p.b) }

// key is element i's key (the page is checked).
func (p rawPage) key(i int) []byte {
	le := binary.LittleEndian
	at := pageHeaderSize + i*elemSize
	e := p.b[at : at+elemSize]
	if p.branch {
		from := at + int(le.Uint32(e))
		return p.b[from : from+int(le.Uint32(e[4:]))]
	}
	from := at + int(le.Uint32(e[4:]))
	return p.b[from : from+int(le.Uint32(e[8:]))]
}

// value is a leaf element's value and flags.
func (p rawPage) value(i int) ([]byte, uint32) {
	le := binary.LittleEndian
	at := pageHeaderSize + i*elemSize
	e := p.b[at : at+elemSize]
	from := at + int(le.Uint32(e[4:])) + int(le.Uint32(e[8:]))
	return p.b[from : from+int(le.Uint32(e[12:]))], le.Uint32(e)
}

// child is a branch element's page.
func (p rawPage) child(i int) uint64 {
	at := pageHeaderSize + i*elemSize
	return binary.LittleEndian.Uint64(p.b[at+8:])
}

// search is the element bbolt descends into for key (nil: the first).
func (p rawPage) search(key []byte) int {
	if key == nil {
		return 0
	}
	exact := false
	i := sort.Search(p.count, func(i int) bool {
		c := bytes.Compare(p.key(i), key)
		exact = exact || c == 0
		return c >= 0
	})
	if !exact && i > 0 {
		i--
	}
	return i
}

// pageGuard remembers the pages found sound, so each is checked once
// however often it is reached: per view of the file (a transaction id) in a
// reader, for the whole life of the store in a writer (carry).
//
// A writer holds the file alone (the run lock; readers share bbolt's lock
// but only read), so between two of its views only its own transactions
// write the file. bbolt never writes over a page a committed view reaches
// (copy on write: a page changed goes to a new page, the old one is freed
// and handed out again only after), so a page id reached in a later view
// holds either what it held when it was checked, or what this process
// wrote there since: trusted as every page of a file this process created
// is (the guard is off for those). A reader keeps a set per view: its file
// is written by another process (which waits for readers to close first).
type pageGuard struct {
	// off: every page was walked when the file was opened.
	off bool
	// sealed: the file's values carry seals, checked with their pages.
	sealed bool
	// carry: pages found sound stay so across views (a writer's store).
	carry bool
	// mu guards the map (the sets it holds are read and set atomically).
	mu    sync.Mutex
	sound map[int]*soundPages
}

// pageSet is a set of page ids, one bit each: a night at ten million
// contacts reaches tens of thousands of pages of half a million, and a
// walk all of them, which a map of them held many times over.
type pageSet struct{ bits []uint64 }

func (s *pageSet) has(id uint64) bool {
	return id/64 < uint64(len(s.bits)) && s.bits[id/64]&(1<<(id%64)) != 0
}

func (s *pageSet) add(id uint64) {
	if n := id/64 + 1; n > uint64(len(s.bits)) {
		s.bits = append(s.bits, make([]uint64, n-uint64(len(s.bits)))...)
	}
	s.bits[id/64] |= 1 << (id % 64)
}

// soundPages is the pages of a view found sound, a pageSet whose words are
// read and set atomically, sized once for the pages of the view that made
// it: every lookup reads it per page it passes, a night's deciding and
// committing goroutines side by side, and a mutex taken twice per page
// cost more than the bit.
type soundPages struct{ bits []atomic.Uint64 }

// newSoundPages is a set for pages [0, pages) holding what from (nil:
// none) holds.
func newSoundPages(pages uint64, from *soundPages) *soundPages {
	s := &soundPages{bits: make([]atomic.Uint64, (pages+63)/64)}
	if from != nil {
		for i := range min(len(from.bits), len(s.bits)) {
			s.bits[i].Store(from.bits[i].Load())
		}
	}
	return s
}

func (s *soundPages) has(id uint64) bool {
	return id/64 < uint64(len(s.bits)) && s.bits[id/64].Load()&(1<<(id%64)) != 0
}

// add puts id in the set; an id past its size is left out (checked again
// when next reached).
func (s *soundPages) add(id uint64) {
	if id/64 < uint64(len(s.bits)) {
		s.bits[id/64].Or(1 << (id % 64))
	}
}

// pageView checks pages of one view. A nil *pageView checks nothing.
type pageView struct {
	g        *pageGuard
	data     []byte
	ps, hwm  uint64
	sound    *soundPages
	rootTree uint64
	// rd, when set, reads the pages of leafOf's descents (a night's
	// lookups) from the file rather than the mapping (pread.go).
	rd *pageReader
}

// pages returns the checker of tx's view (nil when the guard is off or the
// view is empty), having checked the root bucket's pages, which every
// bucket lookup reaches.
func (s *Store) pages(tx *bolt.Tx) *pageView {
	g := s.guard
	if g == nil || g.off || s.db == nil {
		return nil
	}
	base := tx.ID()
	if tx.Writable() {
		base-- // a write transaction reads the pages of the last commit
	}
	info := s.db.Info()
	ps := uint64(info.PageSize)
	hwm := uint64(tx.Size()) / ps
	if hwm < 2 {
		return nil
	}
	// The mapping stays put while tx is open: bbolt maps the file again
	// only inside a commit, under a lock that open transactions hold off.
	data := mappedAt(info.Data, hwm*ps)
	v := &pageView{g: g, data: data, ps: ps, hwm: hwm}
	root, ok := metaRoot(data, ps, uint64(base))
	if !ok {
		// a meta page this view does not use was torn; the other one is it
		m0, m1 := parseMeta(data[:ps]), parseMeta(data[ps:2*ps])
		switch {
		case m0.problem == "" && m0.txid == uint64(base):
			root = m0.root
		case m1.problem == "" && m1.txid == uint64(base):
			root = m1.root
		default:
			return nil
		}
	}
	v.rootTree = root
	key := base
	if g.carry {
		key = 0 // one set for every view (see pageGuard)
	}
	g.mu.Lock()
	if g.sound == nil {
		g.sound = map[int]*soundPages{}
	}
	v.sound = g.sound[key]
	switch {
	case v.sound == nil:
		// Views of a few transactions at most are open at once (a run's
		// next chunk is read while the last one commits).
		for old := range g.sound {
			if old < key-2 {
				delete(g.sound, old)
			}
		}
		v.sound = newSoundPages(hwm, nil)
		g.sound[key] = v.sound
	case uint64(len(v.sound.bits))*64 < hwm:
		// a writer's file grew: a larger copy for this view and the next
		// (a page an older view adds to the old set meanwhile is only
		// checked again)
		v.sound = newSoundPages(hwm, v.sound)
		g.sound[key] = v.sound
	}
	g.mu.Unlock()
	v.span(root, nil, nil, "")
	return v
}

func metaRoot(data []byte, ps, txid uint64) (uint64, bool) {
	for _, at := range []uint64{0, ps} {
		if m := parseMeta(data[at : at+ps]); m.problem == "" && m.txid == txid {
			return m.root, true
		}
	}
	return 0, false
}

// damaged stops whatever reads the view: the package's boundary (view,
// update, Reader) turns it into a *CorruptError.
func (v *pageView) damaged(problem string) {
	panic(damage{problem: problem})
}

// page returns page id of bucket checked (within lo and hi), once per view.
func (v *pageView) page(id uint64, lo, hi []byte, bucket string) rawPage {
	p, problem := readRawPage(v.data, id, v.hwm, v.ps)
	return v.checked(p, problem, id, lo, hi, bucket)
}

// checked is page id as read (problem: what its header says is wrong),
// checked once per view.
func (v *pageView) checked(p rawPage, problem string, id uint64, lo, hi []byte, bucket string) rawPage {
	if problem != "" {
		v.damaged(problem)
	}
	if v.sound.has(id) {
		return p
	}
	if problem := p.check(id, v.hwm, lo, hi, v.g.sealed, bucket); problem != "" {
		v.damaged(problem)
	}
	v.sound.add(id)
	return p
}

// leafRange is the key range [lo, hi) of a leaf page checked in a view (a
// nil bound is open). Its keys lie in it, and no key outside it does, so
// a cursor that moves between two keys of the range stays on that page.
type leafRange struct {
	lo, hi []byte
	ok     bool // a leaf was reached
}

// holds says k lies in the range (false when no leaf was reached).
func (r *leafRange) holds(k []byte) bool {
	return r.ok && (r.lo == nil || bytes.Compare(k, r.lo) >= 0) && (r.hi == nil || bytes.Compare(k, r.hi) < 0)
}

// key checks the pages bbolt descends through from a bucket's root to key;
// wide adds, at each level, the pages beside them, which a delete may merge
// into them. A root of 0 is a bucket held inline in its parent's page. It
// returns the range of the leaf reached.
func (v *pageView) key(root uint64, key []byte, wide bool, bucket string) leafRange {
	return v.descend(root, func(p rawPage) int { return p.search(key) }, wide, bucket)
}

// last checks the pages bbolt descends through from a bucket's root to its
// last key, and returns the range of the leaf reached.
func (v *pageView) last(root uint64, bucket string) leafRange {
	return v.descend(root, func(p rawPage) int { return p.count - 1 }, false, bucket)
}

// leafOf is key without wide, which also hands over the leaf page reached
// (checked; none when the range is not ok). With a reader (rd), the pages
// are its copies: the leaf and the range are valid until the next leafOf.
func (v *pageView) leafOf(root uint64, key []byte, bucket string) (rawPage, leafRange) {
	if v == nil {
		return rawPage{}, leafRange{}
	}
	return v.descendTo(root, func(p rawPage) int { return p.search(key) }, false, bucket, v.rd)
}

// descend is key and last: pick says which element of a branch page the
// descent goes through.
func (v *pageView) descend(root uint64, pick func(rawPage) int, wide bool, bucket string) leafRange {
	_, r := v.descendTo(root, pick, wide, bucket, nil)
	return r
}

// descendTo is descend, returning the leaf page reached too, its pages read
// through rd when set (else from the mapping).
func (v *pageView) descendTo(root uint64, pick func(rawPage) int, wide bool, bucket string, rd *pageReader) (rawPage, leafRange) {
	if v == nil || root == 0 {
		return rawPage{}, leafRange{}
	}
	var lo, hi []byte
	id := root
	for depth := 0; ; depth++ {
		if depth > 64 {
			v.damaged(fmt.Sprintf("page %d lies deeper than any tree of this size", id))
		}
		var p rawPage
		if rd != nil {
			p = v.pageRead(rd, depth, id, lo, hi, bucket)
		} else {
			p = v.page(id, lo, hi, bucket)
		}
		if !p.branch {
			return p, leafRange{lo: lo, hi: hi, ok: true}
		}
		if p.count == 0 {
			v.damaged(fmt.Sprintf("page %d is a branch without elements", id))
		}
		i := pick(p)
		if wide {
			for _, j := range []int{i - 1, i + 1} {
				if j >= 0 && j < p.count {
					v.page(p.child(j), p.key(j), v.bound(p, j, hi), bucket)
				}
			}
		}
		lo, hi = p.key(i), v.bound(p, i, hi)
		id = p.child(i)
	}
}

// leavesOf appends to dst the ids of the committed leaves that keys (in
// key order) fall in, in the tree at root, reading its branches only: the
// leaves are left for the caller to map in at once (quietFaults.populate)
// instead of faulting them in one by one. The tree's depth is learnt on
// the way to keys[0], which reads that one leaf; a branch where the
// descent finds another shape ends the list (it is advice: a write
// transaction reads the pages it needs in any case).
func (v *pageView) leavesOf(root uint64, keys [][]byte, bucket string, dst []uint64) []uint64 {
	if v == nil || root == 0 || len(keys) == 0 {
		return dst
	}
	depth := 0 // the branches above the leaves
	count := func(p rawPage) int { depth++; return p.search(keys[0]) }
	if _, r := v.descendTo(root, count, false, bucket, nil); !r.ok {
		return dst
	}
	for _, k := range keys {
		id := root
		var lo, hi []byte
		for range depth {
			p := v.page(id, lo, hi, bucket)
			if !p.branch || p.count == 0 {
				return dst
			}
			i := p.search(k)
			lo, hi = p.key(i), v.bound(p, i, hi)
			id = p.child(i)
		}
		if n := len(dst); n == 0 || dst[n-1] != id {
			dst = append(dst, id)
		}
	}
	return dst
}

// bound is the upper bound of branch element i's child.
func (v *pageView) bound(p rawPage, i int, hi []byte) []byte {
	if i+1 < p.count {
		return p.key(i + 1)
	}
	return hi
}

// span checks every page of a bucket whose keys may fall in [from, to]
// (nil: open-ended): every page a cursor passes between two keys. It does
// not go into the buckets the pages name.
func (v *pageView) span(root uint64, from, to []byte, bucket string) {
	v.spanTo(root, from, to, nil, bucket)
}

// spanTo is span, returning the range of the leaf checked that holds at
// (none: no leaf of the span holds it).
func (v *pageView) spanTo(root uint64, from, to, at []byte, bucket string) leafRange {
	var r leafRange
	if v == nil || root == 0 {
		return r
	}
	v.spanAt(root, nil, nil, from, to, 0, bucket, at, &r)
	return r
}

func (v *pageView) spanAt(id uint64, lo, hi, from, to []byte, depth int, bucket string, at []byte, r *leafRange) {
	if depth > 64 {
		v.damaged(fmt.Sprintf("page %d lies deeper than any tree of this size", id))
	}
	p := v.page(id, lo, hi, bucket)
	if !p.branch {
		if at != nil && !r.ok {
			if c := (leafRange{lo: lo, hi: hi, ok: true}); c.holds(at) {
				*r = c
			}
		}
		return
	}
	first, last := p.search(from), p.count-1
	if to != nil {
		last = p.search(to)
	}
	for i := first; i <= last; i++ {
		v.spanAt(p.child(i), p.key(i), v.bound(p, i, hi), from, to, depth+1, bucket, at, r)
	}
}
