package state

import (
	"encoding/binary"
	"os"
)

// A night's lookups (leaf.go) reach ten thousand leaves and their branches
// scattered over the file, most of them not mapped since the last release:
// each first touch of the mapping was a page fault that also mapped the
// pages around it that the page cache held (fault-around: up to 16), which
// the next release then unmapped again. At 10 M contacts that was about a
// third of a night's ~35 K faults, and they cost the deciding goroutine
// more than reading the same pages with pread into a buffer of its own
// (the page cache holds them either way), which maps nothing and so adds
// nothing to the resident set.
//
// So the lookups of a run's deciding pass (Store.WithPrior) read the pages
// of their descents with pread (pageReader); every page is checked as the
// mapped one would be (pageView.checked). Everything else reads the
// mapping: walks (sequential: few faults a page), cursors, the commit's
// lookups (whose record a batch keeps pointing into) and bbolt itself.
// A read that fails or comes back short is made from the mapping instead:
// what is read is the same, only its cost differs.

// pageReader reads a view's pages for leafOf's descents into buffers of
// its own, one per level of the tree: a descent checks a child against
// its parent's keys, and the leaf it returns (and what lookups take from
// it) stays valid until the next descent. One goroutine uses it (its
// Reader's).
type pageReader struct {
	f    *os.File
	bufs [][]byte
	// held is the page each level's buffer holds whole (0: none; a page
	// below 2 is never read into one). A view's pages do not change while
	// its transaction is open (bbolt writes only pages no open view
	// reaches), so a descent that passes the page the last one passed at
	// that level takes the buffer as it is: lookups in id order pass the
	// same root and upper branches again and again, and each was a pread
	// of a page already copied. The buffer is checked as a read one.
	held []uint64
	// reads counts the pages read (tests).
	reads int
}

// read reads n pages from page id into buf (grown when too small); ok is
// false when the file did not give them all.
func (rd *pageReader) read(buf []byte, id, n, ps uint64) (_ []byte, ok bool) {
	size := n * ps
	if uint64(cap(buf)) < size {
		buf = make([]byte, size)
	}
	buf = buf[:size]
	if _, err := rd.f.ReadAt(buf, int64(id*ps)); err != nil {
		return buf, false
	}
	rd.reads++
	return buf, true
}

// pageRead is page id of bucket checked (within lo and hi) as page does,
// read with rd into its buffer for depth; from the mapping when a read
// fails.
func (v *pageView) pageRead(rd *pageReader, depth int, id uint64, lo, hi []byte, bucket string) rawPage {
	if id < 2 || id >= v.hwm {
		return v.page(id, lo, hi, bucket) // which says what is wrong
	}
	for len(rd.bufs) <= depth {
		rd.bufs = append(rd.bufs, nil)
		rd.held = append(rd.held, 0)
	}
	b := rd.bufs[depth]
	if rd.held[depth] != id {
		rd.held[depth] = 0 // until the page is in it whole
		var ok bool
		b, ok = rd.read(b, id, 1, v.ps)
		rd.bufs[depth] = b
		if !ok {
			return v.page(id, lo, hi, bucket)
		}
		// the page's overflow, when its header places it inside the pages
		// in use (else rawPageAt names the problem)
		if overflow := uint64(binary.LittleEndian.Uint32(b[12:])); overflow > 0 && id+overflow < v.hwm {
			if b, ok = rd.read(b, id, overflow+1, v.ps); !ok {
				rd.bufs[depth] = b
				return v.page(id, lo, hi, bucket)
			}
			rd.bufs[depth] = b
		}
		rd.held[depth] = id
	}
	p, problem := rawPageAt(b, id, v.hwm, v.ps)
	return v.checked(p, problem, id, lo, hi, bucket)
}

// readPages makes r's lookups by id and by PKey read their pages with
// pread (see above). Call it before the first lookup.
func (r *Reader) readPages() {
	if r.s.file == nil {
		return
	}
	r.pread = true
	if pc, ok := r.c.(*pcursor); ok && pc.c.x.pv != nil {
		pc.c.x.pv.rd = &pageReader{f: r.s.file}
	}
}
