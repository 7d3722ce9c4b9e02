package state

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
)

// walkPages checks, reading the file itself (never through bbolt's
// mapping: nothing can fault), what opening it for writing makes bbolt walk
// in goroutines of its own, where a panic ends the process: from the root
// bucket down, every branch and leaf page is itself (its header names it,
// of a known type), inside the pages the last transaction uses, reached
// once, its elements inside it, and its keys in order — within the page and
// between its parent's keys — as bbolt's consistency check (tx.Check) has
// them. A file it passes is one bbolt reads without tripping.
//
// With seals, it also checks the seal of every value in the buckets, as
// checkSeals does, while it has each page in hand (a backfill's open used
// to read every page twice: once here, once through bbolt for the seals).
// What it finds of those goes to the seals' result, not the error: whether
// the file is sealed at all is read from its schema once bbolt has it
// open, and only then do the findings count (sealFindings).
func walkPages(path string, seals bool) (sealFindings, error) {
	f, err := os.Open(path)
	if err != nil {
		return sealFindings{}, nil // bbolt's open reports it
	}
	defer f.Close()
	head := make([]byte, 1<<17)
	n, _ := io.ReadFull(f, head)
	// From the newest valid meta page, as bbolt opens the file: with page
	// 0 torn by a commit that did not finish (the shape check let it
	// pass), page 1.
	m0, ps := pageSizeOf(head[:n])
	if ps <= 0 || int(ps)+pageHeaderSize+metaSize > n {
		return sealFindings{}, &CorruptError{Path: path, Problem: "neither of its two meta pages is valid"} // the shape check says so first
	}
	newest := m0
	if m1 := parseMeta(head[ps:n]); m1.problem == "" && (m0.problem != "" || m1.txid > m0.txid) {
		newest = m1
	}
	if found, ok := parallelWalk(f, ps, newest, seals); ok {
		return found, nil
	}
	// One walk in key order: what a file found wrong by the parallel walk
	// is named by (the first problem in key order, as always).
	w := newPageWalk(f, ps, newest.pgid, seals)
	w.tree(newest.root, nil, nil, 0, "", 0)
	if w.problem != "" {
		return sealFindings{}, &CorruptError{Path: path, Problem: w.problem}
	}
	return sealFindings{checked: seals, found: w.sealFound}, nil
}

func newPageWalk(r io.ReaderAt, ps int64, hwm uint64, seals bool) *pageWalk {
	w := &pageWalk{r: r, ps: ps, hwm: hwm, seals: seals}
	w.seen.bits = make([]uint64, (hwm+63)/64)
	return w
}

// walkers is how many goroutines walk the buckets at once: the open of a
// backfill has nothing else to do meanwhile.
const walkers = 2

// parallelWalk walks the root bucket's buckets (each a tree of its own)
// on walkers goroutines, each taking the next bucket in key order, and
// says whether it found the file sound (ok) — every page checked, none
// reached twice, within a bucket or across them — with the seals' findings
// in key order. Anything else (a problem found, a root that is a branch)
// is left to the walk in key order, which names it as it always has.
func parallelWalk(r io.ReaderAt, ps int64, m metaPage, seals bool) (sealFindings, bool) {
	root := newPageWalk(r, ps, m.pgid, seals)
	b := root.page(m.root, 0)
	if b == nil {
		return sealFindings{}, false
	}
	p := rawPage{b: b, branch: binary.LittleEndian.Uint16(b[8:]) == branchPage, count: int(binary.LittleEndian.Uint16(b[10:]))}
	if p.branch || p.check(m.root, m.pgid, nil, nil, false, "") != "" {
		return sealFindings{}, false
	}
	type result struct {
		problem string
		found   []string
	}
	results := make([]result, p.count)
	walks := make([]*pageWalk, walkers)
	var next atomic.Int64
	var failed atomic.Bool
	var wg sync.WaitGroup
	for g := range walks {
		w := newPageWalk(r, ps, m.pgid, seals)
		walks[g] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < p.count && !failed.Load(); i = int(next.Add(1) - 1) {
				w.problem, w.sealFound = "", nil
				w.element(p, i, 0, "", 0)
				results[i] = result{w.problem, w.sealFound}
				if w.problem != "" {
					failed.Store(true)
				}
			}
		}()
	}
	wg.Wait()
	if failed.Load() {
		return sealFindings{}, false
	}
	// no page reached twice: by the root and a bucket, or two buckets
	seen := root.seen.bits
	for _, w := range walks {
		for i, x := range w.seen.bits {
			if seen[i]&x != 0 {
				return sealFindings{}, false
			}
			seen[i] |= x
		}
	}
	var found []string
	for _, res := range results {
		found = append(found, res.found...)
	}
	return sealFindings{checked: seals, found: found[:min(len(found), sealsShown)]}, true
}

// sealFindings is what a walk with seals found of them: checked says every
// value's seal was checked (found: the first few that do not match).
type sealFindings struct {
	checked bool
	found   []string
}

// sealsShown is how many seal findings an error names (as checkSeals).
const sealsShown = 5

type pageWalk struct {
	r       io.ReaderAt
	ps      int64
	hwm     uint64
	seen    pageSet
	problem string // the first thing found wrong
	// bufs holds a page per depth of the walk: a page's keys bound its
	// children's, so it is kept until they are walked, and a sibling
	// reuses it after.
	bufs [][]byte
	// ahead holds the pages from aheadAt on, read in one go: the walk
	// reaches pages mostly in file order (bbolt writes a tree's pages in
	// the order it spills them), a read per page was most of its cost.
	ahead   []byte
	aheadAt uint64
	// seals: check every value's seal (sealFound: the first findings).
	seals     bool
	sealFound []string
}

// aheadPages is how many pages a read ahead takes.
const aheadPages = 64

func (w *pageWalk) fail(format string, a ...any) {
	if w.problem == "" {
		w.problem = fmt.Sprintf(format, a...)
	}
}

const (
	branchPage = 0x01
	leafPage   = 0x02
	bucketLeaf = 0x01
	elemSize   = 16
)

// read fills dst with the file's bytes from page id on, from the pages
// read ahead when it can.
func (w *pageWalk) read(dst []byte, id uint64) error {
	ps := uint64(w.ps)
	pages := uint64(len(dst)) / ps
	if id < w.aheadAt || id+pages > w.aheadAt+uint64(len(w.ahead))/ps {
		if pages >= aheadPages {
			_, err := w.r.ReadAt(dst, int64(id)*w.ps)
			return err
		}
		if w.ahead == nil {
			w.ahead = make([]byte, aheadPages*ps)
		}
		// never past the pages in use (the file may end there)
		n := min(uint64(aheadPages), w.hwm-id) * ps
		w.aheadAt, w.ahead = id, w.ahead[:cap(w.ahead)]
		got, err := w.r.ReadAt(w.ahead[:n], int64(id)*w.ps)
		w.ahead = w.ahead[:got]
		if uint64(got) < pages*ps {
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	copy(dst, w.ahead[(id-w.aheadAt)*ps:])
	return nil
}

// page reads page id with its overflow into the walk's buffer for depth,
// checked as bbolt's tx.page and its reachability check do.
func (w *pageWalk) page(id uint64, depth int) []byte {
	if id < 2 || id >= w.hwm {
		w.fail("page %d is outside the %d pages the last transaction uses", id, w.hwm)
		return nil
	}
	for len(w.bufs) <= depth {
		w.bufs = append(w.bufs, make([]byte, w.ps))
	}
	b := w.bufs[depth][:w.ps]
	if err := w.read(b, id); err != nil {
		w.fail("page %d cannot be read: %v", id, err)
		return nil
	}
	le := binary.LittleEndian
	overflow := uint64(le.Uint32(b[12:]))
	switch {
	case le.Uint64(b) != id:
		w.fail("page %d names itself page %d", id, le.Uint64(b))
	case le.Uint16(b[8:]) != branchPage && le.Uint16(b[8:]) != leafPage:
		w.fail("page %d has unexpected type/flags %#x", id, le.Uint16(b[8:]))
	case id+overflow >= w.hwm:
		w.fail("page %d runs past the %d pages the last transaction uses", id, w.hwm)
	}
	if w.problem != "" {
		return nil
	}
	for i := id; i <= id+overflow; i++ {
		if w.seen.has(i) {
			w.fail("page %d is reached twice", i)
			return nil
		}
		w.seen.add(i)
	}
	if overflow > 0 {
		size := int64(overflow+1) * w.ps
		if int64(cap(w.bufs[depth])) < size {
			w.bufs[depth] = make([]byte, size)
		}
		b = w.bufs[depth][:size]
		if err := w.read(b, id); err != nil {
			w.fail("page %d cannot be read: %v", id, err)
			return nil
		}
	}
	return b
}

// tree walks the subtree at id of bucket name (nesting buckets deep: 0 for
// the root bucket), whose keys must lie in [lo, hi) (nil: no bound),
// checking each page as the page guard does (pages.go), and the buckets its
// leaves name.
func (w *pageWalk) tree(id uint64, lo, hi []byte, depth int, name string, nesting int) {
	if depth > 64 {
		w.fail("page %d lies deeper than any tree of this size", id)
		return
	}
	b := w.page(id, depth)
	if b == nil {
		return
	}
	p := rawPage{b: b, branch: binary.LittleEndian.Uint16(b[8:]) == branchPage, count: int(binary.LittleEndian.Uint16(b[10:]))}
	if problem := p.check(id, w.hwm, lo, hi, false, ""); problem != "" {
		w.fail("%s", problem)
		return
	}
	for i := 0; i < p.count && w.problem == ""; i++ {
		if p.branch {
			next := hi
			if i+1 < p.count {
				next = p.key(i + 1)
			}
			w.tree(p.child(i), p.key(i), next, depth+1, name, nesting)
			continue
		}
		w.element(p, i, depth, name, nesting)
	}
}

// element walks leaf element i of a bucket: the bucket it names (its own
// pages, or held inline in the element), or its value's seal — in key
// order, nested buckets where they lie, as checkSeals reads them.
func (w *pageWalk) element(p rawPage, i, depth int, name string, nesting int) {
	v, flags := p.value(i)
	if flags&bucketLeaf == 0 {
		if w.seals && nesting > 0 {
			w.seal(name, p.key(i), v)
		}
		return
	}
	// a bucket of its own keys (check has seen the value is long enough)
	child := string(p.key(i))
	if root := binary.LittleEndian.Uint64(v); root != 0 {
		w.tree(root, nil, nil, depth+1, child, nesting+1)
		return
	}
	// held inline: a page of its own inside the value, which check has
	// checked whole
	in := rawPage{b: v[16:], count: int(binary.LittleEndian.Uint16(v[16+10:]))}
	for j := 0; j < in.count && w.problem == ""; j++ {
		w.element(in, j, depth, child, nesting+1)
	}
}

// seal checks a value's seal, as checkSeals (and unseal) do.
func (w *pageWalk) seal(bucket string, k, v []byte) {
	if n := len(v); n >= sealSize && v[n-sealSize] == sealMarker &&
		binary.LittleEndian.Uint32(v[n-4:]) == sealSum(k, v[:n-sealSize]) {
		return
	}
	if _, err := unseal(bucket, k, v); err != nil && len(w.sealFound) < sealsShown {
		w.sealFound = append(w.sealFound, err.Error())
	}
}
