// Package load applies decisions to the targets. For CSV targets that means
// the update files the systems' own import tools read; for API targets, the
// Dataverse $batch and Campaign PATCH writes, held until every decision is
// made (APIWriters), with what the services refused returned as a value.
// Connect makes a run's API connectors: one client per system, shared by
// extract's reader and load's writer.
// Every run also writes its audit and rejects files. What a run tells the
// people watching it is here too: its summary line (Summary), the
// Prometheus metrics file (WriteMetrics) and, in load/progress, the
// progress display on a terminal. The rejects and failed writes a run
// keeps are counted by reason (Reasons). validate's check of the inputs
// is here (Validation: the drops read as a run reads them, and Tally, what
// a run would reject), and its --online check of the connections
// (Connections.CheckOnline). Output is one run's output as the run sees
// it: the rejects, the files, the held API writes, their counts, and what
// the run returns once its writes went out. Options is the writes' part of
// the config (out_dir, targets, d365.batch_size), with its checks.
package load

import (
	"bufio"
	"crypto/rand"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"

	"optsync/extract"
)

// Dir is a folder that files are written into, opened once: every file is
// created, renamed and synced relative to the folder opened (os.Root), so a
// folder swapped for another, or for a link, after it was checked is not
// written into, and no name inside it is followed out of it.
type Dir struct {
	path string
	root *os.Root
	// failCreate, in tests, makes creating the named file fail.
	failCreate func(name string) error
}

// OutDir opens out_dir for a run's files, creating it (0700) if needed. A
// folder that exists is tightened to 0700: personal data goes into it, and
// whoever else can write into it could plant links among the run's files.
// A folder that belongs to another user is refused (its owner could loosen
// it again at any time), as is one that cannot be tightened.
func OutDir(path string) (*Dir, error) {
	if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, fmt.Errorf("creating out_dir %s: %w", path, err)
	}
	d, err := OpenDir(path)
	if err != nil {
		return nil, fmt.Errorf("out_dir: %w", err)
	}
	if err := d.tighten(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// OpenDir opens an existing folder as it is: the folder of a file an
// operator named (--output), which is theirs to set up.
func OpenDir(path string) (*Dir, error) {
	root, err := os.OpenRoot(path)
	if err != nil {
		return nil, fmt.Errorf("opening folder %s: %w", path, err)
	}
	return &Dir{path: path, root: root}, nil
}

// tighten makes the folder 0700, through the folder opened.
func (d *Dir) tighten() error {
	f, err := d.root.Open(".")
	if err != nil {
		return fmt.Errorf("out_dir %s: %w", d.path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("out_dir %s: %w", d.path, err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("out_dir %s belongs to user id %d, not to the user optsync runs as (%d): its owner could open it to others at any time, and the run's files hold personal data; use a folder of this user's own", d.path, st.Uid, os.Geteuid())
	}
	if fi.Mode().Perm() == 0o700 {
		return nil
	}
	if err := f.Chmod(0o700); err != nil {
		return fmt.Errorf("out_dir %s is mode %04o and cannot be tightened to 0700 (the run's files hold personal data, and whoever can write into the folder could plant links among them): %w", d.path, fi.Mode().Perm(), err)
	}
	return nil
}

// Close releases the folder.
func (d *Dir) Close() error { return d.root.Close() }

// Path is the path of a file in the folder, for messages and logs.
func (d *Dir) Path(name string) string { return filepath.Join(d.path, name) }

// createTemp creates a new file for name under a name of its own (name, a
// random part, .partial): created, never opened if it exists, so nothing
// planted in the folder — a link above all — is ever written through.
func (d *Dir) createTemp(name string, mode os.FileMode) (*os.File, string, error) {
	if d.failCreate != nil {
		if err := d.failCreate(name); err != nil {
			return nil, "", err
		}
	}
	var b [4]byte
	for range 100 {
		_, _ = rand.Read(b[:])
		tmp := name + "." + hex.EncodeToString(b[:]) + ".partial"
		f, err := d.root.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return nil, "", err
		}
		// Held while it is written (an flock goes with the last
		// descriptor, a killed process's too): a run's start removes the
		// temporary files of runs that ended, but not one a live command
		// writes (RemovePartials). Advice to that check only.
		_ = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		// The mode asked for, whatever the umask: through the open file,
		// never by name.
		if err := f.Chmod(mode); err != nil {
			f.Close()
			d.root.Remove(tmp)
			return nil, "", err
		}
		return f, tmp, nil
	}
	return nil, "", fmt.Errorf("creating a temporary file for %s: every name tried exists", d.Path(name))
}

// outFile is a CSV file written under a temporary name and renamed into place
// only once it is complete and synced, so a killed run never leaves a file
// that looks finished but is not.
type outFile struct {
	dir   *Dir
	name  string // the final name in dir
	final string // its path, for messages
	tmp   string
	f     *os.File
	buf   *bufio.Writer
	csv   *csv.Writer
	// aside writes buf's contents to f beside the caller.
	aside *asideWriter
}

func createOut(dir *Dir, name string, mode os.FileMode) (*outFile, error) {
	final := dir.Path(name)
	f, tmp, err := dir.createTemp(name, mode)
	if err != nil {
		return nil, fmt.Errorf("creating %s: %w", final, err)
	}
	aside := newAsideWriter(f)
	buf := bufio.NewWriterSize(aside, 256<<10)
	return &outFile{dir: dir, name: name, final: final, tmp: tmp, f: f, buf: buf, csv: csv.NewWriter(buf), aside: aside}, nil
}

// flush puts what the buffer holds in the file, and waits until it is.
func (o *outFile) flush() error {
	if err := o.buf.Flush(); err != nil {
		return err
	}
	return o.aside.flush()
}

// write writes rows made by appendRow. (The file's csv.Writer, when it
// writes too, writes through the same buffer: bufio.NewWriter hands back
// a *bufio.Writer as large as asked for as it is.)
func (o *outFile) write(rows []byte) error {
	_, err := o.buf.Write(rows)
	return err
}

// complete flushes and syncs the file under its temporary name. It stays
// open, and so locked (createTemp), until it is placed: closed in between,
// a run starting meanwhile took it for a killed command's and removed it,
// and the rename failed.
func (o *outFile) complete() error {
	o.csv.Flush()
	err := o.csv.Error()
	if err == nil {
		err = o.flush()
	}
	if err == nil {
		err = o.f.Sync()
	}
	if err != nil {
		o.f.Close()
		return fmt.Errorf("writing %s: %w", o.final, err)
	}
	return nil
}

// place gives the complete file its final name, and closes it. A rename
// replaces whatever has that name — a link itself, never the link's
// target. With noReplace an existing name of any kind is an error (a hard
// link is made, which never replaces, and the temporary name removed).
func (o *outFile) place(noReplace bool) error {
	err := o.rename(noReplace)
	if cerr := o.f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("writing %s: %w", o.final, cerr)
	}
	return err
}

func (o *outFile) rename(noReplace bool) error {
	if !noReplace {
		if err := o.dir.root.Rename(o.tmp, o.name); err != nil {
			return fmt.Errorf("writing %s: %w", o.final, err)
		}
		return nil
	}
	if err := o.dir.root.Link(o.tmp, o.name); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s exists (it was created while this file was written); nothing was replaced: %w", o.final, fs.ErrExist)
		}
		return fmt.Errorf("writing %s: %w", o.final, err)
	}
	o.dir.root.Remove(o.tmp)
	return nil
}

func (o *outFile) abort() {
	_ = o.aside.wait() // not closed under a write
	o.f.Close()
	o.dir.root.Remove(o.tmp)
}

// sync makes the renames durable before state says the files exist.
func (d *Dir) sync() error {
	f, err := d.root.Open(".")
	if err != nil {
		return fmt.Errorf("syncing %s: %w", d.path, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return fmt.Errorf("syncing %s: %w", d.path, err)
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

// FileOptions say how WriteFile places a file.
type FileOptions struct {
	// Mode is the file's mode (default 0600: personal data), set whatever
	// the umask.
	Mode os.FileMode
	// NoReplace makes an existing file, link or anything else of that
	// name an error wrapping fs.ErrExist, instead of being replaced.
	NoReplace bool
}

// WriteFile writes a whole file into the folder the way every output file
// of a run is written: created new under a temporary name, synced, then
// renamed into place and the folder synced, so a reader never sees half a
// file, a failure leaves none, and a link found at the name is replaced,
// never written through.
func (d *Dir) WriteFile(name string, opt FileOptions, write func(io.Writer) error) error {
	if opt.Mode == 0 {
		opt.Mode = 0o600
	}
	o, err := createOut(d, name, opt.Mode)
	if err != nil {
		return err
	}
	if err := write(o.buf); err != nil {
		o.abort()
		return fmt.Errorf("writing %s: %w", o.final, err)
	}
	if err := o.complete(); err != nil {
		d.root.Remove(o.tmp)
		return err
	}
	if err := o.place(opt.NoReplace); err != nil {
		d.root.Remove(o.tmp)
		return err
	}
	return d.sync()
}

// WriteFile writes the file at path as (*Dir).WriteFile does, in its folder
// as it is.
func WriteFile(path string, opt FileOptions, write func(io.Writer) error) error {
	d, err := OpenDir(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.WriteFile(filepath.Base(path), opt, write)
}
