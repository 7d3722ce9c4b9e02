package load

import (
	"io"
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
	w     io.Writer
	spare []byte
	done  chan asideResult
	busy  bool
	err   error
}

type asideResult struct {
	buf []byte
	err error
}

func newAsideWriter(w io.Writer) *asideWriter {
	return &asideWriter{w: w, done: make(chan asideResult, 1)}
}

func (a *asideWriter) Write(p []byte) (int, error) {
	if err := a.wait(); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	b := append(a.spare[:0], p...)
	a.spare, a.busy = nil, true
	go func() {
		_, err := a.w.Write(b)
		a.done <- asideResult{b, err}
	}()
	return len(p), nil
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
