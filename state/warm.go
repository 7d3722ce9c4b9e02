package state

import (
	"bytes"
	"os"
	"slices"

	bolt "go.etcd.io/bbolt"

	"optsync/extract"
	"optsync/transform"
)

// A night looks its contacts up one at a time (Reader.Get, and the PKey
// index by PKeyContacts), and each descent reads its pages before the next
// one starts. A nightly run mostly finds its state file out of the page
// cache: nothing read it since the night before (and this machine's
// kernel pages out file pages left alone for a minute). Each lookup then
// waited for the disk in turn: over a 10 M-contact state, deciding 10 k
// changed contacts took 1.9 – 2.6 s with the file out of the cache and
// 0.15 s with it in.
//
// So a night first asks the kernel for the pages its lookups will read
// (warm), many at once: posix_fadvise(WILLNEED) queues the reads and
// returns, and the disk serves them together. A tree is taken a level at a
// time: the level's pages are asked for all together, then read (each
// read waits only for its own page, queued with the others) to learn which
// pages of the level below the keys fall in; the leaves are only asked
// for, since the lookups read them. It runs on a goroutine and a view of
// its own, beside the lookups, and is advice only: a page it cannot read,
// or whose header or elements are not what bbolt writes, ends it, and the
// lookups then find what is wrong and say so.

// warming is a warm under way (nil: none).
type warming struct {
	stop, done chan struct{}
	// advise asks for pages [id, id+n) of the file (willNeed; tests
	// record them).
	advise func(id, n uint64) error
	// cached says whether page id is in the page cache (ok false: it
	// cannot tell).
	cached func(id uint64) (in, ok bool)
}

// warmProbes is how many pages, spread evenly over the file, are looked
// at first: when every one is in the page cache the file is taken to be
// (it was written or read a moment ago) and nothing is asked for. Asking
// for pages the cache holds costs a system call each and a walk of the
// trees' branches: at 10 M contacts 30 ms on a goroutine beside the
// deciding one, in a night of 0.7 s.
const warmProbes = 64

// warmTree is one tree warm asks the pages of: keys (sorted) are what
// lookups of it descend to.
type warmTree struct {
	bucket []byte
	keys   [][]byte
	// next: the leaf after each key's is asked for too. A cursor's seek
	// (how a block is found by key in a bucket the transaction has
	// written already) steps onto it when the key lies past the last one
	// of its leaf.
	next bool
}

// warm starts asking for the pages that lookups of the trees' keys will
// read, a tree after the other (nil: no way to ask). trees is called on
// the warm's goroutine, once it has found the file out of the cache: what
// it sorts and decodes costs the night nothing when the file is cached.
func (s *Store) warm(trees func() []warmTree) *warming {
	if !canAdvise || s == nil || s.db == nil || s.file == nil {
		return nil
	}
	f, ps := s.file, uint64(s.db.Info().PageSize)
	w := &warming{advise: func(id, n uint64) error { return willNeed(f, id, n, ps) },
		// the mapping stays put while the warm's view is open
		cached: func(id uint64) (bool, bool) { return inCache(s.db.Info().Data, id, ps) }}
	return w.start(s.db, f, trees)
}

// start runs the warm of trees over db (whose file is f) on a goroutine.
func (w *warming) start(db *bolt.DB, f *os.File, trees func() []warmTree) *warming {
	w.stop, w.done = make(chan struct{}), make(chan struct{})
	go w.run(db, f, trees)
	return w
}

// lookupTrees are what a night's lookups of ids (the records) and of pkeys
// (the PKey index) descend to: the PKey index first, which a night looks
// up first (for its candidates). ids and pkeys need not be sorted. The
// leaf after a PKey's is not asked for: a lookup by PKey steps onto it
// only when the PKey's entries run to its leaf's end (at 10 M contacts 84
// lookups of 5 k), and asking for it for every PKey cost more reads of
// the disk than it saved.
func lookupTrees(ids []extract.ID, pkeys []string) []warmTree {
	pkeys = slices.Clone(pkeys)
	slices.Sort(pkeys)
	pkeys = slices.Compact(pkeys)
	pk := make([][]byte, 0, len(pkeys))
	for _, p := range pkeys {
		if p != "" {
			// a PKey's entries start at its prefix, which sorts as the
			// PKey does (0 is below any byte that follows it)
			pk = append(pk, append([]byte(p), 0))
		}
	}
	return []warmTree{{bucketPKeys, pk, false}, {bucketContacts, idKeys(ids), false}}
}

// idKeys are ids as keys, sorted, once each.
func idKeys(ids []extract.ID) [][]byte {
	ids = slices.Clone(ids)
	slices.SortFunc(ids, extract.ID.Compare)
	ids = slices.Compact(ids)
	keys := make([][]byte, len(ids))
	for i := range ids {
		keys[i] = ids[i][:]
	}
	return keys
}

// pendingTree is what a night's commit changes of the index of pending
// writes besides the new run's entries (which go after every other): the
// entries of the records its lookups read (kept reads), which it removes
// when their writes are seen or replaced. Those lie all over the index.
func pendingTree(kept []keptRecord) warmTree {
	var keys [][]byte
	for _, k := range kept {
		rec, err := parseRecord(k.v)
		if err != nil {
			continue // the commit reads it again and says what is wrong
		}
		ats, err := recordAts(&rec)
		if err != nil {
			continue
		}
		for _, at := range ats {
			keys = append(keys, pendingIndexKey(at, k.id))
		}
	}
	slices.SortFunc(keys, bytes.Compare)
	return warmTree{bucketPending, slices.CompactFunc(keys, bytes.Equal), true}
}

// end stops the warm and waits for it: its view is closed once end
// returns (a view left open holds the pages a commit frees).
func (w *warming) end() {
	if w == nil {
		return
	}
	close(w.stop)
	<-w.done
}

func (w *warming) stopped() bool {
	select {
	case <-w.stop:
		return true
	default:
		return false
	}
}

// run warms each tree in turn, in a view of its own.
func (w *warming) run(db *bolt.DB, f *os.File, trees func() []warmTree) {
	defer close(w.done)
	tx, err := db.Begin(false)
	if err != nil {
		return
	}
	defer func() { _ = tx.Rollback() }()
	ps := uint64(db.Info().PageSize)
	rd := &warmReader{f: f, ps: ps, hwm: uint64(tx.Size()) / ps}
	if w.allCached(rd.hwm) {
		return
	}
	for _, t := range trees() {
		b := tx.Bucket(t.bucket)
		if b == nil || b.Root() == 0 || len(t.keys) == 0 {
			continue // none, or held inline in its parent's page
		}
		if !w.tree(rd, uint64(b.Root()), t) {
			return
		}
	}
}

// allCached says whether every page probed (warmProbes of the hwm pages
// in use, evenly spread) is in the page cache.
func (w *warming) allCached(hwm uint64) bool {
	if hwm <= 2 {
		return true
	}
	step := max((hwm-2)/warmProbes, 1)
	for id := uint64(2); id < hwm; id += step {
		if in, ok := w.cached(id); !in || !ok {
			return false
		}
	}
	return true
}

// warmSpan is a page of a tree's level and the keys that fall in it, and
// the page after it under the same parent (0: none such).
type warmSpan struct {
	id, after uint64
	keys      [][]byte
}

// tree asks for the pages of the tree t at root that t's keys fall in, a
// level at a time; false: it stopped (asked to, or a page was not sound).
func (w *warming) tree(rd *warmReader, root uint64, t warmTree) bool {
	level := []warmSpan{{id: root, keys: t.keys}}
	ids := make([]uint64, 0, len(t.keys))
	for depth := 0; len(level) > 0; depth++ {
		if depth > 64 {
			return false // deeper than any tree: a loop of damaged pages
		}
		ids = ids[:0]
		for _, sp := range level {
			ids = append(ids, sp.id)
		}
		if !w.ask(ids) {
			return false
		}
		var below []warmSpan
		for _, sp := range level {
			if w.stopped() {
				return false
			}
			p, ok := rd.branch(sp.id)
			if !ok {
				return false
			}
			if !p.branch {
				// a leaf, asked for already: the lookups read it (a
				// tree's leaves all lie at one depth, so the whole
				// level is leaves)
				if !t.next {
					return true
				}
				ids = ids[:0]
				for _, sp := range level {
					if sp.after != 0 {
						ids = append(ids, sp.after)
					}
				}
				return w.ask(ids)
			}
			below = split(p, sp.keys, below)
		}
		level = below
	}
	return true
}

// split appends to dst the children of branch p that keys (sorted) fall
// in, each with its keys.
func split(p rawPage, keys [][]byte, dst []warmSpan) []warmSpan {
	for i := 0; i < len(keys); {
		c := p.search(keys[i])
		sp, j := warmSpan{id: p.child(c)}, len(keys)
		if c+1 < p.count {
			// the keys below the next child's first
			next := p.key(c + 1)
			for j = i + 1; j < len(keys) && bytes.Compare(keys[j], next) < 0; j++ {
			}
			sp.after = p.child(c + 1)
		}
		sp.keys = keys[i:j]
		dst = append(dst, sp)
		i = j
	}
	return dst
}

// ask asks for the pages ids, in file order, a run of adjacent pages at a
// time; false: the kernel refused, or the warm was stopped.
func (w *warming) ask(ids []uint64) bool {
	ids = slices.Clone(ids)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	asks := 0
	for i := 0; i < len(ids); {
		if asks++; asks%256 == 0 && w.stopped() {
			return false
		}
		j := i + 1
		for j < len(ids) && ids[j] == ids[j-1]+1 {
			j++
		}
		if err := w.advise(ids[i], uint64(j-i)); err != nil {
			return false
		}
		i = j
	}
	return true
}

// warmReader reads a view's pages with pread into a buffer of its own.
type warmReader struct {
	f       *os.File
	ps, hwm uint64
	buf     []byte
}

// branch reads page id and checks its header and, for a branch, its
// elements (so that its keys and children can be read); ok is false when
// it cannot be read or is not sound. The page is valid until the next
// read.
func (rd *warmReader) branch(id uint64) (rawPage, bool) {
	if id < 2 || id >= rd.hwm {
		return rawPage{}, false
	}
	if uint64(cap(rd.buf)) < rd.ps {
		rd.buf = make([]byte, rd.ps)
	}
	b := rd.buf[:rd.ps]
	if _, err := rd.f.ReadAt(b, int64(id*rd.ps)); err != nil {
		return rawPage{}, false
	}
	p, problem := rawPageAt(b, id, rd.hwm, rd.ps)
	if problem != "" || !p.branch {
		// a leaf's header is all the warm needs of it
		return p, problem == ""
	}
	if p.count == 0 || p.check(id, rd.hwm, nil, nil, false, "") != "" {
		return rawPage{}, false
	}
	return p, true
}

// nightLookups are the contacts and PKeys a night's lookups ask for: those
// of its rows, held in memory (none when they were not: a night too large
// to hold is not warmed), and the PKeys its input links to a contact.
func nightLookups(id *transform.Identity) (ids []extract.ID, pkeys []string) {
	contacts, profiles := id.Held()
	if contacts == nil && profiles == nil {
		return nil, nil
	}
	ids = make([]extract.ID, 0, len(contacts)+len(profiles))
	for i := range contacts {
		ids = append(ids, contacts[i].ID)
	}
	for i := range profiles {
		if !profiles[i].Unlinked {
			ids = append(ids, profiles[i].ID)
		}
	}
	if o := id.Owners(); o != nil {
		pkeys = make([]string, 0, o.Len())
		for i := range o.Len() {
			pkeys = append(pkeys, o.At(i).PKey)
		}
	}
	return ids, pkeys
}
