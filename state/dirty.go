package state

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"slices"
	"unsafe"

	"optsync/extract"
	"optsync/extract/spill"
	"optsync/transform"
)

// Dirty keeps the entries the commit decides again, in the order the
// first pass found them: in memory up to a budget, beyond it in a file
// without a name (extract/spill), read back once.
type Dirty struct {
	budget int64
	dir    string
	// cItems and pItems, when set, hold every row in memory: an entry is
	// kept as its place in them (transform.Identity.Held).
	cItems []extract.Contact
	pItems []extract.Profile
	keys   *extract.Keys // what pItems name
	buf    []byte
	f      *os.File
	w      flushWriter
	// direct writes f past the page cache; nil: through it.
	direct *spill.Direct
	n      int
	spilt  int64
	// rows is how many entries may come (the larger side's rows): the
	// buffer is made for them once, within the budget, where one doubling
	// as it grew copied itself over and over (a backfill keeps an entry of
	// every contact).
	rows int
	// lastC and lastP are the places the previous entry placed in the
	// rows held had (the reader keeps its own): an entry keeps how far its
	// places are from them.
	lastC, lastP int32
	// spare is the buffer the entries go to while buf is written to f on
	// a goroutine of its own; writing says that write has not been
	// waited for (its error comes on wrote).
	spare   []byte
	wrote   chan error
	writing bool
	// enc, once started, encodes the entries kept whole (dirty_encode.go).
	enc *handoff[transform.Entry]
}

// dirtyRefSize is what an entry placed in the rows held takes, as a rule:
// length, kind, flags, and how far each of its two places is from the
// previous entry's (one byte each while the entries are as dense as a
// backfill's). Its id is its row's: a million entries held 16 bytes each
// of ids the rows hold already, live through the whole commit.
const dirtyRefSize = 2 + 1 + 1 + 2 + 2

// The flags of an entry kept.
const (
	dirtyHasC  = 1
	dirtyHasP  = 2
	dirtyRefs  = 4 // placed in the rows held, not copied
	dirtyRowID = 8 // its id is its contact's (else its profile's), not kept
)

func (s *Dirty) Len() int { return s.n }

func (s *Dirty) Add(e *transform.Entry) error {
	if s.encodesApart() {
		if s.enc == nil {
			s.enc = s.startEncoder()
		}
		if err := s.enc.add(e); err != nil {
			return err
		}
		s.n++
		return nil
	}
	if err := s.encode(e); err != nil {
		return err
	}
	s.n++
	return nil
}

// encode puts e at the end of the buffer, which goes to the file (on a
// goroutine of its own) once it holds half the budget.
func (s *Dirty) encode(e *transform.Entry) error {
	if s.buf == nil && s.rows > 0 && s.cItems != nil && s.pItems != nil {
		n := int64(s.rows) * dirtyRefSize
		if s.budget > 0 {
			n = min(n, s.budget/2+dirtyRefSize)
		}
		s.buf = make([]byte, 0, n)
	}
	start := len(s.buf)
	s.buf = append(s.buf, 0, 0, e.Kind) // length, filled in below
	var f byte
	if e.HasC {
		f |= dirtyHasC
	}
	if e.HasP {
		f |= dirtyHasP
	}
	refs := s.cItems != nil && s.pItems != nil && (!e.HasC || e.CI >= 0) && (!e.HasP || e.PI >= 0)
	if refs {
		f |= dirtyRefs
		if e.HasC && s.cItems[e.CI].ID == e.ID || !e.HasC && e.HasP && s.pItems[e.PI].ID == e.ID {
			f |= dirtyRowID
		}
	}
	s.buf = append(s.buf, f)
	if f&dirtyRowID == 0 {
		s.buf = append(s.buf, e.ID[:]...)
	}
	switch {
	case refs:
		if e.HasC {
			s.buf = binary.AppendVarint(s.buf, int64(e.CI)-int64(s.lastC))
			s.lastC = e.CI
		}
		if e.HasP {
			s.buf = binary.AppendVarint(s.buf, int64(e.PI)-int64(s.lastP))
			s.lastP = e.PI
		}
	default:
		if e.HasC {
			s.buf = appendDirtyContact(s.buf, &e.ID, &e.C)
		}
		if e.HasP {
			s.buf = appendDirtyProfile(s.buf, &e.ID, &e.P)
		}
	}
	l := len(s.buf) - start - 2
	if l > 0xffff {
		return fmt.Errorf("an entry of %d bytes is too long to keep for the commit", l)
	}
	binary.LittleEndian.PutUint16(s.buf[start:], uint16(l))
	if s.budget > 0 && int64(len(s.buf)) >= s.budget/2 {
		return s.handOff()
	}
	return nil
}

// handOff writes what the buffer holds to the file on a goroutine of its
// own, and takes the other buffer for the next entries: past memory, the
// writes cost the decisions more time than they took to make (10 M
// contacts: 4 s of their 24, most of it waiting for the page cache to
// take the file's new pages), time the other core spends idle. Each
// buffer holds half the budget, as one held all of it.
func (s *Dirty) handOff() error {
	if err := s.waitWrite(); err != nil {
		return err
	}
	if err := s.open(); err != nil {
		return err
	}
	full := s.buf
	s.buf, s.spare = s.spare[:0], nil
	if s.wrote == nil {
		s.wrote = make(chan error, 1)
	}
	s.writing = true
	go func() {
		err := s.write(full)
		s.spare = full // read once wrote is received
		s.wrote <- err
	}()
	return nil
}

// waitWrite waits for the write handOff started, if one is under way.
func (s *Dirty) waitWrite() error {
	if !s.writing {
		return nil
	}
	s.writing = false
	return <-s.wrote
}

func (s *Dirty) open() error {
	if s.f != nil {
		return nil
	}
	f, err := spill.TempFile(s.dir)
	if err != nil {
		return err
	}
	s.f = f
	if d, ok := spill.NewDirect(f, 1<<20); ok {
		s.w, s.direct = d, d
		return nil
	}
	s.w = bufio.NewWriterSize(f, 1<<20)
	return nil
}

// flushWriter is what the entries are written to: a file past the page
// cache, or a buffer in front of one.
type flushWriter interface {
	io.Writer
	Flush() error
}

func (s *Dirty) write(b []byte) error {
	if _, err := s.w.Write(b); err != nil {
		return fmt.Errorf("keeping the run's entries for its commit in %s: %w", s.dir, err)
	}
	s.spilt += int64(len(b))
	return nil
}

// spill writes what the buffer holds after what was written before it.
func (s *Dirty) spill() error {
	if err := s.waitWrite(); err != nil {
		return err
	}
	if err := s.open(); err != nil {
		return err
	}
	if err := s.write(s.buf); err != nil {
		return err
	}
	s.buf = s.buf[:0]
	return nil
}

// reader hands the entries back in order, once.
func (s *Dirty) reader() (func(*transform.Entry) (bool, error), error) {
	if err := s.enc.finish(); err != nil {
		return nil, err
	}
	var r io.Reader
	if s.f != nil {
		if err := s.spill(); err != nil {
			return nil, err
		}
		if err := s.w.Flush(); err != nil {
			return nil, fmt.Errorf("keeping the run's entries for its commit in %s: %w", s.dir, err)
		}
		if s.direct != nil {
			r = s.direct.Reader()
		} else {
			if _, err := s.f.Seek(0, io.SeekStart); err != nil {
				return nil, err
			}
			r = bufio.NewReaderSize(spill.ReadOnce(s.f), 1<<20)
		}
	} else {
		r = bufio.NewReader(bytes.NewReader(s.buf))
	}
	var rec []byte
	var lastC, lastP int32
	var arena dirtyArena
	malformed := fmt.Errorf("reading the run's entries back: an entry malformed")
	return func(e *transform.Entry) (bool, error) {
		var hdr [2]byte
		if _, err := io.ReadFull(r, hdr[:]); err == io.EOF {
			return false, nil
		} else if err != nil {
			return false, fmt.Errorf("reading the run's entries back: %w", err)
		}
		rec = slices.Grow(rec[:0], int(binary.LittleEndian.Uint16(hdr[:])))[:binary.LittleEndian.Uint16(hdr[:])]
		if _, err := io.ReadFull(r, rec); err != nil || len(rec) < 2 {
			return false, fmt.Errorf("reading the run's entries back: %v", err)
		}
		*e = transform.Entry{Kind: rec[0]}
		f := rec[1]
		b := rec[2:]
		if f&dirtyRowID == 0 {
			if len(b) < 16 {
				return false, malformed
			}
			copy(e.ID[:], b)
			b = b[16:]
		}
		e.HasC, e.HasP = f&dirtyHasC != 0, f&dirtyHasP != 0
		if f&dirtyRefs != 0 {
			e.CI, e.PI = -1, -1
			d := dirtyReader{b: b}
			if e.HasC {
				if !d.place(&lastC, len(s.cItems)) {
					return false, malformed
				}
				e.CI, e.C = lastC, s.cItems[lastC]
			}
			if e.HasP {
				if !d.place(&lastP, len(s.pItems)) {
					return false, malformed
				}
				e.PI, e.P = lastP, transform.ProfileSideOf(s.keys, &s.pItems[lastP])
			}
			if len(d.b) != 0 || f&dirtyRowID != 0 && !e.HasC && !e.HasP {
				return false, malformed
			}
			switch {
			case f&dirtyRowID == 0:
			case e.HasC:
				e.ID = e.C.ID
			default:
				e.ID = e.P.ID
			}
			return true, nil
		}
		if e.HasC {
			var ok bool
			if b, ok = decodeDirtyContact(b, &e.ID, &e.C); !ok {
				return false, fmt.Errorf("reading the run's entries back: a contact malformed")
			}
		}
		if e.HasP && !decodeDirtyProfile(b, &e.ID, &e.P, &arena) {
			return false, fmt.Errorf("reading the run's entries back: a profile malformed")
		}
		return true, nil
	}, nil
}

// Close lets go of the file.
func (s *Dirty) Close() {
	_ = s.enc.finish() // its writes before the file is closed
	_ = s.waitWrite()  // before the file is closed under it
	if s.f != nil {
		s.f.Close()
		s.f = nil
	}
	s.buf, s.cItems, s.pItems, s.keys = nil, nil, nil, nil
}

// NewDirty keeps entries within budget bytes of memory (0: no limit), the
// rest in a file in dir; held are the rows of the run when they are all in
// memory (transform.Identity.Held: an entry is then kept as its place in
// them), what the profiles name in keys, rows how many entries may come.
func NewDirty(budget int64, dir string, cItems []extract.Contact, pItems []extract.Profile, keys *extract.Keys, rows int) *Dirty {
	return &Dirty{budget: budget, dir: dir, cItems: cItems, pItems: pItems, keys: keys, rows: rows}
}

// An entry kept whole (its rows are not held in memory) is written in a
// form of its own, smaller than the sorts' (extract.AppendContact): a
// backfill too large for memory keeps every contact's entry, each written
// to the file and read back once, and on this kind of machine writing a
// file's new pages costs more than the encoding. The rows' ids are
// written only where they differ from the entry's (they never do as the
// join makes them), and the numbers as varints.

// Flags of a row kept whole.
const (
	dirtyBad      = 1 << iota
	dirtyOtherID  // the row's ID follows: it is not the entry's
	dirtyUnlinked // a profile's
	dirtyTimes    // a profile's FieldModified follows
)

func appendDirtyContact(dst []byte, id *extract.ID, c *extract.Contact) []byte {
	var f byte
	if c.Bad {
		f |= dirtyBad
	}
	if c.ID != *id {
		f |= dirtyOtherID
	}
	dst = append(dst, f)
	if f&dirtyOtherID != 0 {
		dst = append(dst, c.ID[:]...)
	}
	dst = binary.AppendVarint(dst, c.Modified)
	dst = binary.AppendUvarint(dst, uint64(c.ETag))
	dst = binary.LittleEndian.AppendUint16(dst, packTris(&c.Values))
	dst = binary.AppendVarint(dst, int64(c.Line))
	return binary.AppendUvarint(dst, uint64(c.File))
}

// decodeDirtyContact reads what appendDirtyContact wrote at the start of
// b, and returns the rest of b.
func decodeDirtyContact(b []byte, id *extract.ID, c *extract.Contact) (rest []byte, ok bool) {
	r := dirtyReader{b: b}
	f := r.byte()
	*c = extract.Contact{ID: *id, Bad: f&dirtyBad != 0}
	if f&dirtyOtherID != 0 {
		r.id(&c.ID)
	}
	c.Modified = r.varint()
	c.ETag = uint32(r.uvarint())
	unpackTris(r.uint16(), &c.Values)
	c.Line = int32(r.varint())
	c.File = uint16(r.uvarint())
	return r.b, !r.bad && f&^(dirtyBad|dirtyOtherID) == 0
}

func appendDirtyProfile(dst []byte, id *extract.ID, p *transform.ProfileSide) []byte {
	var f byte
	if p.Bad {
		f |= dirtyBad
	}
	if p.ID != *id {
		f |= dirtyOtherID
	}
	if p.Unlinked {
		f |= dirtyUnlinked
	}
	if p.FieldModified != nil {
		f |= dirtyTimes
	}
	dst = append(dst, f)
	if f&dirtyOtherID != 0 {
		dst = append(dst, p.ID[:]...)
	}
	dst = binary.AppendVarint(dst, p.Modified)
	dst = binary.LittleEndian.AppendUint16(dst, packTris(&p.Values))
	dst = binary.AppendVarint(dst, int64(p.Line))
	dst = binary.AppendUvarint(dst, uint64(p.File))
	if p.FieldModified != nil {
		for _, t := range p.FieldModified {
			dst = binary.AppendVarint(dst, t)
		}
	}
	return append(dst, p.PKey...) // the rest of the entry
}

// decodeDirtyProfile reads what appendDirtyProfile wrote, all of b; its
// PKey and field times go in arena's memory.
func decodeDirtyProfile(b []byte, id *extract.ID, p *transform.ProfileSide, arena *dirtyArena) bool {
	r := dirtyReader{b: b}
	f := r.byte()
	*p = transform.ProfileSide{Profile: extract.Profile{ID: *id, Bad: f&dirtyBad != 0, Unlinked: f&dirtyUnlinked != 0}}
	if f&dirtyOtherID != 0 {
		r.id(&p.ID)
	}
	p.Modified = r.varint()
	unpackTris(r.uint16(), &p.Values)
	p.Line = int32(r.varint())
	p.File = uint16(r.uvarint())
	if f&dirtyTimes != 0 {
		p.FieldModified = arena.times()
		for i := range p.FieldModified {
			p.FieldModified[i] = r.varint()
		}
	}
	if r.bad || f&^(dirtyBad|dirtyOtherID|dirtyUnlinked|dirtyTimes) != 0 {
		return false
	}
	p.PKey = arena.string(r.b)
	return true
}

// dirtyArena holds the PKeys and field times of the entries read back
// whole, a block for many: a 10 M backfill reads back an entry of every
// contact, and a string and an array allocated for each were 0.9 s and
// more of its commit's allocating. What it hands out is never written
// again (a new block is taken when one is full), so an entry may keep it
// as long as it likes: the block stays while any of it is held.
type dirtyArena struct {
	b  []byte
	ts [][extract.MaxFields]int64
}

func (a *dirtyArena) string(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if cap(a.b)-len(a.b) < len(b) {
		a.b = make([]byte, 0, max(32<<10, len(b)))
	}
	at := len(a.b)
	a.b = append(a.b, b...)
	return unsafe.String(&a.b[at], len(b))
}

func (a *dirtyArena) times() *[extract.MaxFields]int64 {
	if len(a.ts) == 0 {
		a.ts = make([][extract.MaxFields]int64, 512)
	}
	t := &a.ts[0]
	a.ts = a.ts[1:]
	return t
}

// dirtyReader reads the parts of a row kept whole; bad says one was
// missing or malformed (what it read after is zero).
type dirtyReader struct {
	b   []byte
	bad bool
}

func (r *dirtyReader) byte() byte {
	if len(r.b) < 1 {
		r.bad = true
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *dirtyReader) id(id *extract.ID) {
	if len(r.b) < len(id) {
		r.bad = true
		return
	}
	copy(id[:], r.b)
	r.b = r.b[len(id):]
}

func (r *dirtyReader) uint16() uint16 {
	if len(r.b) < 2 {
		r.bad = true
		return 0
	}
	x := binary.LittleEndian.Uint16(r.b)
	r.b = r.b[2:]
	return x
}

func (r *dirtyReader) varint() int64 {
	x, n := binary.Varint(r.b)
	if n <= 0 {
		r.bad = true
		return 0
	}
	r.b = r.b[n:]
	return x
}

func (r *dirtyReader) uvarint() uint64 {
	x, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.bad = true
		return 0
	}
	r.b = r.b[n:]
	return x
}

// place reads an entry's place in rows held n long, kept as its distance
// from last, the previous entry's, and moves last to it; false: missing,
// malformed or outside the rows.
func (r *dirtyReader) place(last *int32, n int) bool {
	p := int64(*last) + r.varint()
	if r.bad || p < 0 || p >= int64(n) {
		return false
	}
	*last = int32(p)
	return true
}

// packTris packs a row's values, two bits each.
func packTris(v *[extract.MaxFields]extract.Tri) uint16 {
	var x uint16
	for i, t := range v {
		x |= uint16(t&3) << (2 * i)
	}
	return x
}

func unpackTris(x uint16, v *[extract.MaxFields]extract.Tri) {
	for i := range v {
		v[i] = extract.Tri(x >> (2 * i) & 3)
	}
}
