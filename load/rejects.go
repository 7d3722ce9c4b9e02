package load

import (
	"bufio"
	"cmp"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"

	"optsync/extract"
)

// RejectSpool keeps a run's rejects on disk as they are found, one spill
// file per input source, in the run's out_dir (0600, under temporary
// .partial names): five million bad rows cost disk, not memory. The rejects
// file is then written from the spills and the few rejects found later
// (superseded rows, duplicates), merged by source and line — a bounded
// merge, as each reader finds its rejects in line order.
type RejectSpool struct {
	dir   *Dir
	runID string
	mu    sync.Mutex
	spill map[extract.Source]*sourceSpill
	err   error
}

type sourceSpill struct {
	out    *outFile
	n      int
	last   int
	sorted bool
}

// NewRejectSpool opens the run's spool in out_dir.
func NewRejectSpool(outDir, runID string) (*RejectSpool, error) {
	d, err := OutDir(outDir)
	if err != nil {
		return nil, err
	}
	return &RejectSpool{dir: d, runID: runID, spill: map[extract.Source]*sourceSpill{}}, nil
}

// Add spills one reject. Safe for concurrent use (both systems are read at
// once). A write error is kept and returned by Err and Write.
func (s *RejectSpool) Add(r extract.Reject) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return
	}
	sp, ok := s.spill[r.Source]
	if !ok {
		out, err := createOut(s.dir, fmt.Sprintf("rejects-%s.spill-%d", s.runID, len(s.spill)), 0o600)
		if err != nil {
			s.err = err
			return
		}
		sp = &sourceSpill{out: out, sorted: true}
		s.spill[r.Source] = sp
	}
	checked := "0"
	if r.IDChecked {
		checked = "1"
	}
	if err := sp.out.csv.Write([]string{strconv.Itoa(r.Line), r.ID, checked, r.Reason}); err != nil {
		s.err = fmt.Errorf("spilling rejects to %s: %w", sp.out.dir.Path(sp.out.tmp), err)
		return
	}
	sp.sorted = sp.sorted && r.Line >= sp.last
	sp.last = r.Line
	sp.n++
}

// Err is the first error spilling met.
func (s *RejectSpool) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Len is how many rejects were spilled.
func (s *RejectSpool) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, sp := range s.spill {
		n += sp.n
	}
	return n
}

// Merge calls each for every spilled reject and every one of later, sorted
// by source and line (a spilled reject before a later one of the same
// line). later hands the rejects found later in that order (nil at the
// end): sorted by the caller, in memory or on disk, so that a million
// superseded rows are not held.
func (s *RejectSpool) Merge(later func() *extract.Reject, each func(extract.Reject) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	sources := make([]extract.Source, 0, len(s.spill))
	for src := range s.spill {
		sources = append(sources, src)
	}
	slices.SortFunc(sources, extract.Source.Compare)
	next := later()
	for _, src := range sources {
		for next != nil && next.Source.Compare(src) < 0 {
			if err := each(*next); err != nil {
				return err
			}
			next = later()
		}
		var err error
		if next, err = s.replay(src, s.spill[src], next, later, each); err != nil {
			return err
		}
	}
	for ; next != nil; next = later() {
		if err := each(*next); err != nil {
			return err
		}
	}
	return nil
}

// replay merges one source's spill with its later rejects (next, then what
// later gives while the source is the same), and returns the first later
// reject of another source.
func (s *RejectSpool) replay(src extract.Source, sp *sourceSpill, next *extract.Reject, later func() *extract.Reject, each func(extract.Reject) error) (*extract.Reject, error) {
	sp.out.csv.Flush()
	if err := sp.out.csv.Error(); err != nil {
		return nil, fmt.Errorf("spilling rejects: %w", err)
	}
	if err := sp.out.flush(); err != nil {
		return nil, fmt.Errorf("spilling rejects: %w", err)
	}
	f, err := s.dir.root.Open(sp.out.tmp)
	if err != nil {
		return nil, fmt.Errorf("reading spilled rejects back: %w", err)
	}
	defer f.Close()
	cr := csv.NewReader(bufio.NewReaderSize(f, 256<<10))
	cr.FieldsPerRecord = 4
	read := func() (extract.Reject, bool, error) {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return extract.Reject{}, false, nil
		}
		if err != nil {
			return extract.Reject{}, false, fmt.Errorf("reading spilled rejects back: %w", err)
		}
		line, err := strconv.Atoi(rec[0])
		if err != nil {
			return extract.Reject{}, false, fmt.Errorf("reading spilled rejects back: line %q", rec[0])
		}
		return extract.Reject{Source: src, Line: line, ID: rec[1], IDChecked: rec[2] == "1", Reason: rec[3]}, true, nil
	}
	if !sp.sorted {
		// Not found in line order (no reader does this today): sorted in
		// memory rather than written out of order.
		var all []extract.Reject
		for {
			r, ok, err := read()
			if err != nil {
				return nil, err
			}
			if !ok {
				break
			}
			all = append(all, r)
		}
		slices.SortStableFunc(all, func(a, b extract.Reject) int { return cmp.Compare(a.Line, b.Line) })
		i := 0
		read = func() (extract.Reject, bool, error) {
			if i == len(all) {
				return extract.Reject{}, false, nil
			}
			i++
			return all[i-1], true, nil
		}
	}
	r, ok, err := read()
	mine := func() bool { return next != nil && next.Source == src }
	for err == nil && (ok || mine()) {
		if ok && (!mine() || r.Line <= next.Line) {
			if err = each(r); err == nil {
				r, ok, err = read()
			}
			continue
		}
		if err = each(*next); err == nil {
			next = later()
		}
	}
	return next, err
}

// Close removes the spills.
func (s *RejectSpool) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sp := range s.spill {
		sp.out.abort()
	}
	s.spill = map[extract.Source]*sourceSpill{}
	s.dir.Close()
}
