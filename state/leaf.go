package state

import (
	"bytes"
	"sort"
)

// A night looks up contacts (and the PKeys of its profiles) that lie far
// apart in the file, each with a seek. Through a cursor that was two
// walks down the tree, the page checks' and bbolt's own, and for a key
// whose block is the last of its leaf (about one in four: a leaf holds
// three to four blocks) bbolt's seek lands on the next leaf, whose first
// key the step back to the floor block then walked from the root again,
// faulting in and checking a page the answer did not need. In a read
// view the leaf the checked descent reached is the page bbolt's cursor
// would read (a read transaction sees the pages of one commit, which
// nothing changes while it is open), so the block is taken from it
// directly; a lookup the leaf cannot answer (the floor block lies on the
// leaf before, or entries past the leaf's last block may matter) goes
// through the cursor as before. Every block the cursor would decode to
// answer is decoded and checked the same way (blockReader, below).

// floorIn finds, in a read view with page checks, the element of the leaf
// k's checked descent reaches that is k's floor block (the last key at or
// below k); ok is false when the view cannot say so from that leaf alone.
func (p packed) floorIn(k []byte) (pg rawPage, i int, ok bool) {
	x := p.x
	if x.pv == nil || x.root == 0 || x.b == nil || x.b.Tx().Writable() {
		return rawPage{}, 0, false
	}
	pg, leaf := x.pv.leafOf(x.root, k, x.name)
	if !leaf.ok {
		return rawPage{}, 0, false
	}
	i = sort.Search(pg.count, func(i int) bool { return bytes.Compare(pg.key(i), k) > 0 }) - 1
	return pg, i, i >= 0
}

// enterAt starts r on the block of element i of leaf pg, its value opened
// through its seal as a cursor opens it; false for an element that is not
// a block (a nested bucket: the cursor's way says what is wrong).
func (p packed) enterAt(r *blockReader, pg rawPage, i int) bool {
	v, flags := pg.value(i)
	if flags&bucketLeaf != 0 {
		return false
	}
	bk := pg.key(i)
	r.reset(p.x.name, bk, p.x.open(bk, v))
	return true
}

// nextIn moves r from the block it has read to the one of element i+1,
// when leaf pg holds it, checking the two as a cursor's step does.
func (p packed) nextIn(r *blockReader, pg rawPage, i int) bool {
	if i+1 >= pg.count {
		return false
	}
	r.below(pg.key(i + 1))
	return p.enterAt(r, pg, i+1)
}

// lookup is the value of entry k in a read view (found false: none there),
// read with r; decided is false when the leaf its descent reached cannot
// tell (look it up through a cursor then). A decided lookup leaves the
// leaf's page in r.page: where k is, or would go.
func (p packed) lookup(r *blockReader, k []byte) (v []byte, found, decided bool) {
	pg, i, ok := p.floorIn(k)
	if !ok || !p.enterAt(r, pg, i) {
		return nil, false, false
	}
	r.page = pg.id()
	for {
		for r.must() {
			switch c := bytes.Compare(r.k, k); {
			case c == 0:
				return r.v, true, true
			case c > 0:
				return nil, false, true
			}
		}
		// The floor block ends below k: the next one begins above it
		// (its key), and its first entry is read as a cursor's step
		// reads it.
		if !p.nextIn(r, pg, i) {
			return nil, false, false
		}
		i++
	}
}

// prefixed calls fn with the key of each entry that begins with prefix, in
// order, in a read view, read with r; decided is false when the leaf the
// descent to prefix reached cannot tell them all (fn may have been called
// for some: the caller forgets what it heard and asks a cursor).
func (p packed) prefixed(r *blockReader, prefix []byte, fn func(k []byte) error) (decided bool, err error) {
	pg, i, ok := p.floorIn(prefix)
	if !ok || !p.enterAt(r, pg, i) {
		return false, nil
	}
	for {
		for r.must() {
			if bytes.Compare(r.k, prefix) < 0 {
				continue
			}
			if !bytes.HasPrefix(r.k, prefix) {
				return true, nil
			}
			if err := fn(r.k); err != nil {
				return true, err
			}
		}
		if !p.nextIn(r, pg, i) {
			return false, nil
		}
		i++
	}
}
