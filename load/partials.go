package load

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"syscall"

	"golang.org/x/sys/unix"
)

// partialName is the temporary name of a run's file: its final name (audit,
// rejects, update file, report, a rejects spill of the run), a random part
// and .partial (see Dir.createTemp).
var partialName = regexp.MustCompile(`^(?:audit|rejects|d365-updates|campaign-updates|report)-(\d{8}T\d{6}Z-[0-9a-f]+)(?:\.csv|\.html|\.spill-\d+)\.[0-9a-f]{8}\.partial$`)

// RemovePartials removes from out_dir the temporary files of the given
// runs — runs that ended, whose process was killed before it could remove
// them — and returns the names removed. Only names of that exact shape
// are touched; a link is removed, never followed; a file a live process
// holds (its writer's flock: createTemp) is left.
func RemovePartials(outDir string, runIDs []string) ([]string, error) {
	if len(runIDs) == 0 {
		return nil, nil
	}
	ids := map[string]bool{}
	for _, id := range runIDs {
		ids[id] = true
	}
	d, err := OutDir(outDir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	f, err := d.root.Open(".")
	if err != nil {
		return nil, fmt.Errorf("out_dir %s: %w", d.path, err)
	}
	entries, err := f.ReadDir(-1)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("out_dir %s: %w", d.path, err)
	}
	var removed []string
	for _, e := range entries {
		m := partialName.FindStringSubmatch(e.Name())
		if m == nil || !ids[m[1]] || e.IsDir() {
			continue
		}
		if d.beingWritten(e.Name()) {
			continue
		}
		if err := d.root.Remove(e.Name()); err != nil {
			return removed, fmt.Errorf("removing %s: %w", d.Path(e.Name()), err)
		}
		removed = append(removed, e.Name())
	}
	return removed, nil
}

// beingWritten says whether a live process holds name's lock: the file is
// one createTemp made and its writer has open (a report command writing
// the report of a run that ended, say). A file that cannot be opened as a
// plain file (a link) is not.
func (d *Dir) beingWritten(name string) bool {
	f, err := d.root.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	return errors.Is(unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB), unix.EWOULDBLOCK)
}
