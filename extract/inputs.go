package extract

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// InputFile is one input of a run: an export file, or a source that is no file
// (an API, the retry queue).
type InputFile struct {
	Path  string
	Size  int64
	Mtime time.Time
	// Sum is the file's hex SHA-256; empty for a backfill, which does not
	// remember files.
	Sum string
	// Stamp is what the file system said of a drop's file when it was
	// listed (stampOf): the same stamp at the same path later is the same
	// bytes. Empty when unknown, or too new to vouch for.
	Stamp string
	// Restamp: the file was found processed by its content, and state
	// does not know it by its stamp (NewFiles).
	Restamp bool
	// Src is set for a source that is no file: Path is then empty.
	Src Source
}

// Source is where the input's records come from, for rejects and messages.
func (f InputFile) Source() Source {
	if f.Src.Kind == 0 {
		return File(f.Path)
	}
	return f.Src
}

// InputError is an input the command line or the config names that is not
// there to read (no such file, a folder where one export is wanted, no
// file named at all): the run did nothing.
type InputError struct{ msg string }

func (e *InputError) Error() string { return e.msg }

func inputErrorf(format string, args ...any) error {
	return &InputError{msg: fmt.Sprintf(format, args...)}
}

// System is what a run reads of one system: its API, the one export named
// (a backfill) or the files of its drop (a run).
type System struct {
	// Name is the system's config section (d365, campaign).
	Name string
	// API is the source of a system read through its API (zero: files).
	API Source
	// Pattern is the config's csv: a file, a glob or a folder; Flag the
	// backfill's --<system>-csv, which wins over it.
	Pattern, Flag string
}

// Listing says which files a run reads.
type Listing struct {
	// Incremental: a run, which reads the drops' new files; else a
	// backfill, which reads one full export per system.
	Incremental bool
	// Force: a run processes files already processed.
	Force bool
	// Processed says whether a file with this hex SHA-256 was processed
	// (state remembers them); nil when nothing is remembered.
	Processed func(sum string) (bool, error)
	// Stamped is the SHA-256 of the processed file state saw at path
	// with this stamp, if any (nil: none): that file is not read again.
	Stamped func(path, stamp string) (sum string, ok bool, err error)
	// Now is the listing's clock, which says whether a file changed too
	// recently for its stamp to vouch for it (nil: time.Now).
	Now func() time.Time
	Log zerolog.Logger
}

// List works out what a run reads of both systems; restamp are the
// drop's files found processed by their content whose stamp state does
// not know yet (its record older than stamps, the file copied or touched,
// or too new to vouch for then).
func (l Listing) List(ctx context.Context, d365, campaign System) (d365Inputs, campaignInputs, restamp []InputFile, err error) {
	var r1, r2 []InputFile
	if d365Inputs, r1, err = l.system(ctx, d365); err != nil {
		return nil, nil, nil, err
	}
	if campaignInputs, r2, err = l.system(ctx, campaign); err != nil {
		return nil, nil, nil, err
	}
	return d365Inputs, campaignInputs, slices.Concat(r1, r2), nil
}

// system lists one system's inputs: its API, the export named by the flag
// or the config for a backfill, the new files of the configured drop for a
// run (and those to restamp).
func (l Listing) system(ctx context.Context, s System) (_, restamp []InputFile, _ error) {
	if s.API != (Source{}) && s.Flag == "" {
		return []InputFile{{Src: s.API}}, nil, nil
	}
	pattern := s.Pattern
	if !l.Incremental {
		if s.Flag != "" {
			pattern = s.Flag
		}
		if pattern == "" {
			return nil, nil, inputErrorf("no %s export to read: set %s.csv in the config or pass --%s-csv", s.Name, s.Name, s.Name)
		}
		fi, err := os.Stat(pattern)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, inputErrorf("input %s does not exist", pattern)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("input %s: %w", pattern, err)
		}
		if !fi.Mode().IsRegular() {
			return nil, nil, inputErrorf("%s input %s is not a file: a backfill reads one full export per system (--%s-csv FILE)", s.Name, pattern, s.Name)
		}
		return []InputFile{{Path: pattern, Size: fi.Size(), Mtime: fi.ModTime()}}, nil, nil
	}
	if pattern == "" {
		return nil, nil, inputErrorf("%s.csv is not set: run reads the files it names (a file, a glob or a folder)", s.Name)
	}
	now := time.Now
	if l.Now != nil {
		now = l.Now
	}
	all, err := dropFilesAt(pattern, now())
	if err != nil {
		return nil, nil, err
	}
	known := Known{Processed: l.Processed, Stamped: l.Stamped}
	if l.Force {
		known = Known{}
	}
	fresh, skipped, err := NewFiles(ctx, all, known)
	if err != nil {
		return nil, nil, err
	}
	for _, f := range skipped {
		by := "its content"
		switch {
		case f.Restamp:
			restamp = append(restamp, f)
		case f.Stamp != "":
			by = "its stamp" // (a file known by its content has Restamp set when it has a stamp)
		}
		l.Log.Debug().Str("file", f.Path).Str("known_by", by).Msg("already processed")
	}
	l.Log.Info().Str("system", s.Name).Str("source", pattern).Int("new_files", len(fresh)).Int("already_processed", len(skipped)).Msg("file drop")
	return fresh, restamp, nil
}

// DropFiles lists the files a configured source names: a file, a glob or a
// folder (the vendor's flow drops one export a day into a folder). They come
// oldest first: by name, then modification time.
func DropFiles(pattern string) ([]InputFile, error) { return dropFilesAt(pattern, time.Now()) }

// dropFilesAt is DropFiles, the files' stamps taken at now.
func dropFilesAt(pattern string, now time.Time) ([]InputFile, error) {
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
		return nil, inputErrorf("input %s does not exist", pattern)
	}
	var files []InputFile
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("input %s: %w", p, err)
		}
		if fi.Mode().IsRegular() {
			files = append(files, InputFile{Path: p, Size: fi.Size(), Mtime: fi.ModTime(), Stamp: stampOf(fi, now)})
		}
	}
	slices.SortFunc(files, func(a, b InputFile) int {
		if c := strings.Compare(filepath.Base(a.Path), filepath.Base(b.Path)); c != 0 {
			return c
		}
		if c := a.Mtime.Compare(b.Mtime); c != 0 {
			return c
		}
		return strings.Compare(a.Path, b.Path)
	})
	return files, nil
}

// Known is what state remembers of the files runs processed (the zero
// Known: nothing).
type Known struct {
	// Processed says whether a file with this hex SHA-256 was processed.
	Processed func(sum string) (bool, error)
	// Stamped is the SHA-256 of the processed file seen at path with
	// this stamp, if any.
	Stamped func(path, stamp string) (sum string, ok bool, err error)
}

// NewFiles keeps the drop's files not processed yet. A file state saw
// at the same path with the same stamp when a run processed it is
// skipped unread: a drop folder that keeps a year of nightly exports
// cost a hash of every one of them every night. Any other is hashed,
// and skipped when a file with its content was processed (Restamp set
// when it has a stamp: state should learn it). A file that cannot be
// read stops the run here, before anything is written.
func NewFiles(ctx context.Context, files []InputFile, known Known) (fresh, skipped []InputFile, err error) {
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		if f.Stamp != "" && known.Stamped != nil {
			sum, ok, err := known.Stamped(f.Path, f.Stamp)
			if err != nil {
				return nil, nil, err
			}
			if ok {
				f.Sum = sum
				skipped = append(skipped, f)
				continue
			}
		}
		sum, err := HashFile(f.Path)
		if err != nil {
			return nil, nil, err
		}
		f.Sum = sum
		if known.Processed != nil {
			seen, err := known.Processed(sum)
			if err != nil {
				return nil, nil, err
			}
			if seen {
				f.Restamp = f.Stamp != ""
				skipped = append(skipped, f)
				continue
			}
		}
		fresh = append(fresh, f)
	}
	return fresh, skipped, nil
}

// HashFile is a file's SHA-256 in hex, as state remembers processed files.
func HashFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("input %s cannot be read: %w", path, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("input %s cannot be read: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Name names a system's inputs for a message.
func Name(inputs []InputFile) string {
	switch len(inputs) {
	case 0:
		return "no file"
	case 1:
		return inputs[0].Source().String()
	}
	return strconv.Itoa(len(inputs)) + " files"
}

// Where names a row for a reject reason: the line, and the input when it
// is another one (byFile, of inputs) than the row's own (file).
func Where(inputs []InputFile, file, byFile uint16, line int32) string {
	if file == byFile {
		return fmt.Sprintf("line %d", line)
	}
	return fmt.Sprintf("%s line %d", inputs[byFile].Source().Short(), line)
}
