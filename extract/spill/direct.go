package spill

import (
	"errors"
	"fmt"
	"io"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A file written once and read back at most once needs no page cache, and
// on this machine (a virtual one whose balloon hands memory free for a
// couple of seconds back to its host) the page cache costs: a page taken
// from free memory costs a fault of the host's when first written. 400 MB
// written to a new file took 1.3–2.0 s of system time; the same written
// right after another file was removed 0.12 s. A 10 M backfill's decisions
// write about 1.3 GB (the commit's entries, the output files) and their
// phase spent 8.7 s of its 23 s of CPU in the kernel. Written and read
// without the page cache (O_DIRECT), the same 400 MB took 0.34–0.40 s of
// wall and 0.06–0.11 s of system time to write, 0.40–0.49 s and 0.06 s to
// read back.

// directAlign is what O_DIRECT wants offsets, lengths and memory aligned
// to (a file system's block; 4 KiB covers those in use).
const directAlign = 4096

// Direct writes a file from its start past the page cache (O_DIRECT), in
// whole aligned blocks through a buffer; a flush writes the last part
// block through the page cache, so that the file is always exactly what
// was flushed (never padded), and it is written again past the cache once
// its block is whole. Reader reads it back past the cache. One goroutine
// at a time.
type Direct struct {
	f    *os.File
	fd   uintptr
	fl   int    // f's flags, O_DIRECT included
	buf  []byte // aligned
	n    int    // bytes in buf, after done
	done int64  // bytes written for good: whole buffers, or aligned runs
	size int64
}

// NewDirect sets O_DIRECT on f, an empty file just made and written from
// its start only through the Direct, with a buffer of bufSize bytes (a
// multiple of 4 KiB); false: the file system does not take O_DIRECT (f is
// as it was: write it through the page cache).
func NewDirect(f *os.File, bufSize int) (*Direct, bool) {
	return NewDirectAt(f, bufSize, 0)
}

// NewDirectAt is NewDirect for a file already written up to at (a
// multiple of 4 KiB), written on from there; Size counts from the start.
func NewDirectAt(f *os.File, bufSize int, at int64) (*Direct, bool) {
	if at%directAlign != 0 {
		return nil, false
	}
	if oDirect == 0 {
		return nil, false
	}
	fd := f.Fd()
	fl, err := unix.FcntlInt(fd, unix.F_GETFL, 0)
	if err != nil {
		return nil, false
	}
	if _, err := unix.FcntlInt(fd, unix.F_SETFL, fl|oDirect); err != nil {
		return nil, false
	}
	return &Direct{f: f, fd: fd, fl: fl | oDirect, buf: AlignedBytes(max(bufSize&^(directAlign-1), directAlign)), done: at, size: at}, true
}

// AlignedBytes is n bytes starting at a 4 KiB boundary: what a Direct
// writes without a copy.
func AlignedBytes(n int) []byte {
	b := make([]byte, n+directAlign)
	off := (directAlign - int(uintptr(unsafe.Pointer(unsafe.SliceData(b)))%directAlign)) % directAlign
	return b[off : off+n : off+n]
}

func aligned(p []byte) bool {
	return uintptr(unsafe.Pointer(unsafe.SliceData(p)))%directAlign == 0
}

// Size is how many bytes were written.
func (d *Direct) Size() int64 { return d.size }

// Write adds p after what was written: a run of whole blocks that starts
// aligned in memory goes to the file as it is, the rest through buf.
func (d *Direct) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		if d.n == 0 && len(p) >= directAlign && aligned(p) {
			k := len(p) &^ (directAlign - 1)
			if err := d.writeAt(p[:k], d.done); err != nil {
				return total - len(p), err
			}
			d.done += int64(k)
			d.size += int64(k)
			p = p[k:]
			continue
		}
		c := copy(d.buf[d.n:], p)
		d.n += c
		d.size += int64(c)
		p = p[c:]
		if d.n == len(d.buf) {
			if err := d.writeAt(d.buf, d.done); err != nil {
				return total - len(p), err
			}
			d.done += int64(d.n)
			d.n = 0
		}
	}
	return total, nil
}

// Flush puts everything written in the file: buf's whole blocks past the
// page cache, its last part block through it. buf keeps them, written
// again once more comes.
func (d *Direct) Flush() error {
	whole := d.n &^ (directAlign - 1)
	if whole > 0 {
		if err := d.writeAt(d.buf[:whole], d.done); err != nil {
			return err
		}
	}
	if whole == d.n {
		return nil
	}
	if _, err := unix.FcntlInt(d.fd, unix.F_SETFL, d.fl&^oDirect); err != nil {
		return fmt.Errorf("%s: %w", d.f.Name(), err)
	}
	err := d.writeAt(d.buf[whole:d.n], d.done+int64(whole))
	if _, ferr := unix.FcntlInt(d.fd, unix.F_SETFL, d.fl); ferr != nil && err == nil {
		err = fmt.Errorf("%s: %w", d.f.Name(), ferr)
	}
	return err
}

func (d *Direct) writeAt(b []byte, off int64) error {
	for len(b) > 0 {
		n, err := d.f.WriteAt(b, off)
		if errors.Is(err, unix.EINVAL) && d.fl&oDirect != 0 {
			// A file system that took O_DIRECT but not these writes (a
			// block larger than 4 KiB, a layer that passes the flag
			// on): the file is written and read through the page cache
			// from here, as without a Direct.
			if _, ferr := unix.FcntlInt(d.fd, unix.F_SETFL, d.fl&^oDirect); ferr != nil {
				return err
			}
			d.fl &^= oDirect
			continue
		}
		if err != nil {
			return err
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

// Reader reads the file back from its start, Size bytes, once it is
// flushed, through buf: nothing is written once reading begins.
func (d *Direct) Reader() io.Reader {
	return &directReader{d: d}
}

type directReader struct {
	d         *Direct
	off       int64 // where buf's bytes start in the file
	have, pos int   // bytes read into buf, bytes of them handed out
}

func (r *directReader) Read(p []byte) (int, error) {
	d := r.d
	if r.pos == r.have {
		r.off += int64(r.have)
		r.have, r.pos = 0, 0
		if r.off >= d.size {
			return 0, io.EOF
		}
		want := int(min(int64(len(d.buf)), d.size-r.off))
		m := (want + directAlign - 1) &^ (directAlign - 1)
		for r.have < want {
			// whole blocks: the file's last one is read short
			n, err := d.f.ReadAt(d.buf[r.have:m], r.off+int64(r.have))
			if errors.Is(err, unix.EINVAL) && n == 0 && d.fl&oDirect != 0 {
				// refused past the page cache: read through it (see
				// writeAt)
				if _, ferr := unix.FcntlInt(d.fd, unix.F_SETFL, d.fl&^oDirect); ferr != nil {
					return 0, err
				}
				d.fl &^= oDirect
				continue
			}
			r.have += n
			if r.have >= want {
				break
			}
			if err == nil && n == 0 || errors.Is(err, io.EOF) {
				return 0, fmt.Errorf("%s ends at %d bytes of %d written: %w", d.f.Name(), r.off+int64(r.have), d.size, io.ErrUnexpectedEOF)
			}
			if err != nil {
				return 0, err
			}
		}
		r.have = want
	}
	n := copy(p, d.buf[r.pos:r.have])
	r.pos += n
	return n, nil
}
