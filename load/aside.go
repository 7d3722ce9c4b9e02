package load

import (
	"io"
	"os"

	"optsync/extract/spill"
)

// asideWriter writes to its file on a goroutine of its own, one buffer at
// a time, while the caller fills the next: a run's files are written as
// the decisions are made, and a write of a file's new pages (the page
// cache taking them) cost the deciding goroutine its time while the other
// core was idle (2 M contacts: a tenth of the decisions' wall time).
//
// Write copies what it is handed (a bufio.Writer hands its own buffer);
// an error of a write comes back from a later Write or from wait.
type asideWriter struct {
	w io.Writer
	// direct is w when it writes its file past the page cache: an output
	// file is written once and not read again by the run (see
	// spill.Direct: new page-cache pages were most of the system time of
	// a 10 M backfill's decisions). flush puts its last part block in.
	direct *spill.Direct
	// file is w's file while it is written through the page cache, until
	// written reaches asideDirectFrom at a whole block: a file that small
	// (a report, a night's files, a spool of a few rejects) is not worth
	// a write that waits for the disk.
	file    *os.File
	written int64
	spare   []byte
	done    chan asideResult
	busy    bool
	err     error
}

// asideDirectFrom is how much of a file is written through the page cache
// before the rest goes past it.
const asideDirectFrom = 1 << 20

type asideResult struct {
	buf []byte
	err error
}

// asideBuffer is what a write is handed at most, as a rule: the
// bufio.Writer's buffer in front of it.
const asideBuffer = 256 << 10

func newAsideWriter(w io.Writer) *asideWriter {
	a := &asideWriter{w: w, done: make(chan asideResult, 1)}
	a.file, _ = w.(*os.File)
	return a
}

// goDirect writes the rest of the file past the page cache, once enough
// of it is written (and where the file system takes it).
func (a *asideWriter) goDirect() {
	if a.file == nil || a.written < asideDirectFrom || a.written%4096 != 0 {
		return
	}
	if d, ok := spill.NewDirectAt(a.file, asideBuffer, a.written); ok {
		a.w, a.direct = d, d
		// aligned, as Direct writes it without a copy
		a.spare = spill.AlignedBytes(asideBuffer)[:0]
	}
	a.file = nil // tried
}

func (a *asideWriter) Write(p []byte) (int, error) {
	if err := a.wait(); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	a.goDirect()
	a.written += int64(len(p))
	b := append(a.spare[:0], p...)
	a.spare, a.busy = nil, true
	go func() {
		_, err := a.w.Write(b)
		a.done <- asideResult{b, err}
	}()
	return len(p), nil
}

// flush waits for the write under way, and puts everything written in
// the file.
func (a *asideWriter) flush() error {
	if err := a.wait(); err != nil {
		return err
	}
	if a.direct != nil {
		a.err = a.direct.Flush()
	}
	return a.err
}

// wait waits for the write under way, if one is: every byte handed to
// Write is then in the file, or the first error is returned.
func (a *asideWriter) wait() error {
	if a.busy {
		r := <-a.done
		a.busy, a.spare = false, r.buf
		if a.err == nil {
			a.err = r.err
		}
	}
	return a.err
}
