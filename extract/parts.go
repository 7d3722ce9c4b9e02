package extract

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"math"
	"runtime"
	"slices"
	"sync"
)

// A file's rows are parsed by several goroutines at once. One reads the
// file (through the quote guard, which sees every byte in order as
// before) and cuts it into parts that hold whole records: a part ends
// after a \n that ends a record, found by following the quoting as
// encoding/csv does (a \n inside a quoted field is not an end). Each part
// is parsed on its own, into records and rejects of its own, numbered
// from the part's first line; the caller's goroutine hands them on part
// after part, in the file's order. What the caller sees (the records, in
// the order added, their lines, the rejects, their order and reasons, the
// counts, the error a broken file stops on) is what one goroutine reading
// the file row by row gives. A backfill read one file per system on a
// goroutine each: the larger file (the profiles, twice the work of the
// contacts) kept one core busy alone for half of the read.

// chunking says how a file's rows are parsed.
type chunking struct {
	// workers parse parts at once; 0: the table's rows are read one after
	// the other on the caller's goroutine.
	workers int
	// size is the bytes a part holds, about (more when one record is
	// longer), and rows the lines, about (0: any number): a part's rejects
	// are held until it is handed on, and a junk file's lines, two bytes
	// each, are rejects all.
	size, rows int
	// step is the most bytes read at once (a part passes rows by a step's
	// lines at most).
	step int
	// ahead, when set, is told before a part's records are handed on how
	// many records the file has given so far, the part's included, and
	// the bytes they were read from: room for the rest of the file's
	// records can be made before the first is added.
	ahead func(records int, read int64)
}

// partBytes and partRows bound a part: parts enough that the cores share
// the work evenly, each large beside the cost of handing it over (an
// export's part is 4 Ki rows, some 400 KB, its records some 256 KB: they
// are still in cache when handed on), and the rejects held few whatever
// the rows (a junk file's two-byte lines are rejects all: a part holds a
// few thousand, not half a million). A run over 5 M junk lines stopped at
// 31 – 35 MB peak RSS (26 MB read row after row); parts of 32 KB reads and
// 8 Ki rows, at 35 – 39 MB; of 1 MB alone, at 457 MB.
const (
	partBytes = 1 << 20
	partRows  = 4 << 10
)

// readStep is the most bytes split reads at once: a part passes partRows
// by 4 Ki lines of a junk file at most.
const readStep = 8 << 10

func defaultChunking() chunking {
	return chunking{workers: runtime.GOMAXPROCS(0), size: partBytes, rows: partRows, step: readStep}
}

// rowFuncs makes the functions that read one well-formed row (row) and
// one the CSV layer could not split into the header's cells (bad), handing
// what they make to emit and reject and counting into st. Each goroutine
// parsing parts has its own. part, when not nil, is called as a part's
// parsing starts, and what it returns once the part is handed on (a part's
// rows put their PKeys in blocks of the part's own).
type rowFuncs[T any] func(emit func(*T), reject func(Reject), st *Stats) (row func(line int, rec []string), bad func(line int, rec []string, reason string), part func() (handedOn func()))

// part is a piece of a file holding whole records, and what it parsed to.
type part[T any] struct {
	buf  []byte
	line int   // the file's lines before the part's first
	end  error // what the read met after buf: io.EOF, a broken file; nil: more parts follow
	recs []T
	// rejects are in the order found; each came after its at records.
	rejects  []partReject
	st       Stats
	err      error
	handedOn func()        // from the row functions' part, when set
	done     chan struct{} // closed when the part is parsed
}

type partReject struct {
	at int
	r  Reject
}

func (s *Stats) add(o Stats) {
	s.Rows += o.Rows
	s.Rejected += o.Rejected
	s.Unlinked += o.Unlinked
}

// readParts reads t's rows, from where its header ended, in parts parsed
// by c.workers goroutines, and hands each part's records to emit and its
// rejects to reject, in the file's order, counting into st.
func readParts[T any](ctx context.Context, t *table, c chunking, rows rowFuncs[T], emit func(*T), reject func(Reject), st *Stats) error {
	if err := ctx.Err(); err != nil {
		return err // as the rows would have said before the first
	}
	ctx, cancel := context.WithCancel(ctx)
	// Parts in flight: each goroutine's, and as many waiting, read or to
	// be handed on. Memory stays a few parts' worth whatever the file.
	inFlight := 2 * c.workers
	free := make(chan *part[T], inFlight)
	for range inFlight {
		free <- &part[T]{}
	}
	work := make(chan *part[T], inFlight)
	order := make(chan *part[T], inFlight)
	var wg sync.WaitGroup
	defer func() {
		cancel()  // a split waiting for a part handed on stops
		wg.Wait() // none outlives the read
	}()
	wg.Go(func() {
		defer close(order)
		defer close(work)
		split(ctx, t, c, free, work, order)
	})
	for range c.workers {
		wg.Go(func() { parseParts(ctx, t, rows, work) })
	}
	records, read := 0, int64(0)
	for p := range order {
		<-p.done
		if err := ctx.Err(); err != nil {
			return err
		}
		records, read = records+len(p.recs), read+int64(len(p.buf))
		if c.ahead != nil {
			c.ahead(records, read)
		}
		k := 0
		for _, rj := range p.rejects {
			for ; k < rj.at; k++ {
				emit(&p.recs[k])
			}
			reject(rj.r)
		}
		for ; k < len(p.recs); k++ {
			emit(&p.recs[k])
		}
		st.add(p.st)
		if p.handedOn != nil {
			p.handedOn()
			p.handedOn = nil
		}
		if p.err != nil || p.end != nil {
			return p.err // the part the file ended with
		}
		clear(p.recs) // what they point to is the caller's now
		clear(p.rejects)
		p.recs, p.rejects = p.recs[:0], p.rejects[:0]
		free <- p
	}
	// split stopped before the file's end: ctx is done.
	return ctx.Err()
}

// split reads the rest of t's file into parts that each end where a
// record ends, and sends each to work (to be parsed) and to order (to be
// handed on in the file's order). The last part carries what the read
// ended with. It stops early when ctx is done.
func split[T any](ctx context.Context, t *table, c chunking, free <-chan *part[T], work, order chan<- *part[T]) {
	// ends follows the quoting from the first record after the header,
	// without limits of its own (t's guard, under t.br, enforces them):
	// it only says where records end.
	ends := &quoteGuard{line: 1, maxField: math.MaxInt, maxLines: math.MaxInt, maxRecord: math.MaxInt}
	line := t.csvEnd + t.off
	var carry []byte // what followed the last part's last record
	for {
		var p *part[T]
		select {
		case p = <-free:
		case <-ctx.Done():
			return
		}
		buf := append(p.buf[:0], carry...)
		if cap(buf) < c.size {
			buf = append(make([]byte, 0, c.size), carry...)
		}
		cut := -1 // where the last record in buf ends
		// The line ends in buf: those carried, and those ends counts as
		// it follows the quoting (it counts every \n), not counted again.
		carried := bytes.Count(buf, []byte{'\n'})
		seen := ends.line
		lines := carried
		var err error
		for err == nil {
			if len(buf) == cap(buf) || c.rows > 0 && lines >= c.rows {
				if cut >= 0 {
					break
				}
				if len(buf) == cap(buf) {
					buf = slices.Grow(buf, cap(buf)) // a record longer than a part
				}
			}
			var n int
			end := cap(buf)
			if c.step > 0 {
				end = min(end, len(buf)+c.step)
			}
			n, err = t.br.Read(buf[len(buf):end])
			read := buf[len(buf) : len(buf)+n]
			_, _ = ends.scan(read)
			if ends.end >= 0 {
				cut = len(buf) + ends.end
			}
			lines = carried + ends.line - seen
			buf = buf[:len(buf)+n]
		}
		if err != nil {
			cut = len(buf) // the last part: all that was read
		}
		carry = append(carry[:0], buf[cut:]...)
		p.buf, p.line, p.end = buf[:cut], line, err
		p.done = make(chan struct{})
		line += lines - bytes.Count(carry, []byte{'\n'})
		select {
		case work <- p:
		case <-ctx.Done():
			return
		}
		select {
		case order <- p:
		case <-ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}

// parseParts parses the parts sent to work until it is closed, each as a
// table of its own with t's header, its lines numbered as in the file.
func parseParts[T any](ctx context.Context, t *table, rows rowFuncs[T], work <-chan *part[T]) {
	var cur *part[T]
	var st Stats
	row, bad, begin := rows(func(x *T) { cur.recs = append(cur.recs, *x) },
		func(r Reject) { cur.rejects = append(cur.rejects, partReject{at: len(cur.recs), r: r}) },
		&st)
	src := &partReader{}
	br := bufio.NewReaderSize(src, 64<<10)
	var fields []string
	for p := range work {
		cur, st = p, Stats{}
		if begin != nil {
			p.handedOn = begin()
		}
		src.b, src.end = nil, p.end
		if src.end == nil {
			src.end = io.EOF
		}
		// The part's lines are split where they lie, up to the first
		// that needs encoding/csv (leavePlace): the file's line
		// p.line+n is the part's n-th, as off says of t.
		pt := &table{source: t.source, br: br, header: t.header, off: p.line, fields: fields,
			mem: p.buf, inPlace: true, src: src}
		p.err = pt.rows(ctx, row, bad)
		fields = pt.fields
		p.st = st
		close(p.done)
	}
}

// partReader reads a part's bytes, then says what the file's read said
// after them.
type partReader struct {
	b   []byte
	end error
}

func (r *partReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, r.end
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}
