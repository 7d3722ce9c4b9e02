package state

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
)

// walkPages checks, reading the file itself (never through bbolt's
// mapping: nothing can fault), what opening it for writing makes bbolt walk
// in goroutines of its own, where a panic ends the process: from the root
// bucket down, every branch and leaf page is itself (its header names it,
// of a known type), inside the pages the last transaction uses, reached
// once, its elements inside it, and its keys in order — within the page and
// between its parent's keys — as bbolt's consistency check (tx.Check) has
// them. A file it passes is one bbolt reads without tripping.
func walkPages(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return nil // bbolt's open reports it
	}
	defer f.Close()
	head := make([]byte, 1<<17)
	n, _ := io.ReadFull(f, head)
	m0 := parseMeta(head[:n])
	ps := int64(m0.pageSize)
	if m0.problem != "" || ps <= 0 || int(ps)+pageHeaderSize+metaSize > n {
		return nil // the shape check has said what is wrong
	}
	newest := m0
	if m1 := parseMeta(head[ps:n]); m1.problem == "" && m1.txid > m0.txid {
		newest = m1
	}
	w := &pageWalk{r: f, ps: ps, hwm: newest.pgid, seen: map[uint64]bool{}}
	w.tree(newest.root, nil, nil, 0)
	if w.problem != "" {
		return &CorruptError{Path: path, Problem: w.problem}
	}
	return nil
}

type pageWalk struct {
	r       io.ReaderAt
	ps      int64
	hwm     uint64
	seen    map[uint64]bool
	problem string // the first thing found wrong
}

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

// page reads page id with its overflow, checked as bbolt's tx.page and
// its reachability check do.
func (w *pageWalk) page(id uint64) []byte {
	if id < 2 || id >= w.hwm {
		w.fail("page %d is outside the %d pages the last transaction uses", id, w.hwm)
		return nil
	}
	hdr := make([]byte, pageHeaderSize)
	if _, err := w.r.ReadAt(hdr, int64(id)*w.ps); err != nil {
		w.fail("page %d cannot be read: %v", id, err)
		return nil
	}
	le := binary.LittleEndian
	overflow := uint64(le.Uint32(hdr[12:]))
	switch {
	case le.Uint64(hdr) != id:
		w.fail("page %d names itself page %d", id, le.Uint64(hdr))
	case le.Uint16(hdr[8:]) != branchPage && le.Uint16(hdr[8:]) != leafPage:
		w.fail("page %d has unexpected type/flags %#x", id, le.Uint16(hdr[8:]))
	case id+overflow >= w.hwm:
		w.fail("page %d runs past the %d pages the last transaction uses", id, w.hwm)
	}
	if w.problem != "" {
		return nil
	}
	for i := id; i <= id+overflow; i++ {
		if w.seen[i] {
			w.fail("page %d is reached twice", i)
			return nil
		}
		w.seen[i] = true
	}
	p := make([]byte, int64(overflow+1)*w.ps)
	if _, err := w.r.ReadAt(p, int64(id)*w.ps); err != nil {
		w.fail("page %d cannot be read: %v", id, err)
		return nil
	}
	return p
}

// tree walks the subtree at id, whose keys must lie in [lo, hi) (nil: no
// bound), checking each page as the page guard does (pages.go), and the
// buckets its leaves name.
func (w *pageWalk) tree(id uint64, lo, hi []byte, depth int) {
	if depth > 64 {
		w.fail("page %d lies deeper than any tree of this size", id)
		return
	}
	b := w.page(id)
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
			w.tree(p.child(i), p.key(i), next, depth+1)
			continue
		}
		if v, flags := p.value(i); flags&bucketLeaf != 0 {
			if root := binary.LittleEndian.Uint64(v); root != 0 {
				w.tree(root, nil, nil, depth+1) // a bucket of its own keys
			}
		}
	}
}
