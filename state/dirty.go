package state

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"slices"

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
	buf    []byte
	f      *os.File
	w      *bufio.Writer
	n      int
	spilt  int64
	// rows is how many entries may come (the larger side's rows): the
	// buffer is made for them once, within the budget, where one doubling
	// as it grew copied itself over and over (a backfill keeps an entry of
	// every contact).
	rows int
}

// dirtyRefSize is what an entry placed in the rows held takes: length,
// kind, id, flags, two places.
const dirtyRefSize = 2 + 1 + 16 + 1 + 4 + 4

func (s *Dirty) Len() int { return s.n }

func (s *Dirty) Add(e *transform.Entry) error {
	if s.buf == nil && s.rows > 0 && s.cItems != nil && s.pItems != nil {
		n := int64(s.rows) * dirtyRefSize
		if s.budget > 0 {
			n = min(n, s.budget+dirtyRefSize)
		}
		s.buf = make([]byte, 0, n)
	}
	start := len(s.buf)
	s.buf = append(s.buf, 0, 0, e.Kind) // length, filled in below
	s.buf = append(s.buf, e.ID[:]...)
	var f byte
	if e.HasC {
		f |= 1
	}
	if e.HasP {
		f |= 2
	}
	refs := s.cItems != nil && s.pItems != nil && (!e.HasC || e.CI >= 0) && (!e.HasP || e.PI >= 0)
	if refs {
		f |= 4
	}
	s.buf = append(s.buf, f)
	switch {
	case refs:
		s.buf = binary.LittleEndian.AppendUint32(s.buf, uint32(e.CI))
		s.buf = binary.LittleEndian.AppendUint32(s.buf, uint32(e.PI))
	default:
		if e.HasC {
			s.buf = extract.AppendContact(s.buf, &e.C)
		}
		if e.HasP {
			s.buf = extract.AppendProfile(s.buf, &e.P)
		}
	}
	l := len(s.buf) - start - 2
	if l > 0xffff {
		return fmt.Errorf("an entry of %d bytes is too long to keep for the commit", l)
	}
	binary.LittleEndian.PutUint16(s.buf[start:], uint16(l))
	s.n++
	if s.budget > 0 && int64(len(s.buf)) >= s.budget {
		return s.spill()
	}
	return nil
}

func (s *Dirty) spill() error {
	if s.f == nil {
		f, err := spill.TempFile(s.dir)
		if err != nil {
			return err
		}
		s.f, s.w = f, bufio.NewWriterSize(f, 1<<20)
	}
	if _, err := s.w.Write(s.buf); err != nil {
		return fmt.Errorf("keeping the run's entries for its commit in %s: %w", s.dir, err)
	}
	s.spilt += int64(len(s.buf))
	s.buf = s.buf[:0]
	return nil
}

// reader hands the entries back in order, once.
func (s *Dirty) reader() (func(*transform.Entry) (bool, error), error) {
	var r *bufio.Reader
	if s.f != nil {
		if err := s.spill(); err != nil {
			return nil, err
		}
		if err := s.w.Flush(); err != nil {
			return nil, fmt.Errorf("keeping the run's entries for its commit in %s: %w", s.dir, err)
		}
		if _, err := s.f.Seek(0, io.SeekStart); err != nil {
			return nil, err
		}
		r = bufio.NewReaderSize(s.f, 1<<20)
	} else {
		r = bufio.NewReader(bytes.NewReader(s.buf))
	}
	var rec []byte
	return func(e *transform.Entry) (bool, error) {
		var hdr [2]byte
		if _, err := io.ReadFull(r, hdr[:]); err == io.EOF {
			return false, nil
		} else if err != nil {
			return false, fmt.Errorf("reading the run's entries back: %w", err)
		}
		rec = slices.Grow(rec[:0], int(binary.LittleEndian.Uint16(hdr[:])))[:binary.LittleEndian.Uint16(hdr[:])]
		if _, err := io.ReadFull(r, rec); err != nil || len(rec) < 18 {
			return false, fmt.Errorf("reading the run's entries back: %v", err)
		}
		*e = transform.Entry{Kind: rec[0]}
		copy(e.ID[:], rec[1:17])
		f := rec[17]
		b := rec[18:]
		e.HasC, e.HasP = f&1 != 0, f&2 != 0
		if f&4 != 0 {
			if len(b) != 8 {
				return false, fmt.Errorf("reading the run's entries back: an entry malformed")
			}
			e.CI, e.PI = int32(binary.LittleEndian.Uint32(b)), int32(binary.LittleEndian.Uint32(b[4:]))
			if e.HasC {
				e.C = s.cItems[e.CI]
			}
			if e.HasP {
				e.P = s.pItems[e.PI]
			}
			return true, nil
		}
		if e.HasC {
			const cl = 37
			if len(b) < cl || extract.DecodeContact(b[:cl], &e.C) != nil {
				return false, fmt.Errorf("reading the run's entries back: a contact malformed")
			}
			b = b[cl:]
		}
		if e.HasP && extract.DecodeProfile(b, &e.P) != nil {
			return false, fmt.Errorf("reading the run's entries back: a profile malformed")
		}
		return true, nil
	}, nil
}

// Close lets go of the file.
func (s *Dirty) Close() {
	if s.f != nil {
		s.f.Close()
		s.f = nil
	}
	s.buf, s.cItems, s.pItems = nil, nil, nil
}

// NewDirty keeps entries within budget bytes of memory (0: no limit), the
// rest in a file in dir; held are the rows of the run when they are all in
// memory (transform.Identity.Held: an entry is then kept as its place in
// them), rows how many entries may come.
func NewDirty(budget int64, dir string, cItems []extract.Contact, pItems []extract.Profile, rows int) *Dirty {
	return &Dirty{budget: budget, dir: dir, cItems: cItems, pItems: pItems, rows: rows}
}
