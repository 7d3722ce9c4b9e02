// Package load applies decisions to the targets. For CSV targets that means
// the update files the systems' own import tools read; every run also writes
// its audit and rejects files.
package load

import (
	"bufio"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"optsync/extract"
)

// outFile is a CSV file written under a temporary name and renamed into place
// only once it is complete and synced, so a killed run never leaves a file
// that looks finished but is not.
type outFile struct {
	final string
	f     *os.File
	buf   *bufio.Writer
	csv   *csv.Writer
}

func createOut(dir, name string) (*outFile, error) {
	final := filepath.Join(dir, name)
	f, err := os.OpenFile(final+".partial", os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating %s: %w", final, err)
	}
	buf := bufio.NewWriterSize(f, 256<<10)
	return &outFile{final: final, f: f, buf: buf, csv: csv.NewWriter(buf)}, nil
}

// complete flushes, syncs and closes the file under its temporary name.
func (o *outFile) complete() error {
	o.csv.Flush()
	err := o.csv.Error()
	if err == nil {
		err = o.buf.Flush()
	}
	if err == nil {
		err = o.f.Sync()
	}
	if cerr := o.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", o.final, err)
	}
	return nil
}

func (o *outFile) abort() {
	o.f.Close()
	os.Remove(o.f.Name())
}

// syncDir makes the renames durable before state says the files exist.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}

// escapeID leaves identifiers whose shape was checked as they are (a PKey
// starts with @) and escapes anything else taken from a bad row, even text
// that merely looks like a PKey.
func escapeID(s string, checked bool) string {
	if checked && (extract.IsPKey(s) || isGUID(s)) {
		return s
	}
	return escapeCell(s)
}

func isGUID(s string) bool {
	id, ok := extract.ParseID(s)
	return ok && id.String() == s
}

// escapeCell keeps a spreadsheet from running input text as a formula.
func escapeCell(s string) string {
	if s == "" {
		return s
	}
	switch s[0] {
	case '=', '+', '-', '@', '\t', '\r':
		return "'" + s
	}
	return s
}

// WriteFile writes a whole file the way every output file of a run is
// written: 0600 under a temporary name, synced, then renamed into place and
// the folder synced, so a reader never sees half a file and a failure
// leaves none.
func WriteFile(path string, write func(io.Writer) error) error {
	o, err := createOut(filepath.Dir(path), filepath.Base(path))
	if err != nil {
		return err
	}
	if err := write(o.buf); err != nil {
		o.abort()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := o.complete(); err != nil {
		os.Remove(o.f.Name())
		return err
	}
	if err := os.Rename(o.f.Name(), o.final); err != nil {
		os.Remove(o.f.Name())
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}
