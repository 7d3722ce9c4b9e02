package main

import (
	"bytes"
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
		return nil, withCode(exitUsage, fmt.Errorf("input %s does not exist", pattern))
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

// inputs is what extract produced from both systems' files.
type inputs struct {
	contacts []extract.Contact
	profiles []extract.Profile
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
	in := &inputs{rejects: spool}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if len(d365Files) == 1 && d365Files[0].src.Kind == extract.APISource && j.dv != nil {
			return j.dv.read(ctx, st, !j.incremental || j.mappingAdded, j.queue,
				func(c *extract.Contact) {
					in.d365.Rows++
					in.contacts = append(in.contacts, *c)
				},
				func(r extract.Reject) {
					in.d365.Rejected++
					in.rejects.Add(r)
				})
		}
		est := estimateAll(d365Files)
		in.contacts = make([]extract.Contact, 0, min(est, firstRows))
		for i, f := range d365Files {
			err := j.readFile(ctx, f, "reading Dynamics", func(r io.Reader) error {
				st, err := extract.ReadContacts(ctx, r, f.path, j.cfg.extract.D365Layout(j.notAfter),
					func(c *extract.Contact) {
						c.File = uint16(i)
						in.contacts = append(grow(in.contacts, est), *c)
					},
					func(r extract.Reject) { in.rejects.Add(r) })
				in.d365.Rows, in.d365.Rejected = in.d365.Rows+st.Rows, in.d365.Rejected+st.Rejected
				return err
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
				func(p *extract.Profile) { in.profiles = append(in.profiles, *p) },
				func(r extract.Reject) { in.rejects.Add(r) })
			in.campaign = stats
			return err
		}
		est := estimateAll(campFiles)
		in.profiles = make([]extract.Profile, 0, min(est, firstRows))
		for i, f := range campFiles {
			err := j.readFile(ctx, f, "reading Campaign", func(r io.Reader) error {
				st, err := extract.ReadProfiles(ctx, r, f.path, j.cfg.extract.CampaignLayout(j.notAfter),
					func(p *extract.Profile) {
						p.File = uint16(i)
						in.profiles = append(grow(in.profiles, est), *p)
					},
					func(r extract.Reject) { in.rejects.Add(r) })
				in.campaign.Rows, in.campaign.Rejected = in.campaign.Rows+st.Rows, in.campaign.Rejected+st.Rejected
				in.campaign.Unlinked += st.Unlinked
				return err
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if err := spool.Err(); err != nil {
		return nil, err
	}
	j.log.Info().Int("files", len(d365Files)).Int("rows", in.d365.Rows).Int("rejected", in.d365.Rejected).Msg("read Dynamics contacts")
	j.log.Info().Int("files", len(campFiles)).Int("rows", in.campaign.Rows).Int("rejected", in.campaign.Rejected).
		Int("without_externalId", in.campaign.Unlinked).Msg("read Campaign profiles")
	return in, nil
}

func (j *job) readFile(ctx context.Context, in inputFile, stage string, read func(io.Reader) error) error {
	f, err := os.Open(in.path)
	if errors.Is(err, fs.ErrNotExist) {
		return withCode(exitUsage, fmt.Errorf("input %s does not exist", in.path))
	}
	if err != nil {
		return fmt.Errorf("input %s cannot be read: %w", in.path, err)
	}
	defer f.Close()
	bar := j.progress.Stage(stage+" "+filepath.Base(in.path), in.size, "bytes")
	defer bar.Done()
	return read(bar.Reader(f))
}

// firstRows is the room records get before the file has shown that it
// holds them: a file of junk lines would be estimated at millions of rows,
// and the garbage collector lets garbage grow with the heap, room untouched
// included.
const firstRows = 1 << 16

// grow gives s, once full, the room the files' sizes estimate, in one step:
// records good enough to keep have filled the first room.
func grow[T any](s []T, est int) []T {
	if len(s) < cap(s) || est <= cap(s) {
		return s
	}
	n := make([]T, len(s), est)
	copy(n, s)
	return n
}

// estimateAll sizes the record slice from the files' sizes and the
// length of their first lines, so that a large export is neither copied
// again and again as the slice grows nor given room it will not use.
func estimateAll(files []inputFile) int {
	total := 0
	for _, f := range files {
		total += estimateRows(f.path, f.size)
	}
	return min(total, 50_000_000)
}

func estimateRows(path string, size int64) int {
	f, err := os.Open(path)
	if err != nil || size == 0 {
		return 0
	}
	defer f.Close()
	sample := make([]byte, 64<<10)
	n, _ := f.ReadAt(sample, 0)
	lines := bytes.Count(sample[:n], []byte{'\n'})
	if lines < 2 {
		return 0
	}
	rows := size * int64(lines) / int64(n)
	return int(rows + rows/50 + 16)
}
