package state

import (
	"errors"
	"fmt"
	"io"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A file the run's entries are kept in past memory is written once and
// read back once, and nothing else reads it. Through the page cache, every
// page of it is memory new to the page cache, and on this machine (a
// virtual one that hands memory free for a couple of seconds back to its
// host) a page taken from the free memory costs a fault of the host's
// when it is first written: 400 MB written to a new file took 1.3–2.0 s
// of system time, the same written right after another file was removed
// 0.12 s. A 10 M backfill's decisions keep about 700 MB of entries, and
// their phase spent more time in the kernel than deciding. Written and
// read without the page cache (O_DIRECT), the same 400 MB took 0.34–0.40 s
// of wall and 0.06–0.11 s of system time to write, 0.40–0.49 s and 0.06 s
// to read back. A file system that cannot (fcntl refuses O_DIRECT) is
// written through the page cache as before.

// directAlign is what O_DIRECT wants offsets, lengths and memory aligned
// to (a file system's block; 4 KiB covers those in use).
const directAlign = 4096

// directChunk is how much a directFile writes or reads at once.
const directChunk = 1 << 20

// directFile writes a file from its start and reads it back, past the page
// cache: whole aligned blocks only, the last one padded with zeros; size is
// what was written, what a read gives back.
type directFile struct {
	f    *os.File
	buf  []byte // aligned, directChunk long
	n    int    // bytes in buf after done
	done int64  // bytes written for good (whole chunks, or aligned runs)
	size int64
}

// newDirectFile sets O_DIRECT on f (an empty file just made); false: the
// file system does not take it, f is as it was.
func newDirectFile(f *os.File) (*directFile, bool) {
	fd := int(f.Fd())
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return nil, false
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl|unix.O_DIRECT); err != nil {
		return nil, false
	}
	return &directFile{f: f, buf: alignedBytes(directChunk)}, true
}

// alignedBytes is n bytes starting at a directAlign boundary.
func alignedBytes(n int) []byte {
	b := make([]byte, n+directAlign)
	off := directAlign - int(uintptr(unsafe.Pointer(unsafe.SliceData(b)))%directAlign)
	return b[off%directAlign : off%directAlign+n : off%directAlign+n]
}

func aligned(p []byte) bool {
	return uintptr(unsafe.Pointer(unsafe.SliceData(p)))%directAlign == 0
}

// Write adds p after what was written: a run of whole blocks that starts
// aligned in memory goes to the file as it is, the rest through buf.
func (d *directFile) Write(p []byte) (int, error) {
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

// Flush writes what buf holds, padded to a whole block; it stays in buf,
// written again over the padding if more comes.
func (d *directFile) Flush() error {
	if d.n == 0 {
		return nil
	}
	m := (d.n + directAlign - 1) &^ (directAlign - 1)
	clear(d.buf[d.n:m])
	return d.writeAt(d.buf[:m], d.done)
}

func (d *directFile) writeAt(b []byte, off int64) error {
	for len(b) > 0 {
		n, err := d.f.WriteAt(b, off)
		if err != nil {
			return err
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

// reader reads the file back from its start, size bytes, through buf (the
// writer's: nothing is written once reading begins).
func (d *directFile) reader() io.Reader {
	return &directReader{d: d}
}

type directReader struct {
	d         *directFile
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
			n, err := d.f.ReadAt(d.buf[r.have:m], r.off+int64(r.have))
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
