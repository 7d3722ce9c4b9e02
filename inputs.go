package main

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"optsync/extract"
	"optsync/extract/spill"
	"optsync/state"
)

// inputFile is one export a run reads, or a source that is no file.
type inputFile struct {
	path  string
	size  int64
	mtime time.Time
	sum   string // hex SHA-256; empty for a backfill, which does not remember files
	// src is set for a source that is no file (an API, the retry queue):
	// path is then empty.
	src extract.Source
}

// source is where the input's records come from, for rejects and messages.
func (f inputFile) source() extract.Source {
	if f.src.Kind == 0 {
		return extract.File(f.path)
	}
	return f.src
}

// dropFiles lists the files a configured source names: a file, a glob or a
// folder (the vendor's flow drops one export a day into a folder). They come
// oldest first: by name, then modification time.
func dropFiles(pattern string) ([]inputFile, error) {
	var paths []string
	fi, err := os.Stat(pattern)
	switch {
	case err == nil && fi.IsDir():
		entries, err := os.ReadDir(pattern)
		if err != nil {
			return nil, fmt.Errorf("reading the drop folder %s: %w", pattern, err)
		}
		for _, e := range entries {
			// Hidden files and our own partial files are transfers in progress.
			if e.Type().IsRegular() && !strings.HasPrefix(e.Name(), ".") && !strings.HasSuffix(e.Name(), ".partial") {
				paths = append(paths, filepath.Join(pattern, e.Name()))
			}
		}
	case err == nil:
		paths = []string{pattern}
	case strings.ContainsAny(pattern, "*?["):
		if paths, err = filepath.Glob(pattern); err != nil {
			return nil, fmt.Errorf("glob %q: %w", pattern, err)
		}
	default:
		return nil, usagef("input %s does not exist", pattern)
	}
	var files []inputFile
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("input %s: %w", p, err)
		}
		if fi.Mode().IsRegular() {
			files = append(files, inputFile{path: p, size: fi.Size(), mtime: fi.ModTime()})
		}
	}
	slices.SortFunc(files, func(a, b inputFile) int {
		if c := strings.Compare(filepath.Base(a.path), filepath.Base(b.path)); c != 0 {
			return c
		}
		if c := a.mtime.Compare(b.mtime); c != 0 {
			return c
		}
		return strings.Compare(a.path, b.path)
	})
	return files, nil
}

// newFiles hashes the drop's files and keeps those state has not seen
// processed (all of them with force). A file that cannot be read stops the
// run here, before anything is written.
func newFiles(ctx context.Context, st *state.Store, files []inputFile, force bool) (fresh, skipped []inputFile, err error) {
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		sum, err := hashFile(f.path)
		if err != nil {
			return nil, nil, err
		}
		f.sum = sum
		if !force && st != nil {
			_, seen, err := st.Processed(sum)
			if err != nil {
				return nil, nil, err
			}
			if seen {
				skipped = append(skipped, f)
				continue
			}
		}
		fresh = append(fresh, f)
	}
	return fresh, skipped, nil
}

func hashFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("input %s cannot be read: %w", path, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("input %s cannot be read: %w", path, err)
	}
	var sum [sha256.Size]byte
	copy(sum[:], h.Sum(nil))
	return state.FileSum(sum), nil
}

// inputs is what extract produced from both systems' files: the rows,
// sorted as the identity rules read them (by contact id; profiles by PKey),
// in memory within the run's budget, else in runs on disk.
type inputs struct {
	contacts *spill.Sorter[extract.Contact]
	profiles *spill.Sorter[extract.Profile]
	// rejects takes the rows rejected while reading: a run's spool on
	// disk, validate's tally.
	rejects  rejectSink
	d365     extract.Stats
	campaign extract.Stats
}

// rejectSink takes rejects as the readers find them, from both systems at
// once.
type rejectSink interface {
	Add(extract.Reject)
	Err() error
}

// extract reads both systems' files; the two systems are read at once.
// Each record remembers which file it came from, so that a later file wins
// over an earlier one for the same record.
func (j *job) extract(ctx context.Context, st *state.Store, d365Files, campFiles []inputFile, spool rejectSink) (*inputs, error) {
	b := j.budgets()
	in := &inputs{rejects: spool,
		contacts: newContactSorter(b.contacts, j.cfg.TmpDir),
		profiles: newProfileSorter(false, b.profiles, j.cfg.TmpDir)}
	g, ctx := errgroup.WithContext(ctx)
	var cerr, perr error // the first error adding a row (a full disk)
	addContact := func(c *extract.Contact) {
		if err := in.contacts.Add(c); err != nil && cerr == nil {
			cerr = err
		}
	}
	addProfile := func(p *extract.Profile) {
		if err := in.profiles.Add(p); err != nil && perr == nil {
			perr = err
		}
	}
	g.Go(func() error {
		if len(d365Files) == 1 && d365Files[0].src.Kind == extract.APISource && j.dv != nil {
			err := j.dv.read(ctx, st, !j.incremental || j.mappingAdded, j.queue,
				func(c *extract.Contact) {
					in.d365.Rows++
					addContact(c)
				},
				func(r extract.Reject) {
					in.d365.Rejected++
					in.rejects.Add(r)
				})
			return cmp.Or(err, cerr)
		}
		for i, f := range d365Files {
			err := j.readFile(ctx, f, "reading Dynamics", func(r io.Reader) error {
				hint := sizeHint{file: f, reserve: in.contacts.Reserve}
				r = hint.reader(r)
				st, err := extract.ReadContacts(ctx, r, f.path, j.cfg.extract.D365Layout(j.notAfter),
					func(c *extract.Contact) {
						c.File = uint16(i)
						hint.row(in.contacts.Len())
						addContact(c)
					},
					func(r extract.Reject) { in.rejects.Add(r) })
				in.d365.Rows, in.d365.Rejected = in.d365.Rows+st.Rows, in.d365.Rejected+st.Rejected
				return cmp.Or(err, cerr)
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	g.Go(func() error {
		if len(campFiles) == 1 && campFiles[0].src.Kind == extract.APISource && j.cv != nil {
			stats, err := j.cv.read(ctx, st, !j.incremental || j.mappingAdded, j.queue,
				addProfile, func(r extract.Reject) { in.rejects.Add(r) })
			in.campaign = stats
			return cmp.Or(err, perr)
		}
		for i, f := range campFiles {
			err := j.readFile(ctx, f, "reading Campaign", func(r io.Reader) error {
				hint := sizeHint{file: f, reserve: in.profiles.Reserve}
				r = hint.reader(r)
				st, err := extract.ReadProfiles(ctx, r, f.path, j.cfg.extract.CampaignLayout(j.notAfter),
					func(p *extract.Profile) {
						p.File = uint16(i)
						hint.row(in.profiles.Len())
						addProfile(p)
					},
					func(r extract.Reject) { in.rejects.Add(r) })
				in.campaign.Rows, in.campaign.Rejected = in.campaign.Rows+st.Rows, in.campaign.Rejected+st.Rejected
				in.campaign.Unlinked += st.Unlinked
				return cmp.Or(err, perr)
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		in.contacts.Close()
		in.profiles.Close()
		return nil, err
	}
	if err := spool.Err(); err != nil {
		return nil, err
	}
	j.log.Info().Int("files", len(d365Files)).Int("rows", in.d365.Rows).Int("rejected", in.d365.Rejected).
		Int("sorted_runs_on_disk", in.contacts.Spilled).Msg("read Dynamics contacts")
	j.log.Info().Int("files", len(campFiles)).Int("rows", in.campaign.Rows).Int("rejected", in.campaign.Rejected).
		Int("without_externalId", in.campaign.Unlinked).Int("sorted_runs_on_disk", in.profiles.Spilled).Msg("read Campaign profiles")
	return in, nil
}

// budgets divides the run's memory budget (memory_budget) between what it
// holds at once. What stays out of it: the process itself, buffers, the
// garbage collector's headroom (GOGC 40: the heap may grow 40 % past what
// is live) and the state file's pages as a commit writes them.
type budgets struct {
	contacts, profiles, byContact, rejects, dirty, pkeys int64
}

func (j *job) budgets() budgets {
	total := j.cfg.memoryBudget
	if total == 0 {
		total = defaultMemoryBudget
	}
	live := (total - 96<<20) * 10 / 15 // what may be live under the GC's headroom
	live = max(live, 8<<20)
	if j.hooks.memoryBudget > 0 {
		live = j.hooks.memoryBudget
	}
	return budgets{
		// read at once, both sides
		contacts: live * 30 / 100,
		profiles: live * 45 / 100,
		// the profiles sorted again by contact while the contacts wait
		byContact: live * 45 / 100,
		rejects:   live * 5 / 100,
		// the decisions' pass: what the commit decides again, and the PKey
		// index of a backfill, beside the rows read back
		dirty: live * 10 / 100,
		pkeys: live * 10 / 100,
	}
}

// sizeHint makes room for the rows a file's size promises once its first
// hintRows good rows are in (a file of junk reserves nothing): the rows
// held then, scaled by the bytes read to reach them. Without it the
// records' slice doubles as it grows, up to twice what it needs.
type sizeHint struct {
	file    inputFile
	reserve func(n int)
	read    int64
	rows    int
	done    bool
}

// hintRows is late enough that the reader's read-ahead (about 1 MB) is a
// few percent of what was read, so the estimate is close (a short one
// doubles the slice again).
const hintRows = 1 << 18

func (h *sizeHint) reader(r io.Reader) io.Reader { return &hintReader{r: r, h: h} }

// row counts a good row; held is what the sorter holds in memory before it.
func (h *sizeHint) row(held int) {
	if h.done {
		return
	}
	if h.rows++; h.rows < hintRows || h.read <= 0 {
		return
	}
	h.done = true
	// Over by a few percent (the read-ahead makes it short by as much).
	rest := float64(h.file.size-h.read) / float64(h.read) * float64(h.rows) * 1.08
	h.reserve(held + int(rest) + hintRows/16)
}

type hintReader struct {
	r io.Reader
	h *sizeHint
}

func (r *hintReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.h.read += int64(n)
	return n, err
}

func (j *job) readFile(ctx context.Context, in inputFile, stage string, read func(io.Reader) error) error {
	f, err := os.Open(in.path)
	if errors.Is(err, fs.ErrNotExist) {
		return usagef("input %s does not exist", in.path)
	}
	if err != nil {
		return fmt.Errorf("input %s cannot be read: %w", in.path, err)
	}
	defer f.Close()
	bar := j.progress.Stage(stage+" "+filepath.Base(in.path), in.size, "bytes")
	defer bar.Done()
	return read(bar.Reader(f))
}
