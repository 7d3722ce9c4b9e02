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
	Log       zerolog.Logger
}

// List works out what a run reads of both systems.
func (l Listing) List(ctx context.Context, d365, campaign System) (d365Inputs, campaignInputs []InputFile, err error) {
	if d365Inputs, err = l.system(ctx, d365); err != nil {
		return nil, nil, err
	}
	if campaignInputs, err = l.system(ctx, campaign); err != nil {
		return nil, nil, err
	}
	return d365Inputs, campaignInputs, nil
}

// system lists one system's inputs: its API, the export named by the flag
// or the config for a backfill, the new files of the configured drop for a
// run.
func (l Listing) system(ctx context.Context, s System) ([]InputFile, error) {
	if s.API != (Source{}) && s.Flag == "" {
		return []InputFile{{Src: s.API}}, nil
	}
	pattern := s.Pattern
	if !l.Incremental {
		if s.Flag != "" {
			pattern = s.Flag
		}
		if pattern == "" {
			return nil, inputErrorf("no %s export to read: set %s.csv in the config or pass --%s-csv", s.Name, s.Name, s.Name)
		}
		fi, err := os.Stat(pattern)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, inputErrorf("input %s does not exist", pattern)
		}
		if err != nil {
			return nil, fmt.Errorf("input %s: %w", pattern, err)
		}
		if !fi.Mode().IsRegular() {
			return nil, inputErrorf("%s input %s is not a file: a backfill reads one full export per system (--%s-csv FILE)", s.Name, pattern, s.Name)
		}
		return []InputFile{{Path: pattern, Size: fi.Size(), Mtime: fi.ModTime()}}, nil
	}
	if pattern == "" {
		return nil, inputErrorf("%s.csv is not set: run reads the files it names (a file, a glob or a folder)", s.Name)
	}
	all, err := DropFiles(pattern)
	if err != nil {
		return nil, err
	}
	processed := l.Processed
	if l.Force {
		processed = nil
	}
	fresh, skipped, err := NewFiles(ctx, all, processed)
	if err != nil {
		return nil, err
	}
	for _, f := range skipped {
		l.Log.Debug().Str("file", f.Path).Msg("already processed")
	}
	l.Log.Info().Str("system", s.Name).Str("source", pattern).Int("new_files", len(fresh)).Int("already_processed", len(skipped)).Msg("file drop")
	return fresh, nil
}

// DropFiles lists the files a configured source names: a file, a glob or a
// folder (the vendor's flow drops one export a day into a folder). They come
// oldest first: by name, then modification time.
func DropFiles(pattern string) ([]InputFile, error) {
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
			files = append(files, InputFile{Path: p, Size: fi.Size(), Mtime: fi.ModTime()})
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

// NewFiles hashes the drop's files and keeps those not processed yet
// (processed nil: all of them). A file that cannot be read stops the run
// here, before anything is written.
func NewFiles(ctx context.Context, files []InputFile, processed func(sum string) (bool, error)) (fresh, skipped []InputFile, err error) {
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		sum, err := HashFile(f.Path)
		if err != nil {
			return nil, nil, err
		}
		f.Sum = sum
		if processed != nil {
			seen, err := processed(sum)
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
